"""Chapter "Modeling and generating sequences of polyphonic music with the RNN-RBM" (rnnrbm.py).

An RNN whose hidden state u sets the biases of an RBM at each time step (frames v^(t) of a piano-roll):

    bv^(t) = bv + u^(t-1) Wuv          [n_visible]      u^(0) = 0
    bh^(t) = bh + u^(t-1) Wuh          [n_hidden]
    u^(t)  = tanh(bu + v^(t) Wvu + u^(t-1) Wuu)          [n_hidden_recurrent]
    P(v^(t) | history) = the RBM (W, bv^(t), bh^(t))'s marginal of v^(t)

Training (`cost`): given a sequence, the biases follow deterministically; a k-step Gibbs chain (k = 15) runs
from every frame at once under its own RBM, and

    cost = sum_t [FE_t(v^(t)) - FE_t(v_sample^(t))] / T,  FE_t(v) = -v.bv^(t) - sum_j softplus(v W_j + bh^(t)_j)

is differentiated with v_sample constant (`consider_constant`): CD-k for W, bv, bh, back-propagated through
bv^(t), bh^(t) into the RNN. What rnnrbm.py prints as the training cost is its `monitor`: one more Gibbs
step from v_sample gives mean_v = p(v = 1 | h), and

    monitor = sum_t sum_i [v_i log mean_v_i + (1 - v_i) log(1 - mean_v_i)] / T

a negative "frame-level cross-entropy" (-15.03 at epoch 1 on Nottingham). It is computed here from the
logits (exact where float32 sigmoid saturates: the tutorial's -inf at epoch 198 was log(1 - 1.0f)).

Generation (`generate`): frame by frame, a 25-step Gibbs chain from v = 0 under the frame's RBM, its last
sample passed to the recurrence; 200 frames.

Batches here are time-major [T, B, n_visible] with a mask [T, B] (1 = a frame, 0 = padding); rnnrbm.py
trains one sequence at a time (B = 1, no padding). Padding comes after a sequence's frames, and the
recurrence is causal, so it changes nothing in the frames before it.

Initialisation is rnnrbm.py's: numpy.random.seed(0xbeef); RandomStreams(seed=numpy.random.randint(1 << 30))
(kept as `sample_seed`, the seed of the Gibbs noise's torch Generator); then W ~ N(0, 0.01) [n_visible,
n_hidden], Wuh, Wuv, Wvu, Wuu ~ N(0, 0.0001) in that order, float32; bv, bh, bu zero. The same RandomState
then shuffles the training sequences each epoch (`init_rng`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_INIT_SEED = 0xBEEF  # rnnrbm.py: numpy.random.seed(0xbeef)


def _normal(rng: np.random.RandomState, rows: int, cols: int, scale: float) -> torch.Tensor:
    """rnnrbm.py's shared_normal: N(0, scale) [rows, cols] float32."""
    return torch.from_numpy(rng.normal(scale=scale, size=(rows, cols)).astype(np.float32))


def bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A 0/1 sample of p's shape (the tutorial's rng.binomial(n=1, p=p))."""
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


class RnnRbm(nn.Module):
    """The RNN-RBM; `params` is the tutorial's (W, bv, bh, Wuh, Wuv, Wvu, Wuu, bu)."""

    def __init__(self, n_visible: int = 88, n_hidden: int = 150, n_hidden_recurrent: int = 100,
                 numpy_rng: np.random.RandomState | None = None) -> None:
        super().__init__()
        if min(n_visible, n_hidden, n_hidden_recurrent) < 1:
            raise ValueError(f"RnnRbm: sizes must be >= 1 (got {n_visible}, {n_hidden}, {n_hidden_recurrent})")
        self.n_visible, self.n_hidden, self.n_hidden_recurrent = n_visible, n_hidden, n_hidden_recurrent
        rng = np.random.RandomState(DEFAULT_INIT_SEED) if numpy_rng is None else numpy_rng
        self.sample_seed = int(rng.randint(1 << 30))  # RandomStreams(seed=numpy.random.randint(1 << 30))
        self.W = nn.Parameter(_normal(rng, n_visible, n_hidden, 0.01))             # [n_visible, n_hidden]
        self.bv = nn.Parameter(torch.zeros(n_visible))
        self.bh = nn.Parameter(torch.zeros(n_hidden))
        self.Wuh = nn.Parameter(_normal(rng, n_hidden_recurrent, n_hidden, 0.0001))   # [n_hr, n_hidden]
        self.Wuv = nn.Parameter(_normal(rng, n_hidden_recurrent, n_visible, 0.0001))  # [n_hr, n_visible]
        self.Wvu = nn.Parameter(_normal(rng, n_visible, n_hidden_recurrent, 0.0001))  # [n_visible, n_hr]
        self.Wuu = nn.Parameter(_normal(rng, n_hidden_recurrent, n_hidden_recurrent, 0.0001))  # [n_hr, n_hr]
        self.bu = nn.Parameter(torch.zeros(n_hidden_recurrent))

    @property
    def params(self) -> list[nn.Parameter]:
        return [self.W, self.bv, self.bh, self.Wuh, self.Wuv, self.Wvu, self.Wuu, self.bu]

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A torch Generator seeded with `sample_seed` (the stand-in for the tutorial's RandomStreams)."""
        return torch.Generator(device=device).manual_seed(self.sample_seed)

    # ----- the recurrence -----
    def biases(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(bv_t [T, B, n_visible], bh_t [T, B, n_hidden], u [T, B, n_hr]) of the frames v [T, B, n_visible]:
        frame t's RBM biases come from u^(t-1) (u^(0) = 0)."""
        T, B, _ = v.shape
        drive = torch.addmm(self.bu, v.reshape(T * B, -1), self.Wvu).view(T, B, -1)  # bu + v Wvu, [T, B, n_hr]
        u_prev = v.new_zeros(B, self.n_hidden_recurrent)
        us = []
        for t in range(T):
            u_prev = torch.tanh(drive[t] + u_prev @ self.Wuu)
            us.append(u_prev)
        u = torch.stack(us)                                                          # [T, B, n_hr]
        u_before = torch.cat([v.new_zeros(1, B, self.n_hidden_recurrent), u[:-1]])   # u^(t-1)
        return self.bv + u_before @ self.Wuv, self.bh + u_before @ self.Wuh, u

    # ----- the conditional RBMs -----
    def free_energy(self, v: torch.Tensor, bv: torch.Tensor, bh: torch.Tensor) -> torch.Tensor:
        """FE of each frame under its own RBM: v, bv [..., n_visible], bh [..., n_hidden] -> [...]."""
        return -(v * bv).sum(-1) - F.softplus(v @ self.W + bh).sum(-1)

    def gibbs(self, v: torch.Tensor, bv: torch.Tensor, bh: torch.Tensor, k: int,
              generator: torch.Generator | None) -> torch.Tensor:
        """k Gibbs steps v -> h -> v from v (each frame under its own RBM); the last visible sample."""
        for _ in range(k):
            h = bernoulli(torch.sigmoid(v @ self.W + bh), generator)
            v = bernoulli(torch.sigmoid(h @ self.W.t() + bv), generator)
        return v

    def cost(self, v: torch.Tensor, mask: torch.Tensor | None = None, k: int = 15,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cost, monitor) of frames v [T, B, n_visible] (mask [T, B], None: every frame): the CD-k cost
        to differentiate (the chain's end held constant) and rnnrbm.py's printed monitor, both averaged over
        the frames (the tutorial's / v.shape[0])."""
        bv, bh, _ = self.biases(v)
        with torch.no_grad():
            v_sample = self.gibbs(v, bv, bh, k, generator)
            h = bernoulli(torch.sigmoid(v_sample @ self.W + bh), generator)  # one more step: mean_v
            logits = h @ self.W.t() + bv
            monitor = -F.binary_cross_entropy_with_logits(logits, v, reduction="none").sum(-1)  # [T, B]
        fe = self.free_energy(v, bv, bh) - self.free_energy(v_sample, bv, bh)                   # [T, B]
        if mask is None:
            return fe.mean(), monitor.mean()
        n = mask.sum()
        return (fe * mask).sum() / n, (monitor * mask).sum() / n

    # ----- generation -----
    @torch.no_grad()
    def generate(self, n_steps: int = 200, k: int = 25, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sampled piano-roll [n_steps, n_visible]: each frame a k-step Gibbs chain from v = 0 under the
        RBM the history sets, passed on to the recurrence (rnnrbm.py's generate_function)."""
        u = self.W.new_zeros(self.n_hidden_recurrent)
        frames = []
        for _ in range(n_steps):
            bv, bh = self.bv + u @ self.Wuv, self.bh + u @ self.Wuh
            v = self.gibbs(self.W.new_zeros(1, self.n_visible), bv, bh, k, generator)[0]
            u = torch.tanh(self.bu + v @ self.Wvu + u @ self.Wuu)
            frames.append(v)
        return torch.stack(frames)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """The free energy of each frame under the RBM its history sets: [T, B, n_visible] -> [T, B]."""
        bv, bh, _ = self.biases(v)
        return self.free_energy(v, bv, bh)


def init_rng(n_visible: int, n_hidden: int, n_hidden_recurrent: int,
             seed: int = DEFAULT_INIT_SEED) -> np.random.RandomState:
    """The RandomState as rnnrbm.py's global numpy RNG stands after the initialisation (its next draws
    shuffle the training set): a function of the sizes and the seed only, so a saved model is enough."""
    rng = np.random.RandomState(seed)
    RnnRbm(n_visible, n_hidden, n_hidden_recurrent, rng)
    return rng
