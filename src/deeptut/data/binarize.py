"""[data] binarize: train an RBM on 0/1 images instead of rbm.py's grey pixels in [0, 1).

    none        the pixels as they are (rbm.py: intensities used as the visible units' probabilities)
    round       pixel >= 0.5 -> 1 (rbm.py's T.round, the binarisation of its pseudo-likelihood cost)
    stochastic  each pixel drawn ONCE from Bernoulli(intensity), numpy default_rng(BINARIZE_SEED): one fixed
                binarised set, the same every run and every epoch (the literature's binarised MNIST,
                Salakhutdinov and Murray 2008; Larochelle and Murray 2011 publish such a fixed draw)

The stochastic draws are made in the order train, test, valid from one generator, so the training and test
images are bit for bit those of `deeptut eval --log-likelihood --binarize stochastic` (train/loglik.py draws
train then test with the same seed): a model trained so is scored on the very test binarisation its training
data came from. The binarised splits are float32 0/1 of the input's shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

BINARIZE_MODES = ("none", "round", "stochastic")
BINARIZE_SEED = 0  # numpy default_rng seed of the stochastic draw (train/loglik.py's, imported from here)
DRAW_ORDER = ("train", "test", "valid")  # the generator's order over the splits


def binary_pixels(x: np.ndarray, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The 0/1 pixels of intensities `x` as a bool array of x's shape: round, x >= 0.5; stochastic, each pixel
    drawn once from Bernoulli(x) by `rng.random` (float64 in [0, 1)). The one rule of both training
    (binarized_splits) and scoring (train/loglik.py binarize)."""
    if mode == "round":
        return x >= 0.5
    if mode == "stochastic" and rng is not None:
        return rng.random(x.shape) < x
    raise ValueError(f"binary_pixels: mode {mode!r}" + (" needs its random generator" if mode == "stochastic" else ""))


def binarized_splits(splits: Any, mode: str) -> Any:
    """`splits` (data/datasets.py Splits, or any frozen dataclass with train/valid/test splits whose `.x` is
    float pixels in [0, 1]) with every split's images binarised by `mode` (see the module docstring); the
    same object for "none"."""
    if mode not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {', '.join(BINARIZE_MODES)}, got {mode!r}")
    if mode == "none":
        return splits
    rng = np.random.default_rng(BINARIZE_SEED) if mode == "stochastic" else None
    out: dict[str, Any] = {}
    for name in DRAW_ORDER:
        split = getattr(splits, name)
        x = np.asarray(split.x)  # [n, 784] float32 pixel / 256
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"binarize {mode}: the {name} images must be intensities in [0, 1], got "
                             f"[{x.min()}, {x.max()}]")
        out[name] = dataclasses.replace(split, x=binary_pixels(x, mode, rng).astype(np.float32))
    return dataclasses.replace(splits, **out)
