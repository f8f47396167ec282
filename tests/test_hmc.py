"""The HMC chapter (models/hmc.py, train/hmc.py, train/mcmc_stats.py, viz/hmc.py): leapfrog against closed
forms, the Metropolis rule and the step-size rule by hand, R-hat and ESS on sequences whose answer is known,
test_hmc.py's target, `deeptut train hmc` end to end, SIGKILL and resume, bad inputs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deeptut import cli
from deeptut.config import TrainConfig
from deeptut.errors import ConfigError, TrainingError
from deeptut.models.hmc import (GaussianEnergy, HMCSampler, energy_grad, gaussian_target, hamiltonian, hmc_updates,
                                metropolis_hastings_accept, simulate_dynamics)
from deeptut.train.hmc import chapter_block, sample
from deeptut.train.mcmc_stats import effective_sample_size, split_rhat

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--dim", "3", "--n_chains", "2", "--burnin", "30", "--n_samples", "60", "--n_steps", "5",
        "--checkpoint_draws", "20", "--threads", "1"]

# doc/hmc.txt's printed target (test_hmc.py, dim 5, RandomState(123))
PUBLISHED_TARGET = """****** TARGET VALUES ******
target mean: [ 6.96469186  2.86139335  2.26851454  5.51314769  7.1946897 ]
target cov:
 [[ 1.          0.66197111  0.71141257  0.55766643  0.35753822]
 [ 0.66197111  1.          0.31053199  0.45455485  0.37991646]
 [ 0.71141257  0.31053199  1.          0.62800335  0.38004541]
 [ 0.55766643  0.45455485  0.62800335  1.          0.50807871]
 [ 0.35753822  0.37991646  0.38004541  0.50807871  1.        ]]"""


def standard_gaussian(dim):
    return GaussianEnergy(np.zeros(dim), np.eye(dim))


# --- leapfrog ----------------------------------------------------------------------------------------------


def test_leapfrog_conserves_the_oscillators_shadow_energy():
    """On E = |q|^2 / 2 the leapfrog map conserves |p|^2 / 2 + (1 - eps^2 / 4) |q|^2 / 2 exactly (its
    modified Hamiltonian), so H itself changes by O(eps^2) only, and the trajectory follows the exact
    rotation q(t) = q0 cos t + p0 sin t to O(eps^2)."""
    g = torch.Generator().manual_seed(0)
    q0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    p0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    energy = standard_gaussian(3)
    for eps, n in ((0.1, 30), (0.05, 60)):
        q, p, _ = simulate_dynamics(q0, p0, torch.tensor(eps, dtype=torch.float64), n, energy)
        shadow = lambda q, p: 0.5 * (p ** 2).sum(1) + (1 - eps ** 2 / 4) * 0.5 * (q ** 2).sum(1)  # noqa: E731
        torch.testing.assert_close(shadow(q, p), shadow(q0, p0), rtol=0, atol=1e-12)
        dh = (hamiltonian(q, p, energy) - hamiltonian(q0, p0, energy)).abs().max()
        assert dh < eps ** 2 * (q0 ** 2).sum(1).max()
        t = eps * n
        exact = q0 * math.cos(t) + p0 * math.sin(t)
        assert (q - exact).abs().max() < 0.5 * eps ** 2 * t * 4


def test_leapfrog_is_reversible():
    """Integrating back from (q', -p') returns to (q0, -p0): the symmetry Metropolis' correctness needs."""
    mu, cov, _ = gaussian_target(5)
    energy = GaussianEnergy(mu, cov)
    g = torch.Generator().manual_seed(1)
    q0 = torch.randn(3, 5, generator=g, dtype=torch.float64) + energy.mu
    p0 = torch.randn(3, 5, generator=g, dtype=torch.float64)
    eps = torch.tensor(0.2, dtype=torch.float64)
    q1, p1, _ = simulate_dynamics(q0, p0, eps, 20, energy)
    q2, p2, _ = simulate_dynamics(q1, -p1, eps, 20, energy)
    torch.testing.assert_close(q2, q0, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p2, p0, rtol=0, atol=1e-10)


def test_closed_form_gradient_is_autograds():
    mu, cov, pos = gaussian_target(5)
    energy = GaussianEnergy(mu, cov)
    x = torch.as_tensor(pos) + energy.mu
    e1, g1 = energy_grad(x, energy)
    e2, g2 = energy_grad(x, lambda z: energy(z))  # a plain function: autograd
    torch.testing.assert_close(e1, e2, rtol=0, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)


# --- the Metropolis rule and the adaptation, by hand --------------------------------------------------------


def test_acceptance_rule_hand_case():
    prev = torch.tensor([1.0, 1.0, 1.0, 3.0, 2.0], dtype=torch.float64)
    nxt = prev.clone()
    nxt[:3] += math.log(2.0)  # exp(prev - next) = 0.5 (to rounding) for the first three
    nxt[3] = 1.0  # lower energy: exp(2) - u > 0 always
    u = torch.tensor([0.4, 0.6, 0.49, 0.999, 0.9999], dtype=torch.float64)  # the last: equal H, kept (>= 0)
    assert metropolis_hastings_accept(prev, nxt, u).tolist() == [True, False, True, True, True]


def test_stepsize_and_acceptance_updates_hand_case():
    pos = torch.zeros(4, 2, dtype=torch.float64)
    final = torch.ones(4, 2, dtype=torch.float64)
    accept = torch.tensor([True, False, True, True])
    kw = dict(target_acceptance_rate=0.9, stepsize_inc=1.02, stepsize_dec=0.98, stepsize_min=0.001,
              stepsize_max=0.25, avg_acceptance_slowness=0.9)
    new_pos, step, rate = hmc_updates(pos, torch.tensor(0.1, dtype=torch.float64),
                                      torch.tensor(0.95, dtype=torch.float64), final, accept, **kw)
    assert new_pos[:, 0].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert float(step) == pytest.approx(0.102)  # the old average 0.95 > 0.9: x 1.02
    assert float(rate) == pytest.approx(0.9 * 0.95 + 0.1 * 0.75)
    _, step, _ = hmc_updates(pos, torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64),
                             final, accept, **kw)
    assert float(step) == pytest.approx(0.098)
    _, step, _ = hmc_updates(pos, torch.tensor(0.249, dtype=torch.float64),
                             torch.tensor(0.95, dtype=torch.float64), final, accept, **kw)
    assert float(step) == 0.25  # clipped at stepsize_max
    _, step, _ = hmc_updates(pos, torch.tensor(0.00101, dtype=torch.float64),
                             torch.tensor(0.1, dtype=torch.float64), final, accept, **kw)
    assert float(step) == 0.001  # clipped at stepsize_min


# --- diagnostics on known sequences --------------------------------------------------------------------------


def ar1(phi, n, m, d, seed):
    rng = np.random.default_rng(seed)
    x = np.empty((n, m, d))
    x[0] = rng.standard_normal((m, d)) / math.sqrt(1 - phi ** 2)  # stationary start
    for t in range(1, n):
        x[t] = phi * x[t - 1] + rng.standard_normal((m, d))
    return x


def test_ess_and_rhat_of_independent_draws():
    x = np.random.default_rng(0).standard_normal((2000, 4, 3))
    ess = effective_sample_size(x)
    assert np.all(np.abs(ess / 8000 - 1) < 0.12), ess
    assert np.all(np.abs(split_rhat(x) - 1) < 0.01)


def test_ess_of_ar1_matches_its_closed_form():
    phi = 0.6
    x = ar1(phi, 5000, 4, 3, seed=1)
    expected = 20000 * (1 - phi) / (1 + phi)  # n M (1 - phi) / (1 + phi) = 5000
    ess = effective_sample_size(x)
    assert np.all(np.abs(ess / expected - 1) < 0.15), (ess, expected)


def test_rhat_flags_chains_that_disagree():
    x = np.random.default_rng(2).standard_normal((500, 3, 2))
    x[:, 0, :] += 3.0  # one chain elsewhere
    assert np.all(split_rhat(x) > 1.5)
    trend = np.random.default_rng(3).standard_normal((500, 3, 1)) + np.linspace(0, 4, 500)[:, None, None]
    assert split_rhat(trend)[0] > 1.2  # a drift inside every chain: the halves disagree


# --- the chapter's target and printed block ------------------------------------------------------------------


def test_target_is_drawn_as_test_hmc_draws_it():
    mu, cov, pos = gaussian_target(5, 3, 123)
    rng = np.random.RandomState(123)
    mu_ref = rng.rand(5) * 10
    cov_ref = rng.rand(5, 5)
    cov_ref = (cov_ref + cov_ref.T) / 2.0
    cov_ref[np.arange(5), np.arange(5)] = 1.0
    np.testing.assert_array_equal(mu, mu_ref)
    np.testing.assert_array_equal(cov, cov_ref)
    np.testing.assert_array_equal(pos, rng.randn(3, 5))
    block = chapter_block(mu, cov, np.tile(mu, (4, 1)) + np.eye(4, 5), 0.460446628091, 0.922502043428)
    assert block.startswith(PUBLISHED_TARGET + "\n****** EMPIRICAL MEAN/COV USING HMC ******\nempirical mean:  [")
    assert block.endswith("****** HMC INTERNALS ******\nfinal stepsize 0.460446628091\n"
                          "final acceptance_rate 0.922502043428")


def test_sampler_state_round_trip_is_bit_identical():
    energy = standard_gaussian(2)
    a = HMCSampler(torch.zeros(3, 2, dtype=torch.float64), energy, n_steps=3, seed=7)
    for _ in range(5):
        a.draw()
    b = HMCSampler(torch.ones(3, 2, dtype=torch.float64), energy, n_steps=3, seed=99)
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    for _ in range(5):
        assert torch.equal(a.draw(), b.draw())
    assert float(a.stepsize) == float(b.stepsize) and a.n_draws == b.n_draws == 10


# --- end to end ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~4 s (8 s at load 9): two tiny runs through the CLI and the pictures
def test_deeptut_train_hmc_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "hmc", "--run-dir", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    for line in ("****** TARGET VALUES ******", "target mean: [", "****** EMPIRICAL MEAN/COV USING HMC ******",
                 "empirical_cov:\n [[", "****** HMC INTERNALS ******", "final stepsize ", "final acceptance_rate ",
                 "split R-hat: [", "effective sample size: [", "effective sample size per second: ["):
        assert line in out
    s = json.loads((run / "summary.json").read_text())
    assert len(s["split_rhat"]) == len(s["ess"]) == 3
    assert 0.001 <= s["final_stepsize"] <= 0.25
    assert f"final stepsize {s['final_stepsize']:.12g}" in out
    from deeptut.store.tensors import load_arrays

    draws = load_arrays(run / "samples.safetensors")["draws"]
    assert draws.shape == (90, 2, 3)
    kept = draws[30:].reshape(-1, 3)
    np.testing.assert_allclose(kept.mean(axis=0), s["empirical_mean"], rtol=0, atol=1e-6)
    assert s["max_abs_mean_error"] == pytest.approx(np.abs(kept.mean(axis=0) - s["target_mean"]).max(), abs=1e-6)
    assert cli.main(["train", "hmc", "--run-dir", str(tmp_path / "q"), "--quiet", *TINY]) == 0
    assert capsys.readouterr().out.startswith("final acceptance rate ")
    pytest.importorskip("matplotlib")
    assert cli.main(["viz", str(run)]) == 0
    assert {p.name for p in (run / "plots").iterdir()} == {"hmc_trace.png", "hmc_scatter.png"}


def _killed_run(run_dir: Path, args: list[str], at_draw: int) -> None:
    """`deeptut train hmc` in a child process, SIGKILLed once its checkpoint has passed `at_draw` draws."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    child = subprocess.Popen([sys.executable, "-m", "deeptut", "train", "hmc", "--run-dir", str(run_dir), "--quiet",
                              *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = run_dir / "checkpoints" / "last.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        try:
            loop = json.loads(manifest.read_text())["loop"]
        except (OSError, ValueError, KeyError):
            loop = None
        if loop and loop["draw"] >= at_draw:
            break
        time.sleep(0.005)
    assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read().decode()[-500:]}"
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL


@pytest.mark.slow  # ~8 s on a loaded machine: a child process with torch, then the resumed run and a reference run
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    args = ["--dim", "3", "--n_chains", "3", "--burnin", "100", "--n_samples", "400", "--n_steps", "5",
            "--checkpoint_draws", "25", "--threads", "1", "--seed", "5"]
    killed = tmp_path / "killed"
    _killed_run(killed, args, at_draw=50)
    loop = json.loads((killed / "checkpoints" / "last.json").read_text())["loop"]
    assert not loop["done"] and not (killed / "summary.json").exists()
    assert cli.main(["train", "--resume", str(killed), "--quiet"]) == 0
    ref = tmp_path / "ref"
    assert cli.main(["train", "hmc", "--run-dir", str(ref), "--quiet", *args]) == 0
    assert (killed / "samples.safetensors").read_bytes() == (ref / "samples.safetensors").read_bytes()
    timing = {"sample_seconds", "ess_per_second", "result"}
    a, b = (json.loads((d / "summary.json").read_text()) for d in (killed, ref))
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    assert not list((killed / "checkpoints").glob("*.tmp*"))
    # resuming the finished run draws nothing more and gives the same draws
    assert cli.main(["train", "--resume", str(killed), "--quiet"]) == 0
    assert (killed / "samples.safetensors").read_bytes() == (ref / "samples.safetensors").read_bytes()


# --- bad inputs ---------------------------------------------------------------------------------------------


def test_non_finite_energy_names_the_draw():
    calls = [0]

    def energy(x):  # finite for the first two draws (5 calls each at n_steps 2), then nan
        calls[0] += 1
        e = 0.5 * (x ** 2).sum(dim=1)
        return e * float("nan") if calls[0] > 10 else e

    sampler = HMCSampler(torch.zeros(2, 2, dtype=torch.float64), energy, n_steps=2)
    sampler.draw()
    sampler.draw()
    with pytest.raises(TrainingError, match=r"draw 3: non-finite"):
        sampler.draw()


def test_infinite_gradient_names_the_draw():
    class Steep(torch.nn.Module):
        def energy_and_grad(self, x):
            return 0.5 * (x ** 2).sum(1), torch.full_like(x, float("inf"))

        def forward(self, x):
            return 0.5 * (x ** 2).sum(1)

    with pytest.raises(TrainingError, match=r"draw 1: non-finite"):
        HMCSampler(torch.zeros(2, 2, dtype=torch.float64), Steep(), n_steps=2).draw()


def test_covariance_not_positive_definite_is_refused_with_its_smallest_eigenvalue(tmp_path, capsys):
    cov = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    with pytest.raises(ConfigError, match=r"not positive definite: its smallest eigenvalue is -1\b"):
        GaussianEnergy(np.zeros(2), cov)
    # test_hmc's own recipe at dim 10 makes no covariance: the run says so
    with pytest.raises(ConfigError, match=r"dim 10 .*smallest eigenvalue is -0.347"):
        sample(TrainConfig(model="hmc", dataset="none", dim=10, init_seed=123, burnin=0, n_samples=4), None, None)
    assert cli.main(["train", "hmc", "--dim", "10", "--quiet", "--run-dir", str(tmp_path / "r")]) == 2
    assert "smallest eigenvalue is -0.347" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    ({"stepsize_min": 0.5, "stepsize_max": 0.25}, "stepsize_min"),
    ({"n_samples": 3}, "n_samples"),
    ({"target_acceptance_rate": 1.5}, "target_acceptance_rate"),
    ({"initial_stepsize": 0.0}, "initial_stepsize"),
    ({"n_steps": 0}, "n_steps"),
])
def test_bad_config_values(bad, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(model="hmc", dataset="none", **bad)
