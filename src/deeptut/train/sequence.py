"""The sequence chapters' training procedure (registry name "sequence"; lstm.py's `train_lstm`), readable
top to bottom.

Each epoch: the training sequences in the epoch's order (a function of (seed, epoch), as fit's), cut into
minibatches of batch_size (lstm.py's get_minibatches_idx: what is left makes a last, smaller one), or into
minibatches of similar lengths (`bucket`); per minibatch one update by the chosen optimizer. After the
epoch the validation error (every example, in minibatches sorted by length, as imdb.py sorts them); on a
new best (`<=` the best so far, as lstm.py's test) the parameters are kept and the test error measured.
The stop is lstm.py's: once more than `patience` validations are recorded, each one no better than the
best before the last `patience` counts as bad, and the run stops when more than `patience` bad ones have
been counted since the last new best. The best parameters are the model.

Optimizers (the section's `optimizer`), each as lstm.py writes it:
    adadelta  Eg2 = 0.95 Eg2 + 0.05 g^2;  d = -sqrt(Ed2 + 1e-6) / sqrt(Eg2 + 1e-6) * g;
              Ed2 = 0.95 Ed2 + 0.05 d^2;  p += d                    (no learning rate: lstm.py's default)
    sgd       p -= learning_rate * g
    rmsprop   Eg = 0.95 Eg + 0.05 g;  Eg2 = 0.95 Eg2 + 0.05 g^2;
              d = 0.9 d - learning_rate * g / sqrt(Eg2 - Eg^2 + 1e-4);  p += d   (lstm.py: a fixed 1e-4 step,
              its lrate's default)
    adam      torch.optim.Adam at learning_rate (deeptut's: not in lstm.py)
with an optional clip of the gradient's global norm (`clip_norm`, deeptut's) and lstm.py's decay_c.
The step size follows [optim] lr_schedule as fit's does (loop.learning_rate_at: constant, or cosine/onecycle
over n_epochs x n_train_batches updates, a function of the update's index only, so a resumed run takes the
same steps); adadelta has no step size to schedule and refuses a schedule.

The run directory, metrics.jsonl (one supervised line per epoch: `deeptut viz` draws the learning curves),
checkpoints (at the validations, and on SIGINT/SIGTERM mid-epoch), resume and the progress line are
train/session.py's, as for fit. A resumed run ends bit-identical on a CPU: the data order is a function of
the epoch, and dropout's draws come from torch's generator, which the checkpoint restores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptut.config import TrainConfig
from deeptut.data.sequences import DeviceSequences, SequenceSets, batches, bucketed, by_length
from deeptut.errors import CheckpointError, ConfigError, TrainingError
from deeptut.train import state as train_state
from deeptut.train.loop import epoch_permutation, learning_rate_at
from deeptut.train.runner import prepare
from deeptut.train.session import Session
from deeptut.train.state import LoopState


# --- the optimizers, as lstm.py writes them ------------------------------------------------------------


class Adadelta(torch.optim.Optimizer):
    """lstm.py's adadelta (Zeiler 2012): rho 0.95, eps 1e-6, no learning rate."""

    def __init__(self, params: Any, rho: float = 0.95, eps: float = 1e-6) -> None:
        super().__init__(params, {"rho": rho, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            rho, eps = group["rho"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["running_grads2"] = torch.zeros_like(p)
                    st["running_up2"] = torch.zeros_like(p)
                g, rg2, ru2 = p.grad, st["running_grads2"], st["running_up2"]
                rg2.mul_(rho).add_(g * g, alpha=1.0 - rho)  # 0.95 * rg2 + 0.05 * g^2
                updir = -(ru2 + eps).sqrt() / (rg2 + eps).sqrt() * g
                ru2.mul_(rho).add_(updir * updir, alpha=1.0 - rho)
                p.add_(updir)


class TutorialRMSprop(torch.optim.Optimizer):
    """lstm.py's rmsprop (Graves 2013's form: centred, with momentum 0.9); its step, 1e-4, is `lr`."""

    def __init__(self, params: Any, lr: float = 1e-4, decay: float = 0.95, momentum: float = 0.9,
                 eps: float = 1e-4) -> None:
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, decay, mom, eps = group["lr"], group["decay"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    for k in ("running_grads", "running_grads2", "updir"):
                        st[k] = torch.zeros_like(p)
                g, rg, rg2, ud = p.grad, st["running_grads"], st["running_grads2"], st["updir"]
                rg.mul_(decay).add_(g, alpha=1.0 - decay)
                rg2.mul_(decay).add_(g * g, alpha=1.0 - decay)
                ud.mul_(mom).sub_(lr * g / (rg2 - rg * rg + eps).sqrt())
                p.add_(ud)


def set_learning_rate(opt: torch.optim.Optimizer, rate: float) -> None:
    """The scheduled step size for the next update (sgd, rmsprop, adam: each group's `lr`)."""
    for group in opt.param_groups:
        group["lr"] = rate


def make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adadelta":
        return Adadelta(params)
    if cfg.optimizer == "rmsprop":
        return TutorialRMSprop(params, lr=cfg.learning_rate)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate)
    return torch.optim.SGD(params, lr=cfg.learning_rate)


# --- lstm.py's stopping rule ------------------------------------------------------------------------------


class PatienceRule:
    """lstm.py: `bad_counter` of validations no better than the best before the last `patience`; stop when
    it exceeds `patience`. The validation errors themselves live in the loop state (`history`)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience  # validations (lstm.py: 10)
        self.bad_counter = 0

    def update(self, history: list[float]) -> tuple[bool, bool]:
        """(new best, stop) after `history`'s last validation error was appended."""
        err = history[-1]
        improved = err <= min(history)
        if improved:
            self.bad_counter = 0
        stop = False
        if len(history) > self.patience and err >= min(history[:-self.patience]):
            self.bad_counter += 1
            stop = self.bad_counter > self.patience
        return improved, stop

    def state_dict(self) -> dict[str, int]:
        return {"bad_counter": self.bad_counter}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if type(d.get("bad_counter")) is not int or d["bad_counter"] < 0:
            raise ValueError("bad_counter must be an integer >= 0")
        self.bad_counter = d["bad_counter"]


@dataclass
class SequenceState(LoopState):
    """LoopState and the validation errors so far (lstm.py's history_errs), saved as a tensor."""

    history: list[float] = field(default_factory=list)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"history": torch.tensor(self.history, dtype=torch.float64)}

    def load_tensors(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        h = tensors.get("history")
        if set(tensors) != {"history"} or h is None or h.dtype != torch.float64 or h.dim() != 1 \
                or len(h) != self.n_validations or not bool(torch.isfinite(h).all()):
            raise CheckpointError(f"{where}: the validation history does not fit the loop state")
        self.history = h.tolist()


assert {f.name for f in fields(SequenceState)} - {"history", "best_params"} == set(LoopState.scalar_types())


# --- one update, one evaluation -----------------------------------------------------------------------------


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, mask: torch.Tensor,
               y: torch.Tensor, cfg: TrainConfig) -> float:
    """lstm.py's f_grad_shared + f_update on one minibatch; returns its cost."""
    opt.zero_grad(set_to_none=True)
    cost = model.cost(model(x, mask), y, cfg.decay_c)
    cost.backward()
    if cfg.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
    opt.step()
    return float(cost.item())


@torch.no_grad()
def error_rate(model: torch.nn.Module, split: DeviceSequences, batch_size: int) -> float:
    """lstm.py's pred_error: the fraction of misclassified sequences (every one), in minibatches sorted by
    length."""
    was_training = model.training
    model.eval()
    wrong = 0
    for idx in by_length(split.lengths_np, batch_size):
        x, mask, y = split.batch(torch.from_numpy(idx))
        wrong += int((model(x, mask).argmax(dim=1) != y).sum().item())
    model.train(was_training)
    return wrong / len(split)


def epoch_batches(cfg: TrainConfig, train: DeviceSequences, epoch: int) -> list[np.ndarray]:
    """The minibatches (example indices) of 1-based `epoch`, reshuffled every epoch with `shuffle` (lstm.py
    does): a function of (seed, epoch) only."""
    order = epoch_permutation(cfg.seed, epoch, len(train)).numpy() if cfg.shuffle else np.arange(len(train))
    if cfg.bucket:
        return bucketed(train.lengths_np, cfg.batch_size, order)
    return batches(len(train), cfg.batch_size, order)


def check_data(cfg: TrainConfig, data: Any) -> SequenceSets:
    if not isinstance(data, SequenceSets):
        raise ConfigError(f"model {cfg.model} trains on sequences (datasets imdb, mnist-rows); dataset "
                          f"{cfg.dataset!r} gives {type(data).__name__}")
    if cfg.inputs == "tokens" and data.vocabulary is None:
        raise ConfigError(f"inputs = tokens needs token sequences; {data.name} has feature vectors of "
                          f"{data.n_features}: set inputs = rows and n_in = {data.n_features}")
    if cfg.inputs == "rows" and data.n_features != cfg.n_in:
        raise ConfigError(f"inputs = rows with n_in {cfg.n_in}, but {data.name} has "
                          f"{data.n_features or 'token'} features per step")
    if cfg.inputs == "tokens" and data.vocabulary > cfg.n_words:
        raise ConfigError(f"n_words {cfg.n_words} is smaller than the vocabulary of {data.source} "
                          f"({data.vocabulary})")
    if data.n_classes > cfg.n_out:
        raise ConfigError(f"n_out {cfg.n_out} is smaller than the {data.n_classes} classes of {data.source}")
    if cfg.validation_frequency:
        raise ConfigError("the sequence procedure validates once per epoch: leave validation_frequency at 0")
    if cfg.optimizer == "adadelta" and cfg.lr_schedule != "constant":
        raise ConfigError(f"lr_schedule {cfg.lr_schedule!r} needs a step size to schedule; optimizer adadelta "
                          f"has none: use sgd, rmsprop or adam, or lr_schedule = \"constant\"")
    return data


def pictures(run: Any, out_dir: Path, data: Any) -> list[Path]:
    """`deeptut viz`: the learning curves (drawn for every run) are this family's pictures."""
    return []


# --- the procedure ----------------------------------------------------------------------------------------


def train(cfg: TrainConfig, data: Any, run_dir: Path | None = None, *, quiet: bool = False,
          resume: bool = False) -> dict[str, Any]:
    say = (lambda *a: None) if quiet else print
    data = check_data(cfg, data)
    device, model = prepare(cfg)  # train/runner.py: device, threads (results depend on them), seeds, module
    train_set, valid, test = (s.to(device) for s in (data.train, data.valid, data.test))
    n_train_batches = len(batches(len(train_set), cfg.batch_size))  # the same count when bucketed
    total_steps = cfg.n_epochs * n_train_batches  # the schedule's span (updates)
    opt = make_optimizer(cfg, list(model.parameters()))
    rule = PatienceRule(cfg.patience)
    say(f"{len(train_set)} train examples, {len(valid)} valid examples, {len(test)} test examples "
        f"({data.source})")

    session = Session(run_dir, cfg, say, progress=not quiet)
    s = session.open(data.fingerprint_view(), device, model, opt, rule, n_train_batches, resume=resume,
                     state_type=SequenceState)
    if session.finished_summary is not None:
        return session.finished_summary
    best_params = s.best_params or {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()

    with session.running(s) as interrupt:
        while not s.done and (s.next_minibatch > 0 or s.epoch < cfg.n_epochs):
            if s.next_minibatch == 0:
                s.epoch += 1
            epoch = epoch_batches(cfg, train_set, s.epoch)
            for b in range(s.next_minibatch, n_train_batches):
                x, mask, y = train_set.batch(torch.from_numpy(epoch[b]))
                it = (s.epoch - 1) * n_train_batches + b  # 0-based update (lstm.py's uidx - 1)
                if cfg.optimizer != "adadelta":
                    set_learning_rate(opt, learning_rate_at(cfg, it, total_steps))
                cost = train_step(model, opt, x, mask, y, cfg)
                s.cost_sum += cost
                s.cost_count += 1
                s.next_minibatch = (b + 1) % n_train_batches
                if not math.isfinite(cost):  # lstm.py: "bad cost detected"
                    s.fault = f"the training cost became {cost} at update {it + 1} (epoch {s.epoch})"
                    s.done, s.stopped = True, "non-finite"
                    break
                session.progress.show(s.epoch, b + 1, n_train_batches, s.best_validation_loss)
                if interrupt.signum is not None and s.next_minibatch != 0:
                    session.interrupted(interrupt.signum, model, opt, rule, s, best_params, it + 1)
            if s.done:
                break

            # the epoch's validation (lstm.py: every validFreq updates; here once per epoch)
            it = s.epoch * n_train_batches - 1
            best_params = _validate(cfg, model, opt, rule, session, s, best_params, valid, test, it,
                                    n_train_batches, say, learning_rate_at(cfg, it, total_steps))
            if s.fault:
                break
            if interrupt.signum is not None and not s.done:
                session.interrupted(interrupt.signum, model, opt, rule, s, best_params, it + 1)
    session.progress.clear()
    s.elapsed_s = session.elapsed()

    model.load_state_dict(best_params)
    t0 = time.perf_counter()
    train_error = error_rate(model, train_set, cfg.valid_batch_size) if s.best_iter >= 0 else None
    summary = run_summary(cfg, s, n_train_batches, device, train_error, time.perf_counter() - t0)
    session.finish(model, opt, rule, s, best_params, summary)
    if s.fault:
        error = TrainingError(f"{s.fault}; stopped. The best parameters so far are kept"
                              + (f" in {Path(run_dir) / 'best.safetensors'}" if run_dir is not None else ""))
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    say(f"Train {summary['train_error']:.4f} % Valid {summary['best_validation_error']:.4f} % "
        f"Test {summary['test_error']:.4f} % (best at epoch {summary['best_epoch']})")
    say(f"The code run for {s.epoch} epochs, with {summary['seconds_per_epoch']:f} sec/epochs")
    return summary


def _validate(cfg: TrainConfig, model: torch.nn.Module, opt: Any, rule: PatienceRule, session: Session,
              s: SequenceState, best_params: dict[str, torch.Tensor], valid: DeviceSequences,
              test: DeviceSequences, it: int, n_train_batches: int, say: Any,
              learning_rate: float) -> dict[str, torch.Tensor]:
    """The end of an epoch: the health check (a fault stops the run: s.fault), the validation error, lstm.py's
    patience rule, on a new best the test error and the parameters kept, the printed line, one metrics line,
    the checkpoint. `learning_rate`: the epoch's last update's step size (metrics.jsonl). Returns the best
    parameters."""
    train_cost = s.cost_sum / max(1, s.cost_count)
    s.fault, reason = train_state.health(model, train_cost, it, cfg.max_cost)
    if s.fault:
        s.done, s.stopped = True, reason
        return best_params
    valid_error = error_rate(model, valid, cfg.valid_batch_size)
    s.cost_sum, s.cost_count = 0.0, 0
    s.history.append(valid_error)
    improved, stop = rule.update(s.history)
    test_error = None
    if improved:
        s.best_validation_loss, s.best_iter = valid_error, it
        s.test_score = test_error = error_rate(model, test, cfg.valid_batch_size)
        best_params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    session.progress.clear()
    say(f"epoch {s.epoch}, update {it + 1}, cost {train_cost:.6f}, valid {valid_error * 100:.4f} %"
        + (f", test {test_error * 100:.4f} % (new best)" if improved else f" (bad {rule.bad_counter})"))
    session.record(s, epoch=s.epoch, minibatch=n_train_batches, n_train_batches=n_train_batches,
                   iteration=it + 1, train_cost=train_cost, valid_error=valid_error * 100.,
                   test_error=None if test_error is None else test_error * 100., best=improved,
                   bad_counter=rule.bad_counter, learning_rate=learning_rate)
    if improved:
        session.save_best(best_params)
    session.save_intermediate(model, s, it + 1)
    if stop:
        say("Early Stop!")
        s.done, s.stopped = True, "patience"
    if session.checkpoint_due(s):
        session.checkpoint(model, opt, rule, s, best_params, it + 1)
    return best_params


def run_summary(cfg: TrainConfig, s: SequenceState, n_train_batches: int, device: torch.device,
                train_error: float | None, final_eval_s: float) -> dict[str, Any]:
    """summary.json: errors in %, the best epoch and update, the time."""
    best = s.best_iter >= 0
    summary = {
        "best_validation_error": s.best_validation_loss * 100. if best else None,
        "test_error": s.test_score * 100. if best else None,
        "train_error": train_error * 100. if train_error is not None else None,
        "best_iteration": s.best_iter + 1,
        "best_epoch": (s.best_iter + 1) // n_train_batches if best else None,
        "epochs": s.epoch,
        "iterations": (s.epoch - 1) * n_train_batches + (s.next_minibatch or n_train_batches),
        "stopped": s.stopped,
        "evaluation": "full",
        "train_seconds": round(s.elapsed_s, 4),
        "seconds_per_epoch": s.elapsed_s / s.epoch if s.epoch else None,
        "final_train_error_seconds": round(final_eval_s, 4),
        "epochs_per_second": s.epoch / s.elapsed_s if s.elapsed_s > 0 else None,
        "device": str(device),
        "fault": s.fault,
    }
    if best:
        summary["result"] = (f"valid {summary['best_validation_error']:.2f} %, test {summary['test_error']:.2f} % "
                             f"(best epoch {summary['best_epoch']} of {s.epoch}), {s.elapsed_s:.1f} s")
    return summary
