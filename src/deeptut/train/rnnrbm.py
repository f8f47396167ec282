"""The RNN-RBM's training (rnnrbm.py's RnnRbm.train) and, beyond the chapter, its test log-likelihood per frame.

The loop, as the tutorial's: each epoch shuffles the training pieces in place with the RandomState that
initialised the model (numpy.random.shuffle(dataset)), then cuts each piece into subsequences of at most
batch_size frames (100), each starting from u^(0) = 0, and takes one update per subsequence:

    Epoch 1/200 -15.0308940028         (the mean of the updates' monitors: models/rnnrbm.py)

With sequences_per_batch > 1 (the fast preset) consecutive subsequences of the shuffled order are padded
into one batch [batch_size, B, n_visible] and masked. Updates are plain SGD (rnnrbm.py's p - lr * grad) or
Adam; clip_norm clips the gradient's global norm.

After every epoch: a metrics.jsonl line (phase "pretrain", layer 0, the store's record of an unsupervised
epoch) with the epoch's cost and the same monitor on the validation pieces (whole pieces, a Gibbs
generator seeded by [run] seed and the epoch, so the figure does not depend on where a run was resumed),
and a resumable checkpoint (model, optimizer, the shuffling RandomState and order, the Gibbs generator, the
epoch's costs so far). A run killed at any point and resumed ends bit-identically on the CPU.

The log-likelihood (`frame_log_likelihood`): log P(v^(t) | history) = -FE_t(v^(t)) - log Z_t, where Z_t is
the partition function of frame t's RBM (W, bv^(t), bh^(t)); log Z_t is estimated by annealed importance
sampling with the RBM chapter's code (train/ais.py: from the base-rate model of the training frames,
`ais_steps` evenly spaced temperatures, `ais_runs` runs), for `ais_frames` frames drawn without replacement
(RandomState(seed)) from the split's pieces, each frame's RBM set by the RNN run over its whole piece. The
summary gives the mean over those frames (nats per frame), its standard error over frames, and the mean of
AIS's 3-sigma bounds. AIS is biased low, so this estimates the log-likelihood from below.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptut.config import TrainConfig
from deeptut.data.music import Music, PianoRolls
from deeptut.errors import CheckpointError, ConfigError, TrainingError
from deeptut.models.rnnrbm import RnnRbm, init_rng
from deeptut.train import ais
from deeptut.store import rundir
from deeptut.train.runner import prepare
from deeptut.train.session import Session
from deeptut.train.state import LoopState

COST_KIND = "frame cross-entropy after Gibbs sampling (rnnrbm.py's printed cost)"


# --- the loop's state, as a checkpoint holds it --------------------------------------------------------


@dataclass
class RnnRbmState(LoopState):
    """LoopState counted in epochs of the tutorial's loop, plus what the position needs: the order of the
    pieces before this epoch's shuffle and the shuffling RandomState then (so a mid-epoch resume redraws the
    same order), the Gibbs generator, and the costs of the epoch so far."""

    phase: str = "piano-roll"  # tells this checkpoint from the other loops'
    order: np.ndarray | None = field(default=None, repr=False)  # piece indices before this epoch's shuffle
    shuffle_state: tuple | None = field(default=None, repr=False)  # RandomState.get_state() then
    generator: torch.Generator | None = field(default=None, repr=False)
    costs: list[float] = field(default_factory=list, repr=False)
    restored_generator: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def scalar_types(cls) -> dict[str, Any]:
        return {**LoopState.scalar_types(), "phase": str}

    def tensors(self) -> dict[str, torch.Tensor]:
        name, keys, pos, has_gauss, cached = self.shuffle_state
        return {"order": torch.from_numpy(np.asarray(self.order, dtype=np.int64)),
                "shuffle_keys": torch.from_numpy(keys.astype(np.int64)),
                "shuffle_rest": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
                "generator": self.generator.get_state(),
                "epoch_costs": torch.tensor(self.costs, dtype=torch.float64)}

    def load_tensors(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        want = {"order", "shuffle_keys", "shuffle_rest", "generator", "epoch_costs"}
        t = tensors
        if set(t) != want or t["order"].dtype != torch.int64 or t["order"].dim() != 1 \
                or t["shuffle_keys"].shape != (624,) or t["shuffle_rest"].shape != (3,) \
                or t["generator"].dtype != torch.uint8 or t["epoch_costs"].dim() != 1 \
                or not 0 <= int(t["shuffle_keys"].min()) <= int(t["shuffle_keys"].max()) < 2**32:
            raise CheckpointError(f"{where}: malformed RNN-RBM state (order, shuffling RNG, generator, costs)")
        pos, has_gauss, cached = t["shuffle_rest"].tolist()
        self.order = t["order"].numpy().copy()
        self.shuffle_state = ("MT19937", t["shuffle_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss),
                              float(cached))
        self.restored_generator = t["generator"]
        self.costs = t["epoch_costs"].tolist()


class Step:
    """The optimizer in a checkpoint's step slot (its state_dict with tuples as lists, as JSON keeps them)."""

    def __init__(self, model: RnnRbm, cfg: TrainConfig) -> None:
        if cfg.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        else:
            self.opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)

    def state_dict(self) -> dict[str, Any]:
        sd = self.opt.state_dict()
        return {"state": sd["state"], "param_groups": [{k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in g.items()} for g in sd["param_groups"]]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in sd["param_groups"]]
        self.opt.load_state_dict({"state": sd["state"], "param_groups": groups})


class _Stateless:
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# --- batches ---------------------------------------------------------------------------------------------


def chunks(rolls: PianoRolls, order: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """(first frame, n_frames) of every subsequence, in the order of the pieces: rnnrbm.py's
    `for i in xrange(0, len(sequence), batch_size)` over the shuffled dataset."""
    starts = np.concatenate([[0], np.cumsum(rolls.y)[:-1]])
    return [(int(starts[s]) + i, min(batch_size, int(rolls.y[s]) - i))
            for s in order.tolist() for i in range(0, int(rolls.y[s]), batch_size)]


def batch_of(x: torch.Tensor, spans: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Subsequences of x [n_frames, n_visible] as (v [T, B, n_visible], mask [T, B] or None for one)."""
    if len(spans) == 1:
        a, n = spans[0]
        return x[a:a + n].unsqueeze(1), None
    T = max(n for _, n in spans)
    v = x.new_zeros(T, len(spans), x.shape[1])
    mask = x.new_zeros(T, len(spans))
    for b, (a, n) in enumerate(spans):
        v[:n, b] = x[a:a + n]
        mask[:n, b] = 1.0
    return v, mask


def n_batches(rolls: PianoRolls, batch_size: int, per_batch: int) -> int:
    n_chunks = int(sum(-(-int(n) // batch_size) for n in rolls.y))
    return -(-n_chunks // per_batch)


def update(model: RnnRbm, step: Step, v: torch.Tensor, mask: torch.Tensor | None, k: int, clip_norm: float,
           generator: torch.Generator) -> float:
    """One training update on a batch; returns its monitor (rnnrbm.py's train_function output)."""
    cost, monitor = model.cost(v, mask, k, generator)
    step.opt.zero_grad(set_to_none=True)
    cost.backward()
    if clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    step.opt.step()
    return float(monitor)


@torch.no_grad()
def evaluate_cost(model: RnnRbm, rolls: PianoRolls, k: int, seed: int, device: torch.device) -> float:
    """The monitor over whole pieces (each from u^(0) = 0), averaged over frames, with a Gibbs generator
    seeded by `seed`."""
    g = torch.Generator(device=device).manual_seed(seed)
    total, n = 0.0, 0
    for seq in rolls.sequences():
        v = torch.as_tensor(seq, device=device).unsqueeze(1)
        _, monitor = model.cost(v, None, k, g)
        total += float(monitor) * len(seq)
        n += len(seq)
    return total / max(n, 1)


# --- the log-likelihood, by AIS on each frame's RBM ------------------------------------------------------


@dataclass
class FrameRBM:
    """One frame's conditional RBM, as train/ais.py reads an RBM: W [n_visible, n_hidden], hbias, vbias."""

    W: torch.Tensor
    hbias: torch.Tensor
    vbias: torch.Tensor


@torch.no_grad()
def frame_log_likelihood(model: RnnRbm, rolls: PianoRolls, base_vbias: torch.Tensor, n_frames: int,
                         n_steps: int, n_runs: int, seed: int) -> dict[str, Any]:
    """AIS estimate of the mean log P(v^(t) | history) over `n_frames` frames of `rolls` drawn without
    replacement by RandomState(seed) (all of them if fewer), in nats per frame (see the module's docstring)."""
    total = len(rolls.x)
    if total == 0:
        raise ValueError("no frames to estimate a log-likelihood on")
    picked = np.sort(np.random.RandomState(seed).choice(total, size=min(n_frames, total), replace=False))
    bvs, bhs = [], []
    for seq in rolls.sequences():
        bv, bh, _ = model.biases(torch.as_tensor(seq, device=model.W.device).unsqueeze(1))
        bvs.append(bv[:, 0])
        bhs.append(bh[:, 0])
    bv, bh = torch.cat(bvs), torch.cat(bhs)                       # [n_frames, n_visible], [n_frames, n_hidden]
    x = torch.as_tensor(rolls.x, device=model.W.device)
    g = torch.Generator(device=model.W.device).manual_seed(seed)
    betas = ais.linear_betas(n_steps)
    lls, lows, highs = [], [], []
    for i in picked.tolist():
        rbm = FrameRBM(model.W, bh[i], bv[i])
        r = ais.ais_log_partition(rbm, base_vbias, betas, n_runs, g)
        frame = x[i:i + 1]
        lls.append(ais.mean_log_probability(rbm, frame, r.log_z))
        lows.append(ais.mean_log_probability(rbm, frame, r.log_z_high))   # a larger log Z: a lower bound
        highs.append(ais.mean_log_probability(rbm, frame, r.log_z_low))
    lls_a = np.array(lls)
    return {"log_likelihood": float(lls_a.mean()),
            "stderr": float(lls_a.std(ddof=1) / math.sqrt(len(lls_a))) if len(lls_a) > 1 else math.nan,
            "ais_bounds": [float(np.mean(lows)), float(np.mean(highs))],
            "n_frames": len(lls_a), "of_frames": total, "ais_steps": n_steps, "ais_runs": n_runs, "seed": seed}


def base_rate(rolls: PianoRolls) -> torch.Tensor:
    """train/ais.py's base-rate visible biases of the training frames."""
    return ais.base_rate_vbias(torch.as_tensor(rolls.x))


# --- the procedure ----------------------------------------------------------------------------------------


def _check_data(data: Any, cfg: TrainConfig) -> Music:
    if not isinstance(data, Music):
        raise ConfigError(f"model rnnrbm trains on piano-rolls (datasets nottingham, jsb-chorales); dataset "
                          f"{cfg.dataset!r} gave {type(data).__name__}")
    for name in ("train", "valid", "test"):
        r = getattr(data, name)
        if r.x.shape[1] != cfg.n_visible:
            raise ConfigError(f"{data.source}: {name} piano-rolls have {r.x.shape[1]} pitches, n_visible is "
                              f"{cfg.n_visible}")
        if len(r.y) == 0:
            raise ConfigError(f"{data.source}: the {name} split has no pieces")
    return data


def epoch_line(epoch: int, n_epochs: int, cost: float) -> str:
    """rnnrbm.py's `print 'Epoch %i/%i' % (epoch + 1, num_epochs), numpy.mean(costs)`."""
    return f"Epoch {epoch}/{n_epochs} {cost!r}"


def train(cfg: TrainConfig, data: Music, run_dir: Path | None, *, quiet: bool = False,
          resume: bool = False) -> dict[str, Any]:
    """Train cfg's RNN-RBM on `data` into run_dir; returns the summary (summary.json)."""
    say = (lambda *a: None) if quiet else print
    data = _check_data(data, cfg)
    device, model = prepare(cfg)  # train/runner.py: device, threads, seeds, the module
    step = Step(model, cfg)
    x = torch.as_tensor(data.train.x).to(device)                    # [n_frames, n_visible] float32
    per_batch = cfg.sequences_per_batch
    n_train_batches = n_batches(data.train, cfg.batch_size, per_batch)
    stateless = _Stateless()

    session = Session(run_dir, cfg, say, progress=False)
    s = session.open(data, device, model, step, stateless, n_train_batches, resume=resume,
                     state_type=RnnRbmState, n_epochs=cfg.n_epochs)
    if session.finished_summary is not None:
        return session.finished_summary
    rng = init_rng(cfg.n_visible, cfg.n_hidden, cfg.n_hidden_recurrent, cfg.init_seed)
    if s.order is None:  # a fresh run: the pieces in file order, the RandomState after the initialisation
        s.order, s.shuffle_state = np.arange(len(data.train.y)), rng.get_state()
    elif len(s.order) != len(data.train.y) or sorted(s.order.tolist()) != list(range(len(data.train.y))):
        raise CheckpointError(f"{run_dir}: the checkpoint's order of pieces does not fit the training split")
    s.generator = model.make_generator(device)
    if s.restored_generator is not None:
        s.generator.set_state(s.restored_generator)

    best = model.state_dict  # no model selection in the chapter: the model as it stands
    position = functools.partial(_position, n_train_batches=n_train_batches)
    stopped = "n_epochs"
    cost = valid_cost = None
    with session.running(s) as interrupt:
        first = s.epoch - (s.next_minibatch > 0)  # 0-based index of the epoch to run (or finish)
        for epoch in range(first, first if s.done else cfg.n_epochs):  # a saved stop decision: train no more
            rng.set_state(s.shuffle_state)
            order = s.order.copy()
            rng.shuffle(order)                                      # numpy.random.shuffle(dataset)
            if s.next_minibatch == 0:
                s.epoch, s.costs = epoch + 1, []
            spans = chunks(data.train, order, cfg.batch_size)
            for b in range(s.next_minibatch, n_train_batches):
                v, mask = batch_of(x, spans[b * per_batch:(b + 1) * per_batch])
                s.costs.append(update(model, step, v, mask, cfg.k, cfg.clip_norm, s.generator))
                s.next_minibatch = (b + 1) % n_train_batches
                if interrupt.signum is not None and s.next_minibatch:
                    session.interrupted(interrupt.signum, model, step, stateless, s, best(), s.epoch * n_train_batches,
                                        position(epoch + 1, b + 1))
            s.order, s.shuffle_state = order, rng.get_state()  # the epoch is complete: the next starts here
            cost = float(np.mean(s.costs))
            valid_cost = evaluate_cost(model, data.valid, cfg.k, cfg.seed * 1000 + epoch, device)
            say(epoch_line(epoch + 1, cfg.n_epochs, cost))
            sys.stdout.flush()
            session.record(s, phase="pretrain", layer=0, epoch=epoch, cost=cost, cost_kind=COST_KIND,
                           valid_cost=valid_cost)
            if not math.isfinite(cost):
                s.fault, s.stopped, s.done = f"the training cost became {cost} at epoch {epoch + 1}", "non-finite", True
            if cfg.max_train_seconds and session.elapsed() >= cfg.max_train_seconds and epoch + 1 < cfg.n_epochs:
                s.done, stopped = True, "max_train_seconds"
            if session.checkpoint_due(s) or epoch + 1 == cfg.n_epochs or s.done:
                session.checkpoint(model, step, stateless, s, best(), s.epoch * n_train_batches,
                                   position(epoch + 1, n_train_batches))
            if interrupt.signum is not None and epoch + 1 < cfg.n_epochs:
                session.interrupted(interrupt.signum, model, step, stateless, s, best(), s.epoch * n_train_batches,
                                    position(epoch + 1, n_train_batches))
            if s.done:
                break
    s.elapsed_s = session.elapsed()
    if cost is None and run_dir is not None:  # resumed after the last epoch's line
        lines = rundir.read_pretrain_lines(run_dir)
        cost, valid_cost = (lines[-1].get("cost"), lines[-1].get("valid_cost")) if lines else (None, None)
    if s.fault:
        if session.files is not None:
            session.files.finish()
        raise TrainingError(f"{s.fault}; stopped")

    summary = _summary(cfg, model, data, s, stopped, cost, valid_cost, n_train_batches, device)
    session.finish(model, step, stateless, s, best(), summary)
    return summary


def _position(epoch: int, minibatch: int, n_train_batches: int) -> str:
    return f"epoch {epoch}, update {minibatch}/{n_train_batches}"


def _summary(cfg: TrainConfig, model: Any, data: Music, s: "RnnRbmState", stopped: str, cost: Any, valid_cost: Any,
             n_train_batches: int, device: torch.device) -> dict[str, Any]:
    """summary.json: the chapter's last printed cost, the validation cost, why it stopped and, with
    ais_frames, the per-frame log-likelihood of the validation and test pieces (AIS); its "result" line."""
    if s.epoch < cfg.n_epochs and s.stopped == "n_epochs":
        stopped = "max_train_seconds"
    summary: dict[str, Any] = {
        "phase": "piano-roll", "epochs": s.epoch, "final_cost": cost, "valid_cost": valid_cost,
        "cost_kind": COST_KIND, "train_seconds": round(s.elapsed_s, 4),
        "stopped": stopped if s.stopped == "n_epochs" else s.stopped,
        "iterations": s.epoch * n_train_batches, "device": str(device), "fault": s.fault, "data": data.source,
        "frame": data.frame}
    if cfg.ais_frames:
        model.eval()
        base = base_rate(data.train)
        for name in ("valid", "test"):
            summary[f"{name}_loglik"] = frame_log_likelihood(model, getattr(data, name), base, cfg.ais_frames,
                                                             cfg.ais_steps, cfg.ais_runs, cfg.seed)
    result = f"epoch {s.epoch} cost {_num(cost)} (valid {_num(valid_cost)})"
    if cfg.ais_frames:
        t = summary["test_loglik"]
        result += (f"; test log-likelihood {t['log_likelihood']:.3f} +- {t['stderr']:.3f} nats/frame (AIS, "
                   f"{t['n_frames']} frames)")
    summary["result"] = result
    return summary


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "?"
