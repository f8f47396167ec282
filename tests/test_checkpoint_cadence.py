"""checkpoint_every_s: a run that validates many times a second writes its `last` checkpoint at most once
per that many seconds (a sweep's tiny trials spent a third of their time on checkpoints: BENCHMARKS.md)."""

from __future__ import annotations

import pytest

import tiny
from deeptut.errors import ConfigError
from deeptut.store import files
from deeptut.train import session as session_mod
from deeptut.train.loop import fit


def _count_checkpoints(monkeypatch) -> list[int]:
    written: list[int] = []
    real = session_mod.Session._save_last

    def counting(self, model, step, stopper, s, *args, **kwargs):
        written.append(s.n_validations)
        return real(self, model, step, stopper, s, *args, **kwargs)

    monkeypatch.setattr(session_mod.Session, "_save_last", counting)
    return written


@pytest.mark.parametrize("every_s, expected", [(0.0, "all"), (3600.0, "first")])
def test_checkpoint_cadence_in_seconds(tmp_path, monkeypatch, every_s, expected):
    written = _count_checkpoints(monkeypatch)
    cfg = tiny.tiny_config("fused", checkpoint_every_s=every_s)
    fit(cfg, tiny.tiny_splits(), tmp_path, quiet=True)
    assert files.read_json(tmp_path / "summary.json")["stopped"] == "patience"
    n = len((tmp_path / "metrics.jsonl").read_text().splitlines())
    assert n > 5  # the tiny run validates many times
    # 0: one checkpoint per validation (checkpoint_every = 1); an hour: only the first validation's; either
    # way the finished run's own at the end (its state after the last validation: n again)
    assert written == (list(range(1, n + 1)) if expected == "all" else [1]) + [n]


def test_a_sigint_still_writes_a_checkpoint_at_once(tmp_path, monkeypatch):
    import signal

    from deeptut.train.session import Interrupted

    written = _count_checkpoints(monkeypatch)
    cfg = tiny.tiny_config("fused", checkpoint_every_s=3600.0)
    calls = {"n": 0}
    real_record = session_mod.Session.record

    def record_then_interrupt(self, s, **fields):
        real_record(self, s, **fields)
        calls["n"] += 1
        if calls["n"] == 4:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(session_mod.Session, "record", record_then_interrupt)
    with pytest.raises(Interrupted):
        fit(cfg, tiny.tiny_splits(), tmp_path, quiet=True)
    assert written[0] == 1 and written[-1] == 4  # the first validation's, then the interruption's


def test_checkpoint_every_s_must_not_be_negative():
    with pytest.raises(ConfigError, match="checkpoint_every_s must be >= 0"):
        tiny.tiny_config("fused", checkpoint_every_s=-1.0)
    with pytest.raises(ConfigError, match="checkpoint_every_s"):
        tiny.tiny_config("fused", checkpoint_every_s=float("nan"))
