"""SIGINT and SIGTERM: training stops at the next step boundary, writes a checkpoint, says how to resume,
exits with 128 + the signal; the checkpoint is intact and the resumed run ends as the uninterrupted one."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

import tiny
from deeptut import cli
from deeptut.store import rundir
from deeptut.train import loop
from deeptut.train import state as train_state

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ref")
    out = {}
    for name in ("fused", "momentum"):
        (base / name).mkdir()
        assert tiny.run_child(base / name, name)[0] == 0
        out[name] = tiny.run_record(base / name)
    return out


def interrupted_then_resumed(tmp_path: Path, name: str, ref: dict, sig: int, **child) -> str:
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    run_dir.mkdir()
    code, _ = tiny.run_child(run_dir, name, log_path=log, **child)
    assert code == 128 + sig, log.read_text()
    text = log.read_text()
    assert f"interrupted by {signal.Signals(sig).name} at epoch" in text
    assert f"checkpoint written; resume with: deeptut train --resume {run_dir}" in text
    cfg = rundir.load_config(run_dir)
    s = train_state.load_last(run_dir, *tiny.fresh_parts(cfg), cfg)  # intact, and where the message says
    it = int(re.search(r"iteration (\d+)", text).group(1))
    assert (s.epoch - 1) * 20 + (s.next_minibatch or 20) == it and not s.done
    code, counts = tiny.run_child(run_dir, name, resume=True)
    assert code == 0
    assert tiny.differences(tiny.run_record(run_dir), ref) == []
    return text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("name, step", [("fused", 13), ("momentum", 123)])
def test_signal_between_steps(tmp_path, refs, sig, name, step):
    interrupted_then_resumed(tmp_path, name, refs[name], sig, hooks={"signal_at_step": (step, sig)})


@pytest.mark.parametrize("fsync", [20, 41])
def test_signal_while_a_checkpoint_is_written(tmp_path, refs, fsync):
    """The signal lands in the writer thread's fsync: it is handled at the next step boundary."""
    interrupted_then_resumed(tmp_path, "momentum", refs["momentum"], signal.SIGINT,
                             hooks={"signal_at_fsync": (fsync, signal.SIGINT)})


def test_signal_from_outside_at_a_random_time(tmp_path, refs):
    """A real asynchronous SIGTERM from another process once the run has a checkpoint."""
    def send_when_checkpointed(p):
        deadline = time.monotonic() + 60
        while not (tmp_path / "run" / "checkpoints" / "last.json").exists():
            assert time.monotonic() < deadline and p.is_alive()
            time.sleep(0.001)
        os.kill(p.pid, signal.SIGTERM)
    interrupted_then_resumed(tmp_path, "fused", refs["fused"], signal.SIGTERM,
                             on_start=send_when_checkpointed)


def test_interrupt_without_a_run_directory(monkeypatch, capsys):
    real, count = loop.learning_rate_at, [0]
    outer = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN in a pytest-xdist worker
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what a user's process starts with
    try:
        interrupt_without_a_run_directory(monkeypatch, capsys, real, count)
    finally:
        signal.signal(signal.SIGINT, outer)


def interrupt_without_a_run_directory(monkeypatch, capsys, real, count):

    def lr(*a):
        count[0] += 1
        if count[0] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a)
    monkeypatch.setattr(loop, "learning_rate_at", lr)
    with pytest.raises(loop.Interrupted) as e:
        loop.fit(tiny.tiny_config(), tiny.tiny_splits(), None, quiet=True)
    err = capsys.readouterr().err
    assert e.value.signum == signal.SIGINT and "(no run directory: nothing saved)" in err
    if tiny.tiny_config().device == "cpu":  # at the next step boundary (a GPU's CUDA graphs: next span's)
        assert count[0] == 5 and "interrupted by SIGINT at epoch 1, iteration 5 " in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back


def test_cli_exit_codes(monkeypatch):
    def interrupted(*a, **k):
        raise loop.Interrupted(signal.SIGTERM)
    monkeypatch.setattr(loop, "fit", interrupted)
    monkeypatch.setenv("DEEPTUT_TORCHLESS", "0")  # fit itself, not the run without torch
    monkeypatch.setattr("deeptut.data.datasets.load_dataset", lambda *a, **k: tiny.tiny_splits())
    assert cli.main(["train", "logistic", "--runs-dir", "/dev/null/x"]) == 2  # run dir error first
    monkeypatch.setattr("deeptut.store.rundir.new_run_dir", lambda root, preset: Path("/nonexistent"))
    assert cli.main(["train", "logistic", "-q"]) == 128 + signal.SIGTERM
