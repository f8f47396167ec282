"""The dA chapter: cost and gradients by hand on 3 pixels and 2 hidden units, the masking noise, tied weights,
the tutorial's initialisation."""

import math

import numpy as np
import pytest
import torch

from deeptut.models.da import dA


pytestmark = pytest.mark.usefixtures("one_thread")

W0 = [[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]]   # [n_visible=3, n_hidden=2]
B0 = [0.05, -0.1]                             # hidden bias b
BP0 = [0.2, -0.3, 0.1]                        # visible bias b_prime
X0 = [[1.0, 0.0, 0.5], [0.2, 0.9, 0.0]]       # two examples


def sig(a):
    return 1.0 / (1.0 + math.exp(-a))


def hand_cost_and_grads(x, tilde_x, W, b, bp):
    """Scalar loops: the cost and its gradients for tied weights, averaged over the examples."""
    nv, nh, n = len(W), len(W[0]), len(x)
    cost = 0.0
    gW = [[0.0] * nh for _ in range(nv)]
    gb, gbp = [0.0] * nh, [0.0] * nv
    for e in range(n):
        y = [sig(sum(tilde_x[e][i] * W[i][j] for i in range(nv)) + b[j]) for j in range(nh)]
        z = [sig(sum(y[j] * W[i][j] for j in range(nh)) + bp[i]) for i in range(nv)]
        cost += -sum(x[e][i] * math.log(z[i]) + (1 - x[e][i]) * math.log(1 - z[i]) for i in range(nv)) / n
        dz = [(z[i] - x[e][i]) / n for i in range(nv)]                 # d cost / d decoder pre-activation
        dy = [sum(dz[i] * W[i][j] for i in range(nv)) * y[j] * (1 - y[j]) for j in range(nh)]
        for i in range(nv):
            gbp[i] += dz[i]
            for j in range(nh):
                gW[i][j] += dz[i] * y[j] + tilde_x[e][i] * dy[j]       # decoder use + encoder use of W
        for j in range(nh):
            gb[j] += dy[j]
    return cost, gW, gb, gbp


def small_da():
    da = dA(3, 2).double()
    with torch.no_grad():
        da.W.copy_(torch.tensor(W0, dtype=torch.float64))
        da.b.copy_(torch.tensor(B0, dtype=torch.float64))
        da.b_prime.copy_(torch.tensor(BP0, dtype=torch.float64))
    return da


@pytest.mark.parametrize("level", [0.0, 0.5])
def test_cost_and_gradients_by_hand(level):
    da = small_da()
    x = torch.tensor(X0, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    cost = da.cost(x, level, g)
    gW, gb, gbp = torch.autograd.grad(cost, da.params)
    g.set_state(state)  # the same mask again, to do the hand computation with
    tilde_x = da.get_corrupted_input(x, level, g).tolist()
    hc, hW, hb, hbp = hand_cost_and_grads(X0, tilde_x, W0, B0, BP0)
    assert cost.item() == pytest.approx(hc, rel=1e-12)
    np.testing.assert_allclose(gW.numpy(), hW, rtol=1e-10)
    np.testing.assert_allclose(gb.numpy(), hb, rtol=1e-10)
    np.testing.assert_allclose(gbp.numpy(), hbp, rtol=1e-10)
    if level:
        assert tilde_x != X0  # the mask zeroed something (seed 7), so the corrupted path was exercised


def test_sgd_step_is_param_minus_lr_grad():
    da = small_da()
    x = torch.tensor(X0, dtype=torch.float64)
    _, hW, hb, hbp = hand_cost_and_grads(X0, X0, W0, B0, BP0)
    cost = da.get_cost_updates(x, 0.0, 0.1)
    assert cost.item() == pytest.approx(hand_cost_and_grads(X0, X0, W0, B0, BP0)[0])
    np.testing.assert_allclose(da.W.detach().numpy(), np.array(W0) - 0.1 * np.array(hW), rtol=1e-12)
    np.testing.assert_allclose(da.b.detach().numpy(), np.array(B0) - 0.1 * np.array(hb), rtol=1e-12)
    np.testing.assert_allclose(da.b_prime.detach().numpy(), np.array(BP0) - 0.1 * np.array(hbp), rtol=1e-12)


def test_mask_keep_rate_within_binomial_bounds_and_redrawn_every_call():
    da = dA(784, 10)
    x = torch.ones(100, 784)
    g = torch.Generator().manual_seed(0)
    masks = [da.get_corrupted_input(x, 0.3, g) for _ in range(3)]
    n = x.numel()
    for m in masks:
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        kept = m.sum().item()
        # Binomial(n, 0.7): mean 0.7 n, sd sqrt(n 0.3 0.7); 5 sd is a 1 in 3.5 million failure
        assert abs(kept - 0.7 * n) < 5 * math.sqrt(n * 0.21)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    # a kept entry keeps its value
    xv = torch.rand(20, 784, generator=g)
    t = da.get_corrupted_input(xv, 0.5, g)
    assert torch.all((t == 0) | (t == xv))
    assert torch.equal(da.get_corrupted_input(xv, 0.0, g), xv)
    with pytest.raises(ValueError, match="corruption_level"):
        da.get_corrupted_input(xv, 1.5, g)


def test_tied_weights_stay_tied_through_training():
    da = dA(6, 4)
    assert da.W_prime.data_ptr() == da.W.data_ptr()  # a view, not a copy
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    g = da.make_generator()
    for _ in range(5):
        da.get_cost_updates(x, 0.3, 0.5, g)
    assert torch.equal(da.W_prime, da.W.t())
    assert [n for n, _ in da.named_parameters()] == ["W", "b", "b_prime"]


def test_initialisation_bounds_and_draw_order():
    da = dA(784, 500)
    rng = np.random.RandomState(123)   # test_dA: rng = RandomState(123); RandomStreams(rng.randint(2 ** 30))
    seed = rng.randint(2 ** 30)
    bound = 4 * np.sqrt(6.0 / (500 + 784))
    expected = np.asarray(rng.uniform(low=-bound, high=bound, size=(784, 500)), dtype=np.float32)
    assert da.corruption_seed == seed
    assert np.array_equal(da.W.detach().numpy(), expected)
    W = da.W.detach()
    assert W.abs().max() <= bound and W.abs().max() > 0.99 * bound
    assert torch.count_nonzero(da.b) == 0 and torch.count_nonzero(da.b_prime) == 0
    # shared W and b, as SdA.py passes them: nothing is drawn for W
    W = torch.nn.Parameter(torch.zeros(784, 500))
    b = torch.nn.Parameter(torch.zeros(500))
    shared = dA(784, 500, np.random.RandomState(5), corruption_seed=9, W=W, bhid=b)
    assert shared.W is W and shared.b is b and shared.corruption_seed == 9
    with pytest.raises(ValueError, match="shape"):
        dA(784, 400, W=W)
