"""fit(): the tutorials' training procedure, readable top to bottom.

Minibatch SGD over the training split; every `validation_frequency` minibatches the validation error is
measured, the early-stopping rule updated, and on a new best the parameters kept and the test error
measured (test error is reported for the selected model only). The run ends when patience runs out or after
`n_epochs`; the best parameters are the model.

Iterations are counted as the tutorial counts them: `iter` is the 0-based index of the minibatch update,
`iter = (epoch - 1) * n_train_batches + minibatch_index`. metrics.jsonl and the summary record
`iteration = iter + 1`, the number of updates done (the tutorial's printed "obtained at iteration").

What goes around the loop (the run directory opened or resumed, metrics lines, checkpoints, SIGINT/SIGTERM,
the progress line) is train/session.py; the files themselves are deeptut/store/. The loop and the validation
are train/minibatches.py's (no torch there: the torch-free logistic run, train/torchless.py, runs them on its
own parts); this module gives them fit's parts: the `Training` below, its step, splits and evaluation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptut.accel import make_train_step
from deeptut.config import TrainConfig, image_side, parse_bytes
from deeptut.data import augment
from deeptut.data.datasets import Splits
from deeptut.data.device import DeviceSplit
from deeptut.data.normalize import Normalizer, fit_normalizer, normalized_splits
from deeptut.data.stream import make_split, row_chunks
from deeptut.errors import ConfigError
from deeptut.losses import wrong_predictions
from deeptut.train import state as train_state
from deeptut.train.runner import prepare, resolve_device  # noqa: F401  (resolve_device: read from here too)
from deeptut.train.stopping import Stop, StoppingRules
from deeptut.train.session import Interrupted, Phase, Session  # noqa: F401  (Interrupted: fit raises it)
from deeptut.train.early_stopping import EarlyStopping
from deeptut.train.minibatches import run_epochs
from deeptut.train.outcome import (divergence_rule, evaluated_examples, fault_hint, learning_rate_at,  # noqa: F401
                                   report_end, run_summary)


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of an epoch, a function of (seed, epoch) only, so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: DeviceSplit, batch_size: int, evaluation: str,
             evaluator: Any = None, mistakes: list | None = None) -> float:
    """Zero-one loss as a fraction.

    tutorial: the mean of per-minibatch error rates over floor(n / batch_size) whole minibatches (for batch
    600: 9,600 of 10,000 examples), averaged in float64 as the tutorial's numpy did. full: every example.
    `evaluator` (the step's, deeptut.accel) computes the same function its own way where it can.
    `mistakes`, a list, receives the bool numpy array of the evaluated examples' mistakes.
    """
    n_batches = split.n_batches(batch_size)
    n = evaluated_examples(split, batch_size, evaluation)
    chunk = max(batch_size, (4096 // batch_size) * batch_size)  # whole minibatches, bounded memory
    wrong = evaluator.misclassified(split, n, chunk, batch_size) if evaluator is not None else None
    if wrong is None:  # split.x/y in pieces (a streamed split brings its chunks to the device in turn)
        wrong = torch.cat([wrong_predictions(model(x), y) for x, y in row_chunks(split, n, chunk, batch_size)])
    if mistakes is not None:
        mistakes.append(wrong.reshape(-1)[:n].cpu().numpy().astype(bool))
    if evaluation == "full":
        return float(wrong.sum().item()) / n
    counts = wrong.view(n_batches, batch_size).sum(dim=1).cpu().numpy()
    return float(np.mean(counts.astype(np.float64) / batch_size))


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
        resume: bool = False, phase: Phase | None = None) -> dict[str, Any]:
    """Train `cfg` on `data`; write the run directory if one is given. Returns the summary.

    `phase`: fine-tuning after pre-training (train/pretrain.py): start from `phase.init_params`, continue
    the run directory pre-training started, tag the metrics lines and add `phase.summary` to the summary."""
    with cuda_precision(cfg):
        return _fit(cfg, data, run_dir, quiet=quiet, resume=resume, phase=phase)


def device_splits(cfg: TrainConfig, data: Splits, device: torch.device) -> tuple[DeviceSplit, DeviceSplit, DeviceSplit]:
    """train, valid, test on `device` (a split larger than cfg.device_memory_budget streams through it)."""
    budget = parse_bytes(cfg.device_memory_budget)
    train, valid, test = (make_split(s.x, s.y, device, budget) for s in (data.train, data.valid, data.test))
    if train.n_batches(cfg.batch_size) == 0 or valid.n_batches(cfg.batch_size) == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the training or validation split "
                          f"({len(train)} / {len(valid)} examples)")
    return train, valid, test


def epoch_split(cfg: TrainConfig, train: DeviceSplit, epoch: int, normalizer: Normalizer | None = None) -> DeviceSplit:
    """The training split as (1-based) `epoch` sees it: in the epoch's order (shuffle), its images moved by
    a few pixels each (augment_shift, data/augment.py), then normalised (`normalizer`, given only with
    augment_shift: moved images are padded with the raw background 0, so the moves come first; without
    moves the loop normalises the split once). A function of (seed, epoch): a resumed run sees the same."""
    epoch_data = train.permuted(epoch_permutation(cfg.seed, epoch, len(train))) if cfg.shuffle else train
    if cfg.augment_shift:
        dy, dx = augment.epoch_shifts(cfg.seed, epoch, len(train), cfg.augment_shift)
        epoch_data = epoch_data.translated(dy, dx, image_side(cfg.n_in), cfg.augment_shift)
        if normalizer is not None and normalizer.mode != "none":
            if not isinstance(epoch_data, DeviceSplit):
                raise ConfigError("normalize with augment_shift needs the training split on the device: raise "
                                  "device_memory_budget (or set it to 0)")
            epoch_data = DeviceSplit(normalizer.apply(epoch_data.x), epoch_data.y, epoch_data.x.device)
    return epoch_data


@dataclass
class Training:
    """What one supervised run holds while it trains: the parts fixed at its start and the state that moves
    (`s`, train/state.py LoopState, which the checkpoints save and a resume restores; `best_params`, the
    selected model). The loop below and its two helpers share it."""

    cfg: TrainConfig
    model: torch.nn.Module
    step: Any  # deeptut.accel's step: step.run(split, first, count, lr_at) -> summed cost
    stopper: EarlyStopping
    rules: StoppingRules
    session: Session
    s: train_state.LoopState
    best_params: dict[str, torch.Tensor]
    train: DeviceSplit
    valid: DeviceSplit
    test: DeviceSplit
    evaluator: Any  # the step's own evaluation (CUDA graphs, the CPU steps' arithmetic), or None
    normalizer: Normalizer
    device: torch.device
    n_train_batches: int
    validation_frequency: int
    total_steps: int  # n_epochs x n_train_batches: what a schedule spans
    say: Any

    def lr(self, it: int) -> float:
        return learning_rate_at(self.cfg, it, self.total_steps)

    def stop(self, stop: Stop | None) -> bool:
        """Record a stopping decision in the state (done, reason, fault); True if there was one."""
        if stop is None:
            return False
        self.s.done, self.s.stopped = True, stop.reason
        if stop.fault:
            self.s.fault = stop.fault
        return True

    def checkpoint_parts(self) -> tuple[Any, ...]:
        return self.model, self.step, self.stopper, self.s, self.best_params

    def epoch_data(self, epoch: int) -> DeviceSplit:
        return epoch_split(self.cfg, self.train, epoch, self.normalizer)

    def evaluate(self, split: DeviceSplit, mistakes: list | None = None) -> float:
        return evaluate(self.model, split, self.cfg.batch_size, self.cfg.evaluation, self.evaluator, mistakes)

    def params_copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def _fit(cfg: TrainConfig, data: Splits, run_dir: Path | None, *, quiet: bool, resume: bool,
         phase: Phase | None = None) -> dict[str, Any]:
    t = _start(cfg, data, run_dir, quiet=quiet, resume=resume, phase=phase)
    if isinstance(t, dict):  # --resume of a run that had finished: its summary
        return t
    run_epochs(t)  # train/minibatches.py: the tutorial's loop and its validations
    return _finish(t, run_dir)


def _start(cfg: TrainConfig, data: Splits, run_dir: Path | None, *, quiet: bool, resume: bool,
           phase: Phase | None) -> Training | dict[str, Any]:
    """The run prepared once (train/runner.py prepare: device, threads, seeds, model), its data on the device,
    its step, early stopping and session opened (resumed: where the run stopped, train/state.py)."""
    say = (lambda *a: None) if quiet else print
    device, model = prepare(cfg)
    if phase is not None and phase.init_params is not None:
        model.load_state_dict(phase.init_params)  # the pre-trained parameters
    # input normalisation (data/normalize.py): the training split's statistics; with image moves the
    # training split is normalised per epoch after them (epoch_split), else every split once, here
    normalizer = fit_normalizer(data, cfg.normalize, cfg.normalize_per_pixel)
    train, valid, test = device_splits(cfg, normalized_splits(data, normalizer, train=not cfg.augment_shift),
                                       device)
    n_train_batches = train.n_batches(cfg.batch_size)
    step = make_train_step(model, cfg, device)
    stopper = EarlyStopping(cfg.patience, cfg.patience_increase, cfg.improvement_threshold, cfg.improvement,
                            cfg.mcnemar_alpha)
    validation_frequency = cfg.validation_frequency or EarlyStopping.validation_frequency(
        n_train_batches, cfg.patience)
    # The run directory, metrics.jsonl, checkpoints, signals, progress (train/session.py). Resumed, `s` is
    # where the run stopped (train/state.py), and model, step, stopper and the RNGs are as they were then.
    session = Session(run_dir, cfg, say, progress=not quiet, phase=phase, normalizer=normalizer)
    s = session.open(data, device, model, step, stopper, n_train_batches, resume=resume)
    if session.finished_summary is not None:
        return session.finished_summary
    best_params = s.best_params or {k: v.detach().clone() for k, v in model.state_dict().items()}
    if cfg.improvement == "mcnemar" and s.best_iter >= 0 and s.best_params:  # resumed: the best's mistakes
        stopper.best_wrong = _mistakes_of(model, best_params, valid, cfg)
    rules = StoppingRules(cfg, model, stopper, divergence_rule(cfg, s))  # no divergence rule with "off"
    return Training(cfg, model, step, stopper, rules, session, s, best_params, train, valid, test,
                    getattr(step, "evaluator", None), normalizer, device, n_train_batches, validation_frequency,
                    cfg.n_epochs * n_train_batches, say)


def _finish(t: Training, run_dir: Path | None) -> dict[str, Any]:
    """The selected model, summary.json, the last checkpoint; the tutorial's closing lines (or the fault)."""
    s, cfg = t.s, t.cfg
    s.elapsed_s = t.session.elapsed()
    t.model.load_state_dict(t.best_params)
    summary = run_summary(cfg, s, t.n_train_batches, t.valid, t.test, t.device)
    if t.session.phase is not None:
        summary.update(t.session.phase.summary)
    t.session.finish(*t.checkpoint_parts(), summary)
    return report_end(cfg, s, summary, run_dir, t.say)
