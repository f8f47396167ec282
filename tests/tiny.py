"""A tiny synthetic run for the reliability tests (a fraction of a second of training, a few dozen
validations, several new bests, a patience stop) and fault-injection hooks for child processes.

`child_main` runs in a child process (multiprocessing "forkserver": the server imports torch once, each
case is a cheap fork of it) and is what the kill tests SIGKILL.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from deeptut.config import TrainConfig
from synthetic import tiny_splits as _synthetic_splits

N_IN, N_OUT = 32, 4

# The reliability runs' data: synthetic.tiny_splits with 400/200/200 examples of 32 inputs, 4 classes,
# noise 1.0 (learnable, but not in one epoch). tiny_splits(seed) or tiny_splits(seed=...) for another draw.
tiny_splits = functools.partial(_synthetic_splits, 400, 200, 200, noise=1.0, n_in=N_IN, n_out=N_OUT)


# The hand-fused plain-SGD step (no optimizer state), autograd SGD with momentum (optimizer buffers, a
# schedule, intermediate models, a checkpoint every second validation), both reshuffling every epoch and
# ending on a patience stop between validations; and a run whose stop falls on a validation.
CONFIGS: dict[str, dict[str, Any]] = {
    "fused": dict(learning_rate=0.02, batch_size=20, n_epochs=40, patience=150, patience_increase=2.0,
                  validation_frequency=10, shuffle=True),
    "momentum": dict(learning_rate=0.002, momentum=0.9, batch_size=20, n_epochs=40, patience=150,
                     patience_increase=2.0, validation_frequency=10, shuffle=True, lr_schedule="cosine",
                     save_every=3, checkpoint_every=2),
    # patience 149, never extended: the stop decision is taken at a validation, whose checkpoint records it
    "stop-at-validation": dict(learning_rate=0.02, batch_size=20, n_epochs=40, patience=149,
                               patience_increase=1.0, validation_frequency=10, save_every=4),
}


# Pre-training then fine-tuning (train/pretrain.py): an SdA and a DBN of two tiny layers, 40 minibatches an
# epoch, 3 pre-training epochs per layer (240 updates), then fine-tuning to a patience stop. The DBN uses
# PCD-2 (its chains are part of what a resume must restore) and a checkpoint every second epoch line.
PRETRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    "sda": dict(model="sda", hidden_layers_sizes=(12, 8), corruption_levels=(0.2, 0.3), pretraining_epochs=3,
                pretrain_lr=0.05, learning_rate=0.1, batch_size=10, n_epochs=20, patience=200,
                patience_increase=2.0, validation_frequency=20),
    "dbn": dict(model="dbn", hidden_layers_sizes=(12, 8), k=2, persistent=True, pretraining_epochs=3,
                pretrain_lr=0.05, learning_rate=0.1, batch_size=10, n_epochs=20, patience=200,
                patience_increase=2.0, validation_frequency=20, checkpoint_every=2, save_every=2),
}


def tiny_config(name: str = "fused", **overrides: Any) -> TrainConfig:
    """$DEEPTUT_TINY_DEVICE=cuda runs the same tests on a GPU (the CPU is the default and what CI runs)."""
    values = dict(model="logistic", preset=f"tiny-{name}", n_in=N_IN, n_out=N_OUT, threads=1, seed=7,
                  device=os.environ.get("DEEPTUT_TINY_DEVICE", "cpu"))
    values.update(CONFIGS[name] if name in CONFIGS else PRETRAIN_CONFIGS[name])
    values.update(overrides)
    return TrainConfig(**values)


# --- fault injection, installed in a child process only -------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill_hooks(kill_at_fsync: int | None = None, kill_at_step: int | None = None,
                       signal_at_step: tuple[int, int] | None = None,
                       signal_at_fsync: tuple[int, int] | None = None) -> dict[str, int]:
    """Count os.fsync calls and steps (calls of learning_rate_at: one per training step, one per
    validation) in this process; SIGKILL it at the k-th fsync (1-based: inside an atomic write, between
    writing the temporary file and renaming it, or just after the rename, at the directory fsync) or at
    the k-th step; or send it signal s at step or fsync k (signal_at_step / signal_at_fsync = (k, s)).
    Returns the live counts. Pre-training updates (train/pretrain.py's layer updates) count as steps too."""
    from deeptut.train import loop, pretrain

    lock = threading.Lock()
    counts = {"fsync": 0, "step": 0}
    real_fsync, real_lr = os.fsync, loop.learning_rate_at

    def fsync(fd: int) -> None:
        with lock:
            counts["fsync"] += 1
            if counts["fsync"] == kill_at_fsync:
                _die()
            if signal_at_fsync is not None and counts["fsync"] == signal_at_fsync[0]:
                os.kill(os.getpid(), signal_at_fsync[1])
        real_fsync(fd)

    def learning_rate_at(*a: Any) -> float:
        counts["step"] += 1
        if counts["step"] == kill_at_step:
            _die()
        if signal_at_step is not None and counts["step"] == signal_at_step[0]:
            os.kill(os.getpid(), signal_at_step[1])
        return real_lr(*a)

    real_update = pretrain.make_update

    def make_update(*a: Any):
        update = real_update(*a)

        def counted(*b: Any):
            learning_rate_at_step()
            return update(*b)
        return counted

    def learning_rate_at_step() -> None:
        counts["step"] += 1
        if counts["step"] == kill_at_step:
            _die()
        if signal_at_step is not None and counts["step"] == signal_at_step[0]:
            os.kill(os.getpid(), signal_at_step[1])

    os.fsync, loop.learning_rate_at, pretrain.make_update = fsync, learning_rate_at, make_update
    from deeptut.train import torchless

    torchless.learning_rate_at = learning_rate_at  # the same calls: a logistic run without torch
    return counts


def child_main(run_dir: str, name: str, resume: bool, hooks: dict[str, Any], counts_path: str,
               log_path: str | None = None) -> None:
    """One process: train the tiny run (or resume it as the CLI does, with the run's saved config); when it
    ends by itself, write its fsync/step counts to counts_path and exit with 0, 3 (TrainingError),
    128 + signal (interrupted) or 1 (anything else). With log_path, stdout and stderr go there."""
    from deeptut.errors import TrainingError
    from deeptut.store import rundir
    from deeptut.train import runner
    from deeptut.train.session import Interrupted

    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    counts = install_kill_hooks(**hooks)
    code = 0
    try:
        cfg = rundir.load_config(run_dir) if resume else tiny_config(name)
        runner.train(cfg, tiny_splits(), Path(run_dir), quiet=True, resume=resume)
    except Interrupted as e:
        code = 128 + e.signum
    except TrainingError:
        code = 3
    except BaseException as e:  # report, never hang the parent
        print(f"child failed: {type(e).__name__}: {e}", flush=True)
        code = 1
    Path(counts_path).write_text(json.dumps(counts))
    os._exit(code)


# --- running a case in a child process -----------------------------------------------------------------

_CTX = None


def context():
    """The forkserver context: its server imports torch (and torch._dynamo, which torch.optim imports on
    first use: seconds that every child would pay again) once; each child is a fork of it."""
    global _CTX
    if _CTX is None:
        import multiprocessing as mp

        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(["tiny", "deeptut.train.loop", "deeptut.train.pretrain", "deeptut.store.rundir",
                                     "torch._dynamo"])
    return _CTX


def run_child(run_dir: Path, name: str, resume: bool = False, hooks: dict | None = None,
              kill_after_s: float | None = None, timeout: float = 120, log_path: Path | None = None,
              on_start: Any = None) -> tuple[int, dict]:
    """Run child_main in a child; returns (exit code, counts). The exit code is -9 when SIGKILLed.
    `on_start(process)` runs in the parent once the child has started."""
    import time

    counts_path = run_dir.parent / f"{run_dir.name}.{time.monotonic_ns()}.counts.json"
    p = context().Process(target=child_main, args=(str(run_dir), name, resume, hooks or {}, str(counts_path),
                                                   None if log_path is None else str(log_path)))
    p.start()
    if on_start is not None:
        on_start(p)
    if kill_after_s is not None:
        p.join(kill_after_s)
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise AssertionError(f"{run_dir}: child hung")
    counts = json.loads(counts_path.read_text()) if counts_path.exists() else {}
    return p.exitcode, counts


# --- what "the same run" means --------------------------------------------------------------------------


def run_record(run_dir: Path) -> dict[str, Any]:
    """Everything a finished run leaves that must not depend on interruptions (timings removed)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    for k in ("train_seconds", "epochs_per_second"):
        summary.pop(k, None)
    summary.pop("pretrain_seconds", None)  # sda/dbn: pre-training's time
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        m.pop("elapsed_s")
    manifest = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    manifest["loop"].pop("elapsed_s")
    models = {p.name: p.read_bytes() for p in sorted((run_dir / "models").glob("*"))} \
        if (run_dir / "models").is_dir() else {}
    pretrained = run_dir / "pretrained.safetensors"  # sda/dbn
    return {"best.safetensors": (run_dir / "best.safetensors").read_bytes(),
            "pretrained.safetensors": pretrained.read_bytes() if pretrained.exists() else None,
            "init.safetensors": (run_dir / "init.safetensors").read_bytes(),
            "model.json": (run_dir / "model.json").read_text(),
            "summary": summary, "metrics": metrics, "loop": manifest["loop"],
            "early_stopping": manifest["early_stopping"], "models": models,
            "leftover temporaries": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*.tmp")),
            "checkpoint files": len(list((run_dir / "checkpoints").iterdir()))}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in a if a[k] != b.get(k)]


# --- in-process helpers ---------------------------------------------------------------------------------


def fresh_parts(cfg: TrainConfig):
    """A new (model, step, stopper) for `cfg`, as fit builds them, to load a checkpoint into."""
    from deeptut.accel import make_train_step
    from deeptut.models import build_model
    from deeptut.train.early_stopping import EarlyStopping

    from deeptut.train.loop import resolve_device

    device = resolve_device(cfg.device)
    model = build_model(cfg.model_args(), cfg.init_seed).to(device)
    return (model, make_train_step(model, cfg, device),
            EarlyStopping(cfg.patience, cfg.patience_increase, cfg.improvement_threshold))


def keep_torch_threads():
    """Generator for a fixture: fit and load_last set torch's thread count; put it back afterwards."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def at_step(monkeypatch, k: int, action) -> list[int]:
    """Run `action` once, just before training step (call of learning_rate_at) number k; returns the
    running count of steps."""
    from deeptut.train import loop, torchless

    real, count = loop.learning_rate_at, [0]

    def lr(*a):
        count[0] += 1
        if count[0] == k:
            action()
        return real(*a)
    monkeypatch.setattr(loop, "learning_rate_at", lr)
    monkeypatch.setattr(torchless, "learning_rate_at", lr)  # the same calls: a logistic run without torch
    return count
