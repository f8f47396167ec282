"""`deeptut report SWEEP_DIR`: the summary table again (from the recorded results) and sweep.png, the
validation error of every finished trial against each swept field (configuration means joined)."""

from __future__ import annotations

import math
from pathlib import Path

from deeptut.sweep.run import open_sweep, read_ledger, write_csv, write_summary


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_sweep(sweep_dir: Path, expansion: dict, ledger: dict[str, dict]) -> Path | None:
    from deeptut.viz.plots import Figure, _save

    swept = expansion["swept"]
    points = [(t, ledger[t["id"]]) for t in expansion["trials"]
              if t["id"] in ledger and ledger[t["id"]].get("best_validation_error") is not None
              and math.isfinite(ledger[t["id"]]["best_validation_error"])]
    if not points:
        return None
    fields = swept or ["seed"]
    fig = Figure(figsize=(4.2 * len(fields), 3.6), layout="constrained")
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    for ax, f in zip(axes, fields):
        xs = [t["overrides"].get(f) if f != "seed" else t["seed"] for t, _ in points]
        ys = [r["best_validation_error"] for _, r in points]
        if _numeric(xs):
            ax.plot(xs, ys, "o", alpha=0.6, ms=4, label="trials")
            means: dict = {}
            for x, y in zip(xs, ys):
                means.setdefault(x, []).append(y)
            mx = sorted(means)
            ax.plot(mx, [sum(means[x]) / len(means[x]) for x in mx], "-", lw=1, label="mean over seeds")
            if min(xs) > 0 and max(xs) / min(xs) >= 20:  # log-uniform ranges, learning rates
                ax.set_xscale("log")
        else:  # strings, lists: categories
            cats = sorted({str(x) for x in xs})
            ax.plot([cats.index(str(x)) for x in xs], ys, "o", alpha=0.6, ms=4)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=8)
        ax.set_xlabel(f)
        ax.set_ylabel("best validation error (%)")
        ax.grid(alpha=0.3)
        if _numeric(xs):
            ax.legend(fontsize=7)
    fig.suptitle(f"sweep {expansion['name']}: validation error against each swept field", fontsize=10)
    return _save(fig, sweep_dir / "sweep.png")


def write_sweep_report(sweep_dir: str | Path) -> tuple[str, Path | None]:
    """(summary text, path of sweep.png or None when no trial has finished)."""
    d = Path(sweep_dir)
    _spec, expansion = open_sweep(d)
    ledger = read_ledger(d)
    write_csv(d, expansion, ledger, {})
    text = write_summary(d, expansion, ledger)
    return text, plot_sweep(d, expansion, ledger)
