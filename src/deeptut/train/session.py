"""The bookkeeping around a training loop, kept out of the loop's way: the run directory (opened fresh or
resumed), the metrics record, checkpoints, interrupts (SIGINT/SIGTERM) and the progress line.

A loop uses it like this (fit in train/loop.py; a pre-training loop the same way, with its own position):

    session = Session(run_dir, cfg, say)
    s = session.open(data, device, model, step, stopper, n_train_batches, resume=resume)
    if session.finished_summary is not None:       # --resume of a run that already finished
        return session.finished_summary
    with session.running() as interrupt:           # signals caught, the clock running, files closed on error
        ...                                        # per minibatch / per epoch:
        session.record(s, epoch=..., cost=...)     #   one metrics.jsonl line (s.n_validations counts them)
        session.checkpoint(model, step, stopper, s, best_params, iteration)
        session.progress.show(epoch, minibatch, n_batches, best)
        if interrupt.signum is not None:
            session.interrupted(interrupt.signum, model, step, stopper, s, best_params, iteration)  # raises
    session.progress.clear()
    session.finish(model, step, stopper, s, best_params, summary)

Without a run directory (run_dir None) every file operation is a no-op and an interrupt saves nothing.

A later phase of a run (fine-tuning after pre-training, train/pretrain.py) passes a `Phase`: its Session
continues the directory the earlier phase started (config.json and init.safetensors stay as they are, the
earlier phase's metrics lines are kept) and tags each of its metrics lines with the phase's name.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from deeptut.accel import thread_counts
from deeptut.config import TrainConfig
from deeptut.signals import Interrupts  # SIGINT/SIGTERM set a flag; the loop stops at its next step
from deeptut.store import checkpoint, files, rundir
from deeptut.train import state as train_state
from deeptut.train.state import LoopState

if TYPE_CHECKING:  # a torch-free run (train/torchless.py) goes through this module without torch
    import torch
    from torch import nn


@dataclass
class Phase:
    """A phase that continues a run directory an earlier phase started: fit after pre-training."""

    name: str  # added as "phase" to each metrics line: "finetune"
    lines_before: int  # metrics.jsonl lines the earlier phase wrote (kept; this phase's follow)
    init_params: dict[str, torch.Tensor] | None = None  # where a fresh phase starts (pre-trained parameters)
    summary: dict[str, Any] = field(default_factory=dict)  # added to summary.json ("pretrain_seconds")


@dataclass(frozen=True)
class TorchFree:
    """What a torch-free run (train/torchless.py) tells its Session in place of asking torch: the thread
    count its kernels use (recorded as torch's, which a run resumed by torch then uses) and torch's RNG
    state (train/state.py torch_seeded_rng_state: it draws nothing from torch's generator)."""

    threads: int
    torch_rng: Any  # numpy uint8 [5056]


class Interrupted(KeyboardInterrupt):
    """A loop stopped on SIGINT/SIGTERM after writing a checkpoint; `signum` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _ClearingStream:
    """stdout while a progress bar is drawn on the terminal: the bar is cleared before each write and drawn
    again after each finished line, so the loop's printed lines never land on the bar's line."""

    def __init__(self, wrapped: Any, bar: Any) -> None:
        self.wrapped, self.bar = wrapped, bar
        self.line_start = True  # the next write starts a line: the bar is on it and must go first

    def write(self, text: str) -> int:
        if not text:
            return 0
        if self.line_start:
            self.bar.clear()
        n = self.wrapped.write(text)
        self.line_start = text.endswith("\n")
        if self.line_start:
            self.wrapped.flush()
            self.bar.refresh()
        return n

    def flush(self) -> None:
        self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class Progress:
    """What a person watching the run sees besides the loop's own lines.

    stderr a terminal: a tqdm bar over the run's minibatch updates (n_epochs x n_train_batches, the upper
    bound: early stopping may end sooner), with the rate, elapsed time, ETA and, once there is one, the best
    validation error; while it is drawn, stdout goes through `_ClearingStream`, so each printed line clears
    the bar first. Otherwise (piped, a notebook, a log file): no bar, and one plain line on stderr per
    validation (`validated`) with the position, elapsed time and ETA. `enabled` False (quiet): nothing."""

    def __init__(self, enabled: bool, total_epochs: int) -> None:
        self.enabled = enabled
        self.terminal = enabled and sys.stderr.isatty()
        self.total_epochs = total_epochs
        self.bar: Any = None  # tqdm, made at the first show (when the epoch's minibatch count is known)
        self._stdout: Any = None  # the stdout replaced by a _ClearingStream while the bar is drawn
        self._epoch = -1
        self._best = math.inf
        self._position: tuple[int, int] | None = None  # (done updates, total) at the last show
        self._start = time.perf_counter()
        self._first_done: int | None = None  # updates done at the first show (a resumed run's start)

    def show(self, epoch: int, minibatch: int, n_batches: int, best: float, prefix: str = "") -> None:
        """After a span of updates: (1-based) `epoch`, `minibatch` updates done of its `n_batches`; `best`
        the best validation error so far as a fraction (inf before the first validation); `prefix`: e.g.
        "layer 1 " for a pre-training phase."""
        if not self.enabled:
            return
        done, total = (epoch - 1) * n_batches + minibatch, self.total_epochs * n_batches
        self._position, self._best = (done, total), best
        if self._first_done is None:
            self._first_done, self._start = done - 1, time.perf_counter()  # the first span's update counts
        if not self.terminal:
            return
        if self.bar is None:
            from tqdm import tqdm

            try:  # a terminal that reports no size (0 x 0: a bare pseudo-terminal) gets 80 x 24
                known = os.get_terminal_size(sys.stderr.fileno()).columns > 0
            except (OSError, ValueError, AttributeError):
                known = False
            self.bar = tqdm(total=total, initial=max(0, done - 1), unit="batch", file=sys.stderr,
                            dynamic_ncols=known, ncols=None if known else 80, nrows=None if known else 24,
                            mininterval=0.1, leave=False,
                            bar_format="  {desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")
            self._stdout, sys.stdout = sys.stdout, _ClearingStream(sys.stdout, self.bar)
        if epoch != self._epoch:
            self._epoch = epoch
            self.bar.set_description_str(f"{prefix}epoch {epoch}/{self.total_epochs}", refresh=False)
        if math.isfinite(best):
            self.bar.set_postfix_str(f"best valid {best * 100:.2f} %", refresh=False)
        self.bar.update(done - self.bar.n)

    def validated(self, epoch: int, iteration: int, n_batches: int, valid_error: float, best: bool) -> None:
        """After a validation (Session.record: `iteration` updates done, `valid_error` in %, `best` whether
        it is a new best): off a terminal, one plain line with the position, the elapsed time, the ETA (at
        the present rate, to the n_epochs bound) and the best validation error."""
        if best and math.isfinite(valid_error):
            self._best = min(self._best, valid_error / 100.0)
        if not self.enabled or self.terminal:
            return
        done, total = iteration, self.total_epochs * n_batches
        elapsed = time.perf_counter() - self._start
        rate = (done - (self._first_done or 0)) / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {_clock((total - done) / rate)}" if rate > 0 else ""
        best = f", best valid {self._best * 100:.2f} %" if math.isfinite(self._best) else ""
        sys.stderr.write(f"  [epoch {epoch}/{self.total_epochs}, {done}/{total} minibatches, "
                         f"{_clock(elapsed)} elapsed{eta}{best}]\n")
        sys.stderr.flush()

    def clear(self) -> None:
        """The bar removed and stdout given back (the end of the loop, an interrupt or an error)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._stdout is not None:
            sys.stdout, self._stdout = self._stdout, None


def _clock(seconds: float) -> str:
    """12.3 s, 4:05 (m:ss) or 1:02:03 (h:mm:ss)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


class Session:
    """One run of a training loop and its run directory (None: nothing is written)."""

    def __init__(self, run_dir: str | Path | None, cfg: TrainConfig, say: Callable[..., None],
                 *, progress: bool = True, phase: Phase | None = None, normalizer: Any = None,
                 torch_free: TorchFree | None = None) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.torch_free = torch_free
        self.phase = phase
        self.normalizer = normalizer  # data/normalize.py Normalizer of the inputs, saved in model.json
        self.cfg, self.say = cfg, say
        self.progress = Progress(progress, cfg.n_epochs)
        self.data_fp: str | None = None  # the data's fingerprint, checked on resume
        self.metrics = rundir.MetricsLog(None)
        self.files: rundir.RunFiles | None = None  # written in order on a background thread
        self.finished_summary: dict[str, Any] | None = None  # set by open() for a run that already finished
        self._start = time.perf_counter()
        self._last_checkpoint = -math.inf  # perf_counter() of the last `last` checkpoint written

    # --- the run directory -------------------------------------------------------------------------------

    def open(self, data: Any, device: torch.device, model: nn.Module, step: Any, stopper: Any,
             n_train_batches: int, *, resume: bool, state_type: type[LoopState] = LoopState,
             n_epochs: int | None = None) -> LoopState:
        """Start the run directory (config.json, model.json, init.safetensors) or, with `resume`, restore
        the last checkpoint into model, step, stopper and the RNGs. Returns the loop's state (fresh:
        `state_type()`; a loop with more to resume passes a LoopState subclass). `n_epochs` (default
        cfg.n_epochs) bounds a restored position. A resumed run that already finished sets
        `finished_summary` and opens nothing else."""
        s = state_type()
        run_dir = self.run_dir
        if run_dir is not None:
            self.data_fp = train_state.data_fingerprint(data)
            if resume:
                rundir.clean_run_dir(run_dir)
            if resume and checkpoint.has_checkpoint(run_dir):
                s = self._resume(model, step, stopper, n_train_batches, state_type, n_epochs or self.cfg.n_epochs)
                if self.finished_summary is not None:
                    return s
            else:
                if resume:
                    self.say(f"{run_dir}: no checkpoint yet; starting the run over")
                if self.phase is None:  # a later phase keeps what the first one wrote
                    if not resume or not (run_dir / rundir.CONFIG).exists():
                        rundir.write_config(run_dir, self.cfg, device, data, threads=thread_counts(
                            self.torch_free.threads if self.torch_free is not None else None))
                    rundir.save_model(run_dir, model, self.cfg, rundir.INIT,
                                      self.normalizer.saved() if self.normalizer is not None else None)
        before = self.phase.lines_before if self.phase is not None else 0
        self.metrics = rundir.MetricsLog(run_dir, keep_lines=before + s.n_validations)
        if run_dir is not None:
            self.files = rundir.RunFiles(run_dir, self.cfg, self.metrics)
        return s

    def _resume(self, model: nn.Module, step: Any, stopper: Any, n_train_batches: int,
                state_type: type[LoopState], n_epochs: int) -> LoopState:
        run_dir = self.run_dir
        s = train_state.load_last(run_dir, model, step, stopper, self.cfg, self.data_fp, state_type)
        train_state.check_position(s, n_train_batches, n_epochs, run_dir / checkpoint.CKPT_DIR)
        if s.finished and (run_dir / rundir.SUMMARY).exists():
            self.say(f"{run_dir}: the run has already finished; nothing to resume")
            self.finished_summary = files.read_json(run_dir / rundir.SUMMARY)
        elif not s.done and s.next_minibatch == 0 and s.epoch >= n_epochs:  # stopped after its last update
            self.say(f"resuming {run_dir}: its last epoch ({n_epochs} of {n_epochs}) was trained to the end; "
                     f"finishing the run (nothing left to train)")
        elif not s.done:
            self.say(f"resuming {run_dir} at epoch {s.epoch + (s.next_minibatch == 0)}, "
                     f"minibatch {s.next_minibatch + 1}/{n_train_batches}")
        return s

    @contextlib.contextmanager
    def running(self, s: LoopState | None = None) -> Iterator[Interrupts]:
        """The loop's body: the clock runs on from `s.elapsed_s`, SIGINT/SIGTERM are caught (the yielded
        Interrupts' `signum`), and if the loop raises, the writer thread stops after the writes submitted."""
        self._start = time.perf_counter() - (s.elapsed_s if s is not None else 0.0)
        with Interrupts() as interrupt:
            try:
                yield interrupt
            except BaseException:
                self.progress.clear()  # stdout given back, the bar gone, before the error is printed
                if self.files is not None:
                    self.files.close()
                raise

    def elapsed(self) -> float:
        """Seconds of training, resumed runs' earlier time included."""
        return time.perf_counter() - self._start

    # --- what a loop writes as it goes -------------------------------------------------------------------

    def record(self, s: LoopState, **fields: Any) -> None:
        """One metrics.jsonl line: `fields` in their order, then `elapsed_s` (seconds of training).
        `s.n_validations` counts the lines (a resumed run keeps as many as its checkpoint counted)."""
        s.n_validations += 1
        tag = {} if self.phase is None else {"phase": self.phase.name}
        self.metrics.write({**tag, **fields, "elapsed_s": round(self.elapsed(), 4)})
        if "valid_error" in fields and "iteration" in fields and "n_train_batches" in fields:
            self.progress.validated(fields.get("epoch", s.epoch), fields["iteration"], fields["n_train_batches"],
                                    fields["valid_error"], bool(fields.get("best")))

    def save_best(self, best_params: dict[str, torch.Tensor]) -> None:
        """best.safetensors (on a new best validation)."""
        if self.files is not None:
            self.files.save_best(best_params)

    def save_intermediate(self, model: nn.Module, s: LoopState, iteration: int) -> None:
        """models/iter-<iteration>.safetensors every `save_every` metrics lines (for the pictures)."""
        if self.files is not None and self.cfg.save_every and s.n_validations % self.cfg.save_every == 0:
            self.files.save_intermediate(model, iteration)

    def checkpoint_due(self, s: LoopState) -> bool:
        """After a validation: is a `last` checkpoint due? Every `checkpoint_every` validations, and not
        sooner than `checkpoint_every_s` seconds after the last one."""
        return (s.n_validations % self.cfg.checkpoint_every == 0
                and time.perf_counter() - self._last_checkpoint >= self.cfg.checkpoint_every_s)

    def checkpoint(self, model: nn.Module, step: Any, stopper: Any, s: LoopState,
                   best_params: dict[str, torch.Tensor], iteration: int, position: str | None = None) -> None:
        """The `last` checkpoint, now (written in the background). `iteration`: updates done so far;
        `position` says where the run is, for messages (default "epoch E, iteration I")."""
        s.elapsed_s = self.elapsed()
        self._save_last(model, step, stopper, s, best_params, iteration, position)
        self._last_checkpoint = time.perf_counter()

    def _save_last(self, model: nn.Module, step: Any, stopper: Any, s: LoopState,
                   best_params: dict[str, torch.Tensor], iteration: int, position: str | None = None) -> None:
        if self.files is None:
            return
        free = {} if self.torch_free is None else {"torch_rng": self.torch_free.torch_rng,
                                                   "threads": self.torch_free.threads}
        data, manifest = train_state.snapshot(model, step, stopper, s, best_params, self.cfg, self.data_fp, **free)
        self.files.save_checkpoint(data, manifest, s.n_validations,
                                   position or f"epoch {s.epoch}, iteration {iteration}")

    # --- how a loop ends ---------------------------------------------------------------------------------

    def interrupted(self, signum: int, model: nn.Module, step: Any, stopper: Any, s: LoopState,
                    best_params: dict[str, torch.Tensor], iteration: int, position: str | None = None) -> None:
        """After SIGINT/SIGTERM: write a checkpoint, say how to resume, raise Interrupted (the CLI exits
        with 128 + the signal's number)."""
        self.progress.clear()
        position = position or f"epoch {s.epoch}, iteration {iteration}"
        where = f"{signal.Signals(signum).name} at {position}"
        if self.files is not None:
            self.checkpoint(model, step, stopper, s, best_params, iteration, position)
            self.files.finish()
            print(f"interrupted by {where}: checkpoint written; resume with: "
                  f"deeptut train --resume {self.run_dir}", file=sys.stderr, flush=True)
        else:
            s.elapsed_s = self.elapsed()
            print(f"interrupted by {where} (no run directory: nothing saved)", file=sys.stderr)
        raise Interrupted(signum)

    def finish(self, model: nn.Module, step: Any, stopper: Any, s: LoopState,
               best_params: dict[str, torch.Tensor], summary: dict[str, Any]) -> None:
        """The end of a run: best.safetensors, summary.json, then the finished checkpoint (a run killed in
        between finishes again on resume); waits for every write and raises the first failure."""
        if self.files is None:
            return
        s.finished = True
        self.files.save_best(best_params)
        self.files.write_summary(summary)
        self._save_last(model, step, stopper, s, best_params, summary["iterations"])
        self.files.finish()
