"""`write_report`: one self-contained HTML page per run (images inlined as data: URIs, no script, no
network: a Content-Security-Policy forbids every fetch). All text read from files is escaped."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import deeptut
import deeptut.viz.pretrain_plots as pretrain_plots
from deeptut.errors import DataError
from deeptut.models.families import FAMILIES
from deeptut.store import files
from deeptut.store.rundir import Run
from deeptut.viz.render import picture_sources, planned_pictures, render_all
from deeptut.viz.text import fmt

# summary.json's keys as a person reads them, in this order; the others follow with their key's words
SUMMARY_LABELS = {
    "result": "result",
    "best_validation_error": "best validation error",
    "test_error": "test error of the selected model",
    "best_iteration": "best iteration (minibatch updates)",
    "best_epoch": "best epoch",
    "epochs": "epochs",
    "iterations": "minibatch updates",
    "stopped": "stopped by",
    "evaluation": "evaluation",
    "evaluated_examples": "examples evaluated",
    "final_cost": "cost of the last training epoch",
    "train_seconds": "training time",
    "pretrain_seconds": "pre-training time",
    "epochs_per_second": "time per epoch",
    "seconds_per_epoch": "time per epoch",
    "device": "device",
    "fault": "fault",
}
STOPPED = {"n_epochs": "the epoch limit (n_epochs)", "patience": "early stopping (patience ran out)",
           "diverged": "divergence (the cost blew up)", "max_cost": "the cost limit (max_cost)"}
EVALUATION = {"tutorial": "tutorial (the mean over whole minibatches)", "full": "full (every example)"}
SPLITS = {"valid": "validation", "test": "test", "train": "training"}


def _number(key: str, v: float | int) -> str:
    """A number of the summary by what its key says it is: a percentage (3 decimals), seconds (1 decimal,
    with minutes past 60 s), a count (thousands separated), else 4 significant digits."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if key.endswith(("_error", "_percent", "_rate_percent")):
        return f"{v:.3f} %"
    if key.endswith(("_seconds", "_s")):
        return f"{v:,.1f} s" + (f" ({int(v // 60)} min {v % 60:.0f} s)" if v >= 60 else "")
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}"


def summary_value(key: str, v: Any) -> tuple[str, bool]:
    """(the value as the report shows it, whether it is a number to right-align)."""
    if v is None:
        return ("none" if key == "fault" else "-"), False
    if key == "epochs_per_second" and isinstance(v, (int, float)) and v > 0:
        return _number("_seconds", 1.0 / v), True
    if key == "stopped" and isinstance(v, str):
        return STOPPED.get(v, v), False
    if key == "evaluation" and isinstance(v, str):
        return EVALUATION.get(v, v), False
    if isinstance(v, (int, float)):
        return _number(key, v), True
    if isinstance(v, dict):
        return ", ".join(f"{SPLITS.get(k, str(k).replace('_', ' '))} {summary_value(k, x)[0]}"
                         for k, x in v.items()), False
    if isinstance(v, list):
        shown = [summary_value(key, x)[0] for x in v[:8]]
        return ", ".join(shown) + (f", ... ({len(v)} in all)" if len(v) > 8 else ""), False
    return str(v), False


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(label, value text, numeric) per key of summary.json: the known keys first, by SUMMARY_LABELS."""
    keys = [k for k in SUMMARY_LABELS if k in summary] + [k for k in summary if k not in SUMMARY_LABELS]
    return [(SUMMARY_LABELS.get(k, k.replace("_", " ")), *summary_value(k, summary[k])) for k in keys]


def _summary_table(summary: dict[str, Any]) -> str:
    out = ['<table class="summary">', "<tr><th>quantity</th><th>value</th></tr>"]
    for label, text, numeric in summary_rows(summary):
        cls = ' class="num"' if numeric else ""
        out.append(f"<tr><th>{html.escape(label)}</th><td{cls}>{html.escape(text)}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f5f5f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #eee}img.px{image-rendering:pixelated}
figcaption{color:#555;font-size:.9em}code{font-size:.9em}.cols{display:flex;gap:2em;flex-wrap:wrap}
"""

MIME = {".png": "image/png", ".gif": "image/gif"}


def _e(v: Any) -> str:
    if isinstance(v, float):
        v = f"{v:.7g}"  # 7.489583, 0.13, 1234.568
    elif isinstance(v, (dict, list)):
        v = summary_value("", v)[0]  # "key value, ..." and "a, b": no raw JSON
    return html.escape(v if isinstance(v, str) else fmt(v), quote=True)


def _img(path: Path, alt: str, caption: str, pixels: bool = False) -> str:
    """pixels: a tiled picture, scaled without smoothing."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cls = ' class="px"' if pixels else ""
    return (f'<figure><img{cls} src="data:{MIME[path.suffix]};base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: list[tuple[str, Any]], head: tuple[str, str] = ("", "")) -> str:
    out = ["<table>"]
    if any(head):
        out.append(f"<tr><th>{_e(head[0])}</th><th>{_e(head[1])}</th></tr>")
    for k, v in rows:
        cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        out.append(f"<tr><th>{_e(k)}</th><td{cls}>{_e(v)}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _stale(run: Run) -> bool:
    """Whether plots/ is missing a picture or older than what it is drawn from."""
    plots = run.path / "plots"
    needed = [plots / n for n in planned_pictures(run)]
    if not all(p.is_file() for p in needed):
        return True
    newest = max((p.stat().st_mtime for p in picture_sources(run)), default=0.0)
    return min((p.stat().st_mtime for p in needed), default=0.0) < newest  # none planned (hmc): draw


def _pretraining(run: Run, model: str) -> list[str]:
    """The pre-training cost curves and, for an rbm run's pseudo-likelihood, the table against rbm.py's."""
    plots = run.path / "plots"
    fam = FAMILIES.get(model)
    out = ["<h2>Pre-training</h2>" if fam is not None and fam.pretrains else "<h2>Training cost</h2>"]
    out.append(_img(plots / "pretrain_costs.png", "pre-training cost per epoch",
                    "The cost printed after each (pre-)training epoch (metrics.jsonl lines with phase "
                    "\"pretrain\"), one panel per layer, against the 0-based epoch as the tutorial prints it."
                    + (" The published curve is rbm.py's PCD-15 run." if fam is not None and fam.samples else "")))
    table = pretrain_plots.pl_table(run.metrics().pretrain) if fam is not None and fam.samples else []
    if table:
        out.append("<table><tr><th>epoch</th><th>this run</th><th>published (rbm.py)</th><th>difference</th></tr>")
        for e, c, pub, d in table:
            cells = "".join(f'<td class="num">{_e(v)}</td>' for v in (c, pub, d))
            out.append(f'<tr><td class="num">{_e(e)}</td>{cells}</tr>')
        out.append("</table>")
    return out


def _pretrain_filters(run: Run, model: str) -> list[str]:
    plots = run.path / "plots"
    out = []
    epochs = sorted((int(p.stem.rsplit("_", 1)[1]), p) for p in plots.glob("filters_at_epoch_*.png")
                    if p.stem.rsplit("_", 1)[1].isdigit())
    if (plots / "pretrain_filters_evolution.png").is_file() or epochs:
        out.append("<h3>Filters during pre-training</h3><div class=\"cols\">")
        if (plots / "pretrain_filters_evolution.png").is_file():
            out.append(_img(plots / "pretrain_filters_evolution.png", "layer 0 filters over pre-training",
                            "The first filters of layer 0 after each saved pre-training epoch "
                            "(models/pretrain-layer0-epoch*.safetensors).", pixels=True))
        if (plots / "pretrain_filters_evolution.gif").is_file():
            out.append(_img(plots / "pretrain_filters_evolution.gif", "layer 0 filters over pre-training (animation)",
                            "The same, animated: 100 filters per epoch.", pixels=True))
        out.append("</div>")
        if epochs:
            out.append("<div class=\"cols\">")
            for e, p in epochs:
                out.append(_img(p, f"filters at epoch {e}", f"{p.name}: after epoch {e} (0-based)", pixels=True))
            out.append("</div>")
    return out


def _samples_and_likelihood(run: Run) -> list[str]:
    """samples.png (deeptut sample) and log_likelihood.json (deeptut eval --log-likelihood), when present."""
    plots = run.path / "plots"
    out = []
    if (plots / "samples.png").is_file():
        out.append("<h2>Samples</h2>")
        info = {}
        if (plots / "samples.json").is_file():
            info = files.read_json(plots / "samples.json", DataError, want_object=True)
        how = (f" Chains started at test digit {info.get('test_idx')}; {info.get('plot_every')} Gibbs steps "
               f"between rows; seed {info.get('seed')}." if info else "")
        out.append(_img(plots / "samples.png", "samples from the RBM",
                        "rbm.py's samples.png: one column per persistent chain, one row per sample "
                        "(mean-field visible activations)." + how, pixels=True))
    ll_path = run.path / "log_likelihood.json"
    if ll_path.is_file():
        ll = files.read_json(ll_path, DataError, want_object=True)
        out.append("<h2>Test log-likelihood (AIS)</h2>")
        rows = [("mean test log-probability (nats)", ll.get("test_log_probability")),
                ("its +-3 sigma interval", f"[{_e(ll.get('test_log_probability_low'))}, "
                                           f"{_e(ll.get('test_log_probability_high'))}]"),
                ("log Z (AIS)", ll.get("log_z")),
                ("log Z +-3 sigma interval", f"[{_e(ll.get('log_z_low'))}, {_e(ll.get('log_z_high'))}]")]
        rows += [(k, ll[k]) for k in ("ais_runs", "ais_steps", "n_test", "binarization", "seed", "seconds") if k in ll]
        out.append(_table(rows))
    return out


def build_html(run: Run) -> str:
    plots = run.path / "plots"
    cfg = run.config
    model = run.model
    stacked = model in FAMILIES and FAMILIES[model].pretrains  # pre-trained, then fine-tuned (SdA, DBN)
    title = f"deeptut run {run.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        'style-src \'unsafe-inline\'">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">model <b>{_e(model)}</b>, preset <b>{_e(cfg.get("preset"))}</b>, '
        f'dataset <b>{_e(cfg.get("dataset"))}</b>, seed {_e(cfg.get("seed", run.meta.get("seed")))}</p>',
    ]

    parts.append("<h2>Summary</h2>")
    if run.has_summary():
        parts.append(_summary_table(run.summary()))
    else:
        parts.append("<p>No summary.json: the run has not finished.</p>")

    if (plots / "pretrain_costs.png").is_file():
        parts += _pretraining(run, model)
    if (plots / "learning_curves.png").is_file():
        parts.append("<h2>Learning curves" + (" (fine-tuning)" if stacked else "") + "</h2>")
        parts.append(_img(plots / "learning_curves.png", "learning curves",
                          "Top: the training cost (mean negative log-likelihood of the minibatches since the "
                          "previous validation, as recorded). Bottom: validation error and, where it was "
                          "computed, test error in %, against minibatch iterations; the star is the best "
                          "validation error."))

    parts.append("<h2>Filters</h2>")
    style = (FAMILIES[model].first_layer or ("", ""))[0] if model in FAMILIES else ""
    captions = {
        "filters.png": "Class templates: column k of W as a 28x28 image, for k = 0..9 (rows of 5); each scaled to "
                       "its own min..max (black = most negative, white = most positive)."
        if style == "templates" else
        ("First-layer filters " + ("after fine-tuning (best.safetensors)" if stacked else
                                   "of the trained model") +
         ": tile_raster_images of W.T, the first 100 hidden units' weights as 28x28 images on a 10x10 grid, "
         "1 pixel apart, each scaled to its own min..max (as the chapter draws them).")
        if style == "chapter" else
        "First-layer units: each row of hiddenLayer.W.T (the weights into one hidden unit) as a 28x28 image, "
        "each scaled to its own min..max.",
        "filters_pretrained.png": "First-layer filters when pre-training ended, before fine-tuning "
                                  "(pretrained.safetensors), drawn the same way.",
        "filters_layer0.png": "Convolution layer 0: each 5x5 kernel, scaled to its own min..max.",
        "filters_layer1.png": "Convolution layer 1: one row per input feature map, one column per output map.",
    }
    alts = {"filters.png": "class templates" if style == "templates" else "first-layer filters",
            "filters_pretrained.png": "first-layer filters after pre-training",
            "filters_layer0.png": "convolution layer 0 kernels", "filters_layer1.png": "convolution layer 1 kernels"}
    for name, cap in captions.items():
        if (plots / name).is_file():
            parts.append(_img(plots / name, alts[name], cap, pixels=True))
    if (plots / "filters_evolution.png").is_file():
        parts.append("<h3>Filters during training</h3><div class=\"cols\">")
        parts.append(_img(plots / "filters_evolution.png", "filters over training",
                          "The first filters at the kept intermediate models (models/iter-*.safetensors).",
                          pixels=True))
        if (plots / "filters_evolution.gif").is_file():
            parts.append(_img(plots / "filters_evolution.gif", "filters over training (animation)",
                              "The same, animated over the kept models.", pixels=True))
        parts.append("</div>")

    parts += _pretrain_filters(run, model)
    parts += _samples_and_likelihood(run)

    if (plots / "confusion.json").is_file():
        parts.append("<h2>Test set</h2>")
        conf = files.read_json(plots / "confusion.json", DataError, want_object=True)
        pct = summary_value("error_percent", conf.get("error_percent"))[0]  # 3 decimals, as the summary's
        parts.append(f"<p>The best model on all {_e(conf.get('n'))} test examples: {_e(conf.get('errors'))} "
                     f"errors ({_e(pct)}). The tutorial-style test error in the summary "
                     "may average over whole minibatches only, so the two can differ slightly.</p>")
        parts.append(_img(plots / "confusion.png", "confusion matrix",
                          "Rows: true class; columns: predicted class."))
        parts.append(_img(plots / "errors.png", "misclassified digits",
                          "The first misclassified test digits in test-set order, titled true → predicted."))

    parts.append("<h2>Configuration</h2>")
    parts.append(_table(sorted(cfg.items())))
    extra = [(k, v) for k, v in run.meta.items() if k != "config"]
    if extra:
        parts.append("<h3>Environment</h3>")
        parts.append(_table(extra))
    parts.append(f'<p class="sub">Written by deeptut {html.escape(deeptut.__version__)} from '
                 f"<code>{html.escape(str(run.path))}</code>.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None, data: Any = None) -> Path:
    """Render the pictures if plots/ is missing or stale, then write RUN_DIR/report.html (or `out`)."""
    run = Run.open(run_dir)
    if _stale(run):
        render_all(run.path, data)
    path = Path(out) if out is not None else run.path / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_html(run), encoding="utf-8")
    return path
