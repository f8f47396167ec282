"""Tracking: a run's record as TensorBoard event files (`deeptut train --logger tensorboard`,
`deeptut.train(..., logger="tensorboard")`; the optional extra `tensorboard`).

    RUN_DIR/tensorboard/events.out.tfevents.*   `tensorboard --logdir runs/` shows every run

The scalars are metrics.jsonl's, at the step metrics.jsonl records: per validation `train_cost`,
`valid_error` and `test_error` (%, on a new best) and `learning_rate` at the iteration (minibatch updates
done); per pre-training epoch `pretrain/layer<L>/cost` (and `jacobian_norm` for a cA) at the epoch. The
images: the selected model's filters (best.safetensors), as `deeptut viz` tiles them. They are written from
the run's saved files when the run ends or is interrupted, so they are exactly what metrics.jsonl holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deeptut.errors import DeeptutError
from deeptut.store import rundir

LOGGERS = ("none", "tensorboard")
TB_DIR = "tensorboard"
SCALARS = ("train_cost", "valid_error", "test_error", "learning_rate")


def _writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DeeptutError("--logger tensorboard needs the tensorboard package: pip install "
                           "'deeptut[tensorboard]'") from None
    return SummaryWriter(log_dir=str(log_dir))


def write_tensorboard(run_dir: str | Path) -> Path:
    """RUN_DIR/tensorboard/ from the run's metrics.jsonl and best.safetensors (an earlier one replaced)."""
    import shutil

    import numpy as np

    run = rundir.Run.open(run_dir)
    out = run.path / TB_DIR
    shutil.rmtree(out, ignore_errors=True)
    metrics = run.metrics()
    w = _writer(out)
    try:
        for r in metrics.supervised:
            step = int(r["iteration"])
            for key in SCALARS:
                v = r.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    w.add_scalar(key, float(v), step)
        for r in metrics.pretrain:
            for key in ("cost", "jacobian_norm"):
                v = r.get(key)
                if isinstance(v, (int, float)):
                    w.add_scalar(f"pretrain/layer{r['layer']}/{key}", float(v), int(r["epoch"]))
        if run.best_path.is_file():
            try:
                from deeptut.viz import plots
            except ImportError:  # no viz extra: scalars only
                plots = None
            if plots is not None:
                try:
                    sets = plots.filter_sets(run.model, run.best_params(), run.best_path)
                except DeeptutError:  # a family without filter pictures (the later chapters)
                    sets = []
                step = int(metrics.supervised[-1]["iteration"]) if metrics.supervised else 0
                for name, _title, rows, img_shape, tile_shape in sets:
                    tiles = plots.tiles_for(rows, img_shape, tile_shape)  # uint8 [H, W]
                    w.add_image(name, np.ascontiguousarray(tiles), step, dataformats="HW")
    finally:
        w.close()
    return out
