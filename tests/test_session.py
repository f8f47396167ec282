"""train/session.py, the bookkeeping around a loop, on its own: metrics lines, a run without a directory,
an interrupt's checkpoint and message."""

from __future__ import annotations

import json
import signal

import pytest
import torch

import tiny
from deeptut.store import rundir
from deeptut.signals import Interrupts
from deeptut.train.session import Interrupted, Session


def _open(tmp_path, resume=False):
    cfg = tiny.tiny_config("fused", device="cpu")
    model, step, stopper = tiny.fresh_parts(cfg)
    session = Session(tmp_path, cfg, lambda *a: None, progress=False)
    s = session.open(tiny.tiny_splits(), torch.device("cpu"), model, step, stopper, 30, resume=resume)
    return session, s, (model, step, stopper)


def test_a_fresh_run_directory_and_its_metrics_lines(tmp_path):
    session, s, _ = _open(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {rundir.CONFIG, rundir.MODEL_JSON, rundir.INIT, rundir.METRICS}
    with session.running(s):
        session.record(s, phase="pretrain", layer=1, epoch=3, cost=0.5)
        session.record(s, epoch=4, valid_error=7.5)
    lines = [json.loads(line) for line in (tmp_path / rundir.METRICS).read_text().splitlines()]
    assert s.n_validations == 2 and [list(r) for r in lines] == [
        ["phase", "layer", "epoch", "cost", "elapsed_s"], ["epoch", "valid_error", "elapsed_s"]]
    assert lines[0]["layer"] == 1 and lines[1]["valid_error"] == 7.5 and lines[0]["elapsed_s"] >= 0
    session.files.close()


def test_an_interrupt_writes_a_checkpoint_that_resumes_where_it_says(tmp_path, capsys):
    session, s, (model, step, stopper) = _open(tmp_path)
    with pytest.raises(Interrupted) as e, session.running(s):
        s.epoch, s.next_minibatch = 2, 7
        session.record(s, epoch=2, cost=1.0)
        session.interrupted(signal.SIGTERM, model, step, stopper, s, dict(model.state_dict()), 37,
                            position="layer 0, epoch 2, minibatch 7")
    assert e.value.signum == signal.SIGTERM
    err = capsys.readouterr().err
    assert f"interrupted by SIGTERM at layer 0, epoch 2, minibatch 7: checkpoint written; resume with: " \
           f"deeptut train --resume {tmp_path}" in err
    again, s2, _ = _open(tmp_path, resume=True)
    assert (s2.epoch, s2.next_minibatch, s2.n_validations) == (2, 7, 1)
    assert len((tmp_path / rundir.METRICS).read_text().splitlines()) == 1
    again.files.close()


def test_without_a_run_directory_nothing_is_written(tmp_path, capsys):
    cfg = tiny.tiny_config("fused", device="cpu")
    model, step, stopper = tiny.fresh_parts(cfg)
    session = Session(None, cfg, print, progress=False)
    s = session.open(tiny.tiny_splits(), torch.device("cpu"), model, step, stopper, 30, resume=False)
    with pytest.raises(Interrupted), session.running(s):
        session.record(s, epoch=1)
        session.save_best(dict(model.state_dict()))
        session.checkpoint(model, step, stopper, s, dict(model.state_dict()), 5)
        session.interrupted(signal.SIGINT, model, step, stopper, s, dict(model.state_dict()), 5)
    assert "interrupted by SIGINT at epoch 0, iteration 5 (no run directory: nothing saved)" in \
        capsys.readouterr().err
    assert session.files is None and s.n_validations == 1


def test_interrupts_set_a_flag_and_put_the_handlers_back():
    before = signal.getsignal(signal.SIGINT)
    with Interrupts() as interrupt:
        signal.raise_signal(signal.SIGINT)
        assert interrupt.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before
