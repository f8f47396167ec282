"""`deeptut eval RUN_DIR --log-likelihood`: the test log-likelihood of a saved RBM, by annealed importance
sampling of log Z (train/ais.py), from the run's files and the dataset only.

    log p(v) = -FE(v) - log Z          mean over the test set, in nats
    log Z    ~ AIS from a base-rate RBM whose visible biases fit the *training* images' pixel means

The RBM's units are binary, so the images are binarised the way rbm.py's pseudo-likelihood cost rounds them
(T.round: a pixel of at least 0.5, i.e. 128/256 and up, is 1). The spread of the AIS weights gives
log Z's +-3 sigma interval [log_z_low, log_z_high]; the mean test log-probability's interval is that one
carried through (mean(-FE) is computed exactly): [mean(-FE) - log_z_high, mean(-FE) - log_z_low].
Typical values on MNIST with 500 hidden units: log Z around 450, test log-probability around -90 nats
(PCD-trained), run to run spread of log Z a few tenths of a nat with the paper's ladder.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from deeptut.errors import ConfigError
from deeptut.store import files
from deeptut.store.rundir import Run
from deeptut.data.binarize import BINARIZE_SEED, binary_pixels
from deeptut.data.datasets import split_images
from deeptut.data.device import check_device

LOG_LIKELIHOOD_JSON = "log_likelihood.json"
DEFAULT_AIS_RUNS = 100  # parallel AIS runs (the paper: 100)
DEFAULT_AIS_SEED = 0    # the AIS noise's torch Generator seed
PAPER_STEPS = 14_500    # the paper's ladder: 500 steps of 1e-3, 4,000 of 1e-4, 10,000 of 1e-5


def paper_shaped_betas(n_steps: int) -> np.ndarray:
    """A ladder of `n_steps` steps (n_steps + 1 inverse temperatures from 0 to 1) with the paper's shape:
    500/14500 of the steps evenly up to 0.5, 4000/14500 up to 0.9, the rest up to 1. At 14,500 it is
    ais.salakhutdinov_betas() exactly (same linspace segments)."""
    if n_steps < 3:
        raise ConfigError(f"--ais-steps must be >= 3 (got {n_steps})")
    a = max(1, round(n_steps * 500 / PAPER_STEPS))
    b = max(1, round(n_steps * 4000 / PAPER_STEPS))
    c = n_steps - a - b
    if c < 1:
        a, b, c = 1, 1, n_steps - 2
    return np.concatenate([np.linspace(0.0, 0.5, a + 1)[:-1], np.linspace(0.5, 0.9, b + 1)[:-1],
                           np.linspace(0.9, 1.0, c + 1)])


BINARIZATIONS = ("round", "stochastic")


def binarize(x: np.ndarray, mode: str = "round", rng: np.random.Generator | None = None) -> np.ndarray:
    """0/1 float64 images. round: x >= 0.5 (T.round of a value in [0, 1), halves away from zero; rbm.py's
    cost). stochastic: each pixel drawn once from Bernoulli(x) with `rng` (the literature's binarised MNIST:
    Salakhutdinov and Murray 2008)."""
    if mode not in BINARIZATIONS:
        raise ConfigError(f"--binarize must be one of {', '.join(BINARIZATIONS)} (got {mode!r})")
    if mode == "stochastic" and rng is None:
        raise ConfigError("binarize: the stochastic binarisation needs its random generator")
    return binary_pixels(np.asarray(x), mode, rng).astype(np.float64)


def binarization_note(mode: str) -> str:
    return ("pixel >= 0.5 -> 1 (rbm.py's T.round)" if mode == "round" else
            f"stochastic: each pixel drawn once from Bernoulli(intensity), numpy default_rng({BINARIZE_SEED}), "
            "the training split first, then the test split")


def estimate_log_likelihood(run_dir: str | Path, data: Any = None, *, n_runs: int = DEFAULT_AIS_RUNS,
                            ais_steps: int | None = None, seed: int = DEFAULT_AIS_SEED,
                            device: str = "cpu", binarize_mode: str = "round",
                            check_ladder: bool = False) -> dict[str, Any]:
    """The AIS estimate of log Z of the run's RBM and its mean test log-probability (nats), with +-3 sigma
    intervals, as a JSON-ready dict. ais_steps None: the paper's ladder (14,500 steps); else a ladder of
    that many steps of the same shape. `data` as for deeptut.viz.samples (None: the run's dataset).
    binarize_mode: "round" or "stochastic" (see binarize). check_ladder: also estimate log Z with a ladder ten
    times longer (other AIS noise) and record the difference: AIS tends to underestimate log Z, which makes a
    model look better, so a short ladder that is too low shows as a large difference."""
    import torch

    from deeptut.train.ais import ais_log_partition, base_rate_vbias, mean_log_probability

    device = check_device(device)
    run = Run.open(run_dir)
    rbm = run.require_trait("samples", "the log-likelihood").to(device)
    dataset = str(run.config.get("dataset", "mnist"))
    if n_runs < 2:
        raise ConfigError(f"--ais-runs must be >= 2 to report a spread (got {n_runs})")
    steps = PAPER_STEPS if ais_steps is None else int(ais_steps)
    betas = paper_shaped_betas(steps)
    rng = np.random.default_rng(BINARIZE_SEED) if binarize_mode == "stochastic" else None
    x_train = torch.from_numpy(binarize(split_images(data, "train", dataset), binarize_mode, rng))
    x_test = torch.from_numpy(binarize(split_images(data, "test", dataset), binarize_mode, rng))
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    t0 = time.perf_counter()
    ais = ais_log_partition(rbm, base_rate_vbias(x_train), betas, n_runs, generator)
    mean_lp = mean_log_probability(rbm, x_test, ais.log_z)
    neg_fe = mean_lp + ais.log_z  # mean(-FE(v)) over the test set
    low = neg_fe - ais.log_z_high
    high = neg_fe - ais.log_z_low if math.isfinite(ais.log_z_low) else math.inf
    check = None
    if check_ladder:
        generator.manual_seed(int(seed) + 1)
        longer = ais_log_partition(rbm, base_rate_vbias(x_train), paper_shaped_betas(10 * steps), n_runs, generator)
        diff = float(ais.log_z - longer.log_z)
        check = {"ais_steps": 10 * steps, "log_z": float(longer.log_z), "difference": diff,
                 "agree_within_0.5_nats": bool(abs(diff) <= 0.5)}
    return {
        "log_z": ais.log_z, "log_z_low": ais.log_z_low, "log_z_high": ais.log_z_high,
        "log_z_base": ais.log_z_base,
        "test_log_probability": mean_lp, "test_log_probability_low": low, "test_log_probability_high": high,
        "interval": "+-3 sigma of the mean AIS weight (Salakhutdinov & Murray 2008)",
        "unit": "nats per test image", "n_test": int(x_test.shape[0]), "n_train_for_base_rate": int(x_train.shape[0]),
        "binarize": binarize_mode, "binarization": binarization_note(binarize_mode),
        **({"ladder_check": check} if check is not None else {}),
        "ais_runs": n_runs, "ais_steps": steps, "ladder": "paper-shaped (500:4000:10000 up to 0.5, 0.9, 1)",
        "seed": int(seed), "device": str(device), "seconds": time.perf_counter() - t0,
        "log_weights_std": float(np.std(ais.log_weights)),
    }


def write_log_likelihood(run_dir: str | Path, data: Any = None, **kwargs: Any) -> tuple[Path, dict[str, Any]]:
    """estimate_log_likelihood, written to RUN_DIR/log_likelihood.json (infinite ends as null)."""
    result = estimate_log_likelihood(run_dir, data, **kwargs)
    name = LOG_LIKELIHOOD_JSON if result["binarize"] == "round" else \
        LOG_LIKELIHOOD_JSON.replace(".json", f"-{result['binarize']}.json")
    path = Path(run_dir) / name
    files.atomic_write_json(path, {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                   for k, v in result.items()})
    return path, result


def format_result(r: dict[str, Any]) -> str:
    """The two lines `deeptut eval --log-likelihood` prints."""
    def f(v: float | None) -> str:
        return "-inf" if v is None or v == -math.inf else ("inf" if v == math.inf else f"{v:.4f}")

    return (f"AIS log Z = {f(r['log_z'])} (+-3 sigma: [{f(r['log_z_low'])}, {f(r['log_z_high'])}]; "
            f"{r['ais_runs']} runs, {r['ais_steps']:,} steps, {r['seconds']:.1f} s)\n"
            f"mean test log-probability = {f(r['test_log_probability'])} nats "
            f"(+-3 sigma: [{f(r['test_log_probability_low'])}, {f(r['test_log_probability_high'])}]; "
            f"{r['n_test']:,} test images, binarised: {r.get('binarize', 'round')})"
            + (f"\nladder check: {r['ladder_check']['ais_steps']:,} steps give log Z = "
               f"{f(r['ladder_check']['log_z'])} (difference {r['ladder_check']['difference']:+.4f}: "
               f"{'within' if r['ladder_check']['agree_within_0.5_nats'] else 'NOT within'} 0.5 nats)"
               if r.get("ladder_check") else ""))
