"""The state of a training run between two minibatches, and the `last` checkpoint that holds it.

A checkpoint is enough to resume exactly: model and best parameters, optimizer buffers, RNG states (torch,
numpy, python), position in the data order, early-stopping state, best scores, the stop decision, the
number of metrics lines written, and the thread count. Tensors go into a safetensors file, everything else
into a JSON manifest that also lists the tensors file's SHA-256. Both are written atomically, the tensors
file first under a new name, so a crash at any point leaves the previous checkpoint whole and loadable.
Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deeptut import checkpoints
from deeptut.errors import CheckpointError

CHECKPOINT_FORMAT = 1
CKPT_DIR = "checkpoints"
MANIFEST = "last.json"


@dataclass
class LoopState:
    epoch: int = 0  # epochs started
    next_minibatch: int = 0  # index of the next minibatch in the current epoch (0: epoch complete)
    done: bool = False  # the stop decision was taken
    finished: bool = False  # the run wrote its summary
    best_validation_loss: float = math.inf
    best_iter: int = -1  # 0-based iteration of the best validation
    test_score: float = math.nan  # test error of the best model (fraction)
    n_validations: int = 0  # = lines in metrics.jsonl
    cost_sum: Any = 0.0  # training cost summed since the last validation (float or device tensor)
    cost_count: int = 0
    elapsed_s: float = 0.0
    fault: str | None = None
    best_params: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def scalars(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("best_params")
        d["cost_sum"] = float(self.cost_sum)
        return d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def non_finite(model: nn.Module, train_cost: float, it: int) -> str | None:
    if not math.isfinite(train_cost):
        return f"the mean training cost became {train_cost} by iteration {it + 1}"
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return f"parameter {name} holds NaN or Inf at iteration {it + 1}"
    return None


class MetricsLog:
    """metrics.jsonl, one line per validation. On resume, lines written after the checkpoint are dropped
    (they will be written again), so the file never has missing or duplicated lines."""

    def __init__(self, run_dir: Path | None, keep_lines: int = 0) -> None:
        self.path = None if run_dir is None else run_dir / "metrics.jsonl"
        if self.path is None:
            return
        lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        if len(lines) < keep_lines:
            raise CheckpointError(f"{self.path}: has {len(lines)} lines but the checkpoint recorded "
                                  f"{keep_lines}")
        checkpoints.atomic_write_bytes(self.path, "".join(lines[:keep_lines]).encode())

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def save_intermediate(run_dir: Path, model: nn.Module, iteration: int) -> None:
    (run_dir / "models").mkdir(exist_ok=True)
    checkpoints.save_tensors(run_dir / "models" / f"iter-{iteration:08d}.safetensors", model.state_dict())


def _rng_tensors() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    tensors = {"rng/torch": torch.get_rng_state(),
               "rng/numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
               "rng/python": torch.tensor(py_state[1], dtype=torch.int64)}
    meta = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], py_state[2]]}
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    name, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, tensors["rng/numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, gauss_next = meta["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng/python"].tolist()), gauss_next))
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])


def _flatten(prefix: str, obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Split a nested state dict into tensors (keyed by path) and a JSON skeleton that refers to them."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[type(k).__name__, k, _flatten(f"{prefix}/{k}", v, tensors)]
                             for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(f"{prefix}/{i}", v, tensors) for i, v in enumerate(obj)]
    return obj


def _unflatten(skel: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skel, dict) and "__tensor__" in skel:
        return tensors[skel["__tensor__"]]
    if isinstance(skel, dict) and "__dict__" in skel:
        return {(int(k) if t == "int" else k): _unflatten(v, tensors) for t, k, v in skel["__dict__"]}
    if isinstance(skel, list):
        return [_unflatten(v, tensors) for v in skel]
    return skel


def save_last(run_dir: Path, model: nn.Module, step: Any, stopper: Any, s: LoopState,
              best_params: dict[str, torch.Tensor]) -> None:
    ckpt_dir = run_dir / CKPT_DIR
    ckpt_dir.mkdir(exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v
    for k, v in best_params.items():
        tensors[f"best/{k}"] = v
    optimizer = _flatten("optimizer", step.state_dict(), tensors)
    rng_tensors, rng_meta = _rng_tensors()
    tensors.update(rng_tensors)
    name = f"ckpt-{s.n_validations:08d}{'-final' if s.finished else ''}.safetensors"
    sha = checkpoints.save_tensors(ckpt_dir / name, tensors)
    manifest = {"format": CHECKPOINT_FORMAT, "files": {name: sha}, "loop": s.scalars(),
                "early_stopping": stopper.state_dict(), "optimizer": optimizer, "rng": rng_meta,
                "threads": torch.get_num_threads()}
    checkpoints.atomic_write_json(ckpt_dir / MANIFEST, manifest)
    for old in ckpt_dir.glob("ckpt-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_last(run_dir: Path, model: nn.Module, step: Any, stopper: Any) -> LoopState:
    ckpt_dir = Path(run_dir) / CKPT_DIR
    manifest_path = ckpt_dir / MANIFEST
    if not manifest_path.exists():
        raise CheckpointError(f"{manifest_path}: no checkpoint to resume from")
    m = checkpoints.read_json(manifest_path)
    try:
        if m.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{manifest_path}: checkpoint format {m.get('format')!r}, this deeptut "
                                  f"reads {CHECKPOINT_FORMAT}")
        (name, sha), = m["files"].items()
        if "/" in name or name.startswith("."):
            raise CheckpointError(f"{manifest_path}: bad file name {name!r}")
        tensors = checkpoints.load_tensors(ckpt_dir / name, expected_sha256=sha)
        state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        best = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
        expected = model.state_dict()
        for label, params in (("model", state), ("best", best)):
            if set(params) != set(expected) or any(params[k].shape != expected[k].shape for k in params):
                raise CheckpointError(f"{ckpt_dir / name}: {label} parameters do not match the model "
                                      f"(a checkpoint of another model?)")
        model.load_state_dict(state)
        step.load_state_dict(_unflatten(m["optimizer"], tensors))
        stopper.load_state_dict(m["early_stopping"])
        _restore_rng(tensors, m["rng"])
        if m.get("threads") and m["threads"] != torch.get_num_threads():
            torch.set_num_threads(int(m["threads"]))
        s = LoopState(**m["loop"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"{manifest_path}: malformed checkpoint: {type(e).__name__}: {e}") from None
    s.best_params = best
    return s
