"""An LSTM run (train/sequence.py) SIGKILLed mid-epoch and at an epoch's end, then resumed, ends exactly as the
run that was never killed: best.safetensors byte for byte, the summary and metrics.jsonl apart from timings.
Each run is a forked child of this process (torch already imported: a fork costs milliseconds)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path

import pytest
import torch._dynamo  # noqa: F401 (torch.optim imports it on first use: seconds each child would pay again)

from deeptut.config import TrainConfig
from test_lstm import toy_sets

TIMING = {"elapsed_s", "train_seconds", "seconds_per_epoch", "epochs_per_second", "final_train_error_seconds",
          "result"}


def config(**schedule) -> TrainConfig:
    return TrainConfig(model="lstm", preset="tiny-lstm", n_words=12, dim_proj=8, batch_size=20, n_epochs=4,
                       patience=10, shuffle=True, threads=1, device="cpu", use_dropout=True, seed=3, **schedule)


SCHEDULED = dict(optimizer="adam", learning_rate=0.01, lr_schedule="cosine")  # lstm-mnist's kind of run


def child(run_dir: str, kill_at_step: int | None, resume: bool, schedule: dict) -> None:
    from deeptut.train import sequence

    real, count = sequence.train_step, [0]

    def counted(*a):
        count[0] += 1
        if count[0] == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a)

    sequence.train_step = counted
    try:
        sequence.train(config(**schedule), toy_sets(200), Path(run_dir), quiet=True, resume=resume)
    except BaseException as e:  # report, never hang the parent
        print(f"child failed: {type(e).__name__}: {e}", flush=True)
        os._exit(1)
    os._exit(0)


def run(run_dir: Path, kill_at_step: int | None = None, resume: bool = False, schedule: dict | None = None) -> int:
    p = mp.get_context("fork").Process(target=child, args=(str(run_dir), kill_at_step, resume, schedule or {}))
    p.start()
    p.join(120)
    assert p.exitcode is not None, "child hung"
    return p.exitcode


def record(run_dir: Path) -> dict:
    lines = [{k: v for k, v in json.loads(x).items() if k not in TIMING}
             for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in TIMING}
    return {"best": (run_dir / "best.safetensors").read_bytes(), "metrics": lines, "summary": summary}


@pytest.mark.slow  # ~6-10 s: five child runs
def test_sigkill_then_resume_is_bit_identical(tmp_path, one_thread):
    ref = tmp_path / "ref"
    ref.mkdir()
    assert run(ref) == 0
    want = record(ref)
    assert len(want["metrics"]) == 4
    for kill_at in (15, 20):  # mid-epoch 2 (after epoch 1's checkpoint); the last update of epoch 2
        d = tmp_path / f"killed-{kill_at}"
        d.mkdir()
        assert run(d, kill_at) == -signal.SIGKILL
        assert run(d, resume=True) == 0
        got = record(d)
        assert got["metrics"] == want["metrics"], kill_at
        assert got["summary"] == want["summary"], kill_at
        assert got["best"] == want["best"], kill_at


@pytest.mark.slow  # ~3-5 s: three child runs
def test_scheduled_run_sigkilled_mid_epoch_resumes_bit_identically(tmp_path, one_thread):
    """A cosine-scheduled Adam run: the step size is a function of the update's index, so the resumed run
    takes the same steps."""
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir(), killed.mkdir()
    assert run(ref, schedule=SCHEDULED) == 0
    want = record(ref)
    rates = [m["learning_rate"] for m in want["metrics"]]
    assert len(rates) == 4 and rates == sorted(rates, reverse=True) and rates[-1] < 0.001
    assert run(killed, 25, schedule=SCHEDULED) == -signal.SIGKILL  # mid-epoch 3
    assert run(killed, resume=True, schedule=SCHEDULED) == 0
    assert record(killed) == want
