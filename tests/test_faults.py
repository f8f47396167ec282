"""Numerical and storage faults: NaN/Inf and divergence stop the run with the best parameters kept; a run
directory that turns read-only or a disk that fills up stops the run with a clear error, the previous
checkpoint intact, and the run resumes to the same result once the problem is gone.

The storage tests use a real tmpfs (mount needs root; they are skipped without it) and, everywhere, a
fault-injecting replacement of the atomic writer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny
from deeptut import cli
from deeptut.store import files, rundir, tensors
from deeptut.data.datasets import Split, Splits
from deeptut.errors import CheckpointError, TrainingError
from deeptut.train import state as train_state
from deeptut.train.loop import fit

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def tmpfs(tmp_path: Path, size: str):
    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)):
        pytest.skip("needs root and mount -t tmpfs")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def remount(mnt: Path, mode: str) -> None:
    # a tmpfs refuses to turn read-only while a file is open for writing (the writer thread): retry
    for _ in range(400):
        if _mount("-o", f"remount,{mode}", str(mnt)):
            return
        time.sleep(0.005)
    raise AssertionError(f"cannot remount {mnt} {mode}")


def reference(tmp_path: Path, name: str) -> dict:
    ref = tmp_path / f"ref-{name}"
    ref.mkdir()
    fit(tiny.tiny_config(name), tiny.tiny_splits(), ref, quiet=True)
    return tiny.run_record(ref)


def check_intact_then_resume(run_dir: Path, name: str, ref: dict, monkeypatch) -> None:
    monkeypatch.undo()
    cfg = rundir.load_config(run_dir)
    s = train_state.load_last(run_dir, *tiny.fresh_parts(cfg), cfg)  # the previous checkpoint loads
    assert not s.done and s.n_validations > 0
    fit(cfg, tiny.tiny_splits(), run_dir, quiet=True, resume=True)
    assert tiny.differences(tiny.run_record(run_dir), ref) == []


# --- numerical faults ---------------------------------------------------------------------------------------


def nan_splits(row: int) -> Splits:
    d = tiny.tiny_splits()
    x = d.train.x.copy()
    x[row, 3] = np.nan
    return Splits(Split(x, d.train.y), d.valid, d.test, d.source, d.name)


@pytest.mark.parametrize("name, message", [
    ("fused", "the training cost became nan at iteration 15 \\(epoch 1\\)"),  # checked at every step
    ("momentum", "the mean training cost became nan by iteration 20"),  # autograd: checked at validations
])
def test_nan_stops_the_run_and_keeps_the_best_parameters(tmp_path, name, message):
    cfg = tiny.tiny_config(name, shuffle=False, save_every=1, checkpoint_every=1)
    with pytest.raises(TrainingError, match=message) as e:
        fit(cfg, nan_splits(14 * 20 + 5), tmp_path, quiet=True)  # a NaN in minibatch 15 of every epoch
    assert "best parameters so far" in str(e.value) and "best.safetensors" in str(e.value)
    summary = files.read_json(tmp_path / "summary.json")
    assert summary["stopped"] == "non-finite" and summary["best_iteration"] == 10
    model, _ = rundir.load_model(tmp_path)  # usable: the model of the best validation, all finite
    best = model.state_dict()
    assert all(torch.isfinite(v).all() for v in best.values())
    at_best = tensors.load_tensors(tmp_path / "models" / "iter-00000010.safetensors")
    assert all(torch.equal(best[k], at_best[k]) for k in best)
    s = train_state.load_last(tmp_path, *tiny.fresh_parts(cfg), cfg)
    assert s.finished and s.stopped == "non-finite" and s.fault
    assert fit(cfg, nan_splits(14 * 20 + 5), tmp_path, quiet=True, resume=True) == summary  # no retraining


def test_non_finite_parameters_are_named():
    model, _, _ = tiny.fresh_parts(tiny.tiny_config())
    with torch.no_grad():
        model.b[2] = float("inf")
    assert train_state.health(model, 1.0, 41) == ("parameter b holds NaN or Inf at iteration 42", "non-finite")
    assert train_state.health(model, float("nan"), 41)[0] == "the mean training cost became nan by iteration 42"


def test_divergence_threshold(tmp_path):
    with pytest.raises(TrainingError, match="diverged: the mean training cost .* exceeds max_cost 0.5 by "
                                           "iteration 10"):
        fit(tiny.tiny_config("fused", max_cost=0.5), tiny.tiny_splits(), tmp_path, quiet=True)
    summary = files.read_json(tmp_path / "summary.json")
    assert summary["stopped"] == "diverged" and summary["best_iteration"] == 0
    rundir.load_model(tmp_path)  # the kept model (here: the initial one) loads


# --- storage faults -----------------------------------------------------------------------------------------


def test_read_only_run_directory_mid_run(tmp_path, monkeypatch):
    ref = reference(tmp_path, "momentum")
    with tmpfs(tmp_path, "8m") as mnt:
        run_dir = mnt / "run"
        run_dir.mkdir()
        tiny.at_step(monkeypatch, 120, lambda: remount(mnt, "ro"))
        with pytest.raises(CheckpointError) as e:
            fit(tiny.tiny_config("momentum"), tiny.tiny_splits(), run_dir, quiet=True)
        assert "Read-only file system" in str(e.value)
        assert f"resume with: deeptut train --resume {run_dir}" in str(e.value)
        remount(mnt, "rw")
        check_intact_then_resume(run_dir, "momentum", ref, monkeypatch)


def test_full_disk_mid_run(tmp_path, monkeypatch):
    ref = reference(tmp_path, "fused")
    with tmpfs(tmp_path, "1m") as mnt:
        run_dir = mnt / "run"
        run_dir.mkdir()

        def fill() -> None:
            fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
        tiny.at_step(monkeypatch, 150, fill)
        with pytest.raises(CheckpointError, match="No space left on device") as e:
            fit(tiny.tiny_config("fused"), tiny.tiny_splits(), run_dir, quiet=True)
        assert "the last checkpoint (epoch" in str(e.value) or "the last checkpoint is intact" in str(e.value)
        (mnt / "filler").unlink()
        check_intact_then_resume(run_dir, "fused", ref, monkeypatch)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_injected_write_failures_mid_run(tmp_path, monkeypatch, err):
    """The same without mount: every atomic write fails from step 150 on."""
    ref = reference(tmp_path, "fused")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    real, broken = files.atomic_write_bytes, [False]

    def write(path, data):
        if broken[0]:
            raise CheckpointError(f"{path}: cannot write: {os.strerror(err)}")
        real(path, data)
    monkeypatch.setattr(files, "atomic_write_bytes", write)
    tiny.at_step(monkeypatch, 150, lambda: broken.__setitem__(0, True))
    with pytest.raises(CheckpointError, match=os.strerror(err)):
        fit(tiny.tiny_config("fused"), tiny.tiny_splits(), run_dir, quiet=True)
    check_intact_then_resume(run_dir, "fused", ref, monkeypatch)


def test_unwritable_run_directory_from_the_start(tmp_path, capsys):
    with tmpfs(tmp_path, "1m") as mnt:
        (mnt / "run").mkdir()
        remount(mnt, "ro")
        with pytest.raises(CheckpointError, match="config.json: cannot write: Read-only file system"):
            fit(tiny.tiny_config(), tiny.tiny_splits(), mnt / "run", quiet=True)
        assert cli.main(["train", "logistic", "--runs-dir", str(mnt / "runs"), "--n_epochs", "1"]) == 2
        assert "cannot create run directory: Read-only file system" in capsys.readouterr().err


def test_run_directory_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["train", "logistic", "--runs-dir", str(tmp_path / "file" / "runs")]) == 2
    assert "cannot create run directory: Not a directory" in capsys.readouterr().err
