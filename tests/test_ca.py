"""The cA chapter: the Jacobian and the contractive penalty against autograd, the tutorial's floor division."""

import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from deeptut.models.ca import cA, epoch_means, tutorial_printed_values


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_ca(floor_division=False, n_batchsize=3):
    torch.manual_seed(0)
    ca = cA(5, 4, n_batchsize=n_batchsize, numpy_rng=np.random.RandomState(3),
            floor_division=floor_division).double()
    with torch.no_grad():
        ca.b.copy_(torch.randn(4, dtype=torch.float64))
        ca.b_prime.copy_(torch.randn(5, dtype=torch.float64))
    return ca


def test_jacobian_against_autograd():
    ca = tiny_ca()
    x = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    J = ca.get_jacobian(ca.get_hidden_values(x))                       # [3, 5, 4]
    for e in range(3):
        Je = jacobian(ca.get_hidden_values, x[e:e + 1])                 # [1, 4, 1, 5]: dh_j / dx_i
        np.testing.assert_allclose(J[e].detach().numpy(), Je[0, :, 0, :].T.numpy(), rtol=1e-12)
    # the closed form of the penalty equals the sum of the squared entries
    assert ca.jacobian_sum_sq(ca.get_hidden_values(x)).item() == pytest.approx((J ** 2).sum().item(), rel=1e-12)


def test_cost_is_reconstruction_plus_contraction_times_mean_frobenius_norm():
    ca = tiny_ca()
    x = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cost, L_rec, L_jacob = ca.costs(x, contraction_level=0.1)
    fro = sum((jacobian(ca.get_hidden_values, x[e:e + 1]) ** 2).sum() for e in range(3)) / 3
    z = ca(x)
    rec = -(x * torch.log(z) + (1 - x) * torch.log(1 - z)).sum(dim=1).mean()
    assert L_jacob.item() == pytest.approx(fro.item(), rel=1e-12)
    assert L_rec.item() == pytest.approx(rec.item(), rel=1e-12)
    assert cost.item() == pytest.approx(rec.item() + 0.1 * fro.item(), rel=1e-12)
    # the penalty's gradient: the contraction term moves W (and b) against autograd of the explicit form
    def explicit(W, b):
        h = torch.sigmoid(x @ W + b)
        return sum(((h[e] * (1 - h[e])).unsqueeze(0) * W).pow(2).sum() for e in range(3)) / 3
    gW, gb = torch.autograd.grad(ca.costs(x, 1.0)[0] - ca.costs(x, 0.0)[0], [ca.W, ca.b])
    eW, eb = torch.autograd.grad(explicit(ca.W, ca.b), [ca.W, ca.b])
    np.testing.assert_allclose(gW.detach().numpy(), eW.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(gb.detach().numpy(), eb.detach().numpy(), rtol=1e-10)


def test_floor_division_quirk_value_and_zero_gradient():
    x = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    true, floor = tiny_ca(False, n_batchsize=2), tiny_ca(True, n_batchsize=2)
    with torch.no_grad():  # weights large enough that sum(J ** 2) / 2 is well above 1
        true.W.mul_(8)
        floor.W.mul_(8)
    _, _, Lt = true.costs(x)
    _, _, Lf = floor.costs(x)
    s = true.jacobian_sum_sq(true.get_hidden_values(x)).item()
    assert Lt.item() == pytest.approx(s / 2, rel=1e-12)
    assert Lf.item() == math.floor(s / 2) and Lf.item() != Lt.item()
    # Theano's // has no gradient: with floor division the contraction level does not change the step
    g0 = torch.autograd.grad(floor.cost(x, 0.0), floor.params)
    g1 = torch.autograd.grad(floor.cost(x, 5.0), floor.params)
    for a, b in zip(g0, g1):
        assert torch.equal(a, b)
    g1t = torch.autograd.grad(true.cost(x, 5.0), true.params)
    assert not torch.equal(g1t[0], torch.autograd.grad(true.cost(x, 0.0), true.params)[0])


def test_sgd_step_and_returned_costs():
    ca = tiny_ca()
    x = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    cost, L_rec0, L_jacob0 = ca.costs(x, 0.1)
    grads = torch.autograd.grad(cost, ca.params)
    before = [p.detach().clone() for p in ca.params]
    L_rec, L_jacob = ca.get_cost_updates(x, 0.1, 0.01)
    assert L_rec.item() == L_rec0.item() and L_jacob.item() == L_jacob0.item()
    for p, p0, g in zip(ca.params, before, grads):
        torch.testing.assert_close(p.detach(), p0 - 0.01 * g)


def test_initialisation_draw_order():
    ca = cA(784, 500, n_batchsize=10)
    rng = np.random.RandomState(123)  # cA.py: rng = RandomState(123), no RandomStreams draw before W
    bound = 4 * np.sqrt(6.0 / (500 + 784))
    expected = np.asarray(rng.uniform(low=-bound, high=bound, size=(784, 500)), dtype=np.float32)
    assert np.array_equal(ca.W.detach().numpy(), expected)
    assert torch.count_nonzero(ca.b) == 0 and torch.count_nonzero(ca.b_prime) == 0
    with pytest.raises(ValueError, match="n_batchsize"):
        cA(784, 500, n_batchsize=0)


def test_printed_values_reproduce_cA_py_row_indexing():
    costs = [(60.0, 16.0), (50.0, 9.0), (40.0, 4.0)]
    # cA.py: mean(c_array[0]) = mean(60, 16); mean(sqrt(c_array[1])) = mean(sqrt(50), sqrt(9))
    assert tutorial_printed_values(costs) == (38.0, (math.sqrt(50.0) + 3.0) / 2)
    assert epoch_means(costs) == (50.0, 3.0)
    with pytest.raises(ValueError, match="two minibatches"):
        tutorial_printed_values(costs[:1])
