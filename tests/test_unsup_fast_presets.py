"""The fast unsupervised presets (sda-fast, dbn-fast, rbm-fast): they train the tutorial presets' networks
(same model_args and initialisation) the modern way, and each trains end to end on tiny data with its
sizes overridden (every other value the preset's)."""

from __future__ import annotations

import json

import pytest

import tiny
from deeptut import config
from deeptut.store import rundir
from deeptut.train import pretrain
from synthetic import tiny_splits

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)

FAST = {"sda-fast": "sda", "dbn-fast": "dbn", "rbm-fast": "rbm"}
# 6x6 images so that augment_shift (a move of square images) applies; 4 classes
DATA = tiny_splits(400, 200, 200, noise=1.0, n_in=36, n_out=4)
TINY = {
    "sda-fast": dict(n_in=36, hidden_layers_sizes=(12, 8), corruption_levels=(0.1, 0.2), n_out=4),
    "dbn-fast": dict(n_in=36, hidden_layers_sizes=(12, 8), n_out=4),
    "rbm-fast": dict(n_visible=36, n_hidden=10),
}


@pytest.mark.parametrize("fast, tutorial", FAST.items())
def test_fast_unsupervised_presets_keep_the_tutorials_model(fast, tutorial):
    f, t = config.resolve(fast), config.resolve(tutorial)
    assert f.preset == fast and f.model == t.model
    assert f.model_args() == t.model_args() and f.init_seed == t.init_seed  # same architecture and init
    assert f.shuffle and f.batch_size > t.batch_size
    assert f.lr_schedule in ("onecycle", "cosine")  # fine-tuning's (sda/dbn) or the RBM's own schedule
    if tutorial == "rbm":
        assert (f.k, f.persistent) != (t.k, t.persistent) or f.n_epochs < t.n_epochs
        assert f.augment_shift == 0 and f.momentum == 0  # an RBM's update takes neither
    else:
        # the same stopping rule (patience counted in updates: the presets' budgets end runs first)
        assert (f.patience_increase, f.improvement_threshold) == (t.patience_increase, t.improvement_threshold)
        assert f.momentum > 0 and f.nesterov and f.evaluation == "full" and f.augment_shift == 1
        assert f.pretraining_epochs < t.pretraining_epochs and f.n_epochs <= 30
    if tutorial in ("sda", "dbn"):
        assert f.corruption_levels == t.corruption_levels if tutorial == "sda" else (f.k, f.persistent) == (1, False)


@pytest.mark.parametrize("fast", FAST)
def test_fast_unsupervised_preset_trains_end_to_end_on_tiny_data(tmp_path, fast):
    cfg = config.resolve(fast, overrides={**TINY[fast], "batch_size": 20, "threads": 1, "device": "cpu"})
    cfg = cfg.replace(n_epochs=2, **({"pretraining_epochs": 1} if fast != "rbm-fast" else {}))
    summary = pretrain.train(cfg, DATA, tmp_path, quiet=True)
    lines = [json.loads(x) for x in (tmp_path / rundir.METRICS).read_text().splitlines()]
    pre = [m for m in lines if m.get("phase") == "pretrain"]
    if fast == "rbm-fast":
        assert summary["epochs"] == 2 and len(pre) == 2
        assert all(m["cost_kind"] == ("pseudo-likelihood" if cfg.persistent else "reconstruction") for m in pre)
    else:
        assert [(m["layer"], m["epoch"]) for m in pre] == [(0, 0), (1, 0)]
        assert (tmp_path / rundir.PRETRAINED).exists()
        assert 0.0 <= summary["best_validation_error"] < 75.0  # percent; 4 classes: chance is 75 %
