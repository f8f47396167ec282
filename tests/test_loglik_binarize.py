"""`deeptut eval --log-likelihood --binarize stochastic|round` and `--check-ladder`: the literature's stochastic
binarisation (each pixel drawn once from Bernoulli(intensity), a fixed seed, recorded) beside rbm.py's
rounding, and a log Z checked against a ladder ten times longer, on a tiny RBM trained through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import synthetic
from deeptut import cli
from deeptut.errors import ConfigError
from deeptut.train import ais
from deeptut.train.loglik import binarize

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stochastic_binarisation_draws_each_pixel_once_from_its_intensity():
    x = np.array([[0.0, 0.99609375, 0.3, 0.5]] * 20000)
    a = binarize(x, "stochastic", np.random.default_rng(0))
    b = binarize(x, "stochastic", np.random.default_rng(0))
    assert np.array_equal(a, b) and set(np.unique(a)) <= {0.0, 1.0}  # a fixed seed: one fixed binarised set
    assert (a[:, 0] == 0).all() and a[:, 1].mean() > 0.99  # 0 never on; near-1 nearly always
    assert a[:, 2].mean() == pytest.approx(0.3, abs=0.015) and a[:, 3].mean() == pytest.approx(0.5, abs=0.015)
    assert not np.array_equal(a, binarize(x, "stochastic", np.random.default_rng(1)))
    assert binarize(x, "round").tolist()[0] == [0.0, 1.0, 0.0, 1.0]  # rbm.py's T.round: >= 0.5
    with pytest.raises(ConfigError, match="--binarize"):
        binarize(x, "threshold")


@pytest.mark.slow  # ~2 s on a quiet core: 2 x (50 + 500) AIS steps of 20 runs
def test_ten_times_longer_ladder_agrees_on_a_tiny_rbm():
    """On an RBM small enough for the exact log Z: the short ladder and the ten times longer one agree
    within 0.5 nats and both lie near the truth, the longer nearer on average over seeds."""
    torch.manual_seed(3)
    from deeptut.models.rbm import RBM

    rbm = RBM(n_visible=12, n_hidden=8)
    with torch.no_grad():
        rbm.W.mul_(8.0)  # couplings strong enough that a short ladder is visibly off
    exact = ais.exact_log_partition(rbm)
    base = torch.zeros(12, dtype=torch.float64)
    errs = {50: [], 500: []}
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        for steps in errs:
            errs[steps].append(ais.ais_log_partition(rbm, base, ais.linear_betas(steps), 20, g).log_z - exact)
    for short, long_ in zip(errs[50], errs[500]):
        assert abs(short - long_) <= 0.5
    assert np.mean(np.abs(errs[500])) <= np.mean(np.abs(errs[50])) + 1e-3
    assert np.mean(np.abs(errs[500])) < 0.2


@pytest.mark.slow  # a few seconds: a tiny RBM trained through the CLI, then two AIS estimates of each kind
def test_eval_log_likelihood_binarize_and_ladder_check(tmp_path, capsys):
    (tmp_path / "idx").mkdir()
    data = synthetic.write_tiny_idx(tmp_path / "idx", n_train=300, n_valid=60, n_test=60)
    run = tmp_path / "run"
    assert cli.main(["train", "rbm", "--data-dir", str(data), "--run-dir", str(run), "--dataset", "idx",
                     "--device", "cpu", "--threads", "1", "--batch_size", "20", "--n_hidden", "8", "--n_epochs",
                     "2", "--k", "1", "--sample", "false", "--quiet"]) == 0
    common = ["eval", str(run), "--log-likelihood", "--ais-runs", "20", "--ais-steps", "60", "--data-dir", str(data)]
    assert cli.main(common) == 0
    assert cli.main(common + ["--binarize", "stochastic", "--check-ladder"]) == 0
    out = capsys.readouterr().out
    assert "binarised: round" in out and "binarised: stochastic" in out and "ladder check: 600 steps" in out
    rounded = json.loads((run / "log_likelihood.json").read_text())
    drawn = json.loads((run / "log_likelihood-stochastic.json").read_text())
    assert rounded["binarize"] == "round" and "T.round" in rounded["binarization"]
    assert drawn["binarize"] == "stochastic" and "Bernoulli" in drawn["binarization"]
    assert "ladder_check" not in rounded and drawn["ladder_check"]["ais_steps"] == 600
    check = drawn["ladder_check"]
    assert check["difference"] == pytest.approx(drawn["log_z"] - check["log_z"])
    assert check["agree_within_0.5_nats"] == (abs(check["difference"]) <= 0.5)
    # the same model, the same log Z estimate (same AIS seed); the binarised test sets differ
    assert drawn["log_z"] != rounded["log_z"] or drawn["test_log_probability"] != rounded["test_log_probability"]
    assert cli.main(common + ["--binarize", "stochastic"]) == 0  # a fixed draw: the same figure again
    again = json.loads((run / "log_likelihood-stochastic.json").read_text())
    assert again["test_log_probability"] == drawn["test_log_probability"]
