"""`tile_raster_images`: the Deep Learning Tutorials' utils.py helper, in plain numpy.

Rows of a matrix (filters, weight columns, digits) are laid out as small images on a grid, the way the
tutorials draw their filters. The semantics follow the original closely, including two details that
show in the pixel values:

* each row is scaled as ``(x - min) * (1 / (max - min + 1e-8))`` computed in the row's own floating
  dtype, then multiplied by 255 and *truncated* to uint8. In float64 the maximum therefore becomes 254
  (0.99999999 * 255 = 254.99...); in float32 the eps vanishes and the maximum becomes 255.
* tiles beyond the number of rows stay zero; rows beyond the number of tiles are ignored.

Deviations, only where the original misbehaves: out-of-range values are clipped to [0, 255] before the
cast (the original wraps around), integer input is scaled in float64 (the original truncates to the
integer dtype), and a 4-tuple of channels works when output_pixel_vals is False (the original reads
``X.dtype`` off the tuple and fails).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["scale_to_unit_interval", "tile_raster_images", "grid_shape"]


def _float(a: np.ndarray) -> np.ndarray:
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


def scale_to_unit_interval(ndar: Any, eps: float = 1e-8) -> np.ndarray:
    """Min-max scale an array to [0, 1] (a copy), computed in its floating dtype like the tutorial."""
    ndar = _float(np.array(ndar, copy=True))
    ndar -= ndar.min()
    ndar *= ndar.dtype.type(1.0) / (ndar.max() + ndar.dtype.type(eps))
    return ndar


def grid_shape(n: int, max_cols: int | None = None) -> tuple[int, int]:
    """A near-square (rows, cols) grid holding n tiles, at most max_cols wide."""
    n = max(int(n), 1)
    cols = int(np.ceil(np.sqrt(n)))
    if max_cols:
        cols = min(cols, max_cols)
    return (int(np.ceil(n / cols)), cols)


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"{name} must have two entries, got {tuple(shape)!r}")
    a, b = (int(v) for v in shape)
    return a, b


def tile_raster_images(X: Any, img_shape: Sequence[int], tile_shape: Sequence[int],
                       tile_spacing: Sequence[int] = (0, 0), scale_rows_to_unit_interval: bool = True,
                       output_pixel_vals: bool = True) -> np.ndarray:
    """Lay the rows of X out as `img_shape` images on a `tile_shape` (rows, cols) grid, row-major.

    X: a 2-D array [n, img_h * img_w], or a 4-tuple of such arrays (R, G, B, A) giving an (H, W, 4)
    output; a None channel is all zeros, except alpha which is opaque (255, or 1.0 for float output).
    Output shape per axis: (img + spacing) * tiles - spacing. Output is uint8 in 0..255 when
    output_pixel_vals, else float in the input's range ([0, 1] when rows are scaled).
    """
    img_h, img_w = _check_shape("img_shape", img_shape)
    rows, cols = _check_shape("tile_shape", tile_shape)
    sp_h, sp_w = _check_shape("tile_spacing", tile_spacing)
    if min(img_h, img_w, rows, cols) < 1 or min(sp_h, sp_w) < 0:
        raise ValueError("img_shape and tile_shape must be positive and tile_spacing non-negative")
    out_shape = ((img_h + sp_h) * rows - sp_h, (img_w + sp_w) * cols - sp_w)

    if isinstance(X, tuple):
        if len(X) != 4:
            raise ValueError(f"a tuple X must hold 4 channels (R, G, B, A), got {len(X)}")
        if output_pixel_vals:
            dtype: Any = np.uint8
            defaults = (0, 0, 0, 255)
        else:
            given = [_float(np.asarray(c)).dtype for c in X if c is not None]
            dtype = np.result_type(*given) if given else np.float64
            defaults = (0.0, 0.0, 0.0, 1.0)
        out = np.zeros(out_shape + (4,), dtype=dtype)
        for i, channel in enumerate(X):
            if channel is None:
                out[:, :, i] = defaults[i]
            else:
                out[:, :, i] = tile_raster_images(channel, (img_h, img_w), (rows, cols), (sp_h, sp_w),
                                                  scale_rows_to_unit_interval, output_pixel_vals)
        return out

    X = np.asarray(X)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != img_h * img_w:
        raise ValueError(f"X must be [n, {img_h * img_w}] for {img_h}x{img_w} images, got shape {X.shape}")
    out = np.zeros(out_shape, dtype=np.uint8 if output_pixel_vals else _float(X[:0]).dtype)
    for k in range(min(X.shape[0], rows * cols)):
        r, c = divmod(k, cols)
        img = X[k].reshape(img_h, img_w)
        img = scale_to_unit_interval(img) if scale_rows_to_unit_interval else _float(img)
        if output_pixel_vals:
            img = np.clip(img * 255, 0, 255)
        top, left = r * (img_h + sp_h), c * (img_w + sp_w)
        out[top:top + img_h, left:left + img_w] = img  # float -> uint8 truncates, as in the tutorial
    return out
