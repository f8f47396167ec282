"""fit(): the tutorials' training procedure, readable top to bottom.

Minibatch SGD over the training split; every `validation_frequency` minibatches the validation error is
measured, the early-stopping rule updated, and on a new best the parameters kept and the test error
measured (test error is reported for the selected model only). The run ends when patience runs out or after
`n_epochs`; the best parameters are the model.

Iterations are counted as the tutorial counts them: `iter` is the 0-based index of the minibatch update,
`iter = (epoch - 1) * n_train_batches + minibatch_index`. metrics.jsonl and the summary record
`iteration = iter + 1`, the number of updates done (the tutorial's printed "obtained at iteration").
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptut import checkpoints, runs
from deeptut.config import TrainConfig
from deeptut.data.datasets import Splits
from deeptut.data.device import DeviceSplit
from deeptut.errors import ConfigError, TrainingError
from deeptut.models import build_model
from deeptut.train import state as train_state
from deeptut.train.early_stopping import EarlyStopping
from deeptut.train.step import make_train_step


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device (use --device cpu or auto)")
    return torch.device(name)


def learning_rate_at(cfg: TrainConfig, it: int, total_steps: int) -> float:
    """The step size for 0-based update `it` of `total_steps` (the schedule spans the n_epochs budget)."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    warm = int(cfg.warmup_fraction * total_steps) if cfg.lr_schedule == "onecycle" else 0
    if it < warm:
        return cfg.learning_rate * (it + 1) / warm
    t = (it - warm) / max(1, total_steps - warm)
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of an epoch, a function of (seed, epoch) only, so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: DeviceSplit, batch_size: int, evaluation: str) -> float:
    """Zero-one loss as a fraction.

    tutorial: the mean of per-minibatch error rates over floor(n / batch_size) whole minibatches (for batch
    600: 9,600 of 10,000 examples), averaged in float64 as the tutorial's numpy did. full: every example.
    """
    n_batches = split.n_batches(batch_size)
    n = n_batches * batch_size if evaluation == "tutorial" else len(split)
    chunk = max(batch_size, (4096 // batch_size) * batch_size)  # whole minibatches, bounded memory
    wrong = torch.cat([model(split.x[i:min(i + chunk, n)]).argmax(dim=1) != split.y[i:min(i + chunk, n)]
                       for i in range(0, n, chunk)])
    if evaluation == "full":
        return float(wrong.sum().item()) / n
    counts = wrong.view(n_batches, batch_size).sum(dim=1).cpu().numpy()
    return float(np.mean(counts.astype(np.float64) / batch_size))


class _Interrupt:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary and writes a checkpoint."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _Progress:
    """A one-line progress bar on stderr when it is a terminal, at most ~10 updates a second."""

    def __init__(self, enabled: bool, total_epochs: int) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.total_epochs, self.last = total_epochs, 0.0

    def show(self, epoch: int, minibatch: int, n_batches: int, best: float) -> None:
        now = time.perf_counter()
        if self.enabled and now - self.last > 0.1:
            self.last = now
            sys.stderr.write(f"\r  epoch {epoch}/{self.total_epochs} minibatch {minibatch}/{n_batches} "
                             f"best valid {best * 100:.4f} %\x1b[K")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")


def fit(cfg: TrainConfig, data: Splits, run_dir: Path | None = None, *, quiet: bool = False,
        resume: bool = False) -> dict[str, Any]:
    """Train `cfg` on `data`; write the run directory if one is given. Returns the summary."""
    say = (lambda *a: None) if quiet else print
    device = resolve_device(cfg.device)
    if resume and cfg.threads:
        torch.set_num_threads(cfg.threads)  # reductions depend on the thread count: restore it exactly
    elif cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_state.seed_everything(cfg.seed)
    model = build_model(cfg.model_args(), cfg.init_seed).to(device)
    train, valid, test = (DeviceSplit(s.x, s.y, device) for s in (data.train, data.valid, data.test))
    n_train_batches = train.n_batches(cfg.batch_size)
    if n_train_batches == 0 or valid.n_batches(cfg.batch_size) == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the training or validation split "
                          f"({len(train)} / {len(valid)} examples)")
    step = make_train_step(model, cfg, device)
    stopper = EarlyStopping(cfg.patience, cfg.patience_increase, cfg.improvement_threshold)
    validation_frequency = cfg.validation_frequency or EarlyStopping.validation_frequency(
        n_train_batches, cfg.patience)
    total_steps = cfg.n_epochs * n_train_batches

    # Everything a resumed run needs to go on exactly where it stopped.
    s = train_state.LoopState()
    if run_dir is not None and resume:
        s = train_state.load_last(run_dir, model, step, stopper)
        if s.finished:
            say(f"{run_dir}: the run has already finished; nothing to resume")
            return checkpoints.read_json(run_dir / "summary.json")
        say(f"resuming {run_dir} at epoch {s.epoch + (s.next_minibatch == 0)}, "
            f"minibatch {s.next_minibatch + 1}/{n_train_batches}")
    elif run_dir is not None:
        checkpoints.atomic_write_json(run_dir / "config.json", runs.provenance(cfg, device))
        runs.save_model(run_dir, model, cfg, "init.safetensors")
    metrics = train_state.MetricsLog(run_dir, keep_lines=s.n_validations)
    best_params = s.best_params or {k: v.detach().clone() for k, v in model.state_dict().items()}
    progress = _Progress(not quiet, cfg.n_epochs)
    stopped = "n_epochs"
    start = time.perf_counter() - s.elapsed_s

    with _Interrupt() as interrupt:
        while not s.done and (s.next_minibatch > 0 or s.epoch < cfg.n_epochs):
            if s.next_minibatch == 0:
                s.epoch += 1
            epoch_data = train.permuted(epoch_permutation(cfg.seed, s.epoch, len(train))) \
                if cfg.shuffle else train
            for minibatch_index in range(s.next_minibatch, n_train_batches):
                it = (s.epoch - 1) * n_train_batches + minibatch_index
                x, y = epoch_data.minibatch(minibatch_index, cfg.batch_size)
                cost = step(x, y, learning_rate_at(cfg, it, total_steps))
                s.cost_sum += cost
                s.cost_count += 1
                s.next_minibatch = (minibatch_index + 1) % n_train_batches
                if isinstance(cost, float) and not math.isfinite(cost):
                    s.fault = f"the training cost became {cost} at iteration {it + 1} (epoch {s.epoch})"
                    s.done, stopped = True, "non-finite"
                    break

                if (it + 1) % validation_frequency == 0:
                    model.eval()
                    this_validation_loss = evaluate(model, valid, cfg.batch_size, cfg.evaluation)
                    train_cost = float(s.cost_sum) / s.cost_count
                    s.cost_sum, s.cost_count = 0.0, 0
                    say(f"epoch {s.epoch}, minibatch {minibatch_index + 1}/{n_train_batches}, "
                        f"validation error {this_validation_loss * 100.:f} %")
                    decision = stopper.update(it, this_validation_loss)
                    test_error = None
                    if decision.improved:
                        s.best_validation_loss, s.best_iter = this_validation_loss, it
                        s.test_score = test_error = evaluate(model, test, cfg.batch_size, cfg.evaluation)
                        best_params = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        say(f"     epoch {s.epoch}, minibatch {minibatch_index + 1}/{n_train_batches}, "
                            f"test error of best model {s.test_score * 100.:f} %")
                    model.train()
                    s.n_validations += 1
                    metrics.write({"epoch": s.epoch, "minibatch": minibatch_index + 1,
                                   "n_train_batches": n_train_batches, "iteration": it + 1,
                                   "train_cost": train_cost, "valid_error": this_validation_loss * 100.,
                                   "test_error": None if test_error is None else test_error * 100.,
                                   "best": decision.improved, "patience": decision.patience,
                                   "learning_rate": learning_rate_at(cfg, it, total_steps),
                                   "elapsed_s": round(time.perf_counter() - start, 4)})
                    fault = train_state.non_finite(model, train_cost, it)
                    if fault:
                        s.fault, s.done, stopped = fault, True, "non-finite"
                    elif cfg.max_cost and train_cost > cfg.max_cost:
                        s.fault = (f"diverged: mean training cost {train_cost:.4g} > max_cost {cfg.max_cost} "
                                   f"at iteration {it + 1}")
                        s.done, stopped = True, "diverged"
                    if run_dir is not None and decision.improved and not s.fault:
                        checkpoints.save_tensors(run_dir / "best.safetensors", best_params,
                                                 metadata={"model": cfg.model, "format": str(runs.MODEL_FORMAT)})
                    if run_dir is not None and cfg.save_every and s.n_validations % cfg.save_every == 0:
                        train_state.save_intermediate(run_dir, model, it + 1)
                if stopper.should_stop(it):
                    s.done, stopped = True, "patience"
                if run_dir is not None and (it + 1) % validation_frequency == 0 and \
                        s.n_validations % cfg.checkpoint_every == 0:
                    s.elapsed_s = time.perf_counter() - start
                    train_state.save_last(run_dir, model, step, stopper, s, best_params)
                progress.show(s.epoch, minibatch_index + 1, n_train_batches, s.best_validation_loss)
                if s.done:
                    break
                if interrupt.signum is not None:
                    break
            if interrupt.signum is not None and not s.done:
                progress.clear()
                s.elapsed_s = time.perf_counter() - start
                if run_dir is not None:
                    train_state.save_last(run_dir, model, step, stopper, s, best_params)
                    say(f"interrupted by {signal.Signals(interrupt.signum).name}: checkpoint written; "
                        f"resume with: deeptut train --resume {run_dir}")
                else:
                    say(f"interrupted by {signal.Signals(interrupt.signum).name}")
                raise KeyboardInterrupt
    progress.clear()
    end = time.perf_counter()

    model.load_state_dict(best_params)
    s.elapsed_s = end - start
    summary = {
        "best_validation_error": s.best_validation_loss * 100.,
        "test_error": s.test_score * 100. if s.best_iter >= 0 else None,
        "best_iteration": s.best_iter + 1,
        "epochs": s.epoch,
        "iterations": (s.epoch - 1) * n_train_batches + (s.next_minibatch or n_train_batches),
        "stopped": stopped,
        "evaluation": cfg.evaluation,
        "evaluated_examples": {"valid": _n_eval(valid, cfg), "test": _n_eval(test, cfg)},
        "train_seconds": round(s.elapsed_s, 4),
        "epochs_per_second": s.epoch / s.elapsed_s if s.elapsed_s > 0 else None,
        "device": str(device),
        "fault": s.fault,
    }
    if run_dir is not None:
        s.finished = True
        checkpoints.save_tensors(run_dir / "best.safetensors", best_params,
                                 metadata={"model": cfg.model, "format": str(runs.MODEL_FORMAT)})
        train_state.save_last(run_dir, model, step, stopper, s, best_params)
        checkpoints.atomic_write_json(run_dir / "summary.json", summary)
    if s.fault:
        raise TrainingError(f"{s.fault}; stopped. The best parameters so far "
                            f"(validation {s.best_validation_loss * 100.:f} %) are kept"
                            + (f" in {run_dir / 'best.safetensors'}" if run_dir is not None else ""))
    say(f"Optimization complete with best validation score of {s.best_validation_loss * 100.:f} %, "
        f"with test performance {s.test_score * 100.:f} % (obtained at iteration {s.best_iter + 1}; "
        f"{cfg.evaluation} evaluation on {summary['evaluated_examples']['test']} test examples)")
    say(f"The code run for {s.epoch} epochs, with {summary['epochs_per_second']:f} epochs/sec "
        f"({s.elapsed_s:.2f} s of training)")
    return summary


def _n_eval(split: DeviceSplit, cfg: TrainConfig) -> int:
    return split.n_batches(cfg.batch_size) * cfg.batch_size if cfg.evaluation == "tutorial" else len(split)
