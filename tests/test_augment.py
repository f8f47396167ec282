"""Random translations of the training images (data/augment.py): the move against a pixel-by-pixel
reference, the per-epoch draws, the config's checks, and a training run that sees the moved images. Streamed
== resident, graph runner == eager and resume with augmentation are in test_stream.py, test_gpu_paths.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeptut import config
from deeptut.data import augment
from deeptut.data.device import DeviceSplit
from deeptut.data.stream import StreamSplit
from deeptut.errors import ConfigError
from deeptut.train.loop import epoch_permutation, fit


def moved_by_loops(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    side = img.shape[0]
    out = np.zeros_like(img)
    for r in range(side):
        for c in range(side):
            if 0 <= r - dy < side and 0 <= c - dx < side:
                out[r, c] = img[r - dy, c - dx]
    return out


def test_a_hand_case():
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 9)  # 1 2 3 / 4 5 6 / 7 8 9
    down_right = augment.translate(x, torch.tensor([1]), torch.tensor([1]), 3, 1)
    assert down_right.view(3, 3).tolist() == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]
    up_left = augment.translate(x, torch.tensor([-1]), torch.tensor([-1]), 3, 1)
    assert up_left.view(3, 3).tolist() == [[5, 6, 0], [8, 9, 0], [0, 0, 0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("rows_per", [4096, 7])
def test_every_move_matches_the_pixel_loops(dtype, rows_per, monkeypatch):
    monkeypatch.setattr(augment, "ROWS_PER_GATHER", rows_per)  # several gathers, a ragged last one
    side, s = 6, 2
    moves = [(a, b) for a in range(-s, s + 1) for b in range(-s, s + 1)]
    rng = np.random.default_rng(0)
    imgs = rng.integers(1, 200, (len(moves), side, side))
    x = torch.from_numpy(imgs.reshape(len(moves), -1)).to(dtype)
    dy, dx = torch.tensor([m[0] for m in moves]), torch.tensor([m[1] for m in moves])
    got = augment.translate(x, dy, dx, side, s)
    assert got.dtype == dtype and got.shape == x.shape
    for i, (a, b) in enumerate(moves):
        want = moved_by_loops(imgs[i], a, b)
        assert np.array_equal(got[i].view(side, side).numpy(), want.astype(got.numpy().dtype)), (a, b)
    assert torch.equal(augment.translate(x, dy * 0, dx * 0, side, s), x)  # no move: the images as they were
    assert torch.equal(augment.translate(x, dy * 0, dx * 0, side, 0), x)


def test_translate_checks_the_row_width():
    with pytest.raises(ValueError, match="28x28"):
        augment.translate(torch.zeros(2, 783), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                          28, 2)
    assert augment.translate(torch.zeros(0, 784), torch.zeros(0), torch.zeros(0), 28, 2).shape == (0, 784)


def test_epoch_shifts_are_a_function_of_seed_and_epoch():
    dy, dx = augment.epoch_shifts(5, 3, 10_000, 2)
    assert dy.shape == dx.shape == (10_000,) and dy.dtype == torch.int64
    assert set(dy.tolist()) == set(dx.tolist()) == {-2, -1, 0, 1, 2}  # every move, and no larger one
    again = augment.epoch_shifts(5, 3, 10_000, 2)
    assert torch.equal(dy, again[0]) and torch.equal(dx, again[1])
    assert not torch.equal(dy, augment.epoch_shifts(5, 4, 10_000, 2)[0])  # redrawn each epoch
    assert not torch.equal(dy, augment.epoch_shifts(6, 3, 10_000, 2)[0])
    assert not torch.equal(dy, dx)


def test_image_side():
    assert config.image_side(784) == 28 and config.image_side(1) == 1 and config.image_side(785) is None


def test_config_checks_augment_shift():
    assert config.resolve("lenet", None, {"augment_shift": "2"}).augment_shift == 2
    assert config.resolve("lenet", None, {}).augment_shift == 0  # the tutorials: off
    for bad, match in ((-1, ">= 0"), (28, "28x28"), (40, "28x28")):
        with pytest.raises(ConfigError, match=match):
            config.resolve("lenet", None, {"augment_shift": bad})
    with pytest.raises(ConfigError, match="n_in 785"):
        config.resolve("logistic", None, {"augment_shift": 1, "n_in": 785})


@pytest.mark.parametrize("shuffle", [False, True])
def test_splits_translate_the_epochs_rows_resident_and_streamed(shuffle):
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 256, (300, 784)) / 256).astype(np.float32)  # streams as bytes
    y = rng.integers(0, 10, 300)
    bs = 20
    resident = DeviceSplit(x, y)
    streamed = StreamSplit(x, y, "cpu", 2 * 3 * bs * (784 * 4 + 8 + 784))  # chunks of 3 minibatches
    order = torch.arange(300)
    if shuffle:
        order = epoch_permutation(7, 1, 300)
        resident, streamed = resident.permuted(order), streamed.permuted(order)
    dy, dx = augment.epoch_shifts(7, 1, 300, 2)
    a, b = resident.translated(dy, dx, 28, 2), streamed.translated(dy, dx, 28, 2)
    for i in range(a.n_batches(bs)):
        xa, ya = a.minibatch(i, bs)
        xb, yb = b.minibatch(i, bs)
        assert torch.equal(xa, xb) and torch.equal(ya, yb), i
        j = int(order[i * bs])  # the first example of minibatch i, moved by the epoch's first shifts
        want = moved_by_loops(x[j].reshape(28, 28), int(dy[i * bs]), int(dx[i * bs]))
        assert np.array_equal(xa[0].view(28, 28).numpy(), want)


def test_a_run_trains_on_the_moved_images(monkeypatch):
    """fit asks for each epoch's moves and trains on them: different parameters from the plain run; the
    same run again gives the same parameters."""
    from synthetic import tiny_splits

    from deeptut.train import loop

    asked = []
    real = augment.epoch_shifts
    monkeypatch.setattr(augment, "epoch_shifts", lambda *a: asked.append(a) or real(*a))
    data = tiny_splits(400, 100, 100)
    base = {"device": "cpu", "n_epochs": 2, "batch_size": 50, "n_hidden": 8, "patience": 10_000, "seed": 3}

    import deeptut.models as models

    build = models.build_model  # what train/runner.py prepare builds the run's module with

    def params(**kw):
        captured = {}
        monkeypatch.setattr(models, "build_model", lambda *a: captured.setdefault("m", build(*a)))
        fit(config.resolve("mlp", None, {**base, **kw}), data, None, quiet=True)
        return [p.detach().clone() for p in captured["m"].parameters()]

    plain, moved, again = params(), params(augment_shift=2), params(augment_shift=2)
    assert asked == [(3, 1, 400, 2), (3, 2, 400, 2)] * 2
    assert all(torch.equal(a, b) for a, b in zip(moved, again))
    assert not torch.equal(plain[0], moved[0])
