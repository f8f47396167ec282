"""The pictures of a logistic-cg run (logistic_cg.py): logistic regression's own, since the model is the
same LogisticRegression: the class templates (filters.png), the confusion matrix (confusion.png, .json) and
the misclassified test digits (errors.png). The learning curves (one point per CG iteration) are drawn by
viz/render.py before this is called."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deeptut.store.rundir import Run
import deeptut.viz.plots as plots
from deeptut.viz.predict import confusion_matrix, predict, test_split

ERRORS_SHOWN = 40


def draw(run: Run, out_dir: Path, data: Any = None) -> list[Path]:
    written = plots.plot_filters(run, out_dir, "logistic")  # the same parameters (W, b) as logistic's
    x, y = test_split(run, data)
    pred = predict(run, x)
    cm = confusion_matrix(y, pred, int(run.config.get("n_out", 10) or 10))
    written.append(plots.plot_confusion(cm, out_dir))
    wrong = plots.first_misclassified(y, pred, ERRORS_SHOWN)
    (out_dir / "confusion.json").write_text(json.dumps({
        "n": int(len(y)), "errors": int((y != pred).sum()), "error_percent": 100.0 * float((y != pred).mean()),
        "confusion": cm.tolist(), "shown_misclassified": [int(i) for i in wrong],
    }, indent=1) + "\n")
    written.append(out_dir / "confusion.json")
    written.append(plots.plot_errors(x, y, pred, out_dir, limit=ERRORS_SHOWN))
    return written
