"""The RBM chapter against brute-force enumeration on tiny RBMs: free energy, p(v), conditionals, the CD-k
gradient's expectation, Gibbs samples (chi-square); the pseudo-likelihood and reconstruction costs; PCD's
chain; the tutorial's initialisation and sampling."""

import itertools
import math

import numpy as np
import pytest
import torch

from deeptut.models.rbm import RBM, sample_chains, tutorial_test_idx


pytestmark = pytest.mark.usefixtures("one_thread")


def random_rbm(n_visible, n_hidden, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(n_visible, n_hidden).double()
    with torch.no_grad():
        rbm.W.copy_(scale * torch.randn(n_visible, n_hidden, generator=g, dtype=torch.float64))
        rbm.hbias.copy_(scale * torch.randn(n_hidden, generator=g, dtype=torch.float64))
        rbm.vbias.copy_(scale * torch.randn(n_visible, generator=g, dtype=torch.float64))
    return rbm


def states(n):
    return np.array(list(itertools.product((0.0, 1.0), repeat=n)))


def enumerate_joint(rbm):
    """All (v, h) pairs and exp(-E(v, h)) in float64 numpy: V [2^nv, nv], H [2^nh, nh], U [2^nv, 2^nh]."""
    W, c, b = (t.detach().numpy() for t in (rbm.W, rbm.hbias, rbm.vbias))
    V, H = states(rbm.n_visible), states(rbm.n_hidden)
    energy = -(V @ b)[:, None] - (H @ c)[None, :] - V @ W @ H.T      # E(v, h) = -v.b - h.c - v W h
    return V, H, np.exp(-energy)


def test_free_energy_and_marginal_against_enumeration():
    rbm = random_rbm(8, 5)
    V, H, U = enumerate_joint(rbm)
    fe = rbm.free_energy(torch.from_numpy(V)).detach().numpy()
    np.testing.assert_allclose(fe, -np.log(U.sum(axis=1)), rtol=1e-12)
    Z = U.sum()
    p_v = np.exp(-fe) / Z
    assert p_v.sum() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(p_v, U.sum(axis=1) / Z, rtol=1e-12)
    assert torch.equal(rbm(torch.from_numpy(V)), rbm.free_energy(torch.from_numpy(V)))


def test_conditionals_against_enumeration():
    rbm = random_rbm(6, 4, seed=1)
    V, H, U = enumerate_joint(rbm)
    p_h_given_v = U / U.sum(axis=1, keepdims=True)                   # [2^nv, 2^nh]
    _, h_mean = rbm.propup(torch.from_numpy(V))
    np.testing.assert_allclose(h_mean.detach().numpy(), p_h_given_v @ H, rtol=1e-12)
    p_v_given_h = U / U.sum(axis=0, keepdims=True)                   # [2^nv, 2^nh]
    _, v_mean = rbm.propdown(torch.from_numpy(H))
    np.testing.assert_allclose(v_mean.detach().numpy(), p_v_given_h.T @ V, rtol=1e-12)
    # the samples are 0/1 draws of those means
    g = torch.Generator().manual_seed(0)
    pre, mean, sample = rbm.sample_h_given_v(torch.from_numpy(V).repeat(200, 1), g)
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(sample.reshape(200, len(V), 4).mean(dim=0), h_mean, atol=0.15)


def test_cd_gradients_are_the_free_energy_difference_with_the_chain_end_constant():
    rbm = random_rbm(7, 5, seed=2)
    x = torch.rand(9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for persistent in (None, torch.zeros(4, 5, dtype=torch.float64)):
        r = rbm.cd_gradients(x, k=3, persistent=persistent, generator=torch.Generator().manual_seed(4))
        chain_end = r.chain_end.detach()
        cost = rbm.free_energy(x).mean() - rbm.free_energy(chain_end).mean()
        for g, a in zip(r.grads, torch.autograd.grad(cost, rbm.params)):
            torch.testing.assert_close(g, a, rtol=1e-12, atol=1e-12)


def test_expected_cd_k_gradient_matches_the_exact_gradient_at_large_k():
    """With k = 30 steps the chain has forgotten its start on this small, well-mixing RBM: the CD gradient
    averaged over N chains is within 4.5 standard errors of the exact one (minus the log-likelihood gradient:
    model expectation minus data expectation)."""
    rbm = random_rbm(6, 4, scale=0.5, seed=5)
    data = torch.tensor(states(6)[[3, 17, 40, 63]])                   # four training vectors
    N = 20000
    x = data.repeat(N // 4, 1)
    r = rbm.cd_gradients(x, k=30, generator=torch.Generator().manual_seed(6))
    V, H, U = enumerate_joint(rbm)
    p_v = U.sum(axis=1) / U.sum()
    W, c = rbm.W.detach().numpy(), rbm.hbias.detach().numpy()
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    d, hd = data.numpy(), sig(data.numpy() @ W + c)
    hv = sig(V @ W + c)
    exact = (np.einsum("s,si,sj->ij", p_v, V, hv) - d.T @ hd / len(d),   # W
             p_v @ hv - hd.mean(axis=0),                                   # hbias
             p_v @ V - d.mean(axis=0))                                     # vbias
    ve = r.chain_end.numpy()
    he = sig(ve @ W + c)
    per_chain = (np.einsum("ni,nj->nij", ve, he), he, ve)                # the model terms, one per chain
    for g, e, t in zip(r.grads, exact, per_chain):
        se = t.std(axis=0) / math.sqrt(N)
        assert np.all(np.abs(g.numpy() - e) <= 4.5 * se + 1e-9), (g.numpy() - e) / se


def chi2_quantile(dof, z):
    """Wilson-Hilferty: the chi-square quantile at the normal quantile z (accurate to ~1 % for dof >= 10)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def test_gibbs_samples_follow_the_exact_distribution():
    rbm = random_rbm(4, 3, scale=0.7, seed=7)
    V, H, U = enumerate_joint(rbm)
    p_v = U.sum(axis=1) / U.sum()
    N = 20000
    assert (N * p_v).min() >= 5  # the chi-square approximation's usual condition
    g = torch.Generator().manual_seed(8)
    v = (torch.rand(N, 4, generator=g, dtype=torch.float64) < 0.5).double()
    for _ in range(50):
        *_, v = rbm.gibbs_vhv(v, g)
    idx = (v.numpy() @ (2 ** np.arange(3, -1, -1))).astype(int)       # state index, in states()'s order
    counts = np.bincount(idx, minlength=16)
    chi2 = ((counts - N * p_v) ** 2 / (N * p_v)).sum()
    assert chi2 < chi2_quantile(15, 3.719)  # p = 1e-4
    # and the hidden-first step is a valid chain too: its v's follow p(v)
    h = (torch.rand(N, 3, generator=g, dtype=torch.float64) < 0.5).double()
    for _ in range(50):
        _, _, v, _, _, h = rbm.gibbs_hvh(h, g)
    counts = np.bincount((v.numpy() @ (2 ** np.arange(3, -1, -1))).astype(int), minlength=16)
    assert ((counts - N * p_v) ** 2 / (N * p_v)).sum() < chi2_quantile(15, 3.719)


def test_pseudo_likelihood_cost_for_one_bit():
    rbm = random_rbm(6, 4, seed=9)
    x = torch.tensor([[0.2, 0.5, 0.9, 0.0, 0.49, 1.0], [1.0, 0.0, 0.51, 0.5, 0.7, 0.1]], dtype=torch.float64)
    xi = torch.tensor([[0, 1, 1, 0, 0, 1], [1, 0, 1, 1, 1, 0]], dtype=torch.float64)  # 0.5 rounds up (T.round)
    for bit in (1, 3):
        flipped = xi.clone()
        flipped[:, bit] = 1 - flipped[:, bit]
        # log p(x_bit | x_rest) = -FE(xi) - log(exp(-FE(xi)) + exp(-FE(flipped)))
        fe, fe_flip = rbm.free_energy(xi), rbm.free_energy(flipped)
        log_cond = -fe - torch.logaddexp(-fe, -fe_flip)
        assert rbm.pseudo_likelihood_cost(x, bit).item() == pytest.approx(6 * log_cond.mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="bit_i_idx"):
        rbm.pseudo_likelihood_cost(x, 6)


def test_reconstruction_cost_has_the_tutorials_sign():
    rbm = random_rbm(5, 3, seed=10)
    x = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    a = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    p = torch.sigmoid(a)
    expected = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(dim=1).mean()
    assert rbm.reconstruction_cost(x, a).item() == pytest.approx(expected.item(), rel=1e-12)
    assert expected.item() < 0


def test_update_applies_sgd_after_the_monitoring_cost_and_pcd_chain_persists():
    rbm = random_rbm(6, 4, seed=13)
    x = torch.rand(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    chain = torch.zeros(5, 4, dtype=torch.float64)   # rbm.py: persistent_chain starts at zeros, batch_size rows
    before = [p.detach().clone() for p in rbm.params]
    r = rbm.cd_gradients(x, k=2, persistent=chain, generator=torch.Generator().manual_seed(15))
    pl_before = rbm.pseudo_likelihood_cost(x, 2)
    cost, new_chain = rbm.get_cost_updates(x, 0.1, chain, k=2, generator=torch.Generator().manual_seed(15),
                                           bit_i_idx=2)
    assert cost.item() == pl_before.item() and torch.equal(new_chain, r.nh_sample)
    assert set(new_chain.unique().tolist()) <= {0.0, 1.0} and new_chain.shape == (5, 4)
    for p, p0, g in zip(rbm.params, before, r.grads):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * g)
    # PCD's negative phase depends on the chain, not on the minibatch: same chain and noise, other data
    other = torch.rand(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(16))
    a = rbm.cd_gradients(x, 3, new_chain, torch.Generator().manual_seed(17))
    b = rbm.cd_gradients(other, 3, new_chain, torch.Generator().manual_seed(17))
    assert torch.equal(a.chain_end, b.chain_end) and torch.equal(a.nh_sample, b.nh_sample)
    # CD returns no chain and reports the reconstruction cost of its last visible step
    r = rbm.cd_gradients(x, 1, None, torch.Generator().manual_seed(18))
    cost, none = rbm.get_cost_updates(x, 0.0, None, k=1, generator=torch.Generator().manual_seed(18))
    assert none is None and cost.item() == rbm.reconstruction_cost(x, r.pre_sigmoid_nv).item()
    with pytest.raises(ValueError, match="k"):
        rbm.cd_gradients(x, 0)


def test_initialisation_draw_order_and_the_sampling_start():
    rbm = RBM(784, 500)
    rng = np.random.RandomState(123)   # test_rbm: rng = RandomState(123); RandomStreams(rng.randint(2 ** 30))
    assert rbm.sample_seed == rng.randint(2 ** 30)
    bound = 4 * np.sqrt(6.0 / (500 + 784))
    expected = np.asarray(rng.uniform(low=-bound, high=bound, size=(784, 500)), dtype=np.float32)
    assert np.array_equal(rbm.W.detach().numpy(), expected)
    assert torch.count_nonzero(rbm.hbias) == 0 and torch.count_nonzero(rbm.vbias) == 0
    # after training, test_rbm's next draw from the same rng picks the first of the 20 test digits
    assert tutorial_test_idx(784, 500, 10000) == rng.randint(10000 - 20)


def test_sample_chains_shape_start_and_seed():
    rbm = random_rbm(16, 6, seed=19).float()
    test_x = torch.rand(50, 16, generator=torch.Generator().manual_seed(20))
    a = sample_chains(rbm, test_x, n_chains=4, n_samples=3, plot_every=5, test_idx=10,
                      generator=torch.Generator().manual_seed(21))
    b = sample_chains(rbm, test_x, n_chains=4, n_samples=3, plot_every=5, test_idx=10,
                      generator=torch.Generator().manual_seed(21))
    assert a.shape == (3, 4, 16) and a.dtype == np.float32 and np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    # one step from the test digits: mean-field p(v | h), h sampled from those digits
    g = torch.Generator().manual_seed(22)
    one = sample_chains(rbm, test_x, n_chains=4, n_samples=1, plot_every=1, test_idx=10, generator=g)
    g = torch.Generator().manual_seed(22)
    *_, v_mf, _ = rbm.gibbs_vhv(test_x[10:14], g)
    np.testing.assert_array_equal(one[0], v_mf.detach().numpy())
    with pytest.raises(ValueError, match="test_idx"):
        sample_chains(rbm, test_x, n_chains=4, test_idx=47)
