"""The progress a person watching a run sees (train/session.py Progress): a tqdm bar with the rate, elapsed
time, ETA and best validation error on a terminal (a pseudo-terminal here), cleared before each printed line;
one plain line per validation when the output is piped."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from deeptut.train.session import Progress

SRC = Path(__file__).resolve().parents[1] / "src"


def _on_a_pty(fn, size=(24, 100)):
    """Run fn() with stdout and stderr on a pseudo-terminal; return what the terminal received."""
    master, slave = pty.openpty()
    if size is not None:  # rows, columns, as a terminal window reports them
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    chunks: list[bytes] = []

    def reader():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    tty = os.fdopen(slave, "w", buffering=1)
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = tty
    try:
        fn()
        tty.flush()
    finally:
        sys.stdout, sys.stderr = old
    time.sleep(0.2)
    tty.close()
    t.join(2)
    os.close(master)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("size", [(24, 100), None])  # a terminal window; a bare pty that reports no size
def test_bar_on_a_terminal_is_cleared_before_each_line(size):
    state = {}

    def run():
        p = Progress(True, total_epochs=2)
        assert p.terminal
        p.show(1, 10, 100, float("inf"))
        time.sleep(0.15)
        p.show(1, 40, 100, float("inf"))
        print("epoch 1, minibatch 50/100, validation error 5.000000 %")  # the loop's own line
        time.sleep(0.15)
        p.show(1, 60, 100, 0.05)
        time.sleep(0.15)
        p.show(2, 10, 100, 0.05)
        state["wrapped"] = sys.stdout is not state.get("tty")
        p.clear()
        state["restored"] = sys.stdout

    text = _on_a_pty(run, size)
    # the bar: position, total, elapsed<remaining, a rate; the best validation once there is one
    assert re.search(r"epoch 1/2: +\d+%\|.*\| 40/200 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?(batch/s|s/batch)\]", text), text
    assert "best valid 5.00 %" in text and "best valid inf" not in text
    assert "epoch 2/2" in text
    # each printed line is alone on its terminal line: nothing of the bar before it after the last \r
    (line,) = [ln for ln in text.replace("\r\n", "\n").split("\n") if "validation error" in ln]
    assert line.split("\r")[-1] == "epoch 1, minibatch 50/100, validation error 5.000000 %", repr(line)
    assert state["wrapped"] and state["restored"] is not None and not hasattr(state["restored"], "bar")


def test_quiet_and_piped_show_no_bar(capsys):
    p = Progress(False, 3)
    p.show(1, 1, 10, 0.1)
    p.validated(1, 10, 10, 10.0, True)
    p.clear()
    assert capsys.readouterr() == ("", "")
    p = Progress(True, 3)  # stderr captured: not a terminal
    assert not p.terminal
    p.show(1, 5, 10, float("inf"))
    p.validated(1, 10, 10, 12.5, True)
    p.show(2, 10, 10, 0.125)
    p.validated(2, 20, 10, 13.0, False)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"  \[epoch 1/3, 10/30 minibatches, [\d.]+ s elapsed, ETA [\d.:]+( s)?, best valid "
                        r"12\.50 %\]", lines[0]), lines[0]
    assert lines[1].startswith("  [epoch 2/3, 20/30 minibatches") and lines[1].endswith("best valid 12.50 %]")


@pytest.mark.slow  # a fresh interpreter (torch's import): ~10 s on the shared 2 cores
def test_a_piped_run_prints_one_line_per_validation(tmp_path):
    """A real run, output piped: the plain progress lines on stderr, one per validation, no bar."""
    code = """
import sys
sys.path.insert(0, sys.argv[1])
from synthetic import tiny_splits
from deeptut.config import TrainConfig
from deeptut.train.runner import train
cfg = TrainConfig(model="logistic", batch_size=20, n_epochs=3, learning_rate=0.1, threads=1)
train(cfg, tiny_splits(n_train=400, n_valid=100, n_test=100), sys.argv[2])
"""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    (tmp_path / "run").mkdir()
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr
    plain = [ln for ln in out.stderr.splitlines() if ln.startswith("  [epoch ")]
    validations = [ln for ln in out.stdout.splitlines() if "validation error" in ln]
    assert len(plain) == len(validations) == 3
    assert plain[-1].startswith("  [epoch 3/3, 60/60 minibatches, ")


@pytest.mark.parametrize("seconds,text", [(3.21, "3.2 s"), (65, "1:05"), (3725, "1:02:05")])
def test_clock(seconds, text):
    from deeptut.train.session import _clock

    assert _clock(seconds) == text
