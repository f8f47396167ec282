"""The HMC chapter's pictures, from what the run saved (samples.safetensors, target.safetensors):

    hmc_trace.png     each coordinate's draws per chain against the draw, burn-in shaded, the target mean
                      dashed; below, the step size and the average acceptance rate after each draw
    hmc_scatter.png   the kept draws of the two most correlated coordinates against the target's 1- and
                      2-sigma ellipses and its mean
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deeptut.errors import CheckpointError
from deeptut.store.rundir import Run, require
from deeptut.store.tensors import load_arrays, tensor_metadata
from deeptut.viz.plots import Figure, _save, mpl_text

SAMPLES = "samples.safetensors"  # train/hmc.py's file names (viz does not import train/)
TARGET = "target.safetensors"


def _load(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(draws [n, m, d], stepsize [n], acceptance [n], mu [d], cov [d, d], burnin)."""
    s_path, t_path = run.path / SAMPLES, run.path / TARGET
    s, t = load_arrays(s_path), load_arrays(t_path)
    draws = require(s, s_path, "draws", 3)
    step, rate = require(s, s_path, "stepsize", 1), require(s, s_path, "avg_acceptance_rate", 1)
    mu, cov = require(t, t_path, "mu", 1), require(t, t_path, "cov", 2)
    if draws.shape[2] != len(mu) or cov.shape != (len(mu), len(mu)) or len(step) != len(draws) \
            or len(rate) != len(draws):
        raise CheckpointError(f"{s_path}: draws {draws.shape}, stepsize {step.shape}, avg_acceptance_rate "
                              f"{rate.shape} do not fit the target of {t_path} (dim {len(mu)})")
    try:
        burnin = int(tensor_metadata(s_path).get("burnin", "0"))
    except ValueError:
        raise CheckpointError(f"{s_path}: metadata 'burnin' is not an integer") from None
    return draws, step, rate, mu, cov, min(max(burnin, 0), len(draws))


def plot_trace(run: Run, out_dir: Path) -> Path:
    draws, step, rate, mu, _cov, burnin = _load(run)
    n, m, d = draws.shape
    shown = min(d, 5)
    fig = Figure(figsize=(8.0, 1.5 * shown + 2.4), layout="constrained")
    axes = fig.subplots(shown + 1, 1, sharex=True)
    x = np.arange(1, n + 1)
    for j in range(shown):
        ax = axes[j]
        for c in range(m):
            ax.plot(x, draws[:, c, j], lw=0.6, alpha=0.8, label=f"chain {c}" if j == 0 else None)
        ax.axhline(mu[j], color="k", ls="--", lw=1, label="target mean" if j == 0 else None)
        ax.axvspan(0, burnin, color="0.9", zorder=0, label="burn-in" if j == 0 else None)
        ax.set_ylabel(f"x[{j}]")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8, ncol=min(m + 2, 5))
    ax = axes[shown]
    ax.plot(x, step, color="tab:red", lw=1.2, label="step size")
    ax.set_ylabel("step size")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(x, rate, color="tab:blue", lw=1.0, label="average acceptance rate")
    ax2.set_ylabel("acceptance")
    ax.legend(loc="lower left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("draw")
    fig.suptitle(f"{mpl_text(run.config.get('preset', run.model))}: HMC traces ({m} chains, first {shown} of "
                 f"{d} coordinates)", fontsize=11)
    return _save(fig, out_dir / "hmc_trace.png")


def _ellipse(mean: np.ndarray, cov2: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    vals, vecs = np.linalg.eigh(cov2)
    t = np.linspace(0, 2 * np.pi, 200)
    pts = vecs @ (np.sqrt(np.maximum(vals, 0))[:, None] * np.stack([np.cos(t), np.sin(t)])) * k
    return mean[0] + pts[0], mean[1] + pts[1]


def plot_scatter(run: Run, out_dir: Path) -> Path:
    draws, _step, _rate, mu, cov, burnin = _load(run)
    kept = draws[burnin:]
    d = len(mu)
    if d >= 2:
        corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        np.fill_diagonal(corr, 0)
        i, j = np.unravel_index(int(np.argmax(np.abs(corr))), corr.shape)
        i, j = (int(i), int(j)) if i < j else (int(j), int(i))
    else:
        i = j = 0
    fig = Figure(figsize=(6.0, 5.6), layout="constrained")
    ax = fig.subplots()
    for c in range(kept.shape[1]):
        yv = kept[:, c, j] if d >= 2 else np.zeros(len(kept))
        ax.plot(kept[:, c, i], yv, ".", ms=2.5, alpha=0.5, label=f"chain {c}")
    if d >= 2:
        sub = cov[np.ix_([i, j], [i, j])]
        for k, style in ((1, "-"), (2, "--")):
            ex, ey = _ellipse(mu[[i, j]], sub, k)
            ax.plot(ex, ey, "k" + style, lw=1.2, label=f"target {k} sigma")
        ax.plot([mu[i]], [mu[j]], "k+", ms=14, mew=2, label="target mean")
        emp = kept[:, :, [i, j]].reshape(-1, 2).mean(axis=0)
        ax.plot([emp[0]], [emp[1]], "rx", ms=10, mew=2, label="empirical mean")
    ax.set_xlabel(f"x[{i}]")
    ax.set_ylabel(f"x[{j}]" if d >= 2 else "")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{mpl_text(run.config.get('preset', run.model))}: {len(kept)} kept draws per chain against "
                 f"the target", fontsize=10)
    return _save(fig, out_dir / "hmc_scatter.png")


def draw(run: Run, out_dir: Path, data: Any = None) -> list[Path]:
    """The family's pictures (models/families.py HMCArgs.pictures); `data` is not used."""
    return [plot_trace(run, out_dir), plot_scatter(run, out_dir)]
