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

import contextlib
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptut import checkpoints, kernels, runs
from deeptut.config import TrainConfig, parse_bytes
from deeptut.data import augment
from deeptut.data.datasets import Splits
from deeptut.data.device import DeviceSplit
from deeptut.data.stream import make_split, row_chunks
from deeptut.errors import ConfigError, TrainingError
from deeptut.models import build_model
from deeptut.train import state as train_state
from deeptut.train.early_stopping import EarlyStopping
from deeptut.train.graphs import stretch_length
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


def misclassified(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bool [n]: argmax(logits [n, k]) != y. On a CPU in numpy: torch's thread pool, woken for so small an
    op, fights BLAS's spinning threads (measured: 1.6 ms against ~0.1 ms for 3,600 rows)."""
    if logits.device.type == "cpu":
        return torch.from_numpy(logits.numpy().argmax(axis=1) != y.numpy())
    return logits.argmax(dim=1) != y


def evaluated_examples(split: DeviceSplit, batch_size: int, evaluation: str) -> int:
    """tutorial: whole minibatches only (9,600 of 10,000 at batch 600); full: every example."""
    return split.n_batches(batch_size) * batch_size if evaluation == "tutorial" else len(split)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: DeviceSplit, batch_size: int, evaluation: str,
             evaluator: Any = None, mistakes: list | None = None) -> float:
    """Zero-one loss as a fraction.

    tutorial: the mean of per-minibatch error rates over floor(n / batch_size) whole minibatches (for batch
    600: 9,600 of 10,000 examples), averaged in float64 as the tutorial's numpy did. full: every example.
    `evaluator` (a graphs.GraphEvaluator) replays the same computation as a CUDA graph where it can.
    `mistakes`, a list, receives the bool numpy array of the evaluated examples' mistakes.
    """
    n_batches = split.n_batches(batch_size)
    n = evaluated_examples(split, batch_size, evaluation)
    chunk = max(batch_size, (4096 // batch_size) * batch_size)  # whole minibatches, bounded memory
    wrong = evaluator.misclassified(split, n, chunk, batch_size) if evaluator is not None else None
    if wrong is None:  # split.x/y in pieces (a streamed split brings its chunks to the device in turn)
        wrong = torch.cat([misclassified(model(x), y) for x, y in row_chunks(split, n, chunk, batch_size)])
    if mistakes is not None:
        mistakes.append(wrong.reshape(-1)[:n].cpu().numpy().astype(bool))
    if evaluation == "full":
        return float(wrong.sum().item()) / n
    counts = wrong.view(n_batches, batch_size).sum(dim=1).cpu().numpy()
    return float(np.mean(counts.astype(np.float64) / batch_size))


class Interrupted(KeyboardInterrupt):
    """fit stopped on SIGINT/SIGTERM after writing a checkpoint; `signum` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


@contextlib.contextmanager
def cuda_precision(cfg: TrainConfig):
    """IEEE float32 on CUDA unless cfg.tf32 (PyTorch's default lets cuDNN convolutions use TF32, which is
    not the tutorials' arithmetic); cuDNN picks its fastest algorithms by measuring them once per shape.
    The previous settings are restored afterwards."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    old = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark)
    cudnn.allow_tf32 = matmul.allow_tf32 = cfg.tf32
    cudnn.benchmark = True
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = old


def _mistakes_of(model: torch.nn.Module, params: dict[str, torch.Tensor], valid: DeviceSplit,
                 cfg: TrainConfig) -> Any:
    """The validation mistakes of `params` (a copy of the model; the training model is left alone)."""
    import copy

    m = copy.deepcopy(model)
    m.load_state_dict(params)
    m.eval()
    out: list = []
    evaluate(m, valid, cfg.batch_size, cfg.evaluation, None, out)
    return out[0]


def fit(cfg: TrainConfig, data: Splits, run_dir: Path | None = None, *, quiet: bool = False,
        resume: bool = False) -> dict[str, Any]:
    """Train `cfg` on `data`; write the run directory if one is given. Returns the summary."""
    with cuda_precision(cfg):
        return _fit(cfg, data, run_dir, quiet=quiet, resume=resume)


def _fit(cfg: TrainConfig, data: Splits, run_dir: Path | None, *, quiet: bool, resume: bool) -> dict[str, Any]:
    say = (lambda *a: None) if quiet else print
    device = resolve_device(cfg.device)
    if cfg.threads:
        kernels.set_threads(cfg.threads)  # results depend on the thread count in the last bits
    train_state.seed_everything(cfg.seed)
    model = build_model(cfg.model_args(), cfg.init_seed).to(device)
    budget = parse_bytes(cfg.device_memory_budget)  # a split larger than this streams through the device
    train, valid, test = (make_split(s.x, s.y, device, budget) for s in (data.train, data.valid, data.test))
    n_train_batches = train.n_batches(cfg.batch_size)
    if n_train_batches == 0 or valid.n_batches(cfg.batch_size) == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the training or validation split "
                          f"({len(train)} / {len(valid)} examples)")
    step = make_train_step(model, cfg, device)
    evaluator = getattr(step, "evaluator", None)  # CUDA-graph evaluation, when the step brings one
    stopper = EarlyStopping(cfg.patience, cfg.patience_increase, cfg.improvement_threshold, cfg.improvement,
                            cfg.mcnemar_alpha)
    validation_frequency = cfg.validation_frequency or EarlyStopping.validation_frequency(
        n_train_batches, cfg.patience)
    total_steps = cfg.n_epochs * n_train_batches

    # Everything a resumed run needs to go on exactly where it stopped (train/state.py).
    s = train_state.LoopState()
    files = None  # the run directory's files, written in order on a background thread
    if run_dir is not None:
        run_dir = Path(run_dir)
        data_fp = train_state.data_fingerprint(data)
        if resume:
            train_state.clean_run_dir(run_dir)
        if resume and train_state.has_checkpoint(run_dir):
            s = train_state.load_last(run_dir, model, step, stopper, cfg, data_fp)
            train_state.check_position(s, n_train_batches, cfg.n_epochs, run_dir / train_state.CKPT_DIR)
            if s.finished and (run_dir / "summary.json").exists():
                say(f"{run_dir}: the run has already finished; nothing to resume")
                return checkpoints.read_json(run_dir / "summary.json")
            if not s.done:
                say(f"resuming {run_dir} at epoch {s.epoch + (s.next_minibatch == 0)}, "
                    f"minibatch {s.next_minibatch + 1}/{n_train_batches}")
        else:
            if resume:
                say(f"{run_dir}: no checkpoint yet; starting the run over")
            if not resume or not (run_dir / "config.json").exists():
                checkpoints.atomic_write_json(run_dir / "config.json", runs.provenance(cfg, device))
            runs.save_model(run_dir, model, cfg, "init.safetensors")
    metrics = train_state.MetricsLog(run_dir, keep_lines=s.n_validations)
    if run_dir is not None:
        files = train_state.RunFiles(run_dir, cfg, data_fp, metrics)
    best_params = s.best_params or {k: v.detach().clone() for k, v in model.state_dict().items()}
    if cfg.improvement == "mcnemar" and s.best_iter >= 0 and s.best_params:  # resumed: the best's mistakes
        stopper.best_wrong = _mistakes_of(model, best_params, valid, cfg)
    progress = _Progress(not quiet, cfg.n_epochs)
    start = time.perf_counter() - s.elapsed_s

    with _Interrupt() as interrupt, train_state.closing_on_error(files):
        while not s.done and (s.next_minibatch > 0 or s.epoch < cfg.n_epochs):
            if s.next_minibatch == 0:
                s.epoch += 1
            epoch_data = train.permuted(epoch_permutation(cfg.seed, s.epoch, len(train))) \
                if cfg.shuffle else train
            if cfg.augment_shift:  # the epoch's images moved by a few pixels each (data/augment.py)
                dy, dx = augment.epoch_shifts(cfg.seed, s.epoch, len(train), cfg.augment_shift)
                epoch_data = epoch_data.translated(dy, dx, augment.image_side(cfg.n_in), cfg.augment_shift)
            minibatch_index = s.next_minibatch - 1
            while minibatch_index + 1 < n_train_batches:
                # An eager step does one minibatch per pass; a graph step (train/graphs.py) a whole stretch,
                # up to the next validation, epoch end or patience stop, where this loop looks again.
                first, it0 = minibatch_index + 1, (s.epoch - 1) * n_train_batches + minibatch_index + 1
                count = stretch_length(step, it0, n_train_batches - first, validation_frequency,
                                       stopper.patience)
                minibatch_index, it = first + count - 1, it0 + count - 1
                if count == 1:
                    x, y = epoch_data.minibatch(minibatch_index, cfg.batch_size)
                    cost = step(x, y, learning_rate_at(cfg, it, total_steps))
                else:
                    cost = step.run(epoch_data, first, count,
                                    lambda k: learning_rate_at(cfg, it0 + k, total_steps))
                s.cost_sum += cost
                s.cost_count += count
                s.next_minibatch = (minibatch_index + 1) % n_train_batches
                if isinstance(cost, float) and not math.isfinite(cost):
                    s.fault = f"the training cost became {cost} at iteration {it + 1} (epoch {s.epoch})"
                    s.done, s.stopped = True, "non-finite"
                    break

                if (it + 1) % validation_frequency == 0:
                    # NaN/Inf or divergence: stop before these parameters can be validated or kept
                    s.fault, reason = train_state.health(model, float(s.cost_sum) / s.cost_count, it,
                                                         cfg.max_cost)
                    if s.fault:
                        s.done, s.stopped = True, reason
                        break
                    model.eval()
                    mistakes: list | None = [] if cfg.improvement == "mcnemar" else None
                    this_validation_loss = evaluate(model, valid, cfg.batch_size, cfg.evaluation, evaluator,
                                                    mistakes)
                    train_cost = float(s.cost_sum) / s.cost_count
                    s.cost_sum, s.cost_count = 0.0, 0
                    say(f"epoch {s.epoch}, minibatch {minibatch_index + 1}/{n_train_batches}, "
                        f"validation error {this_validation_loss * 100.:f} %")
                    decision = stopper.update(it, this_validation_loss, mistakes[0] if mistakes else None)
                    test_error = None
                    if decision.improved:
                        s.best_validation_loss, s.best_iter = this_validation_loss, it
                        s.test_score = test_error = evaluate(model, test, cfg.batch_size, cfg.evaluation,
                                                             evaluator)
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
                    if files is not None and decision.improved:
                        files.save_best(best_params)
                    if files is not None and cfg.save_every and s.n_validations % cfg.save_every == 0:
                        files.save_intermediate(model, it + 1)
                if stopper.should_stop(it):
                    s.done, s.stopped = True, "patience"
                if files is not None and (it + 1) % validation_frequency == 0 and \
                        s.n_validations % cfg.checkpoint_every == 0:
                    s.elapsed_s = time.perf_counter() - start
                    files.save_last(model, step, stopper, s, best_params, it + 1)
                progress.show(s.epoch, minibatch_index + 1, n_train_batches, s.best_validation_loss)
                if s.done:
                    break
                if interrupt.signum is not None:
                    break
            if interrupt.signum is not None and not s.done:
                progress.clear()
                s.elapsed_s = time.perf_counter() - start
                done_iters = (s.epoch - 1) * n_train_batches + (s.next_minibatch or n_train_batches)
                where = f"{signal.Signals(interrupt.signum).name} at epoch {s.epoch}, iteration {done_iters}"
                if files is not None:
                    files.save_last(model, step, stopper, s, best_params, done_iters)
                    files.finish()
                    print(f"interrupted by {where}: checkpoint written; resume with: "
                          f"deeptut train --resume {run_dir}", file=sys.stderr, flush=True)
                else:
                    print(f"interrupted by {where} (no run directory: nothing saved)", file=sys.stderr)
                raise Interrupted(interrupt.signum)
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
        "stopped": s.stopped,
        "evaluation": cfg.evaluation,
        "evaluated_examples": {"valid": evaluated_examples(valid, cfg.batch_size, cfg.evaluation),
                               "test": evaluated_examples(test, cfg.batch_size, cfg.evaluation)},
        "train_seconds": round(s.elapsed_s, 4),
        "epochs_per_second": s.epoch / s.elapsed_s if s.elapsed_s > 0 else None,
        "device": str(device),
        "fault": s.fault,
    }
    if files is not None:
        # summary before the finished checkpoint: a run killed in between finishes again on resume
        s.finished = True
        files.save_best(best_params)
        files.write_summary(summary)
        files.save_last(model, step, stopper, s, best_params, summary["iterations"])
        files.finish()
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
