"""The run directory: what a training run writes, when, and how it is read back. The one module that knows
the file names; the loop (train/), the pictures (viz/), the CLI and the tests go through it.

    runs/<preset>-<YYYYmmdd-HHMMSS>[-i]/
      config.json          at the start: the resolved config + provenance (versions, git commit, seed, device)
      model.json           at the start: the model's constructor arguments + MODEL_FORMAT (rebuilds it)
      init.safetensors     at the start: the initial parameters
      metrics.jsonl        one JSON line per validation (appended; cut back to the checkpoint on resume)
      best.safetensors     on every new best validation, and at the end: the model the run selected
      models/iter-<iteration:08d>.safetensors   every `save_every` validations (for the pictures)
      models/pretrain-layer<L>-epoch<E:04d>.safetensors   after pre-training epochs (train/pretrain.py)
      pretrained.safetensors   sda, dbn: the whole model when pre-training ended, before fine-tuning
      checkpoints/         the `last` checkpoint (store/checkpoint.py), every `checkpoint_every` validations
      summary.json         at the end
      plots/, report.html  written later by `deeptut viz` / `deeptut report`

Parameters are safetensors files with metadata {"model", "format"}; JSON files are written atomically. Every
read is bounded and every failure names the file.

metrics.jsonl holds two kinds of line: a supervised line per validation (fit; "phase": "finetune" when it
fine-tunes a pre-trained sda / dbn, no "phase" in older runs), and a pre-training line per unsupervised
epoch ({"phase": "pretrain", "layer", "epoch", "cost", "elapsed_s"}, cA adds "jacobian_norm", rbm and dbn
"cost_kind"). `read_metrics` returns both, apart. The models/pretrain-* files exist for every epoch of a
da / ca / rbm, but only for each layer's last epoch and every `save_every` epochs of an sda / dbn:
`Run.pretrain_models` lists what is there. Models load through one function, `load_module` (model.json and
a parameters file; no config.json parsing, so a run whose config a later deeptut would refuse still
draws); `load_model` adds the parsed config for `eval`, `predict` and resuming.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

import deeptut
from deeptut.config import TrainConfig, from_dict
from deeptut.errors import CheckpointError, ConfigError, DataError, DeeptutError
from deeptut.models import FAMILIES, build_model
from deeptut.store import checkpoint, files, tensors

if TYPE_CHECKING:  # torch is imported where a function needs it: a torch-free run (train/torchless.py)
    import torch   # writes its run directory through this module without it
    from torch import nn

MODEL_FORMAT = 1  # bump when the meaning of saved parameters changes
CONFIG = "config.json"
MODEL_JSON = "model.json"
INIT = "init.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MODELS_DIR = "models"
PRETRAINED = "pretrained.safetensors"
MAX_METRICS_BYTES = 1 * 2**30  # one ~300-byte line per validation: millions of validations fit
ITER_RE = re.compile(r"^iter-(\d{8,})\.safetensors$")
PRETRAIN_RE = re.compile(r"^pretrain-layer(\d+)-epoch(\d{4,})\.safetensors$")  # pretrain_model_name's files


def pretrain_model_name(layer: int, epoch: int) -> str:
    """The file of the whole model after 0-based pre-training `epoch` of `layer` (relative to the run)."""
    return f"{MODELS_DIR}/pretrain-layer{layer}-epoch{epoch:04d}.safetensors"


def new_run_dir(root: str | Path, preset: str) -> Path:
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = root / (f"{preset}-{stamp}" + (f"-{i}" if i else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise CheckpointError(f"{path}: cannot create run directory: {e.strerror}") from None
    raise CheckpointError(f"{root}: too many run directories named {preset}-{stamp}")


# --- provenance and the model files ---------------------------------------------------------------------


def git_commit() -> str | None:
    """The commit of the source tree deeptut was imported from, if it is a git checkout."""
    src = Path(deeptut.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def torch_version() -> str:
    """The installed torch's version, without importing torch where it is not loaded (a torch-free run)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.__version__
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(cfg: TrainConfig, device: "torch.device | str", threads: dict[str, int | None]) -> dict[str, Any]:
    """config.json's record of where the run ran; `threads` are the thread counts the caller set
    (deeptut.accel.thread_counts(): store/ asks the accelerators nothing). `device`: a torch.device, or
    "cpu" from a torch-free run."""
    if str(device) == "cpu":
        where = "cpu"
    else:
        import torch

        where = f"{device} ({torch.cuda.get_device_name(device)})"
    return {
        "config": cfg.to_dict(),
        "versions": {"deeptut": deeptut.__version__, "python": platform.python_version(),
                     "torch": torch_version(), "numpy": np.__version__},
        "git_commit": git_commit(),
        "seed": cfg.seed,
        "device": where,
        "threads": threads,
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def data_provenance(cfg: TrainConfig, data: Any) -> dict[str, Any] | None:
    """config.json's "data": the dataset's name and the folder it was read from (a folder of IDX files,
    or the folder of a .pkl.gz), so that eval / viz / report / predict of the run find it again without
    --data-dir (`remembered_data_dir`). None for data not read from files (a Splits made in memory)."""
    source = getattr(data, "source", None)
    if not isinstance(source, str) or not source:
        return None
    path = Path(source)
    if not path.exists():
        return None
    folder = path if path.is_dir() else path.parent
    return {"dataset": getattr(data, "name", cfg.dataset), "source": str(path.resolve()),
            "folder": str(folder.resolve())}


def remembered_data_dir(run_dir: str | Path) -> Path | None:
    """Where the run's data was read from (config.json "data" "source": the folder of IDX files, or the
    .pkl.gz file; both are what --data-dir takes), while it exists; else None (the usual search path then
    applies). Never raises: a run without it is an older run, or not a run (the command says so)."""
    try:
        meta = files.read_json(Path(run_dir) / CONFIG, DataError, want_object=True)
    except DeeptutError:
        return None
    data = meta.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    if isinstance(source, str) and source and Path(source).exists():
        return Path(source)
    return None


def write_config(run_dir: Path, cfg: TrainConfig, device: "torch.device | str", data: Any = None, *,
                 threads: dict[str, int | None]) -> None:
    """config.json: the resolved config and where it ran (`threads`: see provenance); with `data` (an object
    with `.source`, the dataset loaders'), where its data came from ("data": data_provenance)."""
    meta = provenance(cfg, device, threads)
    where = data_provenance(cfg, data) if data is not None else None
    if where is not None:
        meta["data"] = where
    files.atomic_write_json(run_dir / CONFIG, meta)


def model_metadata(cfg: TrainConfig) -> dict[str, str]:
    """The safetensors metadata of every saved model file."""
    return {"model": cfg.model, "format": str(MODEL_FORMAT)}


def save_model(run_dir: Path, model: nn.Module, cfg: TrainConfig, name: str = BEST,
               normalization: dict[str, Any] | None = None) -> None:
    """Parameters only (safetensors) plus model.json, which is enough to rebuild the model; `normalization`,
    the input normaliser's statistics as the data layer gives them (data/normalize.py `Normalizer.saved()`;
    None: the raw inputs), goes into model.json's "normalize" as it is (saved_normalization reads it)."""
    tensors.save_tensors(run_dir / name, dict(model.state_dict()), metadata=model_metadata(cfg))
    model_json = run_dir / MODEL_JSON
    if not model_json.exists():
        extra = {} if normalization is None else {"normalize": normalization}
        files.atomic_write_json(model_json, {**cfg.model_args(), **extra, "format": MODEL_FORMAT})


def saved_normalization(run_dir: str | Path) -> tuple[dict[str, Any] | None, Path]:
    """(model.json's "normalize", model.json's path): the statistics of the input normalisation the run's
    model was trained with (None: absent, the raw pixels). Every path that feeds images to a saved model
    applies it: `Normalizer.from_saved(*saved_normalization(run_dir)).apply(x)` (data/normalize.py)."""
    path = Path(run_dir) / MODEL_JSON
    mj = files.read_json(path, CheckpointError, want_object=True)
    return mj.get("normalize"), path


def load_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG
    meta = files.read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: no 'config' object")
    try:
        return from_dict(meta["config"], str(path))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_module(run_dir: str | Path, name: str = BEST) -> nn.Module:
    """The module a run saved in `name` (best.safetensors, pretrained.safetensors, init.safetensors,
    models/...), rebuilt from model.json through `deeptut.models.build_model`, on the CPU, in eval mode.
    Every family; config.json is not read."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    path = run_dir / MODEL_JSON
    args = files.read_json(path, CheckpointError, want_object=True)
    if args.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: unsupported model format {args.get('format')!r} "
                              f"(this deeptut reads format {MODEL_FORMAT})")
    try:
        # model.json's "normalize" describes the inputs (saved_normalization), not the module
        model = build_model({k: v for k, v in args.items() if k != "normalize"})
    except (ConfigError, TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build the model: {e}") from None
    load_parameters(model, run_dir / name)
    return model.eval()


def load_model(run_dir: str | Path, name: str = BEST) -> tuple[nn.Module, TrainConfig]:
    """Rebuild the model a run saved (load_module), with the run's parsed config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    cfg = load_config(run_dir)
    return load_module(run_dir, name), cfg


def load_parameters(model: nn.Module, path: Path) -> None:
    loaded = tensors.load_tensors(path)
    expected = model.state_dict()
    if set(loaded) != set(expected):
        raise CheckpointError(f"{path}: parameters {sorted(loaded)} do not match the model's "
                              f"{sorted(expected)} (a file from another model?)")
    for k, v in loaded.items():
        if v.shape != expected[k].shape or v.dtype != expected[k].dtype:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)} {v.dtype}, the model needs "
                                  f"{tuple(expected[k].shape)} {expected[k].dtype}")
    model.load_state_dict(loaded)


def clean_run_dir(run_dir: str | Path) -> None:
    """Remove what interrupted writes left behind (temporary files) before a run goes on."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / checkpoint.CKPT_DIR, run_dir / MODELS_DIR):
        if folder.is_dir():
            files.remove_stale_temporaries(folder)


# --- writing while training -------------------------------------------------------------------------------


class MetricsLog:
    """metrics.jsonl, one line per validation. On resume, lines written after the checkpoint are dropped
    (they will be written again), so the file never has missing or duplicated lines."""

    def __init__(self, run_dir: Path | None, keep_lines: int = 0) -> None:
        self.path = None if run_dir is None else Path(run_dir) / METRICS
        if self.path is None:
            return
        exists = self.path.exists()
        data = files.read_bounded(self.path, MAX_METRICS_BYTES, kind="metrics") if exists else b""
        lines = data.split(b"\n")[:-1]  # complete lines only: a torn last line is dropped
        if len(lines) < keep_lines:
            raise CheckpointError(f"{self.path}: has {len(lines)} lines but the checkpoint recorded "
                                  f"{keep_lines}")
        kept = b"".join(line + b"\n" for line in lines[:keep_lines])
        if kept != data or not exists:
            files.atomic_write_bytes(self.path, kept)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot write: {e.strerror}\ntraining stopped: the last "
                                  f"checkpoint is intact; once the problem is fixed, resume with: "
                                  f"deeptut train --resume {self.path.parent}") from None

    def sync(self) -> None:
        """Make the lines written so far durable (called before a checkpoint that counts them)."""
        if self.path is None:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RunFiles:
    """best.safetensors, models/iter-*.safetensors, the `last` checkpoint and summary.json, written in
    submission order by a BackgroundWriter. What must be captured (parameters, the checkpoint's bytes) is
    serialized on the calling thread at the call, so later training cannot change what is written. A write
    that fails (full disk, read-only directory) surfaces as a CheckpointError at a later call or at
    `flush`; the previous checkpoint stays intact, and the message says which one it is."""

    def __init__(self, run_dir: Path, cfg: Any, metrics: MetricsLog | None = None) -> None:
        self.run_dir, self.cfg, self.metrics = Path(run_dir), cfg, metrics
        self.model_meta = model_metadata(cfg)
        self.last_saved: str | None = None  # description of the newest complete checkpoint
        self._writer = files.BackgroundWriter()

    def _submit(self, task: Callable[[], None]) -> None:
        try:
            self._writer.submit(task)
        except CheckpointError as e:
            raise self._explain(e) from None

    def _explain(self, e: CheckpointError) -> CheckpointError:
        if self.last_saved:
            intact = f"the last checkpoint ({self.last_saved}) is intact; once the problem is fixed, resume with"
        else:
            intact = "no checkpoint was written yet; once the problem is fixed, resume (it starts over) with"
        return CheckpointError(f"{e}\ntraining stopped: {intact}: deeptut train --resume {self.run_dir}")

    def save_best(self, best_params: dict[str, torch.Tensor]) -> None:
        data = tensors.serialize_tensors(best_params, self.model_meta)
        self._submit(lambda: files.atomic_write_bytes(self.run_dir / BEST, data))

    def save_intermediate(self, model: nn.Module, iteration: int) -> None:
        data = tensors.serialize_tensors(model.state_dict(), self.model_meta)
        folder = self.run_dir / MODELS_DIR

        def task() -> None:
            folder.mkdir(exist_ok=True)
            files.atomic_write_bytes(folder / f"iter-{iteration:08d}.safetensors", data)
        self._submit(task)

    def save_params(self, name: str, params: dict[str, torch.Tensor]) -> None:
        """A parameters file at `name` (relative to the run directory, e.g. `pretrain_model_name(0, 3)`)."""
        data = tensors.serialize_tensors(params, self.model_meta)
        path = self.run_dir / name

        def task() -> None:
            path.parent.mkdir(exist_ok=True)
            files.atomic_write_bytes(path, data)
        self._submit(task)

    def save_checkpoint(self, data: bytes, manifest: dict[str, Any], n_validations: int, description: str) -> None:
        """The `last` checkpoint: `data` (safetensors bytes) and `manifest` (JSON, without its file list),
        as taken by the loop (train/state.snapshot); `description` says where it is, for messages."""
        def task() -> None:
            if self.metrics is not None:
                self.metrics.sync()  # the lines this checkpoint counts are on disk before it is
            checkpoint.write_checkpoint(self.run_dir / checkpoint.CKPT_DIR, data, manifest, n_validations)
            self.last_saved = description
        self._submit(task)

    def write_summary(self, summary: dict[str, Any]) -> None:
        text = files.json_bytes(summary)
        self._submit(lambda: files.atomic_write_bytes(self.run_dir / SUMMARY, text))

    def flush(self) -> None:
        try:
            self._writer.flush()
        except CheckpointError as e:
            raise self._explain(e) from None

    def finish(self) -> None:
        """Wait for every write, raise the first failure, stop the writer thread."""
        try:
            self.flush()
        finally:
            self.close()

    def close(self) -> None:
        self._writer.close()


# --- reading what a run saved (deeptut viz, report, compare) -----------------------------------------------


def _num(rec: dict[str, Any], key: str, where: str, optional: bool = False) -> float | None:
    v = rec.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(f"{where}: {key!r} must be a number, got {v!r}")
    return float(v)


@dataclass
class Metrics:
    """metrics.jsonl's lines by kind, each in file order."""

    pretrain: list[dict[str, Any]] = field(default_factory=list)  # layer, epoch, cost (+ jacobian_norm, ...)
    supervised: list[dict[str, Any]] = field(default_factory=list)  # iteration, valid_error, ... (fit's)


def _pretrain_record(rec: dict[str, Any], where: str) -> dict[str, Any]:
    clean = dict(rec)
    for key in ("layer", "epoch", "cost"):
        clean[key] = _num(rec, key, where)
    for key in ("jacobian_norm", "elapsed_s"):
        clean[key] = _num(rec, key, where, optional=True)
    clean["layer"], clean["epoch"] = int(clean["layer"]), int(clean["epoch"])
    if "cost_kind" in rec and not isinstance(rec["cost_kind"], str):
        raise DataError(f"{where}: 'cost_kind' must be a string, got {rec['cost_kind']!r}")
    return clean


def _supervised_record(rec: dict[str, Any], where: str) -> dict[str, Any]:
    clean = dict(rec)
    clean["iteration"] = _num(rec, "iteration", where)
    clean["valid_error"] = _num(rec, "valid_error", where)
    clean["train_cost"] = _num(rec, "train_cost", where, optional=True)
    clean["test_error"] = _num(rec, "test_error", where, optional=True)
    for key in ("epoch", "n_train_batches", "minibatch"):
        if key in rec:
            clean[key] = _num(rec, key, where, optional=True)
    clean["best"] = bool(rec.get("best", False))
    return clean


def read_metrics(path: Path) -> Metrics:
    """metrics.jsonl: the pre-training lines ("phase": "pretrain") and the supervised ones ("phase":
    "finetune", or none: fit's lines, and every line of older runs), apart. A truncated last line (a run
    killed mid-write, or one still running) is ignored; any other bad line is an error naming the file and
    line; a file without a single record is an error."""
    text = files.read_text(path, MAX_METRICS_BYTES, DataError, "metrics")
    lines = text.split("\n")
    out = Metrics()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            if i == len(lines) and not text.endswith("\n"):
                break  # partial last record
            raise DataError(f"{where}: not valid JSON: {e}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object")
        phase = rec.get("phase")
        if phase == "pretrain":
            out.pretrain.append(_pretrain_record(rec, where))
        elif phase in (None, "finetune"):
            out.supervised.append(_supervised_record(rec, where))
        else:
            raise DataError(f"{where}: unknown phase {phase!r} (pretrain, finetune, or none)")
    if not out.pretrain and not out.supervised:
        raise DataError(f"{path}: no validation records (nor pre-training records)")
    return out


def read_pretrain_lines(run_dir: Path) -> list[dict[str, Any]]:
    """The pre-training lines at the head of metrics.jsonl, complete lines only, as written (no file: []).
    What resuming an sda / dbn needs (how many epochs pre-training recorded, its time, its last cost); a
    line that is not JSON is a CheckpointError: the run's own file is damaged."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for raw in files.read_bounded(path, MAX_METRICS_BYTES, kind="metrics").split(b"\n")[:-1]:
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"{path}: line {len(out) + 1} is not valid JSON") from None
        if not isinstance(rec, dict) or rec.get("phase") != "pretrain":
            break
        out.append(rec)
    return out


class WrongModelError(DeeptutError, ValueError):
    """A command asked of a run whose model family cannot do it (sampling a dA run)."""


def require(params: dict[str, np.ndarray], path: Path, key: str, ndim: int) -> np.ndarray:
    """params[key], which must have `ndim` dimensions (CheckpointError naming the file otherwise)."""
    if key not in params:
        raise CheckpointError(f"{path}: no parameter {key!r} (has {', '.join(sorted(params)) or 'none'})")
    a = params[key]
    if a.ndim != ndim:
        raise CheckpointError(f"{path}: {key} has shape {tuple(a.shape)}, expected {ndim} dimensions")
    return a


@dataclass
class Run:
    """The JSON records of one run directory, for reading only (parameters are loaded on demand). JSON
    records that are missing or corrupt raise DataError; model files CheckpointError."""

    path: Path
    meta: dict[str, Any]  # config.json as a whole
    config: dict[str, Any]  # config.json["config"]

    @classmethod
    def open(cls, run_dir: str | Path) -> "Run":
        path = Path(run_dir)
        if not path.is_dir():
            raise DataError(f"{path}: not a run directory")
        meta = files.read_json(path / CONFIG, DataError, want_object=True)
        config = meta.get("config", meta)
        if not isinstance(config, dict):
            raise DataError(f"{path / CONFIG}: 'config' must be an object")
        return cls(path, meta, config)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def metrics(self) -> Metrics:
        return read_metrics(self.path / METRICS)

    def has_summary(self) -> bool:
        return (self.path / SUMMARY).exists()

    def summary(self) -> dict[str, Any]:
        return files.read_json(self.path / SUMMARY, DataError, want_object=True)

    def model_json(self) -> dict[str, Any]:
        mj = files.read_json(self.path / MODEL_JSON, CheckpointError, want_object=True)
        if mj.get("model") not in FAMILIES:
            raise CheckpointError(f"{self.path / MODEL_JSON}: unknown model {mj.get('model')!r}")
        return mj

    @property
    def model(self) -> str:
        """The run's family: config.json's "model", else model.json's (CheckpointError if unknown)."""
        m = self.config.get("model")
        if m in FAMILIES:
            return m
        return self.model_json()["model"]

    def load_module(self, name: str = BEST) -> nn.Module:
        return load_module(self.path, name)

    def require_trait(self, trait: str, what: str) -> nn.Module:
        """The run's module if its family's section sets the ClassVar `trait` ("samples": an RBM that
        samples), else WrongModelError naming the run, its model and the families that would do."""
        have = self.model
        if not getattr(FAMILIES[have], trait, False):
            fit = [n for n, c in FAMILIES.items() if getattr(c, trait, False)]
            hint = ""
            if trait == "samples" and FAMILIES[have].pretrains:
                hint = ("; a pre-trained stack does not sample here (DBN.py's generative model, the top RBM "
                        "plus directed layers below, is not implemented): train the rbm preset")
            raise WrongModelError(f"{self.path}: {what} needs an {' or '.join(fit) or 'other family'} run; "
                                  f"this is a {have} run{hint}")
        return self.load_module()

    @property
    def best_path(self) -> Path:
        return self.path / BEST

    def best_params(self) -> dict[str, np.ndarray]:
        return tensors.load_arrays(self.best_path)

    def pretrain_models(self, layer: int | None = None) -> list[tuple[int, int, Path]]:
        """(layer, epoch, path) of the models/pretrain-layer*-epoch*.safetensors there are (only `layer`'s
        when given), sorted. sda / dbn keep some epochs only: nothing here assumes every epoch."""
        d = self.path / MODELS_DIR
        if not d.is_dir():
            return []
        found = []
        for p in d.iterdir():
            m = PRETRAIN_RE.match(p.name)
            if m and p.is_file() and (layer is None or int(m.group(1)) == layer):
                found.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(found)

    def intermediate_models(self) -> list[tuple[int, Path]]:
        """(iteration, path) of the intermediate models/iter-<iteration>.safetensors (every `save_every`
        validations), by iteration; not the resumable checkpoints/ (store/checkpoint.py)."""
        d = self.path / MODELS_DIR
        if not d.is_dir():
            return []
        found = []
        for p in d.iterdir():
            m = ITER_RE.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)
