"""Reading the run directories of the unsupervised families (da, ca, sda, rbm, dbn) as well as the supervised
ones: the files UNSUP_CONTRACT lists, from the files alone (for `deeptut sample`, `eval --log-likelihood`,
`viz` and `report`).

    pretrained.safetensors                         sda, dbn: the whole model when pre-training ended
    models/pretrain-layer{L}-epoch{E:04d}.safetensors   after pre-training epoch E (0-based) of layer L
    metrics.jsonl                                  lines with "phase": "pretrain" (layer, epoch, cost, ...),
                                                   then the supervised lines (phase "finetune", or none)

`load_run_model` rebuilds a saved module from model.json and a parameters file, as `rundir.load_model` does,
but without parsing config.json into a TrainConfig: the readers need the model only, and so they keep working
on a run whose config a later deeptut would no longer accept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deeptut.errors import CheckpointError, ConfigError, DataError, DeeptutError
from deeptut.store import files, rundir
from deeptut.store.rundir import Run

PRETRAINED = "pretrained.safetensors"
PRETRAIN_RE = re.compile(r"^pretrain-layer(\d+)-epoch(\d{4,})\.safetensors$")
UNSUPERVISED = ("da", "ca", "rbm")  # trained without labels only: no classifier, no supervised lines
PRETRAINED_FAMILIES = ("sda", "dbn")  # pre-trained, then fine-tuned through fit


def model_name(run: Run) -> str:
    """The run's model family: config.json's "model", else model.json's (any name; no list of known ones)."""
    m = run.config.get("model")
    if isinstance(m, str) and m:
        return m
    mj = files.read_json(run.path / rundir.MODEL_JSON, CheckpointError, want_object=True)
    m = mj.get("model")
    if not isinstance(m, str) or not m:
        raise CheckpointError(f"{run.path / rundir.MODEL_JSON}: no 'model' name")
    return m


def load_run_model(run_dir: str | Path, name: str = rundir.BEST) -> Any:
    """The module a run saved in `name` (best.safetensors, pretrained.safetensors, models/...), rebuilt from
    model.json through `deeptut.models.build_model`, in eval mode, on the CPU."""
    from deeptut.models import build_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    path = run_dir / rundir.MODEL_JSON
    args = files.read_json(path, CheckpointError, want_object=True)
    if args.get("format") != rundir.MODEL_FORMAT:
        raise CheckpointError(f"{path}: unsupported model format {args.get('format')!r} "
                              f"(this deeptut reads format {rundir.MODEL_FORMAT})")
    try:
        model = build_model({k: v for k, v in args.items() if k != "normalize"})
    except (ConfigError, TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build the model: {e}") from None
    rundir.load_parameters(model, run_dir / name)
    return model.eval()


def pretrain_checkpoints(run: Run, layer: int | None = None) -> list[tuple[int, int, Path]]:
    """(layer, epoch, path) of models/pretrain-layer*-epoch*.safetensors, sorted; only `layer` when given."""
    d = run.path / rundir.MODELS_DIR
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = PRETRAIN_RE.match(p.name)
        if m and p.is_file() and (layer is None or int(m.group(1)) == layer):
            found.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(found)


@dataclass
class PhasedMetrics:
    pretrain: list[dict[str, Any]] = field(default_factory=list)  # layer, epoch, cost (+ jacobian_norm, ...)
    supervised: list[dict[str, Any]] = field(default_factory=list)  # as rundir.read_metrics returns them


def _clean_pretrain(rec: dict[str, Any], where: str) -> dict[str, Any]:
    clean = dict(rec)
    for key in ("layer", "epoch", "cost"):
        clean[key] = rundir._num(rec, key, where)
    for key in ("jacobian_norm", "elapsed_s"):
        clean[key] = rundir._num(rec, key, where, optional=True)
    clean["layer"], clean["epoch"] = int(clean["layer"]), int(clean["epoch"])
    return clean


def _clean_supervised(rec: dict[str, Any], where: str) -> dict[str, Any]:
    """The same fields and checks as rundir.read_metrics."""
    clean = dict(rec)
    clean["iteration"] = rundir._num(rec, "iteration", where)
    clean["valid_error"] = rundir._num(rec, "valid_error", where)
    clean["train_cost"] = rundir._num(rec, "train_cost", where, optional=True)
    clean["test_error"] = rundir._num(rec, "test_error", where, optional=True)
    for key in ("epoch", "n_train_batches", "minibatch"):
        if key in rec:
            clean[key] = rundir._num(rec, key, where, optional=True)
    clean["best"] = bool(rec.get("best", False))
    return clean


def read_phased_metrics(path: Path) -> PhasedMetrics:
    """metrics.jsonl split by phase: "pretrain" lines, and the supervised ones (phase "finetune" or no phase,
    the lines of older runs). A truncated last line is ignored, any other bad line names the file and line;
    a file with no line at all is an error."""
    text = files.read_text(path, rundir.MAX_METRICS_BYTES, DataError, "metrics")
    lines = text.split("\n")
    out = PhasedMetrics()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            if i == len(lines) and not text.endswith("\n"):
                break  # partial last record: a run killed mid-write, or still running
            raise DataError(f"{where}: not valid JSON: {e}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object")
        if rec.get("phase") == "pretrain":
            out.pretrain.append(_clean_pretrain(rec, where))
        else:
            out.supervised.append(_clean_supervised(rec, where))
    if not out.pretrain and not out.supervised:
        raise DataError(f"{path}: no validation records (nor pre-training records)")
    return out


def run_metrics(run: Run) -> PhasedMetrics:
    return read_phased_metrics(run.path / rundir.METRICS)


class NotAnRBMRun(DeeptutError, ValueError):
    """Sampling (or the log-likelihood) asked of a run whose model is not an RBM."""


def require_rbm(run: Run, what: str) -> Any:
    """The run's RBM (best.safetensors), or NotAnRBMRun naming the run and its model."""
    from deeptut.models.rbm import RBM

    model = model_name(run)
    if model == "dbn":
        raise NotAnRBMRun(f"{run.path}: {what} needs an rbm run; this is a dbn run (DBN.py does not sample, "
                          f"and its generative model is the top RBM plus directed layers below, which "
                          f"deeptut does not implement); train the rbm preset")
    if model != "rbm":
        raise NotAnRBMRun(f"{run.path}: {what} needs an rbm run; this is a {model} run")
    rbm = load_run_model(run.path)
    if not isinstance(rbm, RBM):
        raise NotAnRBMRun(f"{run.path}: model.json names 'rbm' but builds a {type(rbm).__name__}")
    return rbm


def split_images(run: Run, data: Any, split: str) -> np.ndarray:
    """float32 [n, n_visible] images of a split (pixel / 256 as the tutorial's pickle). `data`: None (the
    run's dataset at its default location), a data directory, or an object with `.train`/`.test` splits
    (deeptut.data.datasets.Splits) each with `.x`."""
    if data is None or isinstance(data, (str, Path)):
        from deeptut.data.datasets import load_dataset

        data = load_dataset(str(run.config.get("dataset", "mnist")), data)
    part = getattr(data, split, None)
    x = getattr(part, "x", None)
    if x is None:
        raise DataError(f"no {split} split with images in {type(data).__name__}")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(256)
    return x.reshape(len(x), -1).astype(np.float32, copy=False)


def check_device(device: str) -> str:
    """`device` if torch can run there now, else ConfigError naming it (a typo, or cuda without a GPU)."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r}: {e}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available here")
    return str(d)
