"""Logistic regression, its costs, and the hand-fused step against closed forms and autograd."""

import numpy as np
import pytest
import torch

from deeptut.accel import make_train_step
from deeptut.accel.cpu.fused import LogisticFusedStep
from deeptut.config import TrainConfig
from deeptut.models.logistic import LogisticRegression
from deeptut.losses import L1, L2_sqr, errors, n_errors, negative_log_likelihood
from deeptut.steps import AutogradStep
from synthetic import random_batch, random_logistic


_batch, _random_model = random_batch, random_logistic


def test_zero_init_and_shapes():
    m = LogisticRegression()
    assert m.W.shape == (784, 10) and m.b.shape == (10,)
    assert not m.W.any() and not m.b.any()
    x, _ = _batch(5)
    p = m.p_y_given_x(x)
    assert torch.allclose(p, torch.full((5, 10), 0.1))  # uniform before training


def test_nll_and_errors_hand_case():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.5]])
    y = torch.tensor([0, 0, 1])
    logp = torch.log_softmax(logits, 1)
    expected = -(logp[0, 0] + logp[1, 0] + logp[2, 1]) / 3
    assert torch.allclose(negative_log_likelihood(logits, y), expected)
    assert int(n_errors(logits, y)) == 1
    assert float(errors(logits, y)) == pytest.approx(1 / 3)


def test_penalties():
    w = [torch.tensor([[1.0, -2.0]]), torch.tensor([3.0])]
    assert float(L1(w)) == 6.0
    assert float(L2_sqr(w)) == 14.0


@pytest.mark.parametrize("L1_reg,L2_reg", [(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-2)])
def test_autograd_gradient_matches_closed_form(L1_reg, L2_reg):
    m = _random_model()
    x, y = _batch()
    cfg = TrainConfig(L1_reg=L1_reg, L2_reg=L2_reg)
    AutogradStep(m, cfg).cost(x, y).backward()
    X, Y = x.double().numpy(), y.numpy()
    W, b = m.W.detach().double().numpy(), m.b.detach().double().numpy()
    z = X @ W + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(Y)), Y] -= 1
    gW = X.T @ p / len(Y) + L1_reg * np.sign(W) + 2 * L2_reg * W
    gb = p.sum(0) / len(Y)
    np.testing.assert_allclose(m.W.grad.numpy(), gW, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.b.grad.numpy(), gb, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("L1_reg,L2_reg", [(0.0, 0.0), (1e-3, 1e-4)])
def test_fused_step_matches_autograd(L1_reg, L2_reg):
    """Same arithmetic, other kernels (OpenBLAS vs torch): agreement to float32 rounding over 20 steps."""
    cfg = TrainConfig(batch_size=60, L1_reg=L1_reg, L2_reg=L2_reg)
    a, f = _random_model(), _random_model()
    sa, sf = AutogradStep(a, cfg), LogisticFusedStep(f, cfg)
    for i in range(20):
        x, y = _batch(seed=i)
        ca, cf = float(sa(x, y, 0.01)), sf(x, y, 0.01)
        assert cf == pytest.approx(ca, rel=1e-5)
    np.testing.assert_allclose(f.W.detach().numpy(), a.W.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(f.b.detach().numpy(), a.b.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_fused_step_is_deterministic_and_updates_model_in_place():
    cfg = TrainConfig(batch_size=60)
    ms = [_random_model(), _random_model()]
    for m in ms:
        step = LogisticFusedStep(m, cfg)
        for i in range(5):
            step(*_batch(seed=i), 0.13)
    assert torch.equal(ms[0].W, ms[1].W) and torch.equal(ms[0].b, ms[1].b)
    assert not torch.equal(ms[0].W, _random_model().W)


def test_make_train_step_choice():
    m = LogisticRegression()
    cpu = torch.device("cpu")
    assert isinstance(make_train_step(m, TrainConfig(), cpu), LogisticFusedStep)
    assert isinstance(make_train_step(m, TrainConfig(momentum=0.9), cpu), AutogradStep)
    assert isinstance(make_train_step(m, TrainConfig(fast_step=False), cpu), AutogradStep)


def test_numpy_forward_equals_torch_forward():
    """The model is plain torch; the CPU evaluation's forward (numpy's product) is the same function."""
    from deeptut.accel.cpu.evaluate import cpu_forward

    m = _random_model()
    x, _ = _batch(100)
    with torch.no_grad():
        fast = cpu_forward(m)(x)  # numpy path: no grad needed
        assert torch.equal(m(x), torch.addmm(m.b, x, m.W))  # the module itself: torch's addmm
    ref = torch.addmm(m.b, x, m.W)  # grad enabled, parameters require grad: torch path
    assert ref.requires_grad
    torch.testing.assert_close(fast, ref.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_an_eager_steps_run_is_a_loop_over_its_calls(fused):
    """run(split, first, count, lr_at) == count calls of step(x, y, lr_at(k)) on minibatches first.., the
    costs summed: the loop's one way to call any step."""
    from deeptut.data.device import DeviceSplit

    cfg = TrainConfig(batch_size=20)
    x, y = _batch(100, seed=3)
    split = DeviceSplit(x, y)
    make = LogisticFusedStep if fused else AutogradStep
    a, b = _random_model(), _random_model()
    sa, sb = make(a, cfg), make(b, cfg)
    lr_at = lambda k: 0.1 / (k + 1)  # noqa: E731
    total = sa.run(split, 1, 3, lr_at)
    costs = [sb(x[i * 20:(i + 1) * 20], y[i * 20:(i + 1) * 20], lr_at(i - 1)) for i in (1, 2, 3)]
    assert float(total) == pytest.approx(float(sum(costs)), rel=1e-6)
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    assert not torch.equal(a.W, _random_model().W)
