"""`compare`: the tutorial's model selection over several runs. A table of each run's best validation
error and the test error of that model, and their validation curves overlaid. As the tutorial says,
choose on the validation error; the test error of the chosen run is the estimate to report."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from deeptut.errors import DataError
from deeptut.store import rundir
from deeptut.models.families import FAMILIES
from deeptut.store.rundir import Run
from deeptut.viz.plots import Figure, _finite, _save, mpl_text
from deeptut.viz.text import fmt

COLUMNS = ("run", "model", "preset", "seed", "best valid %", "test %", "time s", "epochs")


def _row(run: Run) -> dict[str, Any]:
    s = run.summary()
    path = run.path / rundir.SUMMARY

    def num(key: str) -> float | None:
        v = s.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(f"{path}: {key!r} must be a number, got {v!r}")
        return float(v)

    valid = num("best_validation_error")
    if valid is None:
        raise DataError(f"{path}: no 'best_validation_error'")
    epochs = num("epochs")
    return {
        "run": run.name, "model": str(run.config.get("model", "?")), "preset": str(run.config.get("preset", "?")),
        "seed": run.config.get("seed", run.meta.get("seed", "?")), "best valid %": valid,
        "test %": num("test_error"), "time s": num("train_seconds"),
        "epochs": int(epochs) if epochs is not None else None,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    digits = {"best valid %": 6, "test %": 6, "time s": 1}  # %f, as the tutorials print them
    cells = [[fmt(r[c], digits.get(c, 2)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    left = {"run", "model", "preset"}

    def line(vals: list[str]) -> str:
        return "  ".join(v.ljust(w) if c in left else v.rjust(w) for c, v, w in zip(COLUMNS, vals, widths)).rstrip()

    out = [line(list(COLUMNS)), line(["-" * w for w in widths])] + [line(c) for c in cells]
    best = min(range(len(rows)), key=lambda i: rows[i]["best valid %"])
    r = rows[best]
    out.append("")
    out.append(f"selected on validation: {r['run']} ({fmt(r['best valid %'], 6)} % validation error, "
               f"{fmt(r['test %'], 6)} % test error)")
    return "\n".join(out)


def plot_validation_curves(runs: list[Run], path: Path) -> Path:
    """Validation error (log scale) against epochs (iteration / n_train_batches), one line per run."""
    curves = [(run, run.metrics().supervised) for run in runs]  # pre-training lines left out
    by_epoch = all(rec.get("n_train_batches") for _, m in curves for rec in m)
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for run, m in curves:
        x = np.array([r["iteration"] / r["n_train_batches"] if by_epoch else r["iteration"] for r in m])
        y = _finite([r["valid_error"] for r in m])
        y[y <= 0] = np.nan  # not drawable on the log scale
        ok = np.isfinite(y)
        best = f" ({np.nanmin(y):.2f} %)" if ok.any() else ""
        (line,) = ax.plot(x, y, lw=1.4, label=mpl_text(run.name) + best)
        if ok.any():
            b = int(np.nanargmin(y))
            ax.plot([x[b]], [y[b]], "*", ms=10, color=line.get_color())
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epoch" if by_epoch else "iteration")
    ax.set_ylabel("validation error (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("validation error of each run (star: best)", fontsize=10)
    return _save(fig, path)


COMPARISONS = "comparisons"  # the default folder of compare's pictures, beside the runs folder (never in it)


def default_out_dir(runs: list[Run]) -> Path:
    """Beside the folder holding the runs, never among them: runs/a, runs/b -> comparisons/ (a sibling of
    runs/), so that `deeptut compare runs/*` finds only runs there the next time."""
    parents = [os.path.abspath(r.path.parent) for r in runs]  # runs/a -> /cwd/runs ("runs/.." is not "")
    parent = Path(os.path.commonpath(parents))
    here = Path(os.path.relpath(parent.parent)) if all(not r.path.is_absolute() for r in runs) else parent.parent
    return here / COMPARISONS


def compare(run_dirs: Iterable[str | Path], out_dir: str | Path | None = None) -> tuple[str, Path]:
    """(text table, path of the picture). With out_dir: out_dir/compare.png; by default a new
    comparisons/compare-<stamp>.png beside the runs' folder (`default_out_dir`)."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise DataError("compare needs at least one run directory")
    runs = [Run.open(d) for d in dirs]
    for r in runs:
        if not FAMILIES[r.model].classifier:
            raise DataError(f"{r.path}: a {r.model} run has no validation error to compare (compare compares "
                            f"classifiers: every family but {', '.join(n for n, c in FAMILIES.items() if not c.classifier)})")
    table = format_table([_row(r) for r in runs])
    if out_dir is None:
        folder = default_out_dir(runs)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        png = next(p for i in range(1000) if not (p := folder / (f"compare-{stamp}" + (f"-{i}" if i else "")
                                                                  + ".png")).exists())
    else:
        png = Path(out_dir) / "compare.png"
    png = plot_validation_curves(runs, png)
    return table, png
