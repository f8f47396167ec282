"""Helpers for the sweep tests: a tiny IDX dataset, spec files, the driver as a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import deeptut
from synthetic import write_tiny_idx

SRC = str(Path(deeptut.__file__).resolve().parent.parent)


def tiny_data(folder: Path) -> Path:
    """500 training, 100 validation and 100 test images, noisy enough that models make errors (~20-60 %)."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_tiny_idx(folder, n_train=500, n_valid=100, n_test=100, noise=2.0)


def write_spec(path: Path, body: str, name: str = "tiny", seeds: str = "[1, 2]") -> Path:
    path.write_text(f'name = "{name}"\npreset = "logistic"\nseeds = {seeds}\n' + body)
    return path


BASE = """
[base]
dataset = "idx"
batch_size = 20
patience = 100000
"""


def env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_driver(args: list[str], cwd: Path, log: Path, **extra_env: str) -> subprocess.Popen:
    """The driver in its own process group, as a shell runs it: os.killpg(driver.pid, SIGINT) is a Ctrl-C."""
    return subprocess.Popen([sys.executable, "-m", "deeptut", "sweep", *args], cwd=cwd, env={**env(), **extra_env},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def only_sweep_dir(root: Path) -> Path:
    dirs = [d for d in root.iterdir() if d.is_dir()] if root.exists() else []
    assert len(dirs) == 1, dirs
    return dirs[0]


def wait_for(cond, timeout: float, what: str, every: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def attempts(sweep_dir: Path, tid: str) -> list[dict]:
    p = sweep_dir / "logs" / f"{tid}.attempts.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def ledger_ids(sweep_dir: Path) -> list[str]:
    p = sweep_dir / "results.jsonl"
    return [json.loads(x)["id"] for x in p.read_text().splitlines()] if p.exists() else []


def running_with_checkpoint(sweep_dir: Path):
    """A trial that has a checkpoint and no summary yet (mid-trial), or None."""
    for d in sorted((sweep_dir / "trials").glob("*")) if (sweep_dir / "trials").exists() else []:
        if (d / "checkpoints" / "last.json").exists() and not (d / "summary.json").exists() and attempts(sweep_dir, d.name):
            return d.name
    return None


def check_metrics_consistent(run_dir: Path) -> None:
    """A resumed run's metrics.jsonl has each validation once, in order (nothing counted twice)."""
    its = [json.loads(x)["iteration"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert its == sorted(set(its)), its
