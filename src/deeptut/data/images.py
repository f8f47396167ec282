"""Images to predict on: an IDX image file (idx3, n x 28 x 28 uint8) or 28x28 grayscale PNG files.

Pixels are scaled as the training data was (value / 256). MNIST digits are light strokes on a dark
background; a dark-on-light PNG should be inverted before prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deeptut.data import idx
from deeptut.data.datasets import SCALE
from deeptut.errors import DataError


def load_images(paths: list[str | Path]) -> tuple[list[str], np.ndarray]:
    """-> (a name per image, float32 [n, 784])."""
    names: list[str] = []
    rows: list[np.ndarray] = []
    for p in map(Path, paths):
        if p.suffix.lower() == ".png":
            rows.append(_read_png(p)[None])
            names.append(str(p))
        else:
            a = idx.read_idx(p)
            if a.ndim != 3 or a.shape[1:] != (28, 28) or a.dtype != np.uint8:
                raise DataError(f"{p}: expected an IDX file of n x 28 x 28 uint8 images, got "
                                f"{'x'.join(map(str, a.shape))} {a.dtype}")
            rows.append(a.reshape(len(a), 784))
            names.extend(f"{p}[{i}]" for i in range(len(a)))
    if not rows:
        raise DataError("no images given")
    return names, (np.concatenate(rows).astype(np.float32) * SCALE)


def _read_png(path: Path) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: reading PNG files needs Pillow (pip install 'deeptut[viz]')") from None
    try:
        with Image.open(path) as im:
            if im.size != (28, 28):
                raise DataError(f"{path}: image is {im.size[0]}x{im.size[1]} pixels; MNIST models take 28x28")
            return np.asarray(im.convert("L"), dtype=np.uint8).reshape(784)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: not a readable PNG image: {e}") from None
