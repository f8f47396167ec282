"""McNemar tables for `deeptut compare`: each run's best model (store.rundir.load_model, via viz.predict) predicts
every example of the test (or validation) split of the runs' common dataset; the per-example correctness
of each pair goes into deeptut.stats' exact test (Holm-corrected for more than one pair)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from deeptut import stats
from deeptut.errors import DataError
from deeptut.viz.predict import predict, test_split
from deeptut.store.rundir import Run

SPLITS = ("test", "valid")


def correctness(runs: list[Run], data_dir: str | Path | None = None, split: str = "test") -> list[np.ndarray]:
    """bool [n] per run: its best model classifies example i of `split` correctly (every example: 'full'
    evaluation, whatever evaluation the run trained with)."""
    if split not in SPLITS:
        raise DataError(f"split must be test or valid, got {split!r}")
    names = {str(r.config.get("dataset", "mnist")) for r in runs}
    if len(names) != 1:
        raise DataError(f"McNemar compares models on the same examples; these runs used datasets {sorted(names)}")
    from deeptut.data.datasets import load_dataset

    data = load_dataset(names.pop(), data_dir)
    part = getattr(data, split)
    x, y = test_split(runs[0], (part.x, part.y))  # flattened float32 and int64, as predict needs
    return [predict(r, x) == y for r in runs]


def mcnemar_table(run_dirs: Iterable[str | Path], data_dir: Any = None, split: str = "test") -> str:
    runs = [Run.open(d) for d in run_dirs]
    if len(runs) < 2:
        raise DataError("McNemar's test needs at least two runs")
    correct = correctness(runs, data_dir, split)
    return stats.format_pairwise(stats.pairwise_mcnemar([r.name for r in runs], correct), split)
