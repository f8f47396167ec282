"""End-to-end training on a tiny synthetic dataset: the loop, the run directory, the saved model."""

import json

import numpy as np
import pytest
import torch

from deeptut import config
from deeptut.store import rundir
from deeptut.data.device import DeviceSplit
from deeptut.train.loop import evaluate, fit, learning_rate_at
from synthetic import tiny_splits


def _cfg(**kw):
    base = dict(batch_size=20, n_epochs=4, patience=1000, learning_rate=0.1, seed=3)
    return config.resolve("logistic", overrides={**base, **kw})


def test_fit_writes_a_complete_run_directory(tmp_path):
    data = tiny_splits()
    summary = fit(_cfg(), data, tmp_path, quiet=True)
    for name in ("config.json", "metrics.jsonl", "best.safetensors", "model.json", "summary.json"):
        assert (tmp_path / name).is_file(), name
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["config"]["batch_size"] == 20 and meta["seed"] == 3
    assert {"torch", "numpy", "python", "deeptut"} <= set(meta["versions"])
    assert "git_commit" in meta and "device" in meta
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4  # one validation per epoch (30 minibatches < patience // 2)
    assert [l["epoch"] for l in lines] == [1, 2, 3, 4]
    assert [l["iteration"] for l in lines] == [30, 60, 90, 120]
    assert lines[0]["test_error"] is not None  # the first validation is always a new best
    assert summary["epochs"] == 4 and summary["stopped"] == "n_epochs"
    assert summary["best_validation_error"] == min(l["valid_error"] for l in lines)
    # the saved model is the selected one: its test error is the reported one
    model, cfg = rundir.load_model(tmp_path)
    err = evaluate(model, DeviceSplit(data.test.x, data.test.y), cfg.batch_size, cfg.evaluation)
    assert err * 100 == pytest.approx(summary["test_error"])
    assert summary["test_error"] < 20  # it learned something (chance is 90 %)


def test_same_seed_same_result_and_seed_changes_the_order(tmp_path):
    data = tiny_splits()

    def costs(name, **kw):
        fit(_cfg(shuffle=True, **kw), data, tmp_path / name, quiet=True)
        return [json.loads(l)["train_cost"] for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    assert costs("a") == costs("b")
    assert costs("a") != costs("c", seed=4)


def test_patience_stops_the_run():
    s = fit(_cfg(patience=40, n_epochs=100), tiny_splits(), quiet=True)
    # validation every min(30, 40 // 2) = 20 iterations; patience 40 grows only on significant gains
    assert s["stopped"] == "patience" and s["epochs"] < 100


def test_full_evaluation_counts_every_example():
    data = tiny_splits(n_valid=210, n_test=190)
    s = fit(_cfg(evaluation="full", n_epochs=1), data, quiet=True)
    assert s["evaluated_examples"] == {"valid": 210, "test": 190}
    s = fit(_cfg(n_epochs=1), data, quiet=True)
    assert s["evaluated_examples"] == {"valid": 200, "test": 180}


def test_tutorial_evaluation_is_a_mean_of_minibatch_rates():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0].long(), 10).float()

    x = torch.zeros(7, 784)
    x[:, 0] = torch.tensor([1, 1, 2, 2, 3, 3, 4.0])
    y = torch.tensor([1, 0, 0, 0, 3, 3, 0])  # minibatches of 3: 1/3 wrong, 2/3 wrong; 7th dropped
    split = DeviceSplit(x, y)
    assert evaluate(Fixed(), split, 3, "tutorial") == pytest.approx(np.mean([1 / 3, 2 / 3]))
    assert evaluate(Fixed(), split, 3, "full") == pytest.approx(4 / 7)


def test_learning_rate_schedules():
    cfg = _cfg(lr_schedule="cosine", learning_rate=1.0)
    assert learning_rate_at(cfg, 0, 100) == 1.0
    assert learning_rate_at(cfg, 50, 100) == pytest.approx(0.5)
    assert learning_rate_at(cfg, 100, 100) == pytest.approx(0.0)
    cfg = _cfg(lr_schedule="onecycle", learning_rate=1.0, warmup_fraction=0.1)
    assert learning_rate_at(cfg, 4, 100) == pytest.approx(0.5)
    assert learning_rate_at(cfg, 10, 100) == pytest.approx(1.0)
    assert learning_rate_at(_cfg(), 10**6, 100) == 0.1


def test_minibatches_are_views():
    split = DeviceSplit(np.zeros((50, 784), np.float32), np.zeros(50, np.int64))
    x, y = split.minibatch(1, 20)
    assert x.data_ptr() == split.x[20:].data_ptr() and x.shape == (20, 784)
    assert split.n_batches(20) == 2
