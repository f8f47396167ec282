"""The pictures of the unsupervised chapters, from what a run saved (UNSUP_CONTRACT): the pre-training cost
curves (metrics.jsonl lines with "phase": "pretrain"), the rbm chapter's `filters_at_epoch_E.png` after each
epoch (models/pretrain-layer0-epochE.safetensors), the layer-0 filters over pre-training, and the sda / dbn
first layer when pre-training ended (pretrained.safetensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from deeptut.models.families import FAMILIES
from deeptut.store.rundir import PRETRAINED, Run
from deeptut.store.tensors import load_arrays
from deeptut.viz.plots import Figure, _finite, _save, draw_evolution, filter_sets, mpl_text, save_filter_picture

# rbm.py's printed PL cost per epoch (PCD-15, 500 hidden, lr 0.1, batch 20, 15 epochs), from the chapter
PUBLISHED_RBM_PL_COST = (-90.6507, -81.2359, -74.9121, -73.0213, -68.4099, -63.2693, -65.9958, -68.1237,
                         -68.3207, -64.2950, -61.5195, -61.6539, -63.5465, -63.3787, -62.7557)

CROSS_ENTROPY = "reconstruction cross-entropy (nats)"  # dA, SdA, cA: lines without a cost_kind
COST_LABELS = {  # y-axis label per cost kind (the cost each chapter prints)
    "pseudo-likelihood": "pseudo-likelihood cost (n_visible x log p(x_i | x_-i))",
    "reconstruction": "reconstruction log-likelihood (the tutorial's sign)",
}


def by_layer(recs: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Pre-training records grouped by layer, each sorted by epoch (a resumed run's repeated epoch: the last)."""
    out: dict[int, dict[int, dict[str, Any]]] = {}
    for r in recs:
        out.setdefault(r["layer"], {})[r["epoch"]] = r
    return {layer: [eps[e] for e in sorted(eps)] for layer, eps in sorted(out.items())}


def cost_kind(recs: list[dict[str, Any]]) -> str | None:
    kinds = {r.get("cost_kind") for r in recs if r.get("cost_kind")}
    return kinds.pop() if len(kinds) == 1 else None


def plot_pretrain_costs(run: Run, out_dir: Path, recs: list[dict[str, Any]], model: str) -> Path:
    """pretrain_costs.png: the cost each pre-training epoch printed, one panel per layer, against the 0-based
    epoch. cA adds the Jacobian norm (right axis); an rbm run's pseudo-likelihood cost is drawn with the
    published PCD-15 curve on the same axes."""
    layers = by_layer(recs)
    fam = FAMILIES.get(model)
    n = len(layers)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols + 0.6, 3.4 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    for ax, (layer, lrecs) in zip(axes, layers.items()):
        epochs = np.array([r["epoch"] for r in lrecs])
        kind = cost_kind(lrecs)
        ax.plot(epochs, _finite([r["cost"] for r in lrecs]), "o-", ms=3, lw=1.4, color="tab:blue",
                label="this run")
        if fam is not None and fam.samples and kind == "pseudo-likelihood":  # rbm.py's run
            pub = np.array(PUBLISHED_RBM_PL_COST)
            ax.plot(np.arange(len(pub)), pub, "s--", ms=3, lw=1.2, color="tab:orange",
                    label="published (rbm.py, PCD-15)")
        jac = _finite([r.get("jacobian_norm") for r in lrecs])
        if np.isfinite(jac).any():
            ax2 = ax.twinx()
            ax2.plot(epochs, jac, "^:", ms=3, color="tab:green", label="Jacobian norm")
            ax2.set_ylabel("Jacobian norm", color="tab:green")
            ax2.legend(loc="upper center", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0-based, as printed)")
        ax.set_ylabel(COST_LABELS.get(kind, CROSS_ENTROPY), fontsize=8)
        ax.set_title(f"layer {layer}" if n > 1 or (fam is not None and fam.pretrains) else mpl_text(model),
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{mpl_text(run.config.get('preset', model))}: pre-training cost per epoch", fontsize=11)
    return _save(fig, out_dir / "pretrain_costs.png")


def pl_table(recs: list[dict[str, Any]]) -> list[tuple[int, float, float | None, float | None]]:
    """(epoch, this run's PL cost, published, difference) for an rbm run's layer-0 pseudo-likelihood lines."""
    layer0 = by_layer(recs).get(0, [])
    if cost_kind(layer0) != "pseudo-likelihood":
        return []
    out = []
    for r in layer0:
        e = r["epoch"]
        pub = PUBLISHED_RBM_PL_COST[e] if 0 <= e < len(PUBLISHED_RBM_PL_COST) else None
        out.append((e, r["cost"], pub, None if pub is None else r["cost"] - pub))
    return out


def plot_epoch_filters(run: Run, out_dir: Path, model: str) -> list[Path]:
    """rbm.py's filters_at_epoch_E.png for each saved layer-0 epoch (E 0-based, as the chapter names them)."""
    written = []
    for _layer, epoch, p in run.pretrain_models(layer=0):
        name, title, rows, img_shape, tile_shape = filter_sets(model, load_arrays(p), p)[0]
        written.append(save_filter_picture(model, name, title, rows, img_shape, tile_shape,
                                           out_dir / f"filters_at_epoch_{epoch}.png", f" after epoch {epoch}"))
    return written


def plot_pretrain_evolution(run: Run, out_dir: Path, model: str) -> list[Path]:
    """pretrain_filters_evolution.png / .gif: layer 0's filters after each of its pre-training epochs."""
    cps = run.pretrain_models(layer=0)
    if not cps:
        return []
    labelled = [(f"epoch {e}", f"layer 0, epoch {e}", p) for _l, e, p in cps]
    return draw_evolution(model, labelled, out_dir, "pretrain_filters_evolution")


def plot_pretrained_filters(run: Run, out_dir: Path, model: str) -> list[Path]:
    """filters_pretrained.png: the sda / dbn first layer when pre-training ended (before fine-tuning)."""
    path = run.path / PRETRAINED
    if not path.is_file():
        return []
    name, title, rows, img_shape, tile_shape = filter_sets(model, load_arrays(path), path)[0]
    return [save_filter_picture(model, name, title, rows, img_shape, tile_shape, out_dir / "filters_pretrained.png",
                                " when pre-training ended")]
