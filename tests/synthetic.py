"""Tiny synthetic datasets for fast end-to-end runs: MNIST-shaped by default; tests/tiny.py's reliability runs
use the same generator at 32 inputs and 4 classes."""

import numpy as np
import torch

from deeptut.data.datasets import Split, Splits


def tiny_splits(n_train=600, n_valid=200, n_test=200, seed=0, noise=0.35, n_in=784, n_out=10) -> Splits:
    """n_out noisy prototypes in [0, 1)^n_in, pixels at multiples of 1/256 like MNIST's scaling (so a split
    streams as bytes). noise: the standard deviation added to a prototype, before clipping to [0, 255/256];
    at 784 inputs and 0.35 a network learns it in a few epochs; at 32 inputs, 4 classes and 1.0 (tiny.py)
    a logistic regression needs a few dozen validations, with several new bests."""
    rng = np.random.default_rng(seed)
    protos = rng.random((n_out, n_in))

    def make(n):
        y = rng.integers(0, n_out, n)
        x = np.clip(protos[y] + noise * rng.standard_normal((n, n_in)), 0, 255 / 256)
        return Split(np.floor(x * 256).astype(np.float32) / 256, y.astype(np.int64))

    return Splits(make(n_train), make(n_valid), make(n_test), source="synthetic", name="mnist")


def write_tiny_idx(folder, **kw):
    """The tiny dataset as the four IDX files (dataset "idx": the last sixth of train is validation)."""
    from deeptut.data.idx import write_idx

    s = tiny_splits(**kw)
    train_x = np.concatenate([s.train.x, s.valid.x])
    train_y = np.concatenate([s.train.y, s.valid.y])
    for prefix, x, y in (("train", train_x, train_y), ("t10k", s.test.x, s.test.y)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", (x * 256).astype(np.uint8).reshape(-1, 28, 28))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))
    return folder


def random_batch(n=60, seed=0, n_in=784):
    """x [n, n_in] float32 at multiples of 1/256, y [n] int64: one MNIST-shaped minibatch."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, (n, n_in)) / 256).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(rng.integers(0, 10, n))


def sparse_batch(n=60, seed=0, n_in=784, density=0.2):
    """Like random_batch, but MNIST-like in its zeros: a fraction `density` of nonzero pixels (at multiples
    of 1/256), some negative zeros, and an all-zero first row (the case the sparse C kernels compact)."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(1, 256, (n, n_in)) / 256).astype(np.float32)
    x[rng.random((n, n_in)) > density] = 0.0
    x[rng.random((n, n_in)) < 0.02] = -0.0
    x[0] = 0.0
    return torch.from_numpy(x), torch.from_numpy(rng.integers(0, 10, n))


def random_logistic(seed=1, n_in=784):
    """A LogisticRegression with small random parameters (the tutorial's zeros would hide errors)."""
    from deeptut.models.logistic import LogisticRegression

    m = LogisticRegression(n_in, 10)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.W.copy_(torch.randn(n_in, 10, generator=g) * 0.05)
        m.b.copy_(torch.randn(10, generator=g) * 0.1)
    return m
