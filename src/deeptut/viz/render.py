"""`render_all`: every picture of one run directory, into RUN_DIR/plots/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import deeptut.viz.plots as plots  # names the submodule, not the viz package (which imports this module)
from deeptut.viz.predict import confusion_matrix, predict, test_split
from deeptut.store.rundir import Run

ERRORS_SHOWN = 40


def render_all(run_dir: str | Path, data: Any = None) -> list[Path]:
    """Write the run's pictures into RUN_DIR/plots/ and return their paths.

    learning_curves.png, filters.png (logistic, mlp) or filters_layer0.png + filters_layer1.png (lenet),
    confusion.png + confusion.json and errors.png (the best model on the full test set), and, when the
    run kept intermediate models (models/iter-*.safetensors), filters_evolution.png + .gif.
    `data`: None (the run's dataset at its default location), a data directory, a Splits object,
    or an (x_test, y_test) pair."""
    run = Run.open(run_dir)
    out = run.path / "plots"
    written = [plots.plot_learning_curves(run, out)]
    written += plots.plot_filters(run, out)
    x, y = test_split(run, data)
    pred = predict(run, x)
    cm = confusion_matrix(y, pred, int(run.config.get("n_out", 10) or 10))
    written.append(plots.plot_confusion(cm, out))
    wrong = plots.misclassified(y, pred, ERRORS_SHOWN)
    (out / "confusion.json").write_text(json.dumps({
        "n": int(len(y)), "errors": int((y != pred).sum()), "error_percent": 100.0 * float((y != pred).mean()),
        "confusion": cm.tolist(), "shown_misclassified": [int(i) for i in wrong],
    }, indent=1) + "\n")
    written.append(plots.plot_errors(x, y, pred, out, limit=ERRORS_SHOWN))
    written += plots.plot_evolution(run, out)
    return written
