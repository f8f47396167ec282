"""The learning-rate range test (Leslie Smith, "Cyclical Learning Rates for Training Neural Networks",
2017; the form popularised by fastai's lr_find): train for a few hundred minibatches while the rate rises
geometrically from `lr_min` to `lr_max`, record the loss, stop once it has blown up, and read a rate off
the curve. The model is put back exactly as it was (parameters, buffers, train/eval mode, torch's RNG):
the test does not train the model the user then trains.

The suggested rate is one tenth of the rate at the minimum of the smoothed loss ("min / 10"). At the
minimum the loss has stopped falling because the rate sits at the edge of stability, and that is a rate
for one step, not for thousands: a tenth of it is an order of magnitude inside the stable range, which is
the property this project needs (issue 15: the fast presets' rates sat at MNIST's edge and diverged on
Fashion-MNIST). The other common reading, the steepest descent of the smoothed curve, is also returned
(`steepest_rate`), but a finite-difference slope of a noisy minibatch curve moves by a decade between
seeds, while the minimum is stable, so it is not the suggestion. The suggestion is for a constant rate;
`min_rate` is an upper bound for the peak of a one-cycle schedule with warm-up (Smith's own reading). The
rates are the step's `learning_rate`, with whatever momentum the step applies (momentum 0.9 multiplies the
effective step by ~10). Measured 2026-11-28 (2-core CPU, 1 thread, batch 128, 300 steps over 1e-4..10,
constant rate): mlp-fast min_rate 0.25 on MNIST, 0.11 on Fashion-MNIST; lenet-fast 0.15 on MNIST, 0.088 on
Fashion-MNIST, where its peak rate 0.2 diverges (issue 15). 5-40 s each.

Smoothing: an exponential moving average of the minibatch costs with bias correction,
smoothed_i = avg_i / (1 - beta^(i+1)), avg_i = beta avg_{i-1} + (1 - beta) cost_i. beta 0.95 averages
~20 minibatches; it lags the raw curve by about that many steps (n_steps 300 over 7 decades: ~0.5 decade),
which pushes the minimum slightly right. Just past the edge of stability the loss grows slowly (by a
factor |1 - lr lambda_max| ~ 1 per step in the stiffest direction while the others still fall), so the
minimum itself can lie past the edge: 4.3x on the quadratic of tests/test_lr_find.py, whose edge 2 /
lambda_max is known. The / 10 absorbs both. The test stops when the smoothed loss
exceeds `stop_factor` (4) x its best, or when a cost is not finite.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

Step = Callable[[torch.Tensor, torch.Tensor, float], Any]  # step(x, y, learning_rate) -> cost


@dataclass
class LRFindResult:
    learning_rates: list[float]  # the rate of each step taken (geometric)
    losses: list[float]  # each step's minibatch cost (nats), as the step returned it
    smoothed: list[float]  # bias-corrected moving average of `losses`
    suggestion: float  # min_rate / 10: the rate to train with
    min_rate: float  # rate at the smoothed minimum
    min_loss: float  # the smoothed minimum
    steepest_rate: float  # rate where the smoothed loss falls fastest per decade, before the minimum
    stopped_early: bool  # the loss blew up before lr_max (the usual case); False: widen lr_max
    note: str  # "" or why the suggestion is doubtful

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (non-finite numbers as null)."""
        def clean(v: Any) -> Any:
            if isinstance(v, list):
                return [clean(u) for u in v]
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v
        return {k: clean(v) for k, v in asdict(self).items()}


def _suggest(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[int, int]:
    """(index of the smoothed minimum, index of the steepest descent before it)."""
    finite = np.isfinite(smoothed)
    i_min = int(np.nanargmin(np.where(finite, smoothed, np.nan)))
    if i_min < 2:
        return i_min, i_min
    slope = np.gradient(smoothed[:i_min + 1], np.log10(lrs[:i_min + 1]))  # nats per decade
    return i_min, int(np.argmin(slope))


def lr_find(model: nn.Module, make_step: Callable[[nn.Module], Step], train: Any, batch_size: int,
            lr_min: float = 1e-6, lr_max: float = 10.0, n_steps: int = 300, beta: float = 0.95,
            stop_factor: float = 4.0, seed: int = 0) -> LRFindResult:
    """Run the range test on `train` (data/device.py DeviceSplit: minibatches are views, in an order
    shuffled by `seed`, reshuffled every pass). `make_step(model)` builds the step, e.g.
    `lambda m: make_train_step(m, cfg, device)`; it is built after the model's state is saved, so an
    optimizer's momentum starts empty and is discarded afterwards."""
    if not (0 < lr_min < lr_max and math.isfinite(lr_max)):
        raise ValueError(f"lr-find needs 0 < lr_min < lr_max, got lr_min={lr_min}, lr_max={lr_max}")
    if n_steps < 10:
        raise ValueError(f"lr-find needs n_steps >= 10, got {n_steps}")
    if not 0 <= beta < 1:
        raise ValueError(f"lr-find smoothing beta must be in [0, 1), got {beta}")
    n_batches = train.n_batches(batch_size)
    if n_batches < 1:
        raise ValueError(f"lr-find: the training split has {len(train)} examples, fewer than batch_size "
                         f"{batch_size}")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    rng_cpu = torch.get_rng_state()
    rng_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    g = torch.Generator().manual_seed(seed)
    lrs, losses, smoothed = [], [], []
    stopped = False
    try:
        model.train()
        step = make_step(model)
        order = torch.randperm(n_batches, generator=g)
        avg, best = 0.0, math.inf
        for i in range(n_steps):
            lr = lr_min * (lr_max / lr_min) ** (i / (n_steps - 1))
            if i and i % n_batches == 0:
                order = torch.randperm(n_batches, generator=g)
            x, y = train.minibatch(int(order[i % n_batches]), batch_size)
            cost = float(step(x, y, lr))
            lrs.append(lr)
            losses.append(cost)
            if not math.isfinite(cost):
                smoothed.append(math.nan)
                stopped = True
                break
            avg = beta * avg + (1 - beta) * cost
            s = avg / (1 - beta ** (i + 1))
            smoothed.append(s)
            best = min(best, s)
            if s > stop_factor * best:
                stopped = True
                break
    finally:
        with torch.no_grad():
            model.load_state_dict(saved)  # copies in place: steps holding views of the parameters stay valid
        model.train(was_training)
        torch.set_rng_state(rng_cpu)
        if rng_cuda is not None:
            torch.cuda.set_rng_state_all(rng_cuda)
    lr_a, sm_a = np.array(lrs), np.array(smoothed)
    if not np.isfinite(sm_a).any():
        raise FloatingPointError(f"lr-find: the first step's cost was not finite at lr {lr_min:g}; "
                                 f"lower lr_min")
    i_min, i_steep = _suggest(lr_a, sm_a)
    note = ""
    if i_min < 0.05 * len(lrs):
        note = f"the loss did not fall before lr {lrs[i_min]:.3g}: lower lr_min"
    elif not stopped:
        note = f"the loss had not blown up by lr_max {lr_max:g}: raise lr_max or n_steps"
    return LRFindResult(lrs, losses, smoothed, lrs[i_min] / 10, lrs[i_min], float(sm_a[i_min]),
                        lrs[i_steep], stopped, note)


def plot_lr_find(result: LRFindResult, path: str | Path, title: str = "learning-rate range test") -> Path:
    """lr_find.png: the minibatch and smoothed loss against the rate (log axis), the suggestion marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from deeptut.viz.plots import DPI, PNG_META, mpl_text

    lrs = np.array(result.learning_rates)
    raw = np.array(result.losses, dtype=np.float64)
    sm = np.array(result.smoothed, dtype=np.float64)
    raw[~np.isfinite(raw)] = np.nan
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.semilogx(lrs, raw, color="tab:gray", lw=0.8, alpha=0.5, label="minibatch cost")
    ax.semilogx(lrs, sm, color="tab:blue", lw=1.8, label="smoothed")
    ax.plot([result.min_rate], [result.min_loss], "o", color="tab:orange", ms=6,
            label=f"minimum at lr {result.min_rate:.3g}")
    ax.axvline(result.suggestion, color="tab:red", ls="--", lw=1.2,
               label=f"suggested lr {result.suggestion:.3g} (minimum / 10)")
    finite = sm[np.isfinite(sm)]
    top = min(float(np.nanmax(raw)) if np.isfinite(raw).any() else finite.max(),
              max(finite[0], result.min_loss) * 1.5)  # the blow-up would flatten everything else
    bottom = min(float(np.nanmin(raw)), result.min_loss)
    ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.05 * (top - bottom) + 1e-12)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training cost (NLL)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title(mpl_text(title), fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata=PNG_META)
    return path


def range_test(cfg: Any, data: Any, out_dir: str | Path | None = None, *, n_steps: int = 300,
               lr_min: float = 1e-6, lr_max: float = 10.0) -> LRFindResult:
    """`deeptut lr-find`: the range test for a config's model and training step on `data` (data/datasets.py
    Splits), its minibatches of `cfg.batch_size` from the training split, normalised as training would
    (cfg.normalize; the images are not moved), in an order drawn from `cfg.seed`. The model starts from the
    config's initialisation (init_seed). With `out_dir`: config.json, lr_find.json (the result) and
    lr_find.png written there."""
    from deeptut.accel import make_train_step, thread_counts
    from deeptut.data.normalize import fit_normalizer, normalized_splits
    from deeptut.store import files, rundir
    from deeptut.train.loop import cuda_precision, device_splits
    from deeptut.train.runner import prepare

    device, model = prepare(cfg)  # as every run starts: device, threads, seeds, the family's module
    normalizer = fit_normalizer(data, cfg.normalize, cfg.normalize_per_pixel)
    train, _valid, _test = device_splits(cfg, normalized_splits(data, normalizer), device)
    with cuda_precision(cfg):
        result = lr_find(model, lambda m: make_train_step(m, cfg, device), train, cfg.batch_size, lr_min,
                         lr_max, n_steps, seed=cfg.seed)
    if out_dir is not None:
        out = Path(out_dir)
        rundir.write_config(out, cfg, device, threads=thread_counts())
        files.atomic_write_json(out / "lr_find.json", {
            "preset": cfg.preset, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
            "n_steps": n_steps, "lr_min": lr_min, "lr_max": lr_max, **result.to_dict()})
        plot_lr_find(result, out / "lr_find.png",
                     f"{cfg.preset} ({cfg.model}, batch {cfg.batch_size}, {cfg.dataset}): learning-rate range test")
    return result
