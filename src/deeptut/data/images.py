"""Images to predict on: an IDX image file (idx3, n x 28 x 28 uint8) or image files (PNG, JPEG, ... any size,
grey, RGB or with an alpha channel), made to look like MNIST's digits.

MNIST's digits are light strokes on a dark background, size-normalised to fit a 20x20 box (aspect ratio
kept) and placed in a 28x28 image with their centre of mass at the centre (LeCun et al.'s description of the
set). An image file goes through the same steps (`mnist_like`):
  1. colour -> grey (an alpha channel is composited on white first: a transparent background is paper);
  2. polarity: a light background (the median of the border pixels >= LIGHT_BACKGROUND) is a dark digit on
     paper: inverted, with a note;
  3. an image that is not 28x28: cropped to its ink, resized to fit 20x20, placed by centre of mass in
     28x28, with a note. A 28x28 image is taken as it is (an MNIST digit saved as PNG round-trips exactly).
Pixels are then scaled as the training data was (value / 256). A file that cannot be read is reported and
the others are still predicted (`load_images` returns the failures apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeptut.data import idx
from deeptut.data.datasets import SCALE
from deeptut.errors import DataError

SIDE, BOX = 28, 20  # MNIST: 28x28 images, the digit fitted into a 20x20 box
LIGHT_BACKGROUND = 160  # grey level (0-255) of the border's median above which the ground is paper
INK = 0.2  # a pixel belongs to the digit above this fraction of the image's brightest (after inversion)
IDX_SUFFIXES = ("", ".idx", ".idx3", ".ubyte", ".gz")


@dataclass
class Images:
    """What `load_images` read: a name and a row per image, notes about how files were changed, and the
    files that could not be read (name -> why)."""

    names: list[str] = field(default_factory=list)
    x: np.ndarray = field(default_factory=lambda: np.zeros((0, SIDE * SIDE), np.float32))  # [n, 784] pixel / 256
    notes: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def __iter__(self):  # names, x = load_images(...) as before
        return iter((self.names, self.x))


def load_images(paths: list[str | Path], *, strict: bool = True) -> Images:
    """Read every path: IDX image files as they are, image files through `mnist_like`. strict: any
    unreadable file raises DataError (naming it); otherwise it is recorded in `failed` and the others are
    read. No image at all is an error either way."""
    out = Images()
    rows: list[np.ndarray] = []
    for p in map(Path, paths):
        try:
            if _is_idx(p):
                a = idx.read_idx(p)
                if a.ndim != 3 or a.shape[1:] != (SIDE, SIDE) or a.dtype != np.uint8:
                    raise DataError(f"{p}: expected an IDX file of n x 28 x 28 uint8 images, got "
                                    f"{'x'.join(map(str, a.shape))} {a.dtype}")
                rows.append(a.reshape(len(a), SIDE * SIDE))
                out.names.extend(f"{p}[{i}]" for i in range(len(a)))
            else:
                pixels, notes = mnist_like(read_grey(p))
                rows.append(pixels.reshape(1, SIDE * SIDE))
                out.names.append(str(p))
                out.notes.extend(f"{p}: {n}" for n in notes)
        except DataError as e:
            if strict:
                raise
            out.failed[str(p)] = str(e).removeprefix(f"{p}: ")
    if not rows:
        raise DataError("no images given" if not out.failed else
                        "no image could be read: " + "; ".join(f"{k}: {v}" for k, v in out.failed.items()))
    out.x = np.concatenate(rows).astype(np.float32) * SCALE
    return out


def _is_idx(p: Path) -> bool:
    """An IDX file by its first bytes (two zero bytes, a type code, a dimension count), whatever its name."""
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DataError(f"{p}: cannot read: {e.strerror}") from None
    if head[:2] == b"\x1f\x8b":  # gzip: IDX files are shipped gzipped; images are not
        return True
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)


def read_grey(path: Path) -> np.ndarray:
    """uint8 [h, w], the file's grey levels: colour converted (ITU-R 601 luma), alpha composited on white."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: reading image files needs Pillow (pip install 'deeptut[viz]')") from None
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(paper, rgba)
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read (nor an IDX file)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the image: {e}") from None


def mnist_like(grey: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """uint8 [h, w] -> (uint8 [28, 28] as MNIST's digits look, notes on what was changed)."""
    notes = []
    a = grey.astype(np.float64)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if np.median(border) >= LIGHT_BACKGROUND:
        a = 255.0 - a
        notes.append("a dark digit on a light background: inverted (MNIST's digits are light on dark)")
    if a.shape == (SIDE, SIDE):
        return np.rint(a).astype(np.uint8), notes
    a = np.clip(a - np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])), 0, None)  # ground -> 0
    if a.max() <= 0:
        raise DataError(f"a blank {grey.shape[1]}x{grey.shape[0]} image: no digit to predict")
    ys, xs = np.nonzero(a > INK * a.max())
    crop = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    from PIL import Image

    small = np.asarray(Image.fromarray((crop / crop.max() * 255).astype(np.float32)).resize(
        (nw, nh), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR), dtype=np.float64)
    small = np.clip(small, 0, 255)
    # centre of mass of the resized digit -> the image centre (14, 14), clipped to stay inside
    total = small.sum()
    cy = (small.sum(axis=1) @ np.arange(nh)) / total if total > 0 else (nh - 1) / 2
    cx = (small.sum(axis=0) @ np.arange(nw)) / total if total > 0 else (nw - 1) / 2
    top = int(np.clip(round(SIDE / 2 - 0.5 - cy), 0, SIDE - nh))
    left = int(np.clip(round(SIDE / 2 - 0.5 - cx), 0, SIDE - nw))
    out = np.zeros((SIDE, SIDE))
    out[top:top + nh, left:left + nw] = small
    notes.append(f"{grey.shape[1]}x{grey.shape[0]} pixels: the digit fitted into a 20x20 box and centred by "
                 f"its centre of mass in 28x28, as MNIST's were")
    return np.rint(out).astype(np.uint8), notes
