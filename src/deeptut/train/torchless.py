"""fit() without torch: the logistic regression's run on a CPU, for a process that starts in a fraction of
a second.

Importing torch takes 1.5-2.6 s on the 2-core CI machines, while the tutorial's first chapter trains an
epoch in ~0.1 s: a student's short runs and the tests' hundreds of runs were mostly start-up. The logistic
family's CPU step never needed torch: it is one C kernel (accel/cpu/csrc/logistic_step.c) on numpy arrays,
and so is its evaluation. This module runs fit's procedure (train/loop.py) with that kernel and no torch,
step for step as fit does: the same minibatches, thread split (T = torch's thread count, at most one per 64
rows), step sizes, validations, early stopping, stopping rules, metrics lines, checkpoints, interrupts and
closing lines, through the same Session (train/session.py) and run-directory code (store/). The files it
writes are fit's, byte for byte where they hold no time (tests/test_torchless.py compares both runs, file
by file and line by line), and a run it started resumes with torch (`deeptut train --resume`).

It covers the case the kernel covers, and says no (returns None: the family's procedure then runs, with
torch) to anything else: a resume, a CUDA device, shuffling, moved or normalised images, McNemar
selection, momentum or weight decay, `fast_step` or `sparse` off, a streamed split, no C compiler, or
DEEPTUT_TORCHLESS=0. models/families.py names it for the logistic family (`torchless`); runner.train calls
it first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from deeptut.accel import set_blas_threads, torch_free_logistic
from deeptut.config import TrainConfig
from deeptut.train import state as train_state
from deeptut.train.early_stopping import EarlyStopping
from deeptut.train.minibatches import run_epochs
from deeptut.train.outcome import divergence_rule, evaluated_examples, learning_rate_at, report_end, run_summary
from deeptut.train.session import Session, TorchFree
from deeptut.train.stopping import Stop, StoppingRules


def unsupported(cfg: TrainConfig, data: Any, resume: bool) -> str | None:
    """Why this run needs torch (None: it does not)."""
    if os.environ.get("DEEPTUT_TORCHLESS", "1") == "0":
        return "DEEPTUT_TORCHLESS=0"
    if cfg.net.procedure != "sgd":
        return f"procedure {cfg.net.procedure} (this is fit's, 'sgd')"
    if resume:
        return "a resumed run (train/state.py restores torch's state)"
    if cfg.device not in ("cpu", "auto") or (cfg.device == "auto" and cuda_present()):
        return f"device {cfg.device}"
    if not (cfg.fast_step and cfg.sparse):
        return "fast_step or sparse off (the torch steps)"
    if cfg.momentum or cfg.weight_decay or cfg.nesterov:
        return "momentum or weight decay (torch.optim.SGD's state)"
    if cfg.shuffle or cfg.augment_shift or cfg.normalize != "none":
        return "shuffle, augment_shift or normalize (torch's generator and the device splits)"
    if cfg.improvement != "threshold":
        return f"improvement {cfg.improvement}"
    if cfg.device_memory_budget not in ("0", "", 0):
        return "a device memory budget (streamed splits)"
    for part in (getattr(data, name, None) for name in ("train", "valid", "test")):
        x, y = getattr(part, "x", None), getattr(part, "y", None)
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == np.float32
                and y.dtype == np.int64 and x.ndim == 2 and x.shape[1] == cfg.n_in and y.shape == (len(x),)
                and x.flags.c_contiguous and y.flags.c_contiguous):
            return "data that is not float32 [n, n_in] and int64 [n] numpy arrays"
    return None


def cuda_present() -> bool:
    """Whether an NVIDIA driver is there (device auto would then be CUDA: torch decides)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def torch_default_threads() -> int:
    """torch's intra-op thread count without importing it, as its MKL builds (x86) set it: MKL_NUM_THREADS,
    else OMP_NUM_THREADS, else the physical cores this process may run on; capped at those cores unless
    MKL_DYNAMIC is false. tests/test_torchless.py compares it with torch.get_num_threads() in fresh
    processes."""
    cores = physical_cores()
    n = 0
    for var in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):  # the first one set wins
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            n = int(value)
            break
    if not n:
        return cores
    dynamic = os.environ.get("MKL_DYNAMIC", "true").strip().lower() not in ("false", "0", "no")
    return min(n, cores) if dynamic else n


def physical_cores() -> int:
    """Distinct (package, core) pairs among the CPUs this process may run on (Linux sysfs; else os.cpu_count)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        try:
            topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add((None, c))
    return max(1, len(cores))


def evaluate(run: Any, split: Any, cfg: TrainConfig) -> float:
    """The zero-one loss as loop.evaluate computes it with the C evaluator: tutorial, the mean of the
    per-minibatch error rates over whole minibatches (float64); full, over every example."""
    n = evaluated_examples(split, cfg.batch_size, cfg.evaluation)
    wrong = run.misclassified(split, n)
    if cfg.evaluation == "full":
        return float(wrong.sum(dtype=np.int64)) / n
    counts = wrong.reshape(-1, cfg.batch_size).sum(axis=1, dtype=np.int64)
    return float(np.mean(counts.astype(np.float64) / cfg.batch_size))


def fit_logistic(cfg: TrainConfig, data: Any, run_dir: Path | None = None, *, quiet: bool = False,
                 resume: bool = False) -> dict[str, Any] | None:
    """fit(cfg, data, run_dir) without torch, where it can be had (else None: see `unsupported`)."""
    if unsupported(cfg, data, resume) is not None:
        return None
    if len(data.train.x) < cfg.batch_size or len(data.valid.x) < cfg.batch_size:
        return None  # fit's ConfigError, from fit
    threads = cfg.threads or torch_default_threads()
    run = torch_free_logistic(cfg, data, threads)  # accel/cpu/torch_free.py: the C kernel on numpy arrays
    if run is None:
        return None  # no C compiler, or a failed build: fit, with its numpy step
    return _Fit(cfg, data, run, threads, run_dir, quiet).train()


class _Fit:
    """One run, as loop.py's Training holds it (train/minibatches.py says what each part is): the parts
    fixed at the start, `s` the state that moves (the checkpoints save it), `best_params` the selected
    model; `train` is fit's loop and end."""

    def __init__(self, cfg: TrainConfig, data: Any, run: Any, threads: int, run_dir: Path | None,
                 quiet: bool) -> None:
        self.cfg, self.run, self.run_dir = cfg, run, run_dir
        self.model, self.valid, self.test = run.model, run.valid, run.test
        self.step = _EagerRun(run)
        self.say = (lambda *a: None) if quiet else print
        if cfg.threads:
            set_blas_threads(cfg.threads)
        train_state.seed_everything(cfg.seed, torch_too=False)  # torch's generator: torch_seeded_rng_state
        self.n_train_batches = run.train.n_batches(cfg.batch_size)
        self.stopper = EarlyStopping(cfg.patience, cfg.patience_increase, cfg.improvement_threshold,
                                     cfg.improvement, cfg.mcnemar_alpha)
        self.validation_frequency = cfg.validation_frequency or EarlyStopping.validation_frequency(
            self.n_train_batches, cfg.patience)
        self.session = Session(run_dir, cfg, self.say, progress=not quiet,
                               torch_free=TorchFree(threads, train_state.torch_seeded_rng_state(cfg.seed)))
        self.s = self.session.open(data, "cpu", run.model, run, self.stopper, self.n_train_batches, resume=False)
        self.best_params = self.params_copy()
        self.rules = StoppingRules(cfg, run.model, self.stopper, divergence_rule(cfg, self.s))
        self.total_steps = cfg.n_epochs * self.n_train_batches

    def lr(self, it: int) -> float:
        return learning_rate_at(self.cfg, it, self.total_steps)

    def stop(self, decision: Stop | None) -> bool:
        if decision is None:
            return False
        self.s.done, self.s.stopped = True, decision.reason
        if decision.fault:
            self.s.fault = decision.fault
        return True

    def checkpoint_parts(self) -> tuple[Any, ...]:
        return self.model, self.run, self.stopper, self.s, self.best_params

    def epoch_data(self, epoch: int) -> Any:
        if epoch >= 2:  # fit's PackCache packs the training split once a whole pass has read it
            self.run.pack_train()
        return self.run.train

    def evaluate(self, split: Any, mistakes: list | None = None) -> float:
        return evaluate(self.run, split, self.cfg)

    def params_copy(self) -> dict[str, np.ndarray]:
        return self.model.copy()

    def train(self) -> dict[str, Any]:
        run_epochs(self)  # train/minibatches.py: fit's loop and its validations
        s, run = self.s, self.run  # loop._finish: the selected model, summary.json, the last checkpoint
        s.elapsed_s = self.session.elapsed()
        run.model.load_state_dict(self.best_params)
        summary = run_summary(self.cfg, s, self.n_train_batches, run.valid, run.test, "cpu")
        self.session.finish(*self.checkpoint_parts(), summary)
        return report_end(self.cfg, s, summary, self.run_dir, self.say)


class _EagerRun:
    """`step.run(split, first, count, lr_at)` of an eager step (deeptut/steps.py EagerStep's loop, the same
    sums) on the C kernel's minibatch `index` of the training split."""

    def __init__(self, kernel_run: Any) -> None:
        self.kernel_run = kernel_run

    def run(self, split: Any, first: int, count: int, lr_at: Any) -> Any:
        total = None
        for k in range(count):
            cost = self.kernel_run.step(first + k, lr_at(k))
            total = cost if total is None else total + cost
        return total
