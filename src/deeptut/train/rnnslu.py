"""rnnslu.py's training (procedure "slot-filling"): the Elman network of models/rnnslu.py on a slot-filling corpus
(data/atis.py's SlotCorpus: dataset "atis" or "slots"), read top to bottom as the chapter's `main`:

    for each epoch e (at most n_epochs):
        shuffle the training sentences: Python 2's random.shuffle seeded with `seed` (the same seed every
            epoch, so epoch e's order is that permutation applied e + 1 times to the file's order)
        for each sentence (batch_size 1; more: that many sentences padded at the end, the fast preset):
            SGD on its mean NLL at the current rate clr, then every embedding back to unit length
        tag valid and test; conlleval's chunk P / R / F1 (train/conlleval.py)
        a better validation F1 (as printed: two decimals): keep the model (best.safetensors), its test F1
        decay and 10 epochs since the best: clr /= 2 and go back to the best model (the tutorial then holds
            the model itself as its best, so later halvings before a new best keep training where it is)
        clr < 1e-5: stop
    BEST RESULT: epoch, valid F1, test F1 of the best

Around it, train/session.py's bookkeeping: the run directory (config.json, model.json, init.safetensors,
metrics.jsonl: one line per epoch, best.safetensors, summary.json with a "result" line), the `last`
checkpoint after every epoch (`checkpoint_every`) and at SIGINT/SIGTERM between two updates, and resuming
from it: the order of an epoch is recomputed from its number, the rate, the best scores and the best
parameters are in the checkpoint, so a run killed anywhere ends bit-identically on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptut import accel
from deeptut.config import TrainConfig
from deeptut.data.atis import SlotCorpus, TaggedSplit
from deeptut.errors import ConfigError, TrainingError
from deeptut.models.rnnslu import ElmanSLU
from deeptut.train.conlleval import ChunkScore, conlleval
from deeptut.train.loop import resolve_device
from deeptut.train.session import Session
from deeptut.train.state import LoopState

DECAY_AFTER = 10  # epochs without a better validation F1 before the rate is halved (rnnslu.py)
MIN_LR = 1e-5  # rnnslu.py stops once the halved rate falls below this
EVAL_BATCH = 256  # sentences tagged at once in evaluation (padded; the same tags as one at a time)


@dataclass
class SLUState(LoopState):
    """LoopState plus the chapter's own: the current rate and the best epoch's scores."""

    clr: float = 0.0  # the current learning rate (param['clr'])
    best_epoch: int = -1  # param['be']
    best_valid_f1: float = -1.0  # best_f1, as printed (two decimals); -1: none yet
    best_scores: dict[str, Any] | None = None  # valid and test P / R / F1 of the best epoch
    best_is_model: bool = False  # after a halving, the tutorial's best_rnn *is* the model (no copy)

    @classmethod
    def scalar_types(cls) -> dict[str, Any]:
        return {**LoopState.scalar_types(), "clr": float, "best_epoch": int, "best_valid_f1": float,
                "best_scores": (dict, type(None)), "best_is_model": bool}


class _Stateless:
    """The step and early-stopping slots of a checkpoint: plain SGD holds nothing (the rate is in SLUState)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# --- the chapter's pieces ---------------------------------------------------------------------------------


def python2_shuffle(n: int, seed: int) -> np.ndarray:
    """The permutation `random.seed(seed); random.shuffle(l)` applies in Python 2 (shuffled[i] = l[p[i]]):
    its Fisher-Yates draws j = int(random() * (i + 1)); Python 3's random() gives the same numbers for an
    integer seed, its own shuffle other ones."""
    rng = random.Random(seed)
    p = list(range(n))
    for i in reversed(range(1, n)):
        j = int(rng.random() * (i + 1))
        p[i], p[j] = p[j], p[i]
    return np.asarray(p, np.int64)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sentence order of 0-based `epoch`: the tutorial shuffles its lists in place with the same seed
    every epoch, so the permutation is applied epoch + 1 times."""
    p = python2_shuffle(n, seed)
    order = np.arange(n)
    for _ in range(epoch + 1):
        order = order[p]
    return order


def padded(split: TaggedSplit, idx: np.ndarray, pad: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Sentences `idx` padded at the end: words [B, T] (padding: the PADDING index `pad`, so the context
    windows of a sentence's last words see what they see alone), labels [B, T] (0 on padding), mask [B, T]
    (1.0 on words)."""
    lengths = split.lengths[idx]
    T = int(lengths.max())
    words = np.full((len(idx), T), pad, np.int64)
    labels = np.zeros((len(idx), T), np.int64)
    for r, i in enumerate(idx):
        w, t = split.sentence(int(i))
        words[r, :len(w)], labels[r, :len(t)] = w, t
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
    return (torch.from_numpy(words).to(device), torch.from_numpy(labels).to(device),
            torch.from_numpy(mask).to(device))


def sgd_update(model: ElmanSLU, words: torch.Tensor, labels: torch.Tensor, lr: float,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """sentence_train then normalize: p -= lr * grad of the sentence's mean NLL, for all seven parameters;
    then every embedding to unit length. Returns the cost (before the update). One sentence ([T]): the
    model's hand-derived gradients (sentence_gradients); a padded batch ([B, T] and its mask): autograd."""
    if mask is None:
        cost, grads = model.sentence_gradients(words, labels)
    else:
        cost = model.sentence_nll(words, labels, mask)
        grads = torch.autograd.grad(cost, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p.sub_(g, alpha=lr)
    model.normalize()
    return cost.detach()


def tag(model: ElmanSLU, split: TaggedSplit, device: torch.device) -> list[np.ndarray]:
    """The predicted tag indices of every sentence of `split` (rnn.classify)."""
    out = []
    order = np.argsort(split.lengths, kind="stable")  # similar lengths together: little padding
    preds: dict[int, np.ndarray] = {}
    for a in range(0, len(order), EVAL_BATCH):
        idx = order[a:a + EVAL_BATCH]
        words, _, _ = padded(split, idx, model.pad, device)
        y = model.classify(words).cpu().numpy()
        for r, i in enumerate(idx):
            preds[int(i)] = y[r, :split.lengths[i]]
    for i in range(len(split)):
        out.append(preds[i])
    return out


def score(model: ElmanSLU, corpus: SlotCorpus, split: TaggedSplit, device: torch.device) -> ChunkScore:
    predicted = [corpus.tag_strings(p) for p in tag(model, split, device)]
    truth = [corpus.tag_strings(split.sentence(i)[1]) for i in range(len(split))]
    return conlleval(predicted, truth)


def sized_for(cfg: TrainConfig, corpus: SlotCorpus) -> TrainConfig:
    """cfg with n_words and n_out set from the corpus (left at 0), or checked against it."""
    net = cfg.net
    n_words = net.n_words or corpus.n_words
    n_out = net.n_out or corpus.n_classes
    if n_words < corpus.n_words or n_out < corpus.n_classes:
        raise ConfigError(f"rnnslu: n_words {net.n_words} / n_out {net.n_out} are smaller than the corpus's "
                          f"{corpus.n_words} words / {corpus.n_classes} tags ({corpus.source})")
    return cfg.replace(net=dataclasses.replace(net, n_words=n_words, n_out=n_out))


def _scores(v: ChunkScore, t: ChunkScore) -> dict[str, float]:
    pv, pt = v.printed(), t.printed()
    return {"valid_f1": pv["f1"], "valid_p": pv["p"], "valid_r": pv["r"],
            "test_f1": pt["f1"], "test_p": pt["p"], "test_r": pt["r"]}


# --- the procedure ------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, data: SlotCorpus, run_dir: Path | None = None, *, quiet: bool = False,
          resume: bool = False) -> dict[str, Any]:
    """registry.PROCEDURES["slot-filling"]. Returns the summary (summary.json)."""
    if not isinstance(data, SlotCorpus):
        raise ConfigError(f"model rnnslu trains on a slot-filling corpus (dataset atis or slots), not on "
                          f"{type(data).__name__} (dataset {cfg.dataset})")
    say = (lambda *a: None) if quiet else print
    device = resolve_device(cfg.device)
    if cfg.threads:
        accel.set_threads(cfg.threads)  # reductions depend on the thread count in the last bits
    cfg = sized_for(cfg, data)
    model = cfg.net.build(cfg.init_seed).to(device)
    B = cfg.batch_size
    n_train = len(data.train)
    n_batches = math.ceil(n_train / B)
    stateless = _Stateless()

    session = Session(run_dir, cfg, say, progress=not quiet)
    s = session.open(data, device, model, stateless, stateless, n_batches, resume=resume, state_type=SLUState)
    if session.finished_summary is not None:
        return session.finished_summary
    if s.clr == 0.0:  # a fresh run
        s.clr = float(cfg.learning_rate)  # param['clr'] = param['lr']
    best = s.best_params if s.best_params is not None else {k: v.clone() for k, v in model.state_dict().items()}
    say(f"rnnslu: {n_train} / {len(data.valid)} / {len(data.test)} sentences, {data.n_words} words, "
        f"{data.n_classes} tags ({data.source}); {n_batches} updates an epoch")

    with session.running(s) as interrupt:
        first = s.epoch - (s.next_minibatch > 0)  # the 0-based epoch to run, or to finish
        for e in range(first, cfg.n_epochs):
            if s.done:
                break
            if s.next_minibatch == 0:
                s.epoch = e + 1
                s.cost_sum, s.cost_count = 0.0, 0
            order = epoch_order(n_train, cfg.seed, e)
            tic = time.perf_counter()
            for i in range(s.next_minibatch, n_batches):
                idx = order[i * B:(i + 1) * B]
                if B == 1:
                    w, t = data.train.sentence(int(idx[0]))
                    cost = sgd_update(model, torch.from_numpy(w).to(device), torch.from_numpy(t).to(device), s.clr)
                else:
                    w, t, m = padded(data.train, idx, model.pad, device)
                    cost = sgd_update(model, w, t, s.clr, m)
                s.cost_sum += float(cost)
                s.cost_count += 1
                s.next_minibatch = (i + 1) % n_batches
                session.progress.show(e + 1, i + 1, n_batches, max(s.best_valid_f1, 0) / 100)
                if interrupt.signum is not None and s.next_minibatch:
                    session.interrupted(interrupt.signum, model, stateless, stateless, s, best, e * n_batches + i + 1,
                                        f"epoch {e}, sentence batch {i + 1}/{n_batches}")
            train_s = time.perf_counter() - tic
            session.progress.clear()

            best = _end_of_epoch(cfg, model, data, device, session, s, best, e, n_batches, train_s, say,
                                 interrupt.signum)
    s.elapsed_s = session.elapsed()
    bs = s.best_scores or {}
    result = (f"BEST RESULT: epoch {s.best_epoch} valid F1 {bs.get('valid_f1')} best test F1 {bs.get('test_f1')} "
              f"({s.epoch} epochs, {s.elapsed_s:.1f} s)")
    say(result)
    summary = {"result": result, "best_epoch": s.best_epoch, **bs, "epochs": s.epoch,
               "iterations": s.epoch * n_batches, "final_learning_rate": s.clr,
               "stopped": "learning rate below 1e-5" if s.stopped == "patience" else s.stopped,
               "train_seconds": round(s.elapsed_s, 4), "seconds_per_epoch": round(s.elapsed_s / max(s.epoch, 1), 4),
               "n_train": n_train, "n_valid": len(data.valid), "n_test": len(data.test),
               "n_words": data.n_words, "n_tags": data.n_classes, "source": data.source, "device": str(device),
               "fault": s.fault}
    session.finish(model, stateless, stateless, s, best, summary)
    if s.fault:
        raise TrainingError(f"{s.fault}; stopped")
    return summary


def _end_of_epoch(cfg: TrainConfig, model: Any, data: SlotCorpus, device: torch.device, session: Session,
                  s: "SLUState", best: dict[str, torch.Tensor], e: int, n_batches: int, train_s: float, say: Any,
                  signum: int | None) -> dict[str, torch.Tensor]:
    """After 0-based epoch e: validation and test F1, a new best kept, the printed lines, one metrics line,
    the chapter's rate decay (halved, and the best model restored, after DECAY_AFTER epochs without a new
    best), the stop below MIN_LR, the checkpoint; a caught signal checkpoints and raises. -> the best."""
    v, t = score(model, data, data.valid, device), score(model, data, data.test, device)
    scores = _scores(v, t)
    cost = s.cost_sum / max(s.cost_count, 1)
    new_best = scores["valid_f1"] > s.best_valid_f1
    lr_used = s.clr
    if new_best:
        best = {k: p.detach().clone() for k, p in model.state_dict().items()}  # copy.deepcopy(rnn)
        s.best_valid_f1, s.best_epoch, s.best_scores, s.best_is_model = scores["valid_f1"], e, scores, False
        s.best_iter = (e + 1) * n_batches - 1
        session.save_best(best)
        say(f"NEW BEST: epoch {e} valid F1 {scores['valid_f1']} best test F1 {scores['test_f1']}")
    say(f"[learning] epoch {e} >> 100.00% completed in {train_s:.2f} (sec) <<  train cost {cost:.4f}  "
        f"valid F1 {scores['valid_f1']:.2f}  lr {lr_used:.6g}")
    if not math.isfinite(cost):
        s.fault, s.stopped, s.done = f"the training cost became {cost} in epoch {e}", "non-finite", True
    session.record(s, epoch=e, iteration=(e + 1) * n_batches, train_cost=cost,
                   valid_error=1 - scores["valid_f1"] / 100, test_error=1 - scores["test_f1"] / 100,
                   **scores, learning_rate=lr_used, best=new_best, epoch_train_s=round(train_s, 4))
    if cfg.decay and abs(s.best_epoch - e) >= DECAY_AFTER:  # learning rate decay if no improvement
        s.clr *= 0.5
        if not s.best_is_model:  # rnn = best_rnn
            model.load_state_dict(best)
            s.best_is_model = True
    if s.clr < MIN_LR:
        s.done, s.stopped = True, "patience"
    if e + 1 == cfg.n_epochs:
        s.done = True
    if session.checkpoint_due(s) or s.done:
        session.checkpoint(model, _Stateless(), _Stateless(), s, best, (e + 1) * n_batches, f"end of epoch {e}")
    if signum is not None and not s.done:
        session.interrupted(signum, model, _Stateless(), _Stateless(), s, best, (e + 1) * n_batches,
                            f"end of epoch {e}")
    return best



def pictures(run: Any, out_dir: Path, data: Any) -> list[Path]:
    """`deeptut viz`: beyond the generic learning curves, the chapter's measure per epoch: validation and
    test F1 (f1.png), the epochs where the rate was halved marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the viz extra is not installed
        return []
    lines = [r for r in run.metrics().supervised if "valid_f1" in r]
    if not lines:
        return []
    epochs = [int(r["epoch"]) for r in lines]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(epochs, [r["valid_f1"] for r in lines], marker="o", ms=3, label="validation F1")
    ax.plot(epochs, [r.get("test_f1") for r in lines], marker="s", ms=3, label="test F1")
    rates = [r.get("learning_rate") for r in lines]
    for e, a, b in zip(epochs[1:], rates, rates[1:]):
        if a is not None and b is not None and b < a:
            ax.axvline(e - 0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("chunk F1 (%)")
    ax.set_title(f"{run.name}: conlleval F1 (dotted: rate halved)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "f1.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
