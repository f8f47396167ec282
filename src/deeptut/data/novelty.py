"""How unlike the training data an input is: `deeptut predict` flags an input that looks nothing like what the
model was trained on (issue 24: a noise image came back `8 (p=1.0000)` with no warning).

Each input row (pixel / 256, after data/images.py's MNIST-like preprocessing) is described by four
statistics, and each is compared with its range over the training split:
  ink       the mean pixel value: how much of the 28x28 image is stroke;
  bright    the fraction of pixels >= 0.5: a digit's strokes have saturated cores (MNIST: 2-35 %);
  grey      the fraction of the inked pixels (> 0.1) that are mid-grey (< 0.7): a pen stroke is mostly
            saturated with a thin grey rim; noise, photographs and a blurred box are grey throughout;
  shape     the squared distance (pixel units) from the training split's first COMPONENTS principal
            components: what the training digits' shapes cannot explain (a checkerboard, scattered dots);
            the components are fitted on the first FIT_ROWS training images (at most half of them) and this
            range taken over the others, which they were not fitted to.
An input is flagged when a statistic lies outside its training range widened by MARGIN of the range's width
on each side, so no training image is ever flagged and a test digit almost never (tests/test_issue24_predict).
The flag says the prediction is a guess; it does not change it.

The reference (the ranges and the components) is computed from the training split once (MNIST's 50,000
images: a few seconds on a loaded 2-core machine) and kept in the user cache ($XDG_CACHE_HOME/deeptut/novelty/),
keyed by the data files' paths, sizes and modification times; `reference_for` reads it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from deeptut.errors import DataError

COMPONENTS = 50  # principal components of the training images the `shape` statistic measures against
FIT_ROWS = 5_000  # training rows the components are fitted on (all rows give the ranges)
MARGIN = 0.1  # a statistic is flagged beyond its training range widened by this fraction of its width
STATISTICS = ("ink", "bright", "grey", "shape")
INKED, GREY_TOP, BRIGHT = 0.1, 0.7, 0.5  # pixel levels (pixel / 256) of the statistics above
FORMAT = 2  # of the cached reference files


@dataclass(frozen=True)
class Reference:
    """The training split's statistics: mean image and principal components (for `shape`), and each
    statistic's range over the training images."""

    mean: np.ndarray  # float32 [n_pixels]
    components: np.ndarray  # float32 [COMPONENTS, n_pixels], orthonormal rows
    lo: np.ndarray  # float64 [4]: each statistic's minimum over the training split, STATISTICS order
    hi: np.ndarray  # float64 [4]: ... maximum
    n: int  # training images the ranges come from

    def statistics(self, x: np.ndarray) -> np.ndarray:
        """float64 [n, 4]: the STATISTICS of each row of x [n, n_pixels] (pixel / 256)."""
        import torch

        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise DataError(f"expected rows of {self.mean.shape[0]} pixels, got shape {x.shape}")
        inked = (x > INKED).sum(axis=1)
        grey = ((x > INKED) & (x < GREY_TOP)).sum(axis=1) / np.maximum(inked, 1)
        with one_thread():
            centred = torch.from_numpy(x) - torch.from_numpy(self.mean)  # [n, n_pixels]
            coords = centred @ torch.from_numpy(self.components).T  # [n, COMPONENTS]
            shape = ((centred * centred).sum(1) - (coords * coords).sum(1)).clamp_min(0).numpy()
        return np.stack([x.mean(axis=1, dtype=np.float64), (x >= BRIGHT).mean(axis=1), grey, shape],
                        axis=1).astype(np.float64)

    def unlike(self, x: np.ndarray) -> list[str | None]:
        """Per row: None where it looks like the training images, else why not (each statistic outside its
        widened training range, with its value and that range)."""
        stats = self.statistics(x)
        width = self.hi - self.lo
        low, high = self.lo - MARGIN * width, self.hi + MARGIN * width
        out: list[str | None] = []
        for row in stats:
            bad = [f"{name} {v:.3g} (training images: {lo:.3g}-{hi:.3g})"
                   for name, v, lo, hi, a, b in zip(STATISTICS, row, self.lo, self.hi, low, high)
                   if not a <= v <= b]
            out.append("; ".join(bad) if bad else None)
        return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch at one thread for the products here: on a shared 2-core machine the default (every core)
    made fitting MNIST's reference 3x slower (5.2 s against 1.7 s at load 6, 2026-12-06)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_reference(train_x: np.ndarray) -> Reference:
    """The Reference of a training split x [n, n_pixels] (pixel / 256)."""
    import torch

    x = np.asarray(train_x, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2:
        raise DataError(f"a training split of at least 2 rows is needed, got shape {x.shape}")
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    m = min(FIT_ROWS, len(x) // 2)  # the components from the first m rows; `shape`'s range from the others
    with one_thread():
        fit = torch.from_numpy(x[:m] - mean)  # [m, n_pixels]
        _vals, vecs = torch.linalg.eigh(fit.T @ fit)  # the scatter matrix's eigenvalues, ascending
    k = min(COMPONENTS, x.shape[1], m // 4)
    components = np.ascontiguousarray(vecs.flip(1)[:, :k].T.numpy())  # [k, n_pixels], largest first
    ref = Reference(mean, components, np.zeros(len(STATISTICS)), np.zeros(len(STATISTICS)), len(x))
    stats = np.concatenate([ref.statistics(x[i:i + 10_000]) for i in range(0, len(x), 10_000)])
    lo, hi = stats.min(axis=0), stats.max(axis=0)
    shape = STATISTICS.index("shape")  # over rows the components were not fitted to (they fit their own closer)
    lo[shape], hi[shape] = stats[m:, shape].min(), stats[m:, shape].max()
    return Reference(mean, components, lo, hi, len(x))


def _cache_file(dataset: str, files: list[Path]) -> Path:
    from deeptut.data.datasets import cache_dir

    key = [dataset, FORMAT, COMPONENTS, FIT_ROWS]
    for f in files:
        st = f.stat()
        key.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]
    return cache_dir("novelty") / f"{dataset}-{digest}.npz"


def reference_for(dataset: str, data_dir: str | Path | None = None) -> Reference:
    """The Reference of `dataset`'s training split, found as training finds it (`data_dir`, else the search
    path; never downloaded): from the user cache, or computed and cached. DataError when the data is not
    there."""
    from deeptut.data.datasets import DATASETS, find_data, load_dataset

    if dataset not in DATASETS:
        raise DataError(f"dataset {dataset!r} is not a set of images")
    found = find_data(dataset, data_dir)
    if found is None:
        raise DataError(f"no {dataset} data found (the training images the inputs are compared with)")
    files = sorted(found.idx_files.values()) if found.idx_files is not None else [found.pickle]
    path = _cache_file(dataset, files)
    if path.is_file():
        try:
            with np.load(path) as z:
                return Reference(z["mean"], z["components"], z["lo"], z["hi"], int(z["n"]))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: computed again below
    data = load_dataset(dataset, found.pickle if found.pickle is not None else found.folder, download=False)
    ref = fit_reference(data.train.x)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, mean=ref.mean, components=ref.components, lo=ref.lo, hi=ref.hi, n=ref.n)
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: computed again next time
    return ref
