"""Unsupervised training, readable top to bottom: dA.py, cA.py and rbm.py (one layer trained alone) and the
greedy layer-wise pre-training of SdA.py and DBN.py, followed there by supervised fine-tuning through `fit`.

    for layer in 0 .. n_layers - 1:                    (dA, cA, RBM: one layer)
        layer_x = the layer's input for the whole training set, computed once (the tutorials' tip)
        for epoch in 0 .. epochs - 1:
            for minibatch_index in 0 .. n_train_batches - 1:
                cost = the layer's unsupervised update on layer_x[minibatch]    (in place, plain SGD)
            print the tutorial's line; one metrics.jsonl line; model file; checkpoint
    sda, dbn: pretrained.safetensors, then fit(...) from those parameters in the same run directory

The updates are the models' own (models/da.py, ca.py, rbm.py): dA: SGD on the reconstruction cross-entropy
of the input corrupted with `corruption_level`; cA: SGD on reconstruction + contraction_level x the
Jacobian penalty; RBM: CD-k (chain started at a sample of h given the data) or PCD-k (the chain's hidden
state kept across updates, zeros at the start of a layer, one chain per minibatch row, as rbm.py). Costs
printed are what the tutorials print: the epoch mean of the per-minibatch costs (float64 mean, as
numpy.mean(c)); for the RBM the pseudo-likelihood proxy (PCD, bit index = the layer's update count modulo
n_visible, as rbm.py's bit_i_idx) or the reconstruction cross-entropy (CD, DBN.py's pre-training).

Speed: the loop asks `make_update` for the update, which goes through the seam
(`deeptut.accel.make_pretrain_update`): on the CPU a fused form of the same update (no autograd, buffers,
one thread at small minibatches), bit-identical to `layer_update` with the same random draws; elsewhere
`layer_update` itself.

Layer inputs: layer k is trained on the output of the layers below, which do not change while it trains,
so that output is computed once per layer instead of once per step. It is the same function (SdA.py feeds
the lower layers' uncorrupted sigmoid outputs, the corruption applied to layer k's own input; DBN.py feeds
their mean activations, not samples), computed in larger matrix products, so equal to a per-step
computation up to float32 rounding.

Step sizes and epochs: dA/cA/RBM use [optim] learning_rate, n_epochs and lr_schedule (constant, the
tutorials'; cosine or onecycle as in fit: rbm-fast); SdA/DBN use [pretraining]
pretrain_lr and pretraining_epochs (per layer) for pre-training, then [optim] for fine-tuning (learning_rate,
alias finetune_lr; n_epochs). batch_size serves both phases, as in SdA.py / DBN.py. Training data order is
the tutorials' (no shuffling) unless `shuffle` is set.

Noise (the dA's masks, the RBM's Gibbs samples) comes from one torch.Generator for the run, seeded with the
integer the tutorial draws for Theano's RandomStreams (the model's corruption_seed / sample_seed). Resuming:
the `last` checkpoint holds the position (epochs over all layers, next minibatch), the Generator's state, the
PCD chain and the costs of the epoch so far (PretrainState); an interrupted run (SIGINT/SIGTERM: a
checkpoint at the next minibatch; SIGKILL: the checkpoint at the last epoch's end) continues with
`--resume` and ends bit-identical to an uninterrupted run on the CPU.

Run directory (besides config.json, model.json, init.safetensors): metrics.jsonl lines
{"phase": "pretrain", "layer", "epoch", "cost", ["jacobian_norm" | "cost_kind"], "elapsed_s"};
models/pretrain-layer<L>-epoch<E>.safetensors (every epoch for dA/cA/RBM; for SdA/DBN each layer's last
epoch and every `save_every` epochs); da/ca/rbm: best.safetensors (the final model) and summary.json;
sda/dbn: pretrained.safetensors, then fit's files, its metrics lines tagged "phase": "finetune".
"""

from __future__ import annotations

import math
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deeptut import accel
from deeptut.config import TrainConfig
from deeptut.data.datasets import Splits
from deeptut.errors import CheckpointError, ConfigError, TrainingError
from deeptut.models.trainers import LayerTrainer, Update
from deeptut.store import checkpoint, rundir, tensors as store_tensors
from deeptut.train.loop import cuda_precision, epoch_permutation, fit, learning_rate_at
from deeptut.train.runner import prepare
from deeptut.train.session import Interrupted, Phase, Session
from deeptut.train.state import LoopState

CHUNK_ROWS = 4096  # rows per matrix product when a layer's input is computed for the whole training set


# --- the loop's state, as a checkpoint holds it --------------------------------------------------------


@dataclass
class PretrainState(LoopState):
    """fit's LoopState, counted in pre-training epochs: `epoch` is the number of epochs started over all
    layers (layer = (epoch - 1) // epochs per layer), `next_minibatch` the next minibatch of that epoch (0:
    the epoch is complete). The checkpoint also holds the noise Generator's state, the PCD chain and the
    costs of the epoch so far (`tensors`)."""

    phase: str = "pretrain"  # tells this checkpoint from fit's (which has no "phase")
    generator: torch.Generator | None = field(default=None, repr=False)
    chain: torch.Tensor | None = field(default=None, repr=False)  # PCD: [batch_size, n_hidden]; else None
    costs_done: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # restored, float64
    costs_new: list[torch.Tensor] = field(default_factory=list, repr=False)  # this session's, on the device
    restored_generator: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def scalar_types(cls) -> dict[str, Any]:
        return {**LoopState.scalar_types(), "phase": str}

    def add_cost(self, cost: torch.Tensor) -> None:
        self.costs_new.append(cost.detach())

    def epoch_costs(self) -> np.ndarray:
        """The costs of the epoch so far, float64: [n] (or [n, 2] for the cA's two numbers)."""
        new = [torch.stack(self.costs_new).double().cpu().numpy()] if self.costs_new else []
        parts = [self.costs_done] if len(self.costs_done) else []
        return np.concatenate(parts + new) if parts or new else np.zeros(0)

    def reset_costs(self) -> None:
        self.costs_done, self.costs_new = np.zeros(0), []

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"epoch_costs": torch.from_numpy(np.ascontiguousarray(self.epoch_costs()))}
        if self.generator is not None:
            out["generator"] = self.generator.get_state()
        if self.chain is not None:
            out["chain"] = self.chain.detach().cpu().contiguous()
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        unknown = set(tensors) - {"epoch_costs", "generator", "chain"}
        costs, gen, chain = tensors.get("epoch_costs"), tensors.get("generator"), tensors.get("chain")
        if unknown or costs is None or costs.dtype != torch.float64 or costs.dim() not in (1, 2) \
                or (gen is not None and (gen.dtype != torch.uint8 or gen.dim() != 1)) \
                or (chain is not None and (chain.dim() != 2 or not chain.is_floating_point())):
            raise CheckpointError(f"{where}: malformed pre-training state (epoch costs, generator, chain)")
        self.costs_done, self.costs_new = costs.numpy().copy(), []
        self.restored_generator, self.chain = gen, chain


class _Stateless:
    """The step and early-stopping slots of a checkpoint: plain SGD and no stopping rule hold nothing."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# --- what each family trains: its section's layer trainers (models/trainers.py) --------------------------


def fine_tuned(cfg: TrainConfig) -> bool:
    """Pre-trained layer by layer, then fine-tuned as a classifier (SdA, DBN); else trained alone without
    labels (dA, cA, RBM). The family's section says which (`classifier`)."""
    return cfg.net.classifier


def layer_trainers(model: nn.Module, cfg: TrainConfig) -> list[LayerTrainer]:
    """What the family trains, bottom layer first: its section's `layer_trainers` (models/families.py)."""
    return cfg.net.layer_trainers(model, cfg.batch_size)


def schedule(cfg: TrainConfig) -> tuple[int, float]:
    """(epochs per layer, step size) of the unsupervised phase."""
    if fine_tuned(cfg):
        return cfg.pretraining_epochs, cfg.pretrain_lr
    return cfg.n_epochs, cfg.learning_rate


def layer_update(model: nn.Module, cfg: TrainConfig, layer: int, lr: float) -> Update:
    """update(x, generator, chain, update_index) -> (cost, chain): one minibatch of `layer`'s training, in
    place, returning the monitoring cost (computed before the update, as a Theano function's output) and
    the PCD chain's new state (None for the others). update_index counts this layer's updates from 0."""
    return layer_trainers(model, cfg)[layer].reference(lr)


def make_update(model: nn.Module, cfg: TrainConfig, layer: int, lr: float, device: torch.device) -> Update:
    """`layer_update`'s update computed the fastest way the device allows (deeptut.accel: on the CPU a
    fused form of the chapters' rules, bit-identical to it, with the same random draws; picked by the
    unit's type and rule); `layer_update` itself otherwise."""
    return accel.make_pretrain_update(layer_trainers(model, cfg)[layer], cfg, lr, device,
                                      layer_update(model, cfg, layer, lr))


def initial_chain(model: nn.Module, cfg: TrainConfig, layer: int, device: torch.device) -> torch.Tensor | None:
    """PCD's chain at the start of a layer: hidden state zeros, one chain per minibatch row (rbm.py)."""
    return layer_trainers(model, cfg)[layer].initial_chain(cfg.batch_size, device)


def noise_seed(model: nn.Module) -> int:
    """The integer the tutorial seeds Theano's RandomStreams with (the cA draws no noise: 0)."""
    return int(getattr(model, "corruption_seed", getattr(model, "sample_seed", 0)))


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: int, x: torch.Tensor) -> torch.Tensor:
    """Layer `layer`'s input for every row of x: x itself for layer 0, else the lower layers' sigmoid
    outputs (SdA/DBN's `layer_input`), in chunks of CHUNK_ROWS rows. [n, n_in] -> [n, n_in of the layer]."""
    if layer == 0:
        return x
    return torch.cat([model.layer_input(layer, x[i:i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS)])


# --- the procedure -------------------------------------------------------------------------------------


def train(cfg: TrainConfig, data: Splits, run_dir: Path | None = None, *, quiet: bool = False,
          resume: bool = False) -> dict[str, Any]:
    """Train a da/ca/rbm (unsupervised) or an sda/dbn (pre-training, then fine-tuning through fit) and
    write the run directory if one is given. Returns the summary (summary.json)."""
    if cfg.net.procedure != "pretrain":
        raise ConfigError(f"model {cfg.model} has no unsupervised phase: train it with fit")
    if cfg.augment_shift and not fine_tuned(cfg):  # sda/dbn: fine-tuning moves them, pre-training does not
        raise ConfigError(f"augment_shift moves the images of supervised training; {cfg.model} has none "
                          f"(leave augment_shift at 0)")
    run_dir = None if run_dir is None else Path(run_dir)
    with cuda_precision(cfg):
        if not fine_tuned(cfg):
            return pretrain(cfg, data, run_dir, quiet=quiet, resume=resume)[1]
        if resume and run_dir is not None and (run_dir / rundir.PRETRAINED).exists():
            # pre-training had finished: fine-tuning goes on from its checkpoint, or starts over
            phase = finetune_phase(run_dir)
            if checkpoint_phase(run_dir) == "finetune":
                return fit(cfg, data, run_dir, quiet=quiet, resume=True, phase=phase)
            phase.init_params = store_tensors.load_tensors(run_dir / rundir.PRETRAINED)
            return fit(cfg, data, run_dir, quiet=quiet, phase=phase)
        model, s = pretrain(cfg, data, run_dir, quiet=quiet, resume=resume)
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        phase = Phase("finetune", s.n_validations, params, {"pretrain_seconds": round(s.elapsed_s, 4)})
        return fit(cfg, data, run_dir, quiet=quiet, phase=phase)


def pretrain(cfg: TrainConfig, data: Splits, run_dir: Path | None, *, quiet: bool = False,
             resume: bool = False) -> tuple[nn.Module, PretrainState | dict[str, Any]]:
    """The unsupervised phase. da/ca/rbm: (model, summary), the run finished; sda/dbn: (model, state) with
    pretrained.safetensors written, for fine-tuning to follow."""
    say = (lambda *a: None) if quiet else print
    device, model = prepare(cfg)  # train/runner.py: device, threads, seeds, the module
    train_x = torch.as_tensor(data.train.x).to(device)  # [n, n_in] float32, the tutorials' shared variable
    n_train_batches = len(train_x) // cfg.batch_size  # whole minibatches, the remainder dropped
    _check_batch_size(cfg, len(train_x), len(data.valid.x))
    epochs, lr = schedule(cfg)
    trainers = layer_trainers(model, cfg)
    layers = len(trainers)
    # dA/cA/RBM: [optim] lr_schedule (cosine, onecycle) over n_epochs x n_train_batches updates, as fit's;
    # SdA/DBN pre-train at the constant pretrain_lr, their schedule being fine-tuning's
    scheduled = not fine_tuned(cfg) and cfg.lr_schedule != "constant"
    stateless = _Stateless()

    session = Session(run_dir, cfg, say, progress=False)
    s = session.open(data, device, model, stateless, stateless, n_train_batches, resume=resume,
                     state_type=PretrainState, n_epochs=layers * epochs)
    if session.finished_summary is not None:
        return model, session.finished_summary
    s.generator = torch.Generator(device=device).manual_seed(noise_seed(model))
    if s.restored_generator is not None:
        s.generator.set_state(s.restored_generator)
    if s.chain is not None:
        s.chain = s.chain.to(device)

    best = model.state_dict  # the checkpoint's "best" slot: no selection here, the model as it stands
    final_cost = None
    with session.running(s) as interrupt:
        layer_x, layer_of_x = None, -1
        first = s.epoch - (s.next_minibatch > 0)  # 0-based global index of the epoch to run (or finish)
        for g in range(first, layers * epochs):
            layer, epoch = divmod(g, epochs)
            if layer != layer_of_x:  # the tutorials' tip: the lower layers' outputs, once per layer
                layer_x, layer_of_x = layer_inputs(model, layer, train_x), layer
                update = make_update(model, cfg, layer, lr, device)
            if s.next_minibatch == 0:
                s.epoch = g + 1
                s.reset_costs()
                if epoch == 0:
                    s.chain = trainers[layer].initial_chain(cfg.batch_size, device)
            epoch_x = layer_x[epoch_permutation(cfg.seed, g + 1, len(layer_x)).to(device)] if cfg.shuffle \
                else layer_x
            for minibatch_index in range(s.next_minibatch, n_train_batches):
                if scheduled:  # this update's step size: a function of its index only, so resuming keeps it
                    update = make_update(model, cfg, layer, learning_rate_at(
                        cfg, g * n_train_batches + minibatch_index, layers * epochs * n_train_batches), device)
                x = epoch_x[minibatch_index * cfg.batch_size:(minibatch_index + 1) * cfg.batch_size]
                cost, s.chain = update(x, s.generator, s.chain, epoch * n_train_batches + minibatch_index)
                s.add_cost(cost)
                s.next_minibatch = (minibatch_index + 1) % n_train_batches
                if interrupt.signum is not None and s.next_minibatch:
                    session.interrupted(interrupt.signum, model, stateless, stateless, s, best(), g + 1,
                                        position(layer, epoch, minibatch_index + 1, n_train_batches))

            final_cost = _end_of_epoch(cfg, trainers[layer], model, session, s, say, g, epochs,
                                       layers * epochs, n_train_batches, interrupt.signum)
            if s.done:
                break
        pending = interrupt.signum  # caught after the last epoch: stop once pre-training is saved
    s.elapsed_s = session.elapsed()
    print(f"The {'pre' * fine_tuned(cfg)}training code ran for {s.elapsed_s / 60.:.2f}m",
          file=sys.stderr)

    return _finish_pretraining(cfg, model, session, s, run_dir, final_cost, n_train_batches, device, pending)


def _check_batch_size(cfg: TrainConfig, n_train: int, n_valid: int) -> None:
    if n_train // cfg.batch_size == 0 or (fine_tuned(cfg) and n_valid < cfg.batch_size):
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the training split ({n_train} examples)"
                          + (f" or the validation split ({n_valid})" if fine_tuned(cfg) else ""))


def _end_of_epoch(cfg: TrainConfig, trainer: LayerTrainer, model: nn.Module, session: Session, s: PretrainState,
                  say: Any, g: int, epochs: int, total_epochs: int, n_train_batches: int,
                  signum: int | None) -> float:
    """After (0-based global) epoch g: the tutorial's printed line, one metrics.jsonl line, the model file, the
    checkpoint; a NaN/Inf cost stops the run; a caught signal (SIGINT/SIGTERM) checkpoints and raises
    Interrupted, except after the last epoch (the caller saves pre-training first). Returns the cost."""
    layer, epoch = divmod(g, epochs)
    line, fields = trainer.line(layer, epoch, s.epoch_costs())
    say(line)
    session.record(s, phase="pretrain", layer=layer, epoch=epoch, **fields)
    if not math.isfinite(fields["cost"]):
        s.fault, s.stopped, s.done = (f"the {'pre-' * fine_tuned(cfg)}training cost became "
                                      f"{fields['cost']} at layer {layer}, epoch {epoch}"), "non-finite", True
    s.reset_costs()
    if session.files is not None and keep_model_file(cfg, epoch, epochs, g):
        session.files.save_params(rundir.pretrain_model_name(layer, epoch), model.state_dict())
    stateless, where = _Stateless(), position(layer, epoch, n_train_batches, n_train_batches)
    if session.checkpoint_due(s) or g + 1 == total_epochs:
        session.checkpoint(model, stateless, stateless, s, dict(model.state_dict()), g + 1, where)
    if signum is not None and g + 1 < total_epochs:
        session.interrupted(signum, model, stateless, stateless, s, dict(model.state_dict()), g + 1, where)
    return fields["cost"]


def _finish_pretraining(cfg: TrainConfig, model: nn.Module, session: Session, s: PretrainState,
                        run_dir: Path | None, final_cost: float | None, n_train_batches: int,
                        device: torch.device, pending: int | None) -> tuple[nn.Module, PretrainState | dict[str, Any]]:
    """da/ca/rbm: summary.json and the final checkpoint, (model, summary); sda/dbn: pretrained.safetensors
    (the marker that pre-training is over), (model, state). A fault raises TrainingError; a signal caught
    after the last epoch raises Interrupted once pre-training is saved."""
    stateless = _Stateless()
    if final_cost is None and run_dir is not None:  # resumed after the last epoch's line
        lines = rundir.read_pretrain_lines(run_dir)
        final_cost = lines[-1].get("cost") if lines else None
    if not fine_tuned(cfg):
        summary = {"phase": "pretrain", "epochs": s.epoch, "final_cost": final_cost,
                   "train_seconds": round(s.elapsed_s, 4), "stopped": s.stopped,
                   "iterations": s.epoch * n_train_batches, "device": str(device), "fault": s.fault}
        session.finish(model, stateless, stateless, s, dict(model.state_dict()), summary)
        if s.fault:
            raise TrainingError(f"{s.fault}; stopped")
        return model, summary
    if s.fault:
        if session.files is not None:
            session.files.finish()
        raise TrainingError(f"{s.fault}; stopped before fine-tuning")
    if session.files is not None:  # the marker that pre-training is over, after every line it counts
        session.metrics.sync()
        session.files.save_params(rundir.PRETRAINED, model.state_dict())
        session.files.finish()
    if pending is not None:
        print(f"interrupted by {signal.Signals(pending).name} at the end of pre-training"
              + (f"; resume with: deeptut train --resume {run_dir}" if run_dir is not None else ""),
              file=sys.stderr, flush=True)
        raise Interrupted(pending)
    return model, s


def keep_model_file(cfg: TrainConfig, epoch: int, epochs: int, g: int) -> bool:
    """Whether this epoch's model is kept in models/: every epoch of a dA/cA/RBM (the rbm chapter draws the
    filters after each), each layer's last epoch of an SdA/DBN and every `save_every` epochs (an SdA's
    file is ~12 MB; DBN.py's 300 epochs would keep 3.6 GB)."""
    if not fine_tuned(cfg) or epoch == epochs - 1:
        return True
    return bool(cfg.save_every) and (g + 1) % cfg.save_every == 0


def position(layer: int, epoch: int, minibatch: int, n_batches: int) -> str:
    return f"layer {layer}, epoch {epoch}, minibatch {minibatch}/{n_batches}"


# --- resuming the fine-tuning phase -------------------------------------------------------------------


def finetune_phase(run_dir: Path) -> Phase:
    """The fine-tuning phase of a run whose pre-training finished (pretrained.safetensors written)."""
    lines = rundir.read_pretrain_lines(run_dir)
    if not lines:
        raise CheckpointError(f"{run_dir / rundir.METRICS}: no pre-training lines, yet "
                              f"{rundir.PRETRAINED} exists")
    seconds = lines[-1].get("elapsed_s")
    return Phase("finetune", len(lines), None,
                 {"pretrain_seconds": seconds if isinstance(seconds, (int, float)) else None})


def checkpoint_phase(run_dir: Path) -> str | None:
    """"pretrain" or "finetune" for the run's `last` checkpoint (None: none, or unreadable: the
    phase's own load says what is wrong)."""
    if not checkpoint.has_checkpoint(run_dir):
        return None
    try:
        m, _, _ = checkpoint.read_manifest(run_dir)
    except CheckpointError:
        return None
    loop = m.get("loop") if isinstance(m, dict) else None
    return loop.get("phase", "finetune") if isinstance(loop, dict) else None
