"""improvement = "mcnemar": patience grows only on a significantly better model (McNemar's exact test on the
validation examples against the previous best); scripted by hand, and a resumed run equals an unbroken one."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import tiny
from deeptut.config import TrainConfig
from deeptut.errors import ConfigError
from deeptut.train.early_stopping import EarlyStopping
from deeptut.train.loop import Interrupted, fit

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)


def wrong_first(k: int, n: int = 100, shift: int = 0) -> np.ndarray:
    w = np.zeros(n, bool)
    w[shift:shift + k] = True
    return w


def test_scripted_sequence_by_hand():
    s = EarlyStopping(10, 2.0, 0.995, improvement="mcnemar", mcnemar_alpha=0.05)
    t = EarlyStopping(10, 2.0, 0.995)  # the tutorials' rule on the same losses
    # 1st validation: nothing to compare with: significant, as with the threshold
    d = s.update(9, 0.50, wrong_first(50))
    assert d.improved and d.significant and d.patience == 18
    assert t.update(9, 0.50).significant
    # 5 mistakes fixed, none broken: p = 2 / 2^5 = 0.0625 >= 0.05: a new best, not significant (the threshold
    # rule, 0.45 < 0.995 * 0.50, calls it significant)
    d = s.update(19, 0.45, wrong_first(45))
    assert d.improved and not d.significant and d.patience == 18
    assert t.update(19, 0.45).significant and t.patience == 38
    # against the new best (45 wrong): 9 fixed, 1 broken -> p = 2 (1 + 10) / 2^10 = 0.0215 < 0.05
    w = wrong_first(45)
    w[:9] = False
    w[60] = True
    d = s.update(29, float(w.mean()), w)
    assert d.improved and d.significant and d.patience == 58
    # more broken than fixed can never be significant, whatever alpha
    s2 = EarlyStopping(10, improvement="mcnemar", mcnemar_alpha=0.99)
    s2.update(0, 0.5, wrong_first(50))
    assert not s2.significantly_better(wrong_first(60))
    with pytest.raises(ValueError, match="mcnemar"):
        s.update(39, 0.1)


def test_config_checks():
    with pytest.raises(ConfigError, match="improvement"):
        TrainConfig(improvement="pvalue")
    with pytest.raises(ConfigError, match="mcnemar_alpha"):
        TrainConfig(improvement="mcnemar", mcnemar_alpha=1.5)


def test_resumed_mcnemar_run_equals_an_unbroken_one(tmp_path, monkeypatch):
    cfg = tiny.tiny_config("fused", improvement="mcnemar", mcnemar_alpha=0.2)
    for name in ("ref", "thr", "run"):
        (tmp_path / name).mkdir()
    ref = fit(cfg, tiny.tiny_splits(), tmp_path / "ref", quiet=True)
    ref_thr = fit(tiny.tiny_config("fused"), tiny.tiny_splits(), tmp_path / "thr", quiet=True)
    # on these 200 validation examples the small relative improvements are not significant: it stops sooner
    assert ref["best_validation_error"] > 0 and ref["iterations"] < ref_thr["iterations"]
    tiny.at_step(monkeypatch, 90, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(Interrupted):
        fit(cfg, tiny.tiny_splits(), tmp_path / "run", quiet=True)
    monkeypatch.undo()
    fit(cfg, tiny.tiny_splits(), tmp_path / "run", quiet=True, resume=True)
    assert tiny.differences(tiny.run_record(tmp_path / "run"), tiny.run_record(tmp_path / "ref")) == []
