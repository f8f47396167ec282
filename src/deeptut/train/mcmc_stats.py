"""How well MCMC chains mixed: the split R-hat and the effective sample size, per coordinate (numpy only).

Both take draws [n_draws, n_chains, dim] and follow Gelman et al., Bayesian Data Analysis (3rd ed.), 11.4-11.5
and Stan's reference manual ("Effective sample size"): every chain is split in halves (a trend inside a chain
then shows up as disagreement between its halves); no rank normalisation.

- split R-hat: sqrt(var+ / W), var+ = (n - 1) / n W + B / n, W the mean within-half variance, B / n the
  variance of the halves' means. 1 when the halves agree; above ~1.01 they have not mixed.
- ESS: M N / tau, tau = 1 + 2 sum_t rho_t, the autocorrelations rho_t = 1 - (W - mean autocovariance_t) / var+
  combined over the halves, summed by Geyer's initial monotone sequence (pairs rho_2k + rho_2k+1 summed while
  positive, each pair at most the previous). Independent draws: ESS ~ the number of draws; an AR(1) sequence
  with coefficient phi: ESS ~ n (1 - phi) / (1 + phi).
"""

from __future__ import annotations

import numpy as np


def _split(draws: np.ndarray) -> np.ndarray:
    """[n, m, d] -> [n // 2, 2m, d]: each chain's first and second halves (a middle odd draw dropped)."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 3:
        raise ValueError(f"draws must be [n_draws, n_chains, dim], got shape {draws.shape}")
    half = draws.shape[0] // 2
    if half < 2:
        raise ValueError(f"need at least 4 draws per chain, got {draws.shape[0]}")
    return np.concatenate([draws[:half], draws[-half:]], axis=1)


def _variances(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W [d], var+ [d]) of split draws x [n, m, d]."""
    n = x.shape[0]
    within = x.var(axis=0, ddof=1).mean(axis=0)  # W
    between_over_n = x.mean(axis=0).var(axis=0, ddof=1)  # B / n
    return within, (n - 1) / n * within + between_over_n


def split_rhat(draws: np.ndarray) -> np.ndarray:
    """The split R-hat of each coordinate [dim] (nan where a coordinate does not move at all)."""
    within, var_plus = _variances(_split(draws))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var_plus / within)


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """x [n, m, d] -> biased autocovariances [n, m, d] along axis 0 (lag 0 .. n - 1), by FFT."""
    n = x.shape[0]
    centred = x - x.mean(axis=0)
    size = 1 << (2 * n - 1).bit_length()  # zero padding: no wrap-around
    f = np.fft.rfft(centred, n=size, axis=0)
    return np.fft.irfft(f * np.conj(f), n=size, axis=0)[:n] / n


def effective_sample_size(draws: np.ndarray) -> np.ndarray:
    """The effective sample size of each coordinate [dim], over all chains together."""
    x = _split(draws)
    n, m, d = x.shape
    within, var_plus = _variances(x)
    acov = _autocovariance(x).mean(axis=1)  # [n, d], the mean over the halves
    out = np.empty(d)
    for j in range(d):
        if not var_plus[j] > 0:
            out[j] = np.nan
            continue
        # acov at lag 0 is (n - 1) / n times the unbiased within variance; Stan uses the unbiased W
        rho = 1.0 - (within[j] - acov[:, j]) / var_plus[j]  # [n]
        rho[0] = 1.0
        tau, previous = -1.0, np.inf  # tau = -1 + 2 sum_k P_k = 1 + 2 sum_{t >= 1} rho_t
        for k in range(n // 2):
            pair = rho[2 * k] + rho[2 * k + 1]
            if pair <= 0:
                break
            pair = min(pair, previous)  # initial monotone sequence
            tau += 2.0 * pair
            previous = pair
        out[j] = n * m / max(tau, 1.0 / np.log10(max(n * m, 10)))  # Stan's cap: ESS <= N M log10(N M)
    return out
