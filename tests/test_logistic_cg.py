"""logistic_cg.py (train/cg.py, the logistic-cg family): the minibatched cost and gradient against the whole
set's, a tiny run through the seam and the CLI (printed lines, run directory, eval, viz), resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deeptut import cli, registry
from deeptut.config import TrainConfig, resolve
from deeptut.models.logistic import LogisticRegression
from deeptut.store import rundir
from deeptut.store.rundir import read_metrics
from deeptut.train.cg import WholeSetObjective
from deeptut.train.runner import train
from synthetic import tiny_splits, write_tiny_idx

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_data():
    return tiny_splits(n_train=1200, n_valid=600, n_test=600, seed=0, noise=1.0, n_in=32, n_out=4)


def tiny_cfg(**kw):
    return TrainConfig(**{"model": "logistic-cg", "n_in": 32, "n_out": 4, "n_epochs": 6, "batch_size": 300,
                          "threads": 1, **kw})


def whole_set_nll(x, y, theta, n_in, n_out):
    """The mean negative log-likelihood over every example, by autograd in float64 (the oracle)."""
    t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    W, b = t[:n_in * n_out].view(n_in, n_out), t[n_in * n_out:]
    logp = torch.log_softmax(torch.as_tensor(x, dtype=torch.float64) @ W + b, dim=1)
    cost = -logp[torch.arange(len(y)), torch.as_tensor(y)].mean()
    cost.backward()
    return float(cost.detach()), t.grad.numpy()


def test_minibatched_cost_and_gradient_are_the_whole_sets():
    rng = np.random.default_rng(0)
    x = rng.random((60, 7)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    theta = rng.standard_normal(7 * 3 + 3)
    obj = WholeSetObjective(x, y, 7, 3, batch_size=20)  # 3 minibatches: their mean is the whole set's mean
    cost, grad = obj.cost_and_grad(theta)
    ref_cost, ref_grad = whole_set_nll(x, y, theta, 7, 3)
    assert cost == pytest.approx(ref_cost, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-13)
    # the closed form at zero: dcost/db = mean(1/k - onehot), dcost/dW = x^T (1/k - onehot) / n
    cost0, grad0 = obj.cost_and_grad(np.zeros_like(theta))
    onehot = np.eye(3)[y]
    assert cost0 == pytest.approx(np.log(3), rel=1e-12)
    np.testing.assert_allclose(grad0[21:], (1 / 3 - onehot).mean(axis=0), atol=1e-14)
    np.testing.assert_allclose(grad0[:21].reshape(7, 3), x.astype(np.float64).T @ (1 / 3 - onehot) / 60, atol=1e-13)
    # 70 examples at batch 20: the tutorial's integer division keeps 3 minibatches (60 examples)
    obj70 = WholeSetObjective(np.concatenate([x, x[:10]]), np.concatenate([y, y[:10]]), 7, 3, batch_size=20)
    assert obj70.n_batches == 3 and obj70.cost(theta) == pytest.approx(ref_cost, rel=1e-12)


def test_tiny_run_prints_the_tutorials_lines_and_writes_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    s = train(tiny_cfg(), tiny_data(), run)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[:2] == ["... building the model", "Optimizing using scipy.optimize.fmin_cg..."]
    validation = [ln for ln in lines if ln.startswith("validation error ")]
    assert len(validation) == s["epochs"] == 6 and all(ln.endswith(" %") for ln in validation)
    assert lines[-1] == (f"Optimization complete with best validation score of {s['best_validation_error']:f} %, "
                         f"with test performance {s['test_error']:f} %")
    assert err.startswith("The code for file logistic_cg.py ran for ")
    m = read_metrics(run / "metrics.jsonl").supervised
    assert [r["iteration"] for r in m] == [1, 2, 3, 4, 5, 6]
    assert min(r["valid_error"] for r in m) == pytest.approx(s["best_validation_error"])
    assert all(r["train_cost"] < np.log(4) for r in m)  # below the zeros' cost from the first iteration
    costs = [r["train_cost"] for r in m]
    assert costs == sorted(costs, reverse=True)  # CG's line searches only go down
    assert s["best_validation_error"] < 40.0  # 4 classes: chance is 75 %
    # best.safetensors is the best validated model: its validation error is the summary's
    model = rundir.load_module(run)
    assert isinstance(model, LogisticRegression)
    from deeptut.data.device import DeviceSplit
    from deeptut.train.loop import evaluate

    d = tiny_data()
    assert evaluate(model, DeviceSplit(d.valid.x, d.valid.y), 300, "tutorial") * 100 == pytest.approx(
        s["best_validation_error"])


@pytest.mark.slow  # ~4 s (9 s at load 9): train, eval and viz through the CLI
def test_cli_train_eval_and_viz(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    data_dir = write_tiny_idx(tmp_path / "data", n_train=1000, n_valid=200, n_test=600, seed=1)
    run = tmp_path / "run"
    assert cli.main(["train", "logistic-cg", "--data-dir", str(data_dir), "--dataset", "idx", "--n_epochs", "3",
                     "--batch_size", "100", "--run-dir", str(run), "--threads", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    s = json.loads((run / "summary.json").read_text())
    assert out.startswith(f"best validation score of {s['best_validation_error']:f} %, with test performance "
                          f"{s['test_error']:f} % (3 epochs")
    assert cli.main(["eval", str(run), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"valid error {s['best_validation_error']:f} %" in out and f"test error {s['test_error']:f} %" in out
    pytest.importorskip("matplotlib")
    assert cli.main(["viz", str(run), "--data-dir", str(data_dir)]) == 0
    assert {"learning_curves.png", "filters.png", "confusion.png", "errors.png"} <= {
        p.name for p in (run / "plots").iterdir()}


def test_resume_goes_on_from_the_last_iterations_parameters(tmp_path, monkeypatch):
    """A run stopped after CG iteration 3 (the process dies after that iteration's checkpoint) resumes with
    the 3 remaining iterations from iteration 3's parameters: its first 3 metrics lines are the
    uninterrupted run's, and it ends after 6."""
    ref = tmp_path / "ref"
    train(tiny_cfg(), tiny_data(), ref, quiet=True)
    run = tmp_path / "run"
    real_write = rundir.MetricsLog.write
    calls = [0]

    def dying_write(self, record):
        calls[0] += 1
        if calls[0] == 4:
            raise SystemExit("killed")  # as if the process died in iteration 4
        real_write(self, record)

    monkeypatch.setattr(rundir.MetricsLog, "write", dying_write)
    with pytest.raises(SystemExit):
        train(tiny_cfg(), tiny_data(), run, quiet=True)
    monkeypatch.setattr(rundir.MetricsLog, "write", real_write)
    assert json.loads((run / "checkpoints" / "last.json").read_text())["loop"]["iteration"] == 3
    s = train(tiny_cfg(), tiny_data(), run, quiet=True, resume=True)
    assert s["epochs"] == 6

    def lines(d):
        return [{k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}
                for ln in (d / "metrics.jsonl").read_text().splitlines()]

    assert len(lines(run)) == 6 and lines(run)[:3] == lines(ref)[:3]
    # the finished run resumes to its summary without training further
    again = train(tiny_cfg(), tiny_data(), run, quiet=True, resume=True)
    assert again["epochs"] == 6 and len(lines(run)) == 6


def test_the_family_runs_through_the_seam():
    cfg = resolve("logistic-cg")
    assert (cfg.n_epochs, cfg.batch_size, cfg.n_in, cfg.n_out) == (50, 600, 784, 10)
    assert registry.procedure(cfg.net.procedure).__module__ == "deeptut.train.cg"
    assert isinstance(cfg.net.build(), LogisticRegression)


def test_bad_inputs(tmp_path):
    from deeptut.errors import ConfigError

    with pytest.raises(ConfigError, match="n_in is 784 but the data's images have 32 pixels"):
        train(TrainConfig(model="logistic-cg", n_epochs=1), tiny_data(), None, quiet=True)
    with pytest.raises(ConfigError, match="batch_size 5000 is larger than the training split"):
        train(tiny_cfg(batch_size=5000), tiny_data(), None, quiet=True)
    with pytest.raises(ConfigError, match="n_out is 3 but the data has labels up to 3"):
        train(tiny_cfg(n_out=3), tiny_data(), None, quiet=True)
