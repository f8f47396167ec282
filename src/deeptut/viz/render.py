"""`render_all`: every picture of one run directory, into RUN_DIR/plots/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deeptut.models.families import FAMILIES
from deeptut.store import rundir
from deeptut.store.rundir import PRETRAINED, Metrics, Run
import deeptut.viz.plots as plots  # names the submodule, not the viz package (which imports this module)
import deeptut.viz.pretrain_plots as pretrain_plots
from deeptut.viz.predict import confusion_matrix, predict, test_split

ERRORS_SHOWN = 40


def family_pictures(model: str) -> Any:
    """The family's own picture function (its section's `pictures`, "module:function"), or None for the image
    families drawn below. `fn(run, out_dir, data) -> list[Path]`."""
    from deeptut.registry import load_target

    target = getattr(FAMILIES.get(model), "pictures", None)
    return None if target is None else load_target(target)


def _metrics(run: Run) -> Metrics:
    """metrics.jsonl's lines; a family that draws its own pictures may write none (hmc: no validations)."""
    if family_pictures(run.model) is not None and not (run.path / rundir.METRICS).exists():
        return Metrics()
    return run.metrics()


def planned_pictures(run: Run) -> list[str]:
    """The names render_all writes for this run, from the files it has (what `report` checks for staleness)."""
    model = run.model
    metrics = _metrics(run)
    names = []
    if family_pictures(model) is not None:  # a family that draws its own (the later chapters)
        return ["learning_curves.png"] if metrics.supervised else []
    if metrics.supervised:
        names.append("learning_curves.png")
    if metrics.pretrain:
        names.append("pretrain_costs.png")
    style = plots.first_layer(model, run.path)[0]
    names += ["filters_layer0.png", "filters_layer1.png"] if style == "kernels" else ["filters.png"]
    if FAMILIES[model].pretrains and (run.path / PRETRAINED).is_file():
        names.append("filters_pretrained.png")
    epochs = run.pretrain_models(layer=0)
    if FAMILIES[model].samples:  # rbm.py draws the filters after every epoch
        names += [f"filters_at_epoch_{e}.png" for _l, e, _p in epochs]
    if epochs:
        names += ["pretrain_filters_evolution.png", "pretrain_filters_evolution.gif"]
    if FAMILIES[model].classifier:
        names += ["confusion.png", "confusion.json", "errors.png"]
        if run.intermediate_models():
            names += ["filters_evolution.png", "filters_evolution.gif"]
    return names


def picture_sources(run: Run) -> list[Path]:
    """The files the pictures are drawn from (a newer one makes plots/ stale)."""
    sources = [run.path / n for n in (rundir.METRICS, rundir.BEST, rundir.CONFIG, PRETRAINED)]
    sources += [p for _, p in run.intermediate_models()] + [p for _l, _e, p in run.pretrain_models()]
    return [p for p in sources if p.exists()]


def render_all(run_dir: str | Path, data: Any = None) -> list[Path]:
    """Write the run's pictures into RUN_DIR/plots/ and return their paths.

    Supervised runs and the fine-tuning of sda / dbn: learning_curves.png (fine-tuning lines only),
    confusion.png + confusion.json and errors.png (the best model on the full test set), and, when the run
    kept intermediate models (models/iter-*.safetensors), filters_evolution.png + .gif.
    Filters: filters.png (logistic, mlp; da, ca, rbm, sda, dbn: the first layer of best.safetensors as the
    chapters draw it) or filters_layer0.png + filters_layer1.png (lenet); sda / dbn also
    filters_pretrained.png (pretrained.safetensors).
    Pre-training (da, ca, rbm, sda, dbn): pretrain_costs.png (rbm: with the published PL curve),
    pretrain_filters_evolution.png + .gif (layer 0 after each epoch), rbm: filters_at_epoch_E.png.
    `data`: None (the run's dataset at its default location), a data directory, a Splits object,
    or an (x_test, y_test) pair; not read for da, ca, rbm."""
    run = Run.open(run_dir)
    model = run.model
    metrics = _metrics(run)
    out = run.path / "plots"
    written = []
    if metrics.supervised:
        written.append(plots.plot_learning_curves(run, out, recs=metrics.supervised))
    own = family_pictures(model)
    if own is not None:  # the family draws the rest itself (HMC traces, a piano-roll, ...)
        return written + list(own(run, out, data))
    if metrics.pretrain:
        written.append(pretrain_plots.plot_pretrain_costs(run, out, metrics.pretrain, model))
    written += plots.plot_filters(run, out, model)
    if FAMILIES[model].pretrains:
        written += pretrain_plots.plot_pretrained_filters(run, out, model)
    if FAMILIES[model].samples:
        written += pretrain_plots.plot_epoch_filters(run, out, model)
    written += pretrain_plots.plot_pretrain_evolution(run, out, model)
    if not FAMILIES[model].classifier:  # no classifier: nothing to predict
        return written
    x, y = test_split(run, data)
    pred = predict(run, x)
    cm = confusion_matrix(y, pred, int(run.config.get("n_out", 10) or 10))
    written.append(plots.plot_confusion(cm, out))
    wrong = plots.first_misclassified(y, pred, ERRORS_SHOWN)
    (out / "confusion.json").write_text(json.dumps({
        "n": int(len(y)), "errors": int((y != pred).sum()), "error_percent": 100.0 * float((y != pred).mean()),
        "confusion": cm.tolist(), "shown_misclassified": [int(i) for i in wrong],
    }, indent=1) + "\n")
    written.append(plots.plot_errors(x, y, pred, out, limit=ERRORS_SHOWN))
    written += plots.plot_evolution(run, out)
    return written
