"""The HMC chapter's run (test_hmc.py as `deeptut train hmc`): sample the Gaussian target with hmc.py's sampler,
then print the chapter's block and the chains' diagnostics.

    draws 1 .. burnin              thrown away (the step size adapts meanwhile)
    draws burnin + 1 .. + n_samples kept: [n_samples, n_chains, dim]

Printed as test_hmc.py prints it (numpy's pre-1.14 array format, as the published output shows it):

    ****** TARGET VALUES ******            target mean, target cov
    ****** EMPIRICAL MEAN/COV USING HMC ******   empirical mean, empirical_cov of the kept draws
    ****** HMC INTERNALS ******            final stepsize, final acceptance_rate

then the split R-hat and the effective sample size of each coordinate (train/mcmc_stats.py), and the ESS per
second of sampling.

The run directory (store/ writes every file):
    config.json, model.json + target.safetensors (mu, cov, cov_inv: the energy)
    samples.safetensors   "draws" [burnin + n_samples, n_chains, dim] (float64), "stepsize" and
                          "avg_acceptance_rate" after each draw [burnin + n_samples]
    checkpoints/          every `checkpoint_draws` draws: the chains' positions, the step size, the acceptance
                          average, the generator's state and the draws so far; resuming draws on
                          bit-identically (the same draws, step sizes, summary apart from timings)
    summary.json          the target, the estimates and their errors, R-hat, ESS, the internals
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import deeptut
from deeptut import accel
from deeptut.config import TrainConfig
from deeptut.errors import CheckpointError, ConfigError
from deeptut.models.hmc import GaussianEnergy, HMCSampler, gaussian_target
from deeptut.store import checkpoint, files, rundir, tensors
from deeptut.train.loop import resolve_device
from deeptut.train.mcmc_stats import effective_sample_size, split_rhat

TARGET = "target.safetensors"
SAMPLES = "samples.safetensors"
PUBLISHED = {"final_stepsize": 0.460446628091, "final_acceptance_rate": 0.922502043428,
             "max_abs_mean_error": 0.048, "max_abs_cov_error": 0.063}  # doc/hmc.txt's run (dim 5, 3 chains)


def make_sampler(cfg: TrainConfig, device: torch.device) -> tuple[GaussianEnergy, HMCSampler]:
    """test_hmc.py's set-up: the target and the starting positions from RandomState(init_seed), the sampler
    with the config's hyper-parameters, the momenta from a torch.Generator seeded with cfg.seed."""
    mu, cov, positions = gaussian_target(cfg.dim, cfg.n_chains, cfg.init_seed)
    try:
        energy = GaussianEnergy(mu, cov).to(device)
    except ConfigError as e:  # test_hmc's recipe makes no covariance for some dims (dim 10: -0.347)
        raise ConfigError(f"the target drawn for dim {cfg.dim} from RandomState(init_seed {cfg.init_seed}): {e}; "
                          f"pick another dim or init_seed") from None
    sampler = HMCSampler(
        torch.as_tensor(positions, dtype=torch.float64, device=device), energy,
        initial_stepsize=cfg.initial_stepsize, target_acceptance_rate=cfg.target_acceptance_rate,
        n_steps=cfg.n_steps, stepsize_dec=cfg.stepsize_dec, stepsize_min=cfg.stepsize_min,
        stepsize_max=cfg.stepsize_max, stepsize_inc=cfg.stepsize_inc,
        avg_acceptance_slowness=cfg.avg_acceptance_slowness,
        generator=torch.Generator(device=device).manual_seed(cfg.seed))
    return energy, sampler


def chapter_block(mu: np.ndarray, cov: np.ndarray, samples: np.ndarray, stepsize: float, rate: float) -> str:
    """test_hmc.py's printed lines. samples [n_draws * n_chains, dim]."""
    lines = []
    with np.printoptions(legacy="1.13"):
        lines.append("****** TARGET VALUES ******")
        lines.append(f"target mean: {mu}")
        lines.append(f"target cov:\n {cov}")
        lines.append("****** EMPIRICAL MEAN/COV USING HMC ******")
        lines.append(f"empirical mean:  {samples.mean(axis=0)}")
        lines.append(f"empirical_cov:\n {np.cov(samples.T)}")
        lines.append("****** HMC INTERNALS ******")
        lines.append(f"final stepsize {stepsize:.12g}")  # Python 2's str of a float: 12 digits
        lines.append(f"final acceptance_rate {rate:.12g}")
    return "\n".join(lines)


def diagnostics_block(rhat: np.ndarray, ess: np.ndarray, seconds: float) -> str:
    with np.printoptions(precision=4, suppress=True):
        return "\n".join([
            "****** CHAIN DIAGNOSTICS ******",
            f"split R-hat: {rhat}",
            f"effective sample size: {np.round(ess, 1)}",
            f"effective sample size per second: {np.round(ess / max(seconds, 1e-9), 1)} "
            f"({seconds:.2f} s of sampling)",
        ])


def _manifest(cfg: TrainConfig, n_draws: int, done: bool, seconds: float) -> dict[str, Any]:
    return {"format": checkpoint.CHECKPOINT_FORMAT, "deeptut": deeptut.__version__, "config": cfg.to_dict(),
            "loop": {"kind": "sampler", "draw": n_draws, "done": done, "sample_seconds": seconds}}


def _restore(run_dir: Path, cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The checkpoint's (loop state, tensors), None if the run wrote none yet (it starts over)."""
    if not checkpoint.has_checkpoint(run_dir):
        return None
    manifest, name, sha = checkpoint.read_manifest(run_dir)
    where = run_dir / checkpoint.CKPT_DIR / checkpoint.MANIFEST
    loop = manifest.get("loop")
    if not isinstance(loop, dict) or loop.get("kind") != "sampler":
        raise CheckpointError(f"{where}: not an HMC checkpoint")
    if manifest.get("config") != cfg.to_dict():
        raise CheckpointError(f"{where}: written for another config than {run_dir / rundir.CONFIG}'s")
    total = cfg.burnin + cfg.n_samples
    draw = loop.get("draw")
    if isinstance(draw, bool) or not isinstance(draw, int) or not 0 <= draw <= total:
        raise CheckpointError(f"{where}: draw must be 0 .. {total}, got {draw!r}")
    if not isinstance(loop.get("sample_seconds"), (int, float)):
        raise CheckpointError(f"{where}: no sample_seconds")
    t = checkpoint.read_tensors(run_dir, name, sha, max_bytes=2**31)
    shapes = {"positions": (cfg.n_chains, cfg.dim), "draws": (draw, cfg.n_chains, cfg.dim),
              "stepsizes": (draw,), "rates": (draw,)}
    for key, shape in shapes.items():
        if key not in t or tuple(t[key].shape) != shape:
            raise CheckpointError(f"{run_dir / checkpoint.CKPT_DIR / name}: {key} must have shape {shape}")
    for key in ("stepsize", "avg_acceptance_rate", "generator", "n_draws"):
        if key not in t:
            raise CheckpointError(f"{run_dir / checkpoint.CKPT_DIR / name}: no {key}")
    if int(t["n_draws"]) != draw:
        raise CheckpointError(f"{run_dir / checkpoint.CKPT_DIR / name}: n_draws {int(t['n_draws'])} but the "
                              f"manifest says draw {draw}")
    checkpoint.drop_other_files(run_dir, name)
    return loop, t


def sample(cfg: TrainConfig, data: Any = None, run_dir: Path | None = None, *, quiet: bool = False,
           resume: bool = False) -> dict[str, Any]:
    """Run the chapter's test: burn-in, kept draws, the printed block; the run directory if given. `data`
    is not used (the dataset "none"). Returns the summary (summary.json)."""
    say = (lambda *a: None) if quiet else print
    device = resolve_device(cfg.device)
    if cfg.threads:
        accel.set_threads(cfg.threads)
    energy, sampler = make_sampler(cfg, device)
    total = cfg.burnin + cfg.n_samples
    shape = (total, cfg.n_chains, cfg.dim)
    draws = torch.zeros(shape, dtype=torch.float64, device=device)  # [total, n_chains, dim]
    stepsizes = torch.zeros(total, dtype=torch.float64, device=device)  # after each draw
    rates = torch.zeros(total, dtype=torch.float64, device=device)
    seconds = 0.0  # of sampling, over every session of the run
    run_dir = None if run_dir is None else Path(run_dir)
    restored = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            rundir.clean_run_dir(run_dir)
            restored = _restore(run_dir, cfg)
        if restored is None:
            rundir.write_config(run_dir, cfg, device, threads=accel.thread_counts())
            if (run_dir / rundir.MODEL_JSON).exists():
                (run_dir / rundir.MODEL_JSON).unlink()  # a resumed run that had no checkpoint: written again
            rundir.save_model(run_dir, energy, cfg, name=TARGET)
    if restored is not None:
        loop, t = restored
        k = loop["draw"]
        sampler.load_state_dict(t)
        draws[:k], stepsizes[:k], rates[:k] = (t[n].to(device) for n in ("draws", "stepsizes", "rates"))
        seconds = float(loop["sample_seconds"])
        say(f"resuming {run_dir} at draw {k} of {total}")

    def save_checkpoint(done: bool) -> None:
        if run_dir is None:
            return
        k = sampler.n_draws
        blob = tensors.serialize_tensors({**sampler.state_dict(), "draws": draws[:k].cpu(),
                                          "stepsizes": stepsizes[:k].cpu(), "rates": rates[:k].cpu()})
        checkpoint.write_checkpoint(run_dir / checkpoint.CKPT_DIR, blob, _manifest(cfg, k, done, seconds), k)

    if sampler.n_draws < total:
        say(f"sampling: {cfg.burnin} burn-in draws, then {cfg.n_samples} kept, {cfg.n_chains} chains, "
            f"{cfg.n_steps} leapfrog steps each, on {device}")
    t0 = time.perf_counter()
    try:
        while sampler.n_draws < total:
            i = sampler.n_draws
            draws[i] = sampler.draw()
            stepsizes[i], rates[i] = sampler.stepsize, sampler.avg_acceptance_rate
            if sampler.n_draws % cfg.checkpoint_draws == 0 and sampler.n_draws < total:
                seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                save_checkpoint(done=False)
    except KeyboardInterrupt:
        seconds += time.perf_counter() - t0
        save_checkpoint(done=False)
        if run_dir is not None:
            say(f"interrupted at draw {sampler.n_draws}; resume with: deeptut train --resume {run_dir}")
        raise
    seconds += time.perf_counter() - t0

    summary = _summary(cfg, energy, sampler, draws, seconds, device, say)
    if run_dir is not None:
        tensors.save_tensors(run_dir / SAMPLES, {"draws": draws.cpu(), "stepsize": stepsizes.cpu(),
                                                 "avg_acceptance_rate": rates.cpu()},
                             metadata={"model": cfg.model, "burnin": str(cfg.burnin)})
        files.atomic_write_json(run_dir / rundir.SUMMARY, summary)
        save_checkpoint(done=True)
    return summary


def _summary(cfg: TrainConfig, energy: Any, sampler: Any, draws: torch.Tensor, seconds: float,
             device: torch.device, say: Any) -> dict[str, Any]:
    """The chapter's printed block and the diagnostics, and summary.json: the kept draws' mean and covariance
    against the target's, the sampler's final step size and acceptance rate, split-R-hat and ESS."""
    mu, cov = energy.mu.cpu().numpy(), energy.cov.cpu().numpy()
    kept = draws[cfg.burnin:].cpu().numpy()  # [n_samples, n_chains, dim]
    flat = kept.T.reshape(cfg.dim, -1).T  # [n_samples * n_chains, dim], test_hmc.py's flattening
    emp_mean, emp_cov = flat.mean(axis=0), np.atleast_2d(np.cov(flat.T))
    stepsize, rate = float(sampler.stepsize), float(sampler.avg_acceptance_rate)
    rhat, ess = split_rhat(kept), effective_sample_size(kept)
    say(chapter_block(mu, cov, flat, stepsize, rate))
    say(diagnostics_block(rhat, ess, seconds))
    mean_err = float(np.abs(emp_mean - mu).max())
    cov_err = float(np.abs(emp_cov - cov).max())

    def listed(a: np.ndarray) -> list[Any]:
        return [None if not math.isfinite(v) else v for v in np.asarray(a, dtype=float).ravel().tolist()]

    summary: dict[str, Any] = {
        "model": cfg.model, "dim": cfg.dim, "n_chains": cfg.n_chains, "burnin": cfg.burnin,
        "n_samples": cfg.n_samples, "seed": cfg.seed, "init_seed": cfg.init_seed,
        "target_mean": mu.tolist(), "target_cov": cov.tolist(),
        "empirical_mean": emp_mean.tolist(), "empirical_cov": emp_cov.tolist(),
        "max_abs_mean_error": mean_err, "max_abs_cov_error": cov_err,
        "final_stepsize": stepsize, "final_acceptance_rate": rate,
        "acceptance_within_0.1_of_target": abs(rate - cfg.target_acceptance_rate) < 0.1,
        "split_rhat": listed(rhat), "ess": listed(ess), "ess_per_second": listed(ess / max(seconds, 1e-9)),
        "sample_seconds": round(seconds, 4), "published": PUBLISHED, "device": str(device),
        "result": (f"final acceptance rate {rate:.4f}, step size {stepsize:.4f}; max |mean error| {mean_err:.4f}, "
                   f"max |cov error| {cov_err:.4f}; R-hat <= {np.nanmax(rhat):.3f}, ESS >= {np.nanmin(ess):.0f} "
                   f"({seconds:.2f} s)"),
    }
    return summary
