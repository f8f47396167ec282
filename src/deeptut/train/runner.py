"""The one owner of a run: its data loaded once, then the procedure its family names.

    summary = train(cfg, run_dir=Path("runs/x"))            # the data of cfg.dataset, found as the CLI finds it
    summary = train(cfg, data, run_dir, resume=True)       # continue an interrupted run

`deeptut train`, the Python API (`deeptut.train`) and the tests call this; the family's section
(`cfg.net.procedure`, models/families.py) says which loop runs (deeptut/registry.py maps the name to the
function: train/loop.py `fit` for the classifiers, train/pretrain.py `train` for the unsupervised
families, and one per later chapter). No code here or in the CLI names a family.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeptut import registry
from deeptut.config import TrainConfig
from deeptut.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> "torch.device":
    """cpu | cuda | auto (cuda when torch sees one) -> the device; cuda without one is a clear error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device (use --device cpu or auto)")
    return torch.device(name)


def prepare(cfg: TrainConfig) -> tuple["torch.device", Any]:
    """What every procedure does first, once: the device, the thread count (results depend on it in the
    last bits), the seeds of torch, numpy and random, and the family's module built with the tutorial's
    initialisation, on the device. -> (device, model)."""
    from deeptut.accel import set_threads
    from deeptut.models import build_model
    from deeptut.train import state as train_state

    device = resolve_device(cfg.device)
    if cfg.threads:
        set_threads(cfg.threads)
    train_state.seed_everything(cfg.seed)
    return device, build_model(cfg.model_args(), cfg.init_seed).to(device)


def load_data(cfg: TrainConfig, data_dir: str | Path | None = None) -> Any:
    """The data `cfg` trains on: the loader of `cfg.dataset` (deeptut/registry.py DATASETS)."""
    try:
        loader = registry.dataset_loader(cfg.dataset)
    except registry.RegistryError as e:
        raise ConfigError(str(e)) from None
    return loader(cfg, data_dir)


def procedure_of(cfg: TrainConfig) -> Any:
    """The function that trains cfg's family (its section's `procedure`)."""
    try:
        return registry.procedure(cfg.net.procedure)
    except registry.RegistryError as e:
        raise ConfigError(f"model {cfg.model}: {e}") from None


def train(cfg: TrainConfig, data: Any = None, run_dir: str | Path | None = None, *,
          data_dir: str | Path | None = None, quiet: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train `cfg` (on `data`, or the data of cfg.dataset looked for in `data_dir` and the usual places)
    into `run_dir` (None: nothing written). Returns the run's summary (summary.json's content)."""
    if data is None:
        data = load_data(cfg, data_dir)
    if cfg.binarize != "none":  # [data] binarize (RBMs): one fixed 0/1 draw of the images, data/binarize.py
        from deeptut.data.binarize import binarized_splits

        data = binarized_splits(data, cfg.binarize)
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.net.torchless is not None:  # the procedure without torch, where it covers the run (None: not);
        # looked up first, as loading the procedure's module (train/loop.py) imports torch
        summary = registry.procedure(cfg.net.torchless)(cfg, data, run_dir, quiet=quiet, resume=resume)
        if summary is not None:
            return summary
    return procedure_of(cfg)(cfg, data, run_dir, quiet=quiet, resume=resume)
