"""Tiny synthetic MNIST-shaped datasets for fast end-to-end runs."""

import numpy as np

from deeptut.data.datasets import Split, Splits


def tiny_splits(n_train=600, n_valid=200, n_test=200, seed=0, noise=0.35) -> Splits:
    """Ten noisy prototypes in [0, 1)^784 at multiples of 1/256, like MNIST's scaling; learnable in a few
    epochs."""
    rng = np.random.default_rng(seed)
    protos = rng.random((10, 784))

    def make(n):
        y = rng.integers(0, 10, n)
        x = np.clip(protos[y] + noise * rng.standard_normal((n, 784)), 0, 255 / 256)
        return Split(np.floor(x * 256).astype(np.float32) / 256, y.astype(np.int64))

    return Splits(make(n_train), make(n_valid), make(n_test), source="synthetic", name="mnist")
