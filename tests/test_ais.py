"""Annealed importance sampling of an RBM's log Z against exact enumeration on tiny RBMs."""

import itertools
import math

import numpy as np
import pytest
import torch

from deeptut.models.rbm import RBM
from deeptut.train.ais import (ais_log_partition, base_rate_vbias, exact_log_partition, linear_betas,
                               mean_log_probability, salakhutdinov_betas)


pytestmark = pytest.mark.usefixtures("one_thread")


def random_rbm(n_visible, n_hidden, scale, seed):
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(n_visible, n_hidden)
    with torch.no_grad():
        rbm.W.copy_(scale * torch.randn(n_visible, n_hidden, generator=g))
        rbm.hbias.copy_(scale * torch.randn(n_hidden, generator=g))
        rbm.vbias.copy_(scale * torch.randn(n_visible, generator=g))
    return rbm


def brute_log_z(rbm):
    W, c, b = (t.detach().double().numpy() for t in (rbm.W, rbm.hbias, rbm.vbias))
    V = np.array(list(itertools.product((0.0, 1.0), repeat=rbm.n_visible)))
    H = np.array(list(itertools.product((0.0, 1.0), repeat=rbm.n_hidden)))
    log_u = (V @ b)[:, None] + (H @ c)[None, :] + V @ W @ H.T      # -E(v, h)
    m = log_u.max()
    return m + math.log(np.exp(log_u - m).sum())


@pytest.mark.parametrize("n_visible,n_hidden", [(8, 5), (5, 8)])
def test_exact_log_partition_against_the_joint_sum(n_visible, n_hidden):
    rbm = random_rbm(n_visible, n_hidden, 1.0, seed=n_visible)  # both branches: sum over h, sum over v
    assert exact_log_partition(rbm, chunk=7) == pytest.approx(brute_log_z(rbm), rel=1e-12)


def test_mean_log_probability_normalises():
    rbm = random_rbm(7, 4, 1.0, seed=1)
    log_z = exact_log_partition(rbm)
    V = torch.tensor(list(itertools.product((0.0, 1.0), repeat=7)))
    probs = [math.exp(mean_log_probability(rbm, V[i:i + 1], log_z)) for i in range(len(V))]
    assert sum(probs) == pytest.approx(1.0, rel=1e-12)
    assert mean_log_probability(rbm, V, log_z) == pytest.approx(np.mean(np.log(probs)), rel=1e-12)


def test_base_rate_model_is_its_own_estimate():
    """With W = 0, hbias = 0 and vbias = the base rate, every intermediate distribution is the base one: all
    log weights are 0 and the estimate is log Z_0, which is exact."""
    x = (torch.rand(300, 9, generator=torch.Generator().manual_seed(2)) < torch.linspace(0.05, 0.9, 9)).float()
    b_A = base_rate_vbias(x)
    p = (x.sum(0).double() + 5) / (300 + 10)
    torch.testing.assert_close(torch.sigmoid(b_A), p)
    rbm = RBM(9, 4).double()
    with torch.no_grad():
        rbm.W.zero_()
        rbm.vbias.copy_(b_A)
    r = ais_log_partition(rbm, b_A, linear_betas(20), n_runs=10, generator=torch.Generator().manual_seed(3))
    assert np.all(np.abs(r.log_weights) < 1e-12)
    assert r.log_z == pytest.approx(exact_log_partition(rbm), abs=1e-6)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_exact_log_z_inside_the_reported_three_sigma_interval(seed):
    rbm = random_rbm(20, 12, 0.5, seed)
    data = (torch.rand(500, 20, generator=torch.Generator().manual_seed(seed)) < 0.3).float()
    exact = exact_log_partition(rbm)
    r = ais_log_partition(rbm, base_rate_vbias(data), linear_betas(1000), n_runs=100,
                          generator=torch.Generator().manual_seed(seed + 100))
    assert r.log_z_low < exact < r.log_z_high, (r.log_z_low, r.log_z, r.log_z_high, exact)
    assert r.log_z_low < r.log_z < r.log_z_high and r.log_z_high - r.log_z < 0.5  # informative, not vacuous


def test_default_ladder_on_a_strongly_coupled_rbm():
    """The paper's 14,500-step ladder (the default) on weights 3x larger: still inside, and tight (~4 s)."""
    rbm = random_rbm(20, 12, 1.5, seed=30)
    data = (torch.rand(500, 20, generator=torch.Generator().manual_seed(30)) < 0.3).float()
    exact = exact_log_partition(rbm)
    r = ais_log_partition(rbm, base_rate_vbias(data), n_runs=100, generator=torch.Generator().manual_seed(30))
    assert r.log_z_low < exact < r.log_z_high and r.log_z_high - r.log_z_low < 0.3


def test_bias_shrinks_as_the_ladder_lengthens():
    """log w of one run + log Z_0 underestimates log Z on average (Jensen: E[w] = Z / Z_0); the shortfall
    falls as the number of intermediate distributions grows (measured over 2,000 independent runs each,
    so the differences below are more than 10 standard errors wide)."""
    rbm = random_rbm(16, 10, 2.0, seed=20)
    data = (torch.rand(500, 16, generator=torch.Generator().manual_seed(21)) < 0.4).float()
    exact = exact_log_partition(rbm)
    b_A = base_rate_vbias(data)
    g = torch.Generator().manual_seed(22)
    bias, se = {}, {}
    for n in (10, 100, 1000):
        r = ais_log_partition(rbm, b_A, linear_betas(n), n_runs=2000, generator=g)
        one_run = r.log_weights + r.log_z_base            # 2,000 single-run estimates of log Z
        bias[n], se[n] = exact - one_run.mean(), one_run.std() / math.sqrt(len(one_run))
        assert r.log_z_low < exact < r.log_z_high         # the pooled estimate is still honest about it
    assert bias[10] - bias[100] > 5 * (se[10] + se[100])
    assert bias[100] - bias[1000] > 5 * (se[100] + se[1000])
    assert bias[1000] > -5 * se[1000]                     # Jensen: never an overestimate on average


def test_ladders_and_bad_input():
    b = salakhutdinov_betas()
    assert len(b) == 14501 and b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)
    assert np.diff(b)[0] == pytest.approx(1e-3) and np.diff(b)[-1] == pytest.approx(1e-5)
    rbm = random_rbm(5, 3, 1.0, seed=0)
    with pytest.raises(ValueError, match="betas"):
        ais_log_partition(rbm, torch.zeros(5), np.array([0.0, 0.7, 0.5, 1.0]))
    with pytest.raises(ValueError, match="n_runs"):
        ais_log_partition(rbm, torch.zeros(5), linear_betas(3), n_runs=1)
    with pytest.raises(ValueError, match="base_vbias"):
        ais_log_partition(rbm, torch.zeros(4), linear_betas(3))
    with pytest.raises(ValueError, match="enumeration"):
        exact_log_partition(RBM(30, 30))
