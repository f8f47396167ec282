"""The pictures of a run: learning curves, filters, confusion matrix, misclassified digits, and the
filters over training. Everything is drawn from the files the run saved (never by training).

Tiled filter pictures are written pixel-exact with Pillow (each tile pixel becomes a `scale` x `scale`
block); charts use matplotlib's Agg backend through the Figure API (no display, no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from deeptut.errors import CheckpointError, DataError  # noqa: E402
from deeptut.models.families import FAMILIES  # noqa: E402
from deeptut.store.rundir import METRICS, Run, require  # noqa: E402
from deeptut.store.tensors import load_arrays  # noqa: E402
from deeptut.viz.tiles import grid_shape, tile_raster_images  # noqa: E402

DPI = 100
PNG_META = {"Software": None}  # no version string: the same run gives the same bytes


# --- tiled filters --------------------------------------------------------------------------------------

def _square(n: int, path: Path, key: str) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointError(f"{path}: {key} has {n} inputs per unit, not a square image")
    return side, side


# the unsupervised chapters' first layer: W [n_visible, n_hidden] (shared with the sigmoid layer in SdA / DBN),
# drawn as dA.py / rbm.py draw it: tile_raster_images(W.T, (28, 28), tile_shape=(10, 10), tile_spacing=(1, 1))
CHAPTER_TILES = (10, 10)  # the first 100 units (fewer units leave the remaining tiles black, as the chapter's)


def first_layer(model: str, path: Path) -> tuple[str, str]:
    """(style, parameter name) of the family's first-layer picture (its section's `first_layer`)."""
    cls = FAMILIES.get(model)
    if cls is None or cls.first_layer is None:
        raise CheckpointError(f"{path}: unknown model {model!r}" if cls is None else
                              f"{path}: a {model} run has no first-layer picture")
    return cls.first_layer


def filter_sets(model: str, params: dict[str, np.ndarray], path: Path,
                max_units: int | None = None) -> list[tuple[str, str, np.ndarray, tuple[int, int], tuple[int, int]]]:
    """(name, title, rows, img_shape, tile_shape) for each filter picture of a model.

    logistic: the 10 class templates W[:, k]; mlp: the first layer's units (rows of hiddenLayer.W.T);
    da, ca, rbm, sda, dbn: the first layer's W.T, the first 100 units on the chapters' 10 x 10 grid;
    lenet: the kernels of both conv layers (layer1: one grid row per output map, one column per input map).
    max_units limits the number of units/kernels drawn; for LeNet it also leaves layer 1 out (the
    pictures over training show layer 0 only)."""
    style, key = first_layer(model, path)
    if style == "templates":
        W = require(params, path, key, 2)
        rows = W.T[:max_units]
        return [("filters", f"class templates {key}[:, k]", rows, _square(W.shape[0], path, key),
                 (math.ceil(len(rows) / 5), min(len(rows), 5)))]
    if style == "units":
        W = require(params, path, key, 2)
        rows = W.T[:max_units]
        return [("filters", f"first-layer units ({key}.T)", rows, _square(W.shape[0], path, key),
                 grid_shape(len(rows)))]
    if style == "kernels":
        W0 = require(params, path, key, 4)
        kept = W0[:max_units]
        k0 = kept.reshape(len(kept), -1)
        out = [("filters_layer0", "conv layer 0 kernels", k0, tuple(W0.shape[2:]), grid_shape(len(k0), max_cols=10))]
        second = key.replace("0", "1", 1)  # layer1.W: the next conv layer's kernels
        if max_units is None and second in params:
            W1 = require(params, path, second, 4)
            # one row per input map, one column per output map: the long side (50 output maps) across
            out.append(("filters_layer1", "conv layer 1 kernels (row: input map, column: output map)",
                        W1.transpose(1, 0, 2, 3).reshape(W1.shape[1] * W1.shape[0], -1), tuple(W1.shape[2:]),
                        (W1.shape[1], W1.shape[0])))
        return out
    if style == "chapter":
        W = require(params, path, key, 2)  # [n_visible, n_hidden]: one column per hidden unit
        rows = W.T[:CHAPTER_TILES[0] * CHAPTER_TILES[1] if max_units is None else max_units]
        return [("filters", f"first-layer filters ({key}.T)", rows, _square(W.shape[0], path, key),
                 CHAPTER_TILES if max_units is None else grid_shape(len(rows)))]
    raise CheckpointError(f"{path}: unknown model {model!r}")


def tile_scale(img_shape: tuple[int, int], tile_shape: tuple[int, int], target: int = 400, min_tile: int = 24,
               max_side: int = 1600) -> int:
    """An integer upscale (1..8) that brings the tiled picture's long side near `target` pixels and each tile
    to at least `min_tile` pixels (LeNet's 5x5 kernels: 25), the long side at most `max_side`."""
    long = max((img_shape[0] + 1) * tile_shape[0], (img_shape[1] + 1) * tile_shape[1])
    s = max(round(target / long), math.ceil(min_tile / max(img_shape)))
    return int(min(8, max(1, min(s, max_side // long))))


def tiles_for(rows: np.ndarray, img_shape: tuple[int, int], tile_shape: tuple[int, int]) -> np.ndarray:
    return tile_raster_images(np.nan_to_num(rows), img_shape, tile_shape, tile_spacing=(1, 1))


def save_gray(arr: np.ndarray, path: Path, scale: int = 1) -> Path:
    img = Image.fromarray(np.ascontiguousarray(arr))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return path


# --- tiled pictures with a title and labelled axes --------------------------------------------------------

TILES_KEY = "deeptut:tiles"  # PNG text chunk: "top,left,height,width" of the pixel-exact tile grid
TITLE_H, LABEL_H, TICK_H, PAD = 24, 16, 14, 8  # pixels of the bands around the grid


def axis_ticks(n: int) -> list[int]:
    """The tile indices along an axis of n tiles that get a number: each one up to 10, else every 5th
    (every 10th beyond 50)."""
    step = 1 if n <= 10 else (5 if n <= 50 else 10)
    return list(range(0, n, step))


def tile_axes(style: str, name: str, tile_shape: tuple[int, int]) -> tuple[str, str, list[tuple[int, str]],
                                                                           list[tuple[int, str]]]:
    """(row label, column label, row ticks, column ticks) of a tiled picture: LeNet's second layer by input
    and output map; every other picture numbers its items row by row (row: the first item's index, column:
    what to add to it)."""
    rows, cols = tile_shape
    if name == "filters_layer1":
        return ("input map", "output map", [(i, str(i)) for i in axis_ticks(rows)],
                [(j, str(j)) for j in axis_ticks(cols)])
    item = {"templates": "class", "kernels": "kernel (output map)"}.get(style, "unit")
    return (f"{item} (first of the row)", "+ column", [(i, str(i * cols)) for i in axis_ticks(rows)],
            [(j, f"+{j}") for j in axis_ticks(cols)])


def _text_w(draw: Any, text: str, font: Any) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return int(box[2] - box[0])


def framed_tiles(arr: np.ndarray, scale: int, title: str, img_shape: tuple[int, int] | None = None,
                 row_label: str = "", col_label: str = "", row_ticks: list[tuple[int, str]] = (),
                 col_ticks: list[tuple[int, str]] = ()) -> tuple[Any, tuple[int, int, int, int]]:
    """(an "L" image: a title on top, the column label and numbers above the grid, the row label and numbers
    at its left, the tile grid `arr` upscaled `scale` times pixel for pixel; the grid's box (top, left,
    height, width)). Ticks are (tile index, text); `img_shape` (one tile's size) places them."""
    grid = Image.fromarray(np.ascontiguousarray(arr))
    if scale != 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    f_title, f_label, f_tick = _font(14), _font(12), _font(11)
    tick_w = max([_text_w(probe, t, f_tick) for _i, t in row_ticks] or [0])
    top = TITLE_H + (LABEL_H if col_label else 0) + (TICK_H if col_ticks else 0)
    left = PAD + (LABEL_H if row_label else 0) + (tick_w + 6 if row_ticks else 0)
    width = max(left + grid.width + PAD, _text_w(probe, title, f_title) + 2 * PAD,
                left + _text_w(probe, col_label, f_label) + PAD)
    height = max(top + grid.height + PAD, top + _text_w(probe, row_label, f_label) + PAD)
    canvas = Image.new("L", (width, height), 255)
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, TITLE_H // 2), title, fill=0, font=f_title, anchor="lm")
    th, tw = img_shape if img_shape is not None else (arr.shape[0], arr.shape[1])
    if col_label:
        draw.text((left, TITLE_H + LABEL_H // 2), col_label, fill=0, font=f_label, anchor="lm")
    for j, text in col_ticks:
        draw.text((left + round((j * (tw + 1) + tw / 2) * scale), top - 2), text, fill=0, font=f_tick, anchor="mb")
    for i, text in row_ticks:
        draw.text((left - 4, top + round((i * (th + 1) + th / 2) * scale)), text, fill=0, font=f_tick, anchor="rm")
    if row_label:
        w = _text_w(probe, row_label, f_label)
        band = Image.new("L", (w + 4, LABEL_H), 255)
        ImageDraw.Draw(band).text((2, LABEL_H // 2), row_label, fill=0, font=f_label, anchor="lm")
        canvas.paste(band.rotate(90, expand=True), (PAD, top))
    return canvas, (top, left, grid.height, grid.width)


def save_framed(img: Any, box: tuple[int, int, int, int], path: Path) -> Path:
    """Write a framed picture with its grid's box in the PNG (TILES_KEY), so `read_tiles` finds the tiles."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(TILES_KEY, ",".join(map(str, box)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True, pnginfo=info)
    return path


def read_tiles(path: str | Path) -> np.ndarray:
    """uint8 [h, w]: the tile grid of a framed picture (the whole image for one without a frame)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
        box = im.info.get(TILES_KEY)
    if not box:
        return a
    top, left, h, w = map(int, box.split(","))
    return a[top:top + h, left:left + w]


def save_filter_picture(model: str, name: str, title: str, rows: np.ndarray, img_shape: tuple[int, int],
                        tile_shape: tuple[int, int], path: Path, note: str = "") -> Path:
    """One filter picture (tile_raster_images of `rows`, each tile scaled to its own min..max), framed with
    its title and numbered axes."""
    style = FAMILIES[model].first_layer[0] if model in FAMILIES and FAMILIES[model].first_layer else "units"
    row_label, col_label, row_ticks, col_ticks = tile_axes(style, name, tile_shape)
    full = f"{title}{note}: each {img_shape[0]}x{img_shape[1]} tile scaled to its own min (black) .. max (white)"
    img, box = framed_tiles(tiles_for(rows, img_shape, tile_shape), tile_scale(img_shape, tile_shape), full,
                            img_shape, row_label, col_label, row_ticks, col_ticks)
    return save_framed(img, box, path)


def plot_filters(run: Run, out_dir: Path, model: str | None = None, path: Path | None = None,
                 suffix: str = "") -> list[Path]:
    """The filter pictures of one saved model (best.safetensors by default) as `<name><suffix>.png`."""
    model = run.model if model is None else model
    path = run.best_path if path is None else path
    written = []
    for name, title, rows, img_shape, tile_shape in filter_sets(model, load_arrays(path), path):
        written.append(save_filter_picture(model, name, title, rows, img_shape, tile_shape,
                                           out_dir / f"{name}{suffix}.png"))
    return written


# --- filters over training -------------------------------------------------------------------------------

EVOLUTION_UNITS = {"templates": 10, "units": 10, "kernels": 20, "chapter": 10}  # by first_layer style
GIF_UNITS = {"templates": None, "units": 100, "kernels": None, "chapter": None}


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _sample(items: list[Any], k: int) -> list[Any]:
    """At most k items, evenly spread, always keeping the first and the last."""
    if len(items) <= k:
        return items
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def evolution_rows(model: str, labelled: list[tuple[str, str, Path]]) -> list[tuple[str, np.ndarray]]:
    """(label, one strip row of tiles) per saved model: the first EVOLUTION_UNITS filters in a line."""
    out = []
    for label, _frame_label, p in labelled:
        name, _t, rows, img_shape, _ts = filter_sets(model, load_arrays(p), p, EVOLUTION_UNITS[first_layer(model, p)[0]])[0]
        out.append((label, tiles_for(rows, img_shape, (1, len(rows)))))
    return out


STRIP_LABEL_W = 110  # pixels of the left column holding "iter N"


def plot_evolution(run: Run, out_dir: Path, max_rows: int = 10, max_frames: int = 24) -> list[Path]:
    """filters_evolution.png (one row per sampled checkpoint: iteration, then the first filters) and
    filters_evolution.gif (every checkpoint, up to max_frames, as the full filter picture)."""
    cps = run.intermediate_models()
    if not cps:
        return []
    labelled = [(f"iter {it:,}", f"iteration {it:,}", p) for it, p in cps]
    return draw_evolution(run.model, labelled, out_dir, "filters_evolution", max_rows, max_frames)


def draw_evolution(model: str, labelled: list[tuple[str, str, Path]], out_dir: Path, stem: str,
                   max_rows: int = 10, max_frames: int = 24) -> list[Path]:
    """<stem>.png (one row per sampled model: its strip label, then the first filters) and <stem>.gif (every
    model, up to max_frames, as the full filter picture titled with its frame label). `labelled` holds
    (strip label, frame label, parameters file) in training order."""
    rows = evolution_rows(model, _sample(labelled, max_rows))
    h, w = rows[0][1].shape
    scale = max(1, min(8, round(60 / h)))
    gap = 2
    strip = Image.new("L", (STRIP_LABEL_W + w * scale, len(rows) * (h * scale + gap) - gap), 255)
    draw = ImageDraw.Draw(strip)  # the labelled rows; framed below with a title
    font = _font(13)
    for i, (label, arr) in enumerate(rows):
        top = i * (h * scale + gap)
        tile = Image.fromarray(arr).resize((w * scale, h * scale), Image.Resampling.NEAREST)
        strip.paste(tile, (STRIP_LABEL_W, top))
        draw.text((4, top + h * scale // 2), label, fill=0, font=font, anchor="lm")
    title = "the first filters of each kept model (row: when it was saved; each tile scaled to its own range)"
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    framed = Image.new("L", (max(strip.width, _text_w(probe, title, _font(14)) + 2 * PAD), strip.height + TITLE_H), 255)
    framed.paste(strip, (0, TITLE_H))
    ImageDraw.Draw(framed).text((4, TITLE_H // 2), title, fill=0, font=_font(14), anchor="lm")
    written = [save_framed(framed, (TITLE_H, 0, strip.height, strip.width), out_dir / f"{stem}.png")]

    frames = []
    for _label, frame_label, p in _sample(labelled, max_frames):
        name, _t, fr, img_shape, tile_shape = filter_sets(model, load_arrays(p), p, GIF_UNITS[first_layer(model, p)[0]])[0]
        arr = tiles_for(fr, img_shape, tile_shape)
        s = tile_scale(img_shape, tile_shape)
        img = Image.fromarray(arr).resize((arr.shape[1] * s, arr.shape[0] * s), Image.Resampling.NEAREST)
        frame = Image.new("L", (img.width, img.height + 18), 0)
        frame.paste(img, (0, 0))
        ImageDraw.Draw(frame).text((3, img.height + 9), frame_label, fill=255, font=_font(12), anchor="lm")
        frames.append(frame)
    gif = out_dir / f"{stem}.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=400, loop=0)
    written.append(gif)
    return written


# --- charts --------------------------------------------------------------------------------------------

def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata=PNG_META)
    return path


def mpl_text(text: object) -> str:
    """Text from a file, shown literally by matplotlib (a '$' would otherwise start mathtext)."""
    return str(text).replace("$", r"\$")


def _finite(values: list[float | None]) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    a[~np.isfinite(a)] = np.nan
    return a


def plot_learning_curves(run: Run, out_dir: Path, size: tuple[float, float] = (7.0, 5.0),
                         recs: list[dict[str, Any]] | None = None) -> Path:
    """Minibatch train cost (top) and validation/test error in % (bottom) against the iteration, from the
    supervised lines of metrics.jsonl (`recs`; read when None): pre-training lines are left out.
    Non-finite values (a diverged run) are left out of the lines."""
    if recs is None:
        recs = run.metrics().supervised
    if not recs:
        raise DataError(f"{run.path / METRICS}: no supervised (validation) records to draw learning curves from")
    it = np.array([r["iteration"] for r in recs])
    cost = _finite([r["train_cost"] for r in recs])
    valid = _finite([r["valid_error"] for r in recs])
    test = _finite([r["test_error"] for r in recs])
    bests = [i for i, r in enumerate(recs) if r["best"] and np.isfinite(valid[i])]
    b = bests[-1] if bests else (int(np.nanargmin(valid)) if np.isfinite(valid).any() else None)

    fig = Figure(figsize=size, layout="constrained")
    ax_c, ax_e = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.6))
    ax_c.plot(it, cost, color="tab:gray", lw=1.2)
    ax_c.set_ylabel("train cost (NLL)")
    ax_c.grid(alpha=0.3)
    ax_e.plot(it, valid, color="tab:blue", lw=1.5, label="validation error")
    has_test = np.isfinite(test)
    if has_test.any():
        ax_e.plot(it[has_test], test[has_test], "o", ms=3.5, color="tab:orange", label="test error")
    if b is not None:
        ax_e.plot([it[b]], [valid[b]], "*", ms=14, color="tab:red", zorder=5,
                  label=f"best: {valid[b]:.2f} % at iteration {int(it[b]):,}")
        ax_e.axvline(it[b], color="tab:red", ls=":", lw=1)
    ax_e.set_xlabel("iteration (minibatch updates)")
    ax_e.set_ylabel("error (%)")
    ax_e.grid(alpha=0.3)
    ax_e.legend(loc="upper right", fontsize=9)
    fig.suptitle(f"{mpl_text(run.config.get('preset', run.model))}: learning curves", fontsize=11)
    return _save(fig, out_dir / "learning_curves.png")


def plot_confusion(cm: np.ndarray, out_dir: Path) -> Path:
    n = cm.shape[0]
    total = int(cm.sum())
    err = 100.0 * (total - int(np.trace(cm))) / max(total, 1)
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(6.0, 5.4), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", norm=PowerNorm(0.35, vmin=0, vmax=1))
    for t in range(n):
        for p in range(n):
            if cm[t, p]:
                ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=7 if n <= 10 else 5,
                        color="white" if frac[t, p] > 0.5 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"test set confusion matrix ({total:,} digits, {err:.2f} % error)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    return _save(fig, out_dir / "confusion.png")


def first_misclassified(y_true: np.ndarray, y_pred: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the first `limit` misclassified examples, in test-set order."""
    return np.flatnonzero(y_true != y_pred)[:limit]


def plot_errors(x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, out_dir: Path,
                limit: int = 40, cols: int = 10) -> Path:
    """A gallery of the first misclassified test digits, titled 'true → predicted'."""
    idx = first_misclassified(y_true, y_pred, limit)
    n_wrong = int((y_true != y_pred).sum())
    rows = max(1, math.ceil(len(idx) / cols))
    fig = Figure(figsize=(cols * 0.9, rows * 1.05 + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    side = math.isqrt(x.shape[1])
    shape = (side, side) if side * side == x.shape[1] else (1, x.shape[1])
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, idx):
        ax.imshow(x[i].reshape(shape), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{y_true[i]} → {y_pred[i]}", fontsize=9, color="tab:red")
    what = f"first {len(idx)} of {n_wrong:,}" if n_wrong else "no"
    fig.suptitle(f"misclassified test digits ({what}; true → predicted, index order)", fontsize=10)
    return _save(fig, out_dir / "errors.png")
