"""The RBM's log-likelihood, which the tutorials never had: annealed importance sampling (AIS) of log Z, after
Salakhutdinov & Murray, "On the quantitative analysis of deep belief networks" (ICML 2008).

Path. With B the trained RBM (W, hbias c, vbias b_B) and A a "base-rate" RBM with no weights and visible
biases b_A fitted to the data's pixel means, the intermediate distributions for inverse temperatures
0 = beta_0 < beta_1 < ... < beta_K = 1 have, with the hidden units summed out,

    log f_k(v) = (1 - beta_k) v.b_A + beta_k v.b_B + sum_j softplus(beta_k (v W_j + c_j))

(the energy (1 - beta) E_A + beta E_B; A's own hidden units contribute a constant and are left out), so
f_0 is the base rate times 2^n_hidden, Z_0 = 2^n_hidden prod_i (1 + exp(b_A_i)), and f_K = exp(-FE_B).

Runs. M independent runs start from v_1 ~ p_0 (independent Bernoulli(sigmoid(b_A))); run m's log weight is
    log w = sum_{k=1..K} [log f_k(v_k) - log f_{k-1}(v_k)],   v_{k+1} ~ T_k(v_k)
where T_k is one Gibbs sweep h ~ p_k(h | v), v ~ p_k(v | h), which leaves p_k invariant:
    p_k(h_j = 1 | v) = sigmoid(beta_k (v W_j + c_j)),
    p_k(v_i = 1 | h) = sigmoid((1 - beta_k) b_A_i + beta_k (W_i h + b_B_i)).
mean(w) estimates Z_B / Z_0 without bias; log Z_B = log Z_0 + log mean(w), biased low by Jensen's inequality,
less so as the ladder lengthens. The spread is reported as in Salakhutdinov's code: r = mean(w),
sigma = std(w) / sqrt(M), and the interval log Z_0 + log(r -+ 3 sigma) (its lower end -inf when r < 3 sigma).

The default ladder is the paper's: 1,000 steps of 1e-3 up to 0.5, 4,000 of 1e-4 up to 0.9, 10,000 of 1e-5
up to 1 (14,500 intermediate distributions), 100 runs. Weights are accumulated in float64; the sweeps run in
`dtype` (float64 by default: the increments are differences of softplus values of order 10, and 14,500 of
them in float32 would carry a drift of the order of the spread itself on MNIST-sized models).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

MAX_ENUMERATED_UNITS = 24  # exact_log_partition sums 2^n terms over the smaller layer (2^24 = 16.8 M)


class AISResult(NamedTuple):
    log_z: float            # the estimate log Z_0 + log mean(w)
    log_z_low: float        # log Z_0 + log(mean(w) - 3 sigma), -inf when the interval reaches 0
    log_z_high: float       # log Z_0 + log(mean(w) + 3 sigma)
    log_z_base: float       # log Z_0, the base-rate model's (times 2^n_hidden)
    log_weights: np.ndarray  # [n_runs] float64, each run's log w


def _params(rbm, dtype: torch.dtype, device: torch.device | None = None):
    device = rbm.W.device if device is None else device
    return (rbm.W.detach().to(device, dtype), rbm.hbias.detach().to(device, dtype),
            rbm.vbias.detach().to(device, dtype))


def base_rate_vbias(x: torch.Tensor, pseudocount: float = 5.0) -> torch.Tensor:
    """The base-rate model's visible biases: log(p / (1 - p)) with p the smoothed mean of each pixel,
    p = (sum_n x_ni + pseudocount) / (N + 2 pseudocount), so that no pixel gets an infinite bias (MNIST has
    pixels that are 0 in every training image). x [N, n_visible] -> [n_visible]."""
    x = x.detach().to(torch.float64)
    p = (x.sum(dim=0) + pseudocount) / (x.shape[0] + 2 * pseudocount)
    return torch.log(p) - torch.log1p(-p)


def salakhutdinov_betas() -> np.ndarray:
    """The paper's ladder of inverse temperatures: 0..0.5 by 1e-3, 0.5..0.9 by 1e-4, 0.9..1 by 1e-5
    (14,501 values from 0 to 1)."""
    return np.concatenate([np.linspace(0.0, 0.5, 501)[:-1], np.linspace(0.5, 0.9, 4001)[:-1],
                           np.linspace(0.9, 1.0, 10001)])


def linear_betas(n_steps: int) -> np.ndarray:
    """n_steps + 1 evenly spaced inverse temperatures from 0 to 1."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1 (got {n_steps})")
    return np.linspace(0.0, 1.0, n_steps + 1)


@torch.no_grad()
def ais_log_partition(rbm, base_vbias: torch.Tensor, betas: np.ndarray | None = None, n_runs: int = 100,
                      generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
                      ) -> AISResult:
    """AIS estimate of log Z of `rbm` (anything with W [n_visible, n_hidden], hbias, vbias), from the base-rate
    model with visible biases `base_vbias` [n_visible] (see base_rate_vbias), over the ladder `betas` (from 0
    to 1, increasing; salakhutdinov_betas() when None), with `n_runs` parallel runs.
    The generator must be on the RBM's device."""
    betas = salakhutdinov_betas() if betas is None else np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or np.any(np.diff(betas) <= 0):
        raise ValueError("betas must increase strictly from 0 to 1")
    if n_runs < 2:
        raise ValueError(f"n_runs must be >= 2 to report a spread (got {n_runs})")
    W, c, b_B = _params(rbm, dtype)
    b_A = base_vbias.detach().to(W.device, dtype)
    n_visible, n_hidden = W.shape
    if b_A.shape != (n_visible,):
        raise ValueError(f"base_vbias has shape {tuple(b_A.shape)}, expected ({n_visible},)")
    log_z_base = float(F.softplus(b_A).sum()) + n_hidden * math.log(2.0)

    def rand(shape):
        return torch.rand(shape, generator=generator, device=W.device, dtype=dtype)

    v = (rand((n_runs, n_visible)) < torch.sigmoid(b_A)).to(dtype)     # v_1 ~ p_0, [n_runs, n_visible]
    log_w = torch.zeros(n_runs, dtype=torch.float64, device=W.device)
    db = b_B - b_A                                                        # [n_visible]
    K = len(betas) - 1
    for k in range(1, K + 1):
        beta, beta_prev = float(betas[k]), float(betas[k - 1])
        a = torch.addmm(c, v, W)                                          # v W + c, [n_runs, n_hidden]
        # log f_k(v_k) - log f_{k-1}(v_k)
        log_w += ((beta - beta_prev) * (v @ db)
                  + (F.softplus(beta * a) - F.softplus(beta_prev * a)).sum(dim=1)).to(torch.float64)
        if k < K:  # v_{k+1} ~ T_k(v_k)
            h = (rand((n_runs, n_hidden)) < torch.sigmoid(beta * a)).to(dtype)
            pv = torch.sigmoid((1 - beta) * b_A + beta * torch.addmm(b_B, h, W.t()))
            v = (rand((n_runs, n_visible)) < pv).to(dtype)
    lw = log_w.cpu().numpy()
    shift = lw.max()
    w = np.exp(lw - shift)                                                # weights / max weight
    r, sigma = w.mean(), w.std(ddof=1) / math.sqrt(n_runs)
    low = math.log(r - 3 * sigma) + shift + log_z_base if r > 3 * sigma else -math.inf
    return AISResult(math.log(r) + shift + log_z_base, low, math.log(r + 3 * sigma) + shift + log_z_base,
                     log_z_base, lw)


def _bits(n: int, start: int, stop: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The binary expansions of start..stop-1 as rows of n 0/1 values (bit 0 first)."""
    idx = torch.arange(start, stop, device=device).unsqueeze(1)
    return ((idx >> torch.arange(n, device=device)) & 1).to(dtype)


@torch.no_grad()
def exact_log_partition(rbm, chunk: int = 1 << 16) -> float:
    """log Z by enumeration over the smaller layer, in float64: over h when n_hidden <= n_visible,
        log Z = logsumexp_h [h.hbias + sum_i softplus(vbias_i + W_i h)],
    else over v: log Z = logsumexp_v [-FE(v)]. At most 2^24 terms (MAX_ENUMERATED_UNITS)."""
    W, c, b = _params(rbm, torch.float64)
    n_visible, n_hidden = W.shape
    n = min(n_visible, n_hidden)
    if n > MAX_ENUMERATED_UNITS:
        raise ValueError(f"exact_log_partition: the smaller layer has {n} units; enumeration is limited to "
                         f"{MAX_ENUMERATED_UNITS} (2^{MAX_ENUMERATED_UNITS} states)")
    parts = []
    for start in range(0, 1 << n, chunk):
        s = _bits(n, start, min(1 << n, start + chunk), torch.float64, W.device)
        if n_hidden <= n_visible:   # s are hidden states [m, n_hidden]
            parts.append(s @ c + F.softplus(torch.addmm(b, s, W.t())).sum(dim=1))
        else:                       # s are visible states [m, n_visible]
            parts.append(s @ b + F.softplus(torch.addmm(c, s, W)).sum(dim=1))
    return float(torch.logsumexp(torch.cat(parts), dim=0))


@torch.no_grad()
def mean_log_probability(rbm, x: torch.Tensor, log_z: float) -> float:
    """mean_n log p(x_n) = mean(-FE(x_n)) - log Z, in nats, float64. x [N, n_visible] should be binary (the
    RBM's units are; the caller binarises greyscale digits, e.g. by rounding)."""
    W, c, b = _params(rbm, torch.float64)
    x = x.detach().to(W.device, torch.float64)
    neg_fe = x @ b + F.softplus(torch.addmm(c, x, W)).sum(dim=1)
    return float(neg_fe.mean()) - log_z
