"""The learning-rate range test: the suggestion inside the stable range, the model put back, the picture."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from deeptut.config import TrainConfig
from deeptut.data.device import DeviceSplit
from deeptut.models.logistic import LogisticRegression
from deeptut.train.lr_find import lr_find, plot_lr_find
from deeptut.steps import AutogradStep
from synthetic import tiny_splits


class Linear(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w


def quadratic_step(model):
    """Plain gradient descent on the mean squared error (x w - y)^2: Hessian H = 2 X^T X / n."""
    def step(x, y, lr):
        model.zero_grad()
        cost = ((model(x) - y.to(x.dtype)) ** 2).mean()
        cost.backward()
        with torch.no_grad():
            model.w -= lr * model.w.grad
        return cost.detach()
    return step


def test_quadratic_suggestion_below_the_closed_form_edge():
    """Full-batch gradient descent on a quadratic diverges exactly above lr = 2 / lambda_max(H)."""
    rng = np.random.default_rng(0)
    n, d = 64, 5
    x = rng.standard_normal((n, d)) * np.array([3.0, 1.0, 1.0, 0.5, 0.2])
    w_true = rng.standard_normal(d)
    y = np.rint(x @ w_true + 5)  # DeviceSplit keeps labels as int64
    split = DeviceSplit(torch.from_numpy(x), torch.from_numpy(y))
    lam_max = np.linalg.eigvalsh(2 * x.T @ x / n).max()
    edge = 2 / lam_max
    model = Linear(d)
    r = lr_find(model, quadratic_step, split, batch_size=n, lr_min=1e-5, lr_max=10.0, n_steps=300)
    assert r.stopped_early and r.learning_rates[-1] < 10.0
    assert r.learning_rates[-1] > edge  # it blew up only past the edge
    assert edge / 100 < r.suggestion < edge
    # just past the edge the error grows by |1 - lr lambda_max| ~ 1 per step, slowly, while the other
    # directions still fall: the minimum of the loss lies past the edge (here ~4x), hence the / 10
    assert r.min_rate > edge
    assert torch.equal(model.w, torch.zeros(d, dtype=torch.float64))  # restored


def blow_up_rate(splits, rates, steps=100, batch_size=50):
    """The smallest rate at which constant-rate SGD blows up: a cost above 4 x the first (lr_find's own stop
    rule) or not finite, or a last-10 mean above the first cost. (The tiny set has fewer examples than
    pixels, so it is separable and a rate that blows up early may still memorise it later: the transient
    counts.)"""
    tr = DeviceSplit(splits.train.x, splits.train.y)
    for lr in rates:
        model = LogisticRegression()
        step = AutogradStep(model, TrainConfig(batch_size=batch_size))
        n_b = tr.n_batches(batch_size)
        costs = [float(step(*tr.minibatch(i % n_b, batch_size), lr)) for i in range(steps)]
        if not np.isfinite(costs).all() or max(costs) > 4 * costs[0] or np.mean(costs[-10:]) > costs[0]:
            return lr, costs
    return math.inf, costs


def test_logistic_suggestion_trains_and_is_below_blow_up():
    s = tiny_splits(n_train=600, n_valid=20, n_test=20, seed=3, noise=1.0)  # noisy: not separable, so
    train = DeviceSplit(s.train.x, s.train.y)
    model = LogisticRegression()
    with torch.no_grad():  # a non-trivial start, to check it comes back
        model.W.copy_(torch.randn(784, 10, generator=torch.Generator().manual_seed(1)) * 0.01)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    rng_before = torch.get_rng_state()
    cfg = TrainConfig(batch_size=50)
    r = lr_find(model, lambda m: AutogradStep(m, cfg), train, batch_size=50, lr_min=1e-4, lr_max=1e3,
                n_steps=200)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.training and torch.equal(torch.get_rng_state(), rng_before)
    assert r.stopped_early and r.note == ""
    rates = list(np.geomspace(r.suggestion, 1e3, 16))
    blow, _ = blow_up_rate(s, rates)
    assert r.suggestion * 1.5 < blow < 1e3  # the grid starts at the suggestion: a real margin
    _, costs = blow_up_rate(s, [r.suggestion])  # does not blow up (checked above) ...
    assert np.mean(costs[-10:]) < 0.9 * np.mean(costs[:10])  # ... and learns
    json.dumps(r.to_dict(), allow_nan=False)
    assert len(r.learning_rates) == len(r.losses) == len(r.smoothed) <= 200
    assert np.all(np.diff(r.learning_rates) > 0)


def test_arguments():
    split = DeviceSplit(torch.zeros(10, 3), torch.zeros(10))
    with pytest.raises(ValueError, match="lr_min"):
        lr_find(Linear(3), quadratic_step, split, 5, lr_min=1.0, lr_max=0.1)
    with pytest.raises(ValueError, match="batch_size"):
        lr_find(Linear(3), quadratic_step, split, 20)


def test_picture_written(tmp_path):
    pytest.importorskip("matplotlib")
    s = tiny_splits(n_train=200, n_valid=10, n_test=10)
    cfg = TrainConfig(batch_size=20)
    r = lr_find(LogisticRegression(), lambda m: AutogradStep(m, cfg), DeviceSplit(s.train.x, s.train.y), 20,
                lr_min=1e-3, lr_max=1e3, n_steps=60)
    p = plot_lr_find(r, tmp_path / "sub" / "lr_find.png", title="logistic $test")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
