"""Chapter "Restricted Boltzmann Machines (RBM)" (rbm.py): binary visible and hidden units.

    E(v, h)  = -v.vbias - h.hbias - v W h             v [n, n_visible], h [n, n_hidden], W [n_visible, n_hidden]
    FE(v)    = -v.vbias - sum_j softplus(v W_j + hbias_j)     free_energy: p(v) = exp(-FE(v)) / Z
    p(h_j = 1 | v) = sigmoid(v W_j + hbias_j)                propup / sample_h_given_v
    p(v_i = 1 | h) = sigmoid(W_i h + vbias_i)                propdown / sample_v_given_h

Training (`cd_gradients`, `get_cost_updates`) is CD-k or persistent CD-k. The tutorial differentiates
    cost = mean(FE(x)) - mean(FE(chain_end))
with the chain's end treated as a constant (`consider_constant=[chain_end]`); the gradients are written out
here in closed form (dFE/dW = -v sigmoid(v W + hbias), etc.), which is what that derivative is (the tests
check it against autograd). CD starts the chain from a sample of h given the data; PCD from the hidden state
the previous update left (zeros at the start, one chain per minibatch row, as rbm.py's `persistent_chain`).

Monitoring costs as rbm.py reports them: for PCD the stochastic pseudo-likelihood (one bit per update, the
bit index cycling through the pixels: `bit_i_idx = update_count % n_visible`), for CD the reconstruction
"cross-entropy" mean(sum(x log p + (1 - x) log(1 - p))) - a log-likelihood, so negative, sign kept as the
tutorial prints it (DBN.py's pre-training lines show these negative numbers).

Initialisation is test_rbm's: `rng = numpy.random.RandomState(123)`, `rng.randint(2 ** 30)` to seed Theano's
RandomStreams (kept as `sample_seed`), then W = U(+-4 sqrt(6 / (n_hidden + n_visible))) [n_visible, n_hidden]
float32; hbias and vbias zero. After training, test_rbm draws the sampling chains' start with the same rng
(`tutorial_test_idx`). Sampling noise comes from a caller's torch Generator (Theano's stream cannot be
reproduced).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deeptut.models.da import tied_uniform, weights_and_biases

DEFAULT_INIT_SEED = 123  # rbm.py's test_rbm: rng = numpy.random.RandomState(123)


def bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A 0/1 sample of p's shape and dtype (the tutorial's binomial(n=1, p=p, dtype=floatX))."""
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Theano's T.round (half away from zero); torch.round rounds half to even, which would send MNIST's
    exact 0.5 pixels (128/256) to 0 instead of 1."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


class CDResult(NamedTuple):
    grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # d cost / d (W, hbias, vbias), cost = FE difference
    nh_sample: torch.Tensor       # [n, n_hidden] the chain's last hidden sample: PCD's next persistent state
    chain_end: torch.Tensor       # [n, n_visible] the chain's last visible sample (nv_samples[-1])
    pre_sigmoid_nv: torch.Tensor  # [n, n_visible] the last visible pre-sigmoid (the reconstruction cost's input)


class RBM(nn.Module):
    """Binary-binary RBM; `params` is the tutorial's [W, hbias, vbias].

    numpy_rng: RandomState(123) when None (the seed test_rbm uses; rbm.py's class alone would default to
    1234, which the tutorial never runs). sample_seed: the integer Theano's RandomStreams would be seeded
    with; drawn from numpy_rng before W when None. W, hbias: Parameters to share (DBN.py passes its sigmoid
    layer's W and b); a shared W draws nothing.
    """

    def __init__(self, n_visible: int = 784, n_hidden: int = 500, numpy_rng: np.random.RandomState | None = None,
                 sample_seed: int | None = None, W: nn.Parameter | None = None,
                 hbias: nn.Parameter | None = None, vbias: nn.Parameter | None = None) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"RBM: n_visible and n_hidden must be >= 1 (got {n_visible}, {n_hidden})")
        self.n_visible, self.n_hidden = n_visible, n_hidden
        if numpy_rng is None:
            numpy_rng = np.random.RandomState(DEFAULT_INIT_SEED)
        if sample_seed is None:  # rbm.py: theano_rng = RandomStreams(numpy_rng.randint(2 ** 30))
            sample_seed = int(numpy_rng.randint(2 ** 30))
        self.sample_seed = sample_seed
        # W [n_visible, n_hidden], hbias, vbias
        self.W, self.hbias, self.vbias = weights_and_biases("RBM", n_visible, n_hidden, numpy_rng, tied_uniform, W,
                                                            hbias, vbias)

    @property
    def params(self) -> list[nn.Parameter]:
        return [self.W, self.hbias, self.vbias]

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A torch Generator seeded with `sample_seed` (the stand-in for the tutorial's theano_rng)."""
        g = torch.Generator(device=device)
        g.manual_seed(self.sample_seed)
        return g

    # ----- the model -----
    def free_energy(self, v_sample: torch.Tensor) -> torch.Tensor:
        """FE(v) = -v.vbias - sum_j softplus(v W_j + hbias_j): [n, n_visible] -> [n]."""
        wx_b = torch.addmm(self.hbias, v_sample, self.W)
        return -F.softplus(wx_b).sum(dim=1) - v_sample @ self.vbias

    def propup(self, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-sigmoid, p(h = 1 | v)): [n, n_visible] -> 2 x [n, n_hidden]."""
        pre = torch.addmm(self.hbias, vis, self.W)
        return pre, torch.sigmoid(pre)

    def propdown(self, hid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-sigmoid, p(v = 1 | h)): [n, n_hidden] -> 2 x [n, n_visible]."""
        pre = torch.addmm(self.vbias, hid, self.W.t())
        return pre, torch.sigmoid(pre)

    def sample_h_given_v(self, v0_sample: torch.Tensor, generator: torch.Generator | None = None):
        """(pre_sigmoid_h1, h1_mean, h1_sample), each [n, n_hidden]."""
        pre, mean = self.propup(v0_sample)
        return pre, mean, bernoulli(mean, generator)

    def sample_v_given_h(self, h0_sample: torch.Tensor, generator: torch.Generator | None = None):
        """(pre_sigmoid_v1, v1_mean, v1_sample), each [n, n_visible]."""
        pre, mean = self.propdown(h0_sample)
        return pre, mean, bernoulli(mean, generator)

    def gibbs_hvh(self, h0_sample: torch.Tensor, generator: torch.Generator | None = None):
        """One Gibbs step from the hidden state: (pre_v1, v1_mean, v1_sample, pre_h1, h1_mean, h1_sample)."""
        pre_v1, v1_mean, v1_sample = self.sample_v_given_h(h0_sample, generator)
        pre_h1, h1_mean, h1_sample = self.sample_h_given_v(v1_sample, generator)
        return pre_v1, v1_mean, v1_sample, pre_h1, h1_mean, h1_sample

    def gibbs_vhv(self, v0_sample: torch.Tensor, generator: torch.Generator | None = None):
        """One Gibbs step from the visible state: (pre_h1, h1_mean, h1_sample, pre_v1, v1_mean, v1_sample)."""
        pre_h1, h1_mean, h1_sample = self.sample_h_given_v(v0_sample, generator)
        pre_v1, v1_mean, v1_sample = self.sample_v_given_h(h1_sample, generator)
        return pre_h1, h1_mean, h1_sample, pre_v1, v1_mean, v1_sample

    # ----- learning -----
    @torch.no_grad()
    def cd_gradients(self, x: torch.Tensor, k: int = 1, persistent: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> CDResult:
        """CD-k (persistent None) or PCD-k (persistent: the chain's hidden state [n_chains, n_hidden]).

        Returns the gradients of mean(FE(x)) - mean(FE(chain_end)) with chain_end constant:
            dW     = -x.T sigmoid(x W + hbias) / n + chain_end.T sigmoid(chain_end W + hbias) / n_chains
            dhbias = -mean(sigmoid(x W + hbias)) + mean(sigmoid(chain_end W + hbias))
            dvbias = -mean(x) + mean(chain_end)
        (a descent direction: param -= lr * grad), and the chain's end. x [n, n_visible].
        """
        if k < 1:
            raise ValueError(f"k (Gibbs steps per update) must be >= 1 (got {k})")
        _, ph_mean = self.propup(x)                                         # [n, n_hidden]
        if persistent is None:
            chain_start = bernoulli(ph_mean, generator)                     # CD: start from a sample of h | x
        else:
            if persistent.shape[1] != self.n_hidden:
                raise ValueError(f"persistent chain has {persistent.shape[1]} hidden units, the RBM {self.n_hidden}")
            chain_start = persistent
        h = chain_start
        for _ in range(k):
            pre_nv, _, nv_sample, _, nh_mean, h = self.gibbs_hvh(h, generator)
        n, n_chains = x.shape[0], nv_sample.shape[0]
        gW = nv_sample.t() @ nh_mean / n_chains - x.t() @ ph_mean / n       # [n_visible, n_hidden]
        ghbias = nh_mean.mean(dim=0) - ph_mean.mean(dim=0)                  # [n_hidden]
        gvbias = nv_sample.mean(dim=0) - x.mean(dim=0)                      # [n_visible]
        return CDResult((gW, ghbias, gvbias), h, nv_sample, pre_nv)

    def get_cost_updates(self, x: torch.Tensor, lr: float = 0.1, persistent: torch.Tensor | None = None,
                         k: int = 1, generator: torch.Generator | None = None, bit_i_idx: int = 0
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One update of rbm.py's train_rbm, in place: returns (monitoring_cost, new persistent state or None).

        The monitoring cost is computed with the parameters before the update, as a Theano function's output
        is: the pseudo-likelihood at bit `bit_i_idx` for PCD, the reconstruction cost for CD.
        """
        r = self.cd_gradients(x, k, persistent, generator)
        with torch.no_grad():
            if persistent is None:
                monitoring_cost = self.reconstruction_cost(x, r.pre_sigmoid_nv)
            else:
                monitoring_cost = self.pseudo_likelihood_cost(x, bit_i_idx)
            for p, g in zip(self.params, r.grads):
                p.sub_(lr * g)
        return monitoring_cost, (None if persistent is None else r.nh_sample)

    # ----- monitoring costs -----
    def pseudo_likelihood_cost(self, x: torch.Tensor, bit_i_idx: int) -> torch.Tensor:
        """mean(n_visible * log sigmoid(FE(x_flip) - FE(x))), x rounded to 0/1 (half away from zero, as
        T.round) and x_flip = x with bit `bit_i_idx` flipped: n_visible times the log of p(x_i | x_-i), a
        one-bit stochastic estimate of the log pseudo-likelihood. [n, n_visible] -> scalar (<= 0)."""
        if not 0 <= bit_i_idx < self.n_visible:
            raise ValueError(f"bit_i_idx must be in [0, {self.n_visible}) (got {bit_i_idx})")
        xi = round_half_away(x)
        xi_flip = xi.clone()
        xi_flip[:, bit_i_idx] = 1 - xi[:, bit_i_idx]
        return (self.n_visible * F.logsigmoid(self.free_energy(xi_flip) - self.free_energy(xi))).mean()

    def reconstruction_cost(self, x: torch.Tensor, pre_sigmoid_nv: torch.Tensor) -> torch.Tensor:
        """mean(sum(x log sigmoid(a) + (1 - x) log(1 - sigmoid(a)))), a = pre_sigmoid_nv: rbm.py's
        "cross-entropy", with the tutorial's sign (a log-likelihood, <= 0). [n, n_visible] -> scalar."""
        return -F.binary_cross_entropy_with_logits(pre_sigmoid_nv, x, reduction="none").sum(dim=1).mean()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """The free energy of each row: [n, n_visible] -> [n]."""
        return self.free_energy(v)


def tutorial_test_idx(n_visible: int, n_hidden: int, number_of_test_samples: int, n_chains: int = 20,
                      seed: int = DEFAULT_INIT_SEED) -> int:
    """The first test digit of the sampling chains as test_rbm draws it: its rng has drawn randint(2 ** 30)
    and W [n_visible, n_hidden] when, after training, it draws rng.randint(number_of_test_samples - n_chains).
    A function of the sizes only, so a saved model is enough to reproduce it."""
    if number_of_test_samples <= n_chains:
        raise ValueError(f"need more than n_chains = {n_chains} test digits (got {number_of_test_samples})")
    rng = np.random.RandomState(seed)
    rng.randint(2 ** 30)
    tied_uniform(rng, n_visible, n_hidden)
    return int(rng.randint(number_of_test_samples - n_chains))


@torch.no_grad()
def sample_chains(rbm: RBM, test_set_x: torch.Tensor, n_chains: int = 20, n_samples: int = 10,
                  plot_every: int = 1000, test_idx: int | None = None,
                  generator: torch.Generator | None = None) -> np.ndarray:
    """test_rbm's sampling: `n_chains` persistent chains started from the consecutive test digits
    test_set_x[test_idx : test_idx + n_chains] (test_idx as test_rbm draws it when None); `n_samples` times,
    `plot_every` Gibbs steps v -> h -> v, keeping the last step's mean-field visible activations.

    Returns float32 [n_samples, n_chains, n_visible] in [0, 1]: row s of the tutorial's samples.png is
    out[s] (one 28 x 28 tile per chain). The chain state carried between steps is the binary sample.
    """
    if n_chains < 1 or n_samples < 1 or plot_every < 1:
        raise ValueError(f"n_chains, n_samples and plot_every must be >= 1 (got {n_chains}, {n_samples}, {plot_every})")
    if test_idx is None:
        test_idx = tutorial_test_idx(rbm.n_visible, rbm.n_hidden, test_set_x.shape[0], n_chains)
    if not 0 <= test_idx <= test_set_x.shape[0] - n_chains:
        raise ValueError(f"test_idx {test_idx} leaves fewer than {n_chains} test digits")
    chain = test_set_x[test_idx:test_idx + n_chains].to(rbm.W.device, rbm.W.dtype)  # [n_chains, n_visible]
    out = np.empty((n_samples, n_chains, rbm.n_visible), dtype=np.float32)
    for idx in range(n_samples):
        for _ in range(plot_every):
            _, _, _, _, vis_mf, chain = rbm.gibbs_vhv(chain, generator)
        out[idx] = vis_mf.float().cpu().numpy()
    return out
