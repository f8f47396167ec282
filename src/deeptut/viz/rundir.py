"""Read what a training run saved, and only that. Every missing or corrupt file raises a DeeptutError
subclass naming the file: DataError for the JSON records, CheckpointError for the model files."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeptut.errors import CheckpointError, DataError, DeeptutError

CHECKPOINT_RE = re.compile(r"^iter-(\d{8,})\.safetensors$")


def _read_text(path: Path, err: type[DeeptutError]) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise err(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise err(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None


def read_json(path: Path, err: type[DeeptutError] = DataError) -> dict[str, Any]:
    text = _read_text(path, err)
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise err(f"{path}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise err(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _num(rec: dict[str, Any], key: str, where: str, optional: bool = False) -> float | None:
    v = rec.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(f"{where}: {key!r} must be a number, got {v!r}")
    return float(v)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The validation records of metrics.jsonl. A truncated last line (a run killed mid-write, or one
    still running) is ignored; any other bad line is an error naming the file and line."""
    text = _read_text(path, DataError)
    lines = text.split("\n")
    out: list[dict[str, Any]] = []
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
        clean = dict(rec)
        clean["iteration"] = _num(rec, "iteration", where)
        clean["valid_error"] = _num(rec, "valid_error", where)
        clean["train_cost"] = _num(rec, "train_cost", where, optional=True)
        clean["test_error"] = _num(rec, "test_error", where, optional=True)
        for key in ("epoch", "n_train_batches", "minibatch"):
            if key in rec:
                clean[key] = _num(rec, key, where, optional=True)
        clean["best"] = bool(rec.get("best", False))
        out.append(clean)
    if not out:
        raise DataError(f"{path}: no validation records")
    return out


@dataclass
class Run:
    """The JSON records of one run directory (parameters are loaded on demand)."""

    path: Path
    meta: dict[str, Any]  # config.json as a whole
    config: dict[str, Any]  # config.json["config"]

    @classmethod
    def open(cls, run_dir: str | Path) -> "Run":
        path = Path(run_dir)
        if not path.is_dir():
            raise DataError(f"{path}: not a run directory")
        meta = read_json(path / "config.json")
        config = meta.get("config", meta)
        if not isinstance(config, dict):
            raise DataError(f"{path / 'config.json'}: 'config' must be an object")
        return cls(path, meta, config)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / "metrics.jsonl")

    def summary(self) -> dict[str, Any]:
        return read_json(self.path / "summary.json")

    def model_json(self) -> dict[str, Any]:
        mj = read_json(self.path / "model.json", CheckpointError)
        if mj.get("model") not in ("logistic", "mlp", "lenet"):
            raise CheckpointError(f"{self.path / 'model.json'}: unknown model {mj.get('model')!r}")
        return mj

    @property
    def model(self) -> str:
        m = self.config.get("model")
        if m in ("logistic", "mlp", "lenet"):
            return m
        return self.model_json()["model"]

    def best_params(self) -> dict[str, np.ndarray]:
        return load_params(self.path / "best.safetensors")

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Intermediate models/iter-<iteration>.safetensors, by iteration."""
        d = self.path / "models"
        if not d.is_dir():
            return []
        found = []
        for p in d.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)


def load_params(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file as float numpy arrays; missing, corrupt or non-finite -> CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        from safetensors.numpy import load_file

        params = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types, plus OSError and ValueError
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}


def require(params: dict[str, np.ndarray], path: Path, key: str, ndim: int) -> np.ndarray:
    if key not in params:
        raise CheckpointError(f"{path}: no parameter {key!r} (has {', '.join(sorted(params)) or 'none'})")
    a = params[key]
    if a.ndim != ndim:
        raise CheckpointError(f"{path}: {key} has shape {tuple(a.shape)}, expected {ndim} dimensions")
    return a


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)
