"""Run directories: `runs/<preset>-<timestamp>/` with config.json (resolved config + provenance),
metrics.jsonl, best.safetensors + model.json (enough to rebuild the model), summary.json."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import deeptut
from deeptut import checkpoints
from deeptut.accel import thread_counts
from deeptut.config import TrainConfig, from_dict
from deeptut.errors import CheckpointError, ConfigError
from deeptut.models import build_model

MODEL_FORMAT = 1  # bump when the meaning of saved parameters changes


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


def provenance(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "versions": {"deeptut": deeptut.__version__, "python": platform.python_version(),
                     "torch": torch.__version__, "numpy": np.__version__},
        "git_commit": git_commit(),
        "seed": cfg.seed,
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "threads": thread_counts(),
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def model_metadata(cfg: TrainConfig) -> dict[str, str]:
    """The safetensors metadata of every saved model file."""
    return {"model": cfg.model, "format": str(MODEL_FORMAT)}


def save_model(run_dir: Path, model: nn.Module, cfg: TrainConfig, name: str = "best.safetensors") -> None:
    """Parameters only (safetensors) plus model.json, which is enough to rebuild the model."""
    checkpoints.save_tensors(run_dir / name, dict(model.state_dict()),
                             metadata=model_metadata(cfg))
    model_json = run_dir / "model.json"
    if not model_json.exists():
        checkpoints.atomic_write_json(model_json, {**cfg.model_args(), "format": MODEL_FORMAT})


def load_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    meta = checkpoints.read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: no 'config' object")
    try:
        return from_dict(meta["config"], str(path))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_model(run_dir: str | Path, name: str = "best.safetensors") -> tuple[nn.Module, TrainConfig]:
    """Rebuild the model a run saved, from its files only."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    cfg = load_config(run_dir)
    args = checkpoints.read_json(run_dir / "model.json")
    if not isinstance(args, dict) or args.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{run_dir / 'model.json'}: unsupported model format "
                              f"{args.get('format') if isinstance(args, dict) else args!r} "
                              f"(this deeptut reads format {MODEL_FORMAT})")
    try:
        model = build_model(args)
    except (ConfigError, TypeError, KeyError) as e:
        raise CheckpointError(f"{run_dir / 'model.json'}: cannot build the model: {e}") from None
    load_parameters(model, run_dir / name)
    model.eval()
    return model, cfg


def load_parameters(model: nn.Module, path: Path) -> None:
    tensors = checkpoints.load_tensors(path)
    expected = model.state_dict()
    if set(tensors) != set(expected):
        raise CheckpointError(f"{path}: parameters {sorted(tensors)} do not match the model's "
                              f"{sorted(expected)} (a file from another model?)")
    for k, v in tensors.items():
        if v.shape != expected[k].shape or v.dtype != expected[k].dtype:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)} {v.dtype}, the model needs "
                                  f"{tuple(expected[k].shape)} {expected[k].dtype}")
    model.load_state_dict(tensors)
