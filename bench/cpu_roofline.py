"""How far the tutorial workloads are from this CPU's limit: the machine's measured float32 GEMM peak, an
analytic count of each workload's matrix-product FLOPs, and from the two the least time any implementation
doing those products could take; against the peer's and deeptut's measured whole-process times.

    python bench/cpu_roofline.py [--threads 1] [--peer-json bench/results/peer-DATE/peer.json]
                                 [--full-runs [--full-workloads mlp,dA,...] [--full-epochs 1,2]]
                                 [--quick] [--out-dir bench/results/roofline-<date>]

1. Peak: torch.mm on contiguous float32 CPU tensors at --threads (torch.set_num_threads), over square sizes
   256 .. 2048 and the workloads' own tall shapes (20x784 @ 784x500, ...); per shape the best time of
   --repeats timed repeats (each repeat enough calls to last >= --min-time s) after a warm-up; GFLOP/s =
   2*m*k*n / s / 1e9. The peak is the best shape's GFLOP/s.
2. FLOPs: flops_<workload>() counts 2*m*k*n for every matrix-matrix product the tutorial's code does (its
   Theano graph: forward, backward, every training step, the validations and test evaluations of those
   epochs); elementwise work (sigmoids, softmax, sampling), bias terms and the RBM's v @ vbias (a
   matrix-vector product) are not counted: O(batch x units) against the products' O(batch x units^2).
   MNIST as the tutorials split it: 50,000 training, 10,000 validation, 10,000 test examples; every loop
   runs floor(n / batch) minibatches, as theirs do. Each function's docstring states its assumptions.
3. The bound (with --peer-json, the peer.json bench/peer_tutorials.py writes: rows[].passes[].peer_s and
   .deeptut_s, whole processes): time at peak = FLOPs / peak; largest possible ratio = peer_s / time at
   peak (the most any implementation doing these products at this thread count could gain on the peer,
   start-up ignored); deeptut's fraction of peak = time at peak / deeptut_s. The best (least) time over the
   passes is used for each side. Test-set evaluations happen only on a new best validation score: their
   count is read from the peer's log beside peer.json (<workload>-peer-<pass>.log) or its printed values;
   where neither is there, one after every validation is assumed (an upper bound, marked "<=").
4. Full runs (--full-runs; slow): the peer and deeptut as whole processes at --full-epochs epoch counts (per
   workload, one after the other, same sitting); per epoch = the least-squares slope of time over epochs
   (two counts: their difference / the epochs' difference); the tutorial's full run (mlp 1000 epochs, dA 15
   + 15, rbm 15 epochs of PCD-15 at batch 20, SdA 15 pre-training epochs per layer at batch 1, DBN 100 per
   layer at batch 10: the defaults of their code) estimated as full epochs x per epoch, start-up and fixed
   parts left out (the intercept is reported). The fraction of peak uses the FLOPs of those full epochs
   (training and validation; test evaluations left out, so it is a lower bound). The peer runs as run.sh
   runs it: code/ and the theano/ shim copied to a temporary folder, data/mnist.pkl.gz linked there (written
   by `deeptut data export-pkl`), PYTENSOR_FLAGS as run.sh sets them, `PY -c "import mlp;
   mlp.test_mlp(n_epochs=N)"` in that code/ folder. SdA and DBN also fine-tune --finetune-epochs epochs
   (deeptut needs n_epochs >= 1; the same on both sides, so it cancels in the slope). A peer run that
   compiled new code (new entries in PyTensor's caches: the compiledir of PYTENSOR_FLAGS and ~/.pytensor, where
   the Numba linker, PyTensor 3's default, keeps its cache) is run again once and the second time is used.
   The peer's PyTensor version, mode and linker are recorded (peer_backend).

Writes <out-dir>/roofline.json (everything measured, the machine and load before/after, torch version),
<out-dir>/roofline.md (the tables) and, for full runs, <out-dir>/<workload>-<impl>-e<N>-<pass>.log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_peer_tutorials", ROOT / "bench" / "peer_tutorials.py")
peer_tutorials = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer_tutorials)
PEER = peer_tutorials.PEER

N_TRAIN, N_VALID, N_TEST = 50_000, 10_000, 10_000  # MNIST as the tutorials' mnist.pkl.gz splits it

# GEMM shapes (m, k, n): A (m x k) @ B (k x n). Squares, then the workloads' own products.
SQUARES = [(s, s, s) for s in (256, 512, 1024, 1536, 2048)]
TALL = [(20, 784, 500),     # mlp / dA / rbm forward at batch 20
        (784, 20, 500),     # their weight gradient x^T @ delta at batch 20
        (600, 784, 10),     # logistic_sgd at batch 600
        (300, 784, 1000),   # SdA / DBN first layer at batch 300
        (300, 1000, 1000),  # SdA / DBN upper layers at batch 300
        (1000, 300, 1000),  # their weight gradient at batch 300
        (300, 784, 500),    # rbm at batch 300
        (10, 784, 1000),    # DBN at batch 10 (its full run)
        (1, 784, 1000)]     # SdA at batch 1 (its full run): a matrix-vector product
QUICK_SHAPES = [(256, 256, 256), (512, 512, 512)]


# ---------------------------------------------------------------- FLOP counts (pure functions, FLOPs as int)

def mm(m: int, k: int, n: int) -> int:
    """FLOPs of one (m x k) @ (k x n) product: a multiply and an add per term."""
    return 2 * m * k * n


def forward(batch: int, sizes: list[int]) -> int:
    """FLOPs of a forward pass of `batch` examples through dense layers sizes[0] -> sizes[1] -> ..."""
    return sum(mm(batch, a, b) for a, b in zip(sizes, sizes[1:]))


def backprop_step(batch: int, sizes: list[int]) -> int:
    """One SGD step of a dense stack: the forward pass, every weight gradient (x^T @ delta: the same FLOPs as
    the layer's forward product) and the gradient into every layer's input except the first's (the data)."""
    return 3 * forward(batch, sizes) - mm(batch, sizes[0], sizes[1])


def _supervised(n_epochs: int, batch: int, sizes: list[int], validation_frequency: int,
                test_evals: int | None) -> dict[str, int]:
    """The tutorials' supervised loop: n_epochs x floor(50,000 / batch) steps; a validation (floor(10,000 /
    batch) minibatches, forward only) whenever (iter + 1) % validation_frequency == 0; a test evaluation
    (the same on the test set) after a new best validation: `test_evals` of them, None = after every one."""
    nb = N_TRAIN // batch
    n_valid = n_epochs * nb // validation_frequency
    n_test = n_valid if test_evals is None else test_evals
    return {"train": n_epochs * nb * backprop_step(batch, sizes),
            "valid": n_valid * (N_VALID // batch) * forward(batch, sizes),
            "test": n_test * (N_TEST // batch) * forward(batch, sizes)}


def _total(parts: dict[str, int]) -> dict[str, int]:
    return {**parts, "total": sum(parts.values())}


def flops_logistic_sgd(n_epochs: int = 30, batch_size: int = 600, test_evals: int | None = None,
                       patience: int = 5000) -> dict[str, int]:
    """logistic_sgd.py: 784 -> 10 softmax. A step: x @ W and the gradient x^T @ delta (no gradient into x).
    validation_frequency = min(n_train_batches, patience // 2) = 83 at batch 600: once per epoch. Assumes the
    patience rule does not stop the run inside n_epochs (true for 30 epochs; the published run stops at 74)."""
    return _total(_supervised(n_epochs, batch_size, [784, 10],
                              min(N_TRAIN // batch_size, patience // 2), test_evals))


def flops_mlp(n_epochs: int = 5, batch_size: int = 20, n_hidden: int = 500, test_evals: int | None = None,
              patience: int = 10000) -> dict[str, int]:
    """mlp.py: 784 -> 500 (tanh) -> 10 softmax, batch 20. A step: 2 forward products, 2 weight gradients and
    the gradient into the hidden layer (delta @ W2^T): 2*mm(B,784,500) + 3*mm(B,500,10). Validation once per
    epoch (min(2500, 10000 // 2) = 2500 minibatches). Assumes no early stop inside n_epochs (the full run's
    1000 epochs: the published best is at iteration 2,070,000 of 2,500,000)."""
    return _total(_supervised(n_epochs, batch_size, [784, n_hidden, 10],
                              min(N_TRAIN // batch_size, patience // 2), test_evals))


def da_step(batch: int, n_visible: int, n_hidden: int) -> int:
    """One dA step with tied weights (dA.py): y = s(x~ @ W), z = s(y @ W^T), then the gradient of W' = W^T
    (y^T @ dz), into y (dz @ W) and of W (x~^T @ dy): 4 products of batch x n_visible x n_hidden."""
    return 4 * mm(batch, n_visible, n_hidden)


def flops_dA(n_epochs: int = 2, batch_size: int = 20, n_visible: int = 784, n_hidden: int = 500,
             runs: int = 2) -> dict[str, int]:
    """dA.py test_dA(training_epochs=n_epochs): two autoencoders trained one after the other (corruption 0 and
    30 %), n_epochs x 2500 steps each at batch 20. No validation, no test (the filters are a picture of W)."""
    return _total({"train": runs * n_epochs * (N_TRAIN // batch_size) * da_step(batch_size, n_visible, n_hidden)})


def rbm_step(batch: int, n_visible: int, n_hidden: int, k: int, persistent: bool) -> int:
    """One CD-k / PCD-k step of rbm.py's RBM, as its graph computes it, in products of batch x n_visible x
    n_hidden: the free energy of the data (v @ W, merged with the positive phase's propup), k Gibbs steps h ->
    v -> h (2 products each, the last step's propup included: it is the scan's recurrent output), the free
    energy of the chain's end (1), the gradient of W from both free energies (2: v^T @ s(v @ W + b));
    PCD's monitoring cost, the pseudo-likelihood, adds the free energies of round(x) and of it with one bit
    flipped (2); CD's reconstruction cost reuses the last step's pre-sigmoid (0). PCD-k: 2k + 6, CD-k: 2k + 4."""
    return (2 * k + (6 if persistent else 4)) * mm(batch, n_visible, n_hidden)


def flops_rbm(n_epochs: int = 1, batch_size: int = 300, n_visible: int = 784, n_hidden: int = 500, k: int = 15,
              n_chains: int = 1, n_samples: int = 1, plot_every: int = 1000) -> dict[str, int]:
    """rbm.py test_rbm: n_epochs x floor(50,000 / batch) PCD-k steps, then n_samples samples of n_chains
    chains, each after plot_every Gibbs steps v -> h -> v (2 products of n_chains x 784 x 500 each)."""
    return _total({"train": n_epochs * (N_TRAIN // batch_size) * rbm_step(batch_size, n_visible, n_hidden, k, True),
                   "sample": n_samples * plot_every * 2 * mm(n_chains, n_visible, n_hidden)})


def _pretrain(pretraining_epochs: int, batch: int, sizes: list[int], layer_step: Callable[[int, int, int], int]
              ) -> int:
    """Greedy layer-wise pre-training: for each layer i, pretraining_epochs x floor(50,000 / batch) steps, each
    the forward pass through the layers below (their sigmoid outputs are the layer's input; no gradient into
    them) and the layer's own step."""
    nb = N_TRAIN // batch
    return sum(pretraining_epochs * nb * (forward(batch, sizes[:i + 1]) + layer_step(batch, sizes[i], sizes[i + 1]))
               for i in range(len(sizes) - 1))


def flops_SdA(pretraining_epochs: int = 1, n_epochs: int = 2, batch_size: int = 300,
              hidden_layers_sizes: tuple[int, ...] = (1000, 1000, 1000), test_evals: int | None = None
              ) -> dict[str, int]:
    """SdA.py test_SdA: 784 -> 1000 -> 1000 -> 1000 -> 10, batch_size for both phases (the tutorial's own
    default 1; test.py speed() 300). Pre-training: each layer a tied-weight dA (da_step) on the sigmoid
    output of the layers below. Fine-tuning: backprop_step through the whole stack; patience = 10 x
    n_train_batches, so validation once per epoch."""
    sizes = [784, *hidden_layers_sizes]
    nb = N_TRAIN // batch_size
    fine = _supervised(n_epochs, batch_size, [*sizes, 10], min(nb, 10 * nb // 2), test_evals)
    return _total({"pretrain": _pretrain(pretraining_epochs, batch_size, sizes, da_step),
                   "finetune": fine.pop("train"), **fine})


def flops_DBN(pretraining_epochs: int = 1, n_epochs: int = 2, batch_size: int = 300, k: int = 1,
              hidden_layers_sizes: tuple[int, ...] = (1000, 1000, 1000), test_evals: int | None = None
              ) -> dict[str, int]:
    """DBN.py test_DBN: 784 -> 1000 -> 1000 -> 1000 -> 10, batch_size for both phases (default 10; speed()
    300). Pre-training: each layer an RBM with CD-k (k = 1, no persistent chain: rbm_step, 2k + 4 products)
    on the sigmoid output of the layers below. Fine-tuning as SdA's; patience = 4 x n_train_batches, so
    validation_frequency = min(n_train_batches, patience / 2): once per epoch."""
    sizes = [784, *hidden_layers_sizes]
    nb = N_TRAIN // batch_size
    fine = _supervised(n_epochs, batch_size, [*sizes, 10], min(nb, 4 * nb // 2), test_evals)
    return _total({"pretrain": _pretrain(pretraining_epochs, batch_size, sizes,
                                         lambda b, v, h: rbm_step(b, v, h, k, False)),
                   "finetune": fine.pop("train"), **fine})


FLOPS: dict[str, Callable[..., dict[str, int]]] = {
    "logistic_sgd": flops_logistic_sgd, "mlp": flops_mlp, "dA": flops_dA, "SdA": flops_SdA, "DBN": flops_DBN,
    "rbm": flops_rbm}
# test.py speed()'s settings of each workload (bench/peer_tutorials.py and the peer's run.sh run these)
SPEED: dict[str, dict] = {
    "logistic_sgd": {"n_epochs": 30}, "mlp": {"n_epochs": 5}, "dA": {"n_epochs": 2},
    "SdA": {"pretraining_epochs": 1, "n_epochs": 2, "batch_size": 300},
    "DBN": {"pretraining_epochs": 1, "n_epochs": 2, "batch_size": 300},
    "rbm": {"n_epochs": 1, "batch_size": 300, "n_chains": 1, "n_samples": 1}}
TAKES_TEST_EVALS = {"logistic_sgd", "mlp", "SdA", "DBN"}


class FullRun(NamedTuple):
    """One workload's full run at the tutorial's defaults, timed at a few epoch counts."""

    what: str  # the tutorial's full run
    n_full: int  # its epochs (per layer for SdA / DBN pre-training; per autoencoder for dA)
    peer_call: str  # Python run in the peer's code/ folder; {n} epochs, {f} fine-tuning epochs
    deeptut: list[list[str]]  # deeptut processes (after `python -m deeptut`); {n}, {f}; {run_dir}: the last run
    epoch_flops: Callable[[], int]  # FLOPs of one of those epochs at the tutorial's settings (tests excluded)


FULL_RUNS: dict[str, FullRun] = {
    "logistic_sgd": FullRun(
        "logistic_sgd, 74 epochs at batch 600 (where its patience rule ends the published run)", 74,
        "import logistic_sgd; logistic_sgd.sgd_optimization_mnist(n_epochs={n})",
        [["train", "logistic", "--n_epochs", "{n}"]],
        lambda: flops_logistic_sgd(n_epochs=1, test_evals=0)["total"]),
    "mlp": FullRun(
        "mlp, 1000 epochs at batch 20", 1000, "import mlp; mlp.test_mlp(n_epochs={n})",
        [["train", "mlp", "--n_epochs", "{n}"]], lambda: flops_mlp(n_epochs=1, test_evals=0)["total"]),
    "dA": FullRun(
        "dA, 15 + 15 epochs at batch 20 (0 % and 30 %)", 15,
        "import dA; dA.test_dA(training_epochs={n}, output_folder='tmp_dA_plots')",
        [["train", "da", "--n_epochs", "{n}", "--corruption_level", "0"],
         ["train", "da", "--n_epochs", "{n}", "--corruption_level", "0.3"]],
        lambda: flops_dA(n_epochs=1)["total"]),
    "rbm": FullRun(
        "rbm, 15 epochs of PCD-15 at batch 20", 15,
        "import rbm; rbm.test_rbm(training_epochs={n}, n_chains=1, n_samples=1, output_folder='tmp_rbm_plots')",
        [["train", "rbm", "--n_epochs", "{n}", "--sample", "false"],
         ["sample", "{run_dir}", "--n-chains", "1", "--n-samples", "1"]],
        lambda: flops_rbm(n_epochs=1, batch_size=20, n_samples=0)["total"]),
    "SdA": FullRun(
        "SdA pre-training, 15 epochs per layer at batch 1", 15,
        "import SdA; SdA.test_SdA(pretraining_epochs={n}, training_epochs={f})",
        [["train", "sda", "--pretraining_epochs", "{n}", "--n_epochs", "{f}"]],
        lambda: flops_SdA(pretraining_epochs=1, n_epochs=0, batch_size=1)["total"]),
    "DBN": FullRun(
        "DBN pre-training, 100 epochs per layer at batch 10 (CD-1)", 100,
        "import DBN; DBN.test_DBN(pretraining_epochs={n}, training_epochs={f})",
        [["train", "dbn", "--pretraining_epochs", "{n}", "--n_epochs", "{f}"]],
        lambda: flops_DBN(pretraining_epochs=1, n_epochs=0, batch_size=10)["total"]),
}
FULL_DEFAULT = ["mlp", "dA", "rbm", "SdA", "DBN"]


# ---------------------------------------------------------------- the bound and the extrapolation (pure)

TEST_LINE = re.compile(r"test error of best model")


def count_test_evals(text: str) -> int:
    """Test-set evaluations in a tutorial's output: one printed line each."""
    return len(TEST_LINE.findall(text))


def _best(passes: list[dict], key: str, rc: str) -> tuple[float | None, dict | None]:
    ok = [p for p in passes if p.get(key) and p.get(rc, 0) == 0]
    best = min(ok, key=lambda p: p[key], default=None)
    return (best[key], best) if best else (None, None)


def bound_rows(peer: dict, peak_gflops: float, test_evals: dict[tuple[str, int], int] | None = None
               ) -> list[dict]:
    """One row per counted workload of a peer.json: FLOPs, time at peak, the best passes' times and ratios.
    test_evals: (workload, pass) -> test evaluations counted in that pass's peer output, where known."""
    test_evals = test_evals or {}
    rows = []
    for row in peer.get("rows", []):
        name = row["workload"]
        if name not in FLOPS:
            continue
        peer_s, pbest = _best(row.get("passes", []), "peer_s", "peer_rc")
        ours_s, _ = _best(row.get("passes", []), "deeptut_s", "deeptut_rc")
        settings = dict(SPEED[name])
        n_test = None
        if name in TAKES_TEST_EVALS:
            if pbest is not None and (name, pbest.get("pass", 1)) in test_evals:
                n_test = test_evals[(name, pbest.get("pass", 1))]
            elif pbest is not None and pbest.get("peer_values"):
                n_test = sum(1 for k in pbest["peer_values"] if "test error" in k)
            settings["test_evals"] = n_test
        parts = FLOPS[name](**settings)
        t_peak = parts["total"] / (peak_gflops * 1e9)  # s
        rows.append({
            "workload": name, "what": row.get("what", name), "flops": parts,
            "test_evals": n_test, "test_evals_upper_bound": name in TAKES_TEST_EVALS and n_test is None,
            "gflop": parts["total"] / 1e9, "t_peak_s": t_peak, "peer_s": peer_s, "deeptut_s": ours_s,
            "passes": len(row.get("passes", [])), "skipped": row.get("skipped"),
            "ratio": peer_s / ours_s if peer_s and ours_s else None,
            "max_ratio": peer_s / t_peak if peer_s else None,
            "deeptut_frac": t_peak / ours_s if ours_s else None,
            "peer_frac": t_peak / peer_s if peer_s else None})
    return rows


def _f(x: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{suffix}"


def render_bound(rows: list[dict], peak_gflops: float) -> str:
    lines = [f"Bound at the GEMM peak of {peak_gflops:.1f} GFLOP/s (best of the passes on each side):", "",
             "| workload (test.py speed()) | GFLOP | time at peak, s | peer, s | deeptut, s | peer / deeptut | "
             "largest possible ratio | deeptut fraction of peak | peer fraction of peak |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        gflop = ("<= " if r["test_evals_upper_bound"] else "") + f"{r['gflop']:.1f}"
        lines.append(f"| {r['what']} | {gflop} | {r['t_peak_s']:.2f} | {_f(r['peer_s'], '.1f')} | "
                     f"{_f(r['deeptut_s'], '.1f')} | {_f(r['ratio'], '.2f', 'x')} | "
                     f"{_f(r['max_ratio'], '.1f', 'x')} | {_f(r['deeptut_frac'], '.1%')} | "
                     f"{_f(r['peer_frac'], '.1%')} |")
    return "\n".join(lines)


def flops_table(peak_gflops: float | None) -> list[dict]:
    """Without a peer.json: each workload's FLOPs at speed()'s settings (tests: one per validation, <=)."""
    out = []
    for name, fn in FLOPS.items():
        parts = fn(**SPEED[name])
        out.append({"workload": name, "flops": parts, "gflop": parts["total"] / 1e9,
                    "test_evals_upper_bound": name in TAKES_TEST_EVALS,
                    "t_peak_s": parts["total"] / (peak_gflops * 1e9) if peak_gflops else None})
    return out


def render_flops(rows: list[dict]) -> str:
    lines = ["| workload (test.py speed()) | GFLOP | of it, by part | time at peak, s |", "| --- | --- | --- | --- |"]
    for r in rows:
        parts = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in r["flops"].items() if k != "total")
        lines.append(f"| {r['workload']} | {'<= ' if r['test_evals_upper_bound'] else ''}{r['gflop']:.1f} | "
                     f"{parts} | {_f(r['t_peak_s'], '.2f')} |")
    return "\n".join(lines)


def extrapolate(times: dict[int, float], n_full: int) -> dict:
    """Seconds per epoch (least-squares slope of whole-process seconds over epochs; two counts: difference /
    epochs' difference), the intercept (start-up and fixed parts, s) and n_full x per epoch (s).
    None where fewer than two epoch counts were timed or the slope is not positive (noise)."""
    xs = sorted(times)
    if len(xs) < 2:
        return {"per_epoch_s": None, "intercept_s": None, "full_s": None}
    mx = sum(xs) / len(xs)
    my = sum(times[x] for x in xs) / len(xs)
    slope = sum((x - mx) * (times[x] - my) for x in xs) / sum((x - mx) ** 2 for x in xs)
    if not slope > 0:
        return {"per_epoch_s": None, "intercept_s": None, "full_s": None}
    return {"per_epoch_s": slope, "intercept_s": my - slope * mx, "full_s": slope * n_full}


def full_row(name: str, peer_times: dict[int, float], ours_times: dict[int, float], peak_gflops: float) -> dict:
    fr = FULL_RUNS[name]
    p, o = extrapolate(peer_times, fr.n_full), extrapolate(ours_times, fr.n_full)
    flops = fr.n_full * fr.epoch_flops()
    t_peak = flops / (peak_gflops * 1e9)
    return {"workload": name, "what": fr.what, "n_full": fr.n_full, "peer_times_s": peer_times,
            "deeptut_times_s": ours_times, "peer": p, "deeptut": o, "full_gflop": flops / 1e9,
            "t_peak_s": t_peak,
            "ratio": p["full_s"] / o["full_s"] if p["full_s"] and o["full_s"] else None,
            "deeptut_frac": t_peak / o["full_s"] if o["full_s"] else None,
            "peer_frac": t_peak / p["full_s"] if p["full_s"] else None}


def _frac(x: float | None) -> str:
    """A fraction of peak; above 1 the timed difference is within the noise of whole-process times."""
    return _f(x, ".1%") + (" (noise: > peak)" if x is not None and x > 1 else "")


def render_full(rows: list[dict], peak_gflops: float) -> str:
    lines = [f"Full runs at the tutorials' settings, extrapolated from whole processes (GEMM peak "
             f"{peak_gflops:.1f} GFLOP/s; start-up and fixed parts left out):", "",
             "| full run | epochs timed | peer, s/epoch | deeptut, s/epoch | peer full run, s | deeptut full run, s | "
             "ratio | GFLOP (train + valid) | time at peak, s | deeptut fraction of peak | peer fraction of peak |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ep = ", ".join(str(n) for n in sorted(set(r["peer_times_s"]) | set(r["deeptut_times_s"])))
        lines.append(f"| {r['what']} | {ep} | {_f(r['peer']['per_epoch_s'], '.2f')} | "
                     f"{_f(r['deeptut']['per_epoch_s'], '.2f')} | {_f(r['peer']['full_s'], '.0f')} | "
                     f"{_f(r['deeptut']['full_s'], '.0f')} | {_f(r['ratio'], '.2f', 'x')} | "
                     f"{r['full_gflop']:.0f} | {r['t_peak_s']:.0f} | {_frac(r['deeptut_frac'])} | "
                     f"{_frac(r['peer_frac'])} |")
    return "\n".join(lines)


def render_gemm(gemm: list[dict], threads: int) -> str:
    lines = [f"float32 torch.mm, {threads} thread(s):", "", "| m x k @ k x n | GFLOP/s | best s per call |",
             "| --- | --- | --- |"]
    for g in gemm:
        lines.append(f"| {g['m']}x{g['k']} @ {g['k']}x{g['n']} | {g['gflops']:.1f} | {g['best_s']:.2e} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- measurements (processes, torch)

def measure_gemm(shapes: list[tuple[int, int, int]], threads: int, repeats: int, min_time: float) -> list[dict]:
    """Per shape: the best seconds per torch.mm call over `repeats` repeats of n calls (n: enough for one
    repeat to last >= min_time s), after a warm-up of about min_time s."""
    import torch
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    out = []
    for m, k, n in shapes:
        a = torch.rand(m, k, generator=g)  # (m, k) float32, contiguous
        b = torch.rand(k, n, generator=g)  # (k, n)
        c = torch.empty(m, n)  # (m, n)
        torch.mm(a, b, out=c)
        t0 = time.perf_counter()
        calls = 0
        while time.perf_counter() - t0 < min_time:  # warm-up; also sizes a repeat
            torch.mm(a, b, out=c)
            calls += 1
        calls = max(1, math.ceil(calls * min_time / (time.perf_counter() - t0)))
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b, out=c)
            best = min(best, (time.perf_counter() - t0) / calls)
        out.append({"m": m, "k": k, "n": n, "calls_per_repeat": calls, "repeats": repeats, "best_s": best,
                    "gflops": mm(m, k, n) / best / 1e9})
        print(f"gemm {m}x{k} @ {k}x{n}: {out[-1]['gflops']:.1f} GFLOP/s", flush=True)
    return out


def torch_info(threads: int) -> dict:
    import torch
    show = torch.__config__.show()
    keep = [ln.strip() for ln in show.splitlines() if re.search(r"BLAS_INFO|CPU capability|LAPACK_INFO", ln)]
    return {"torch": torch.__version__, "threads": threads, "config": keep}


def peer_env(threads: int) -> dict:
    """The peer's environment, as run.sh sets it: BLAS/OpenMP threads and its PYTENSOR_FLAGS default."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    env.setdefault("PYTENSOR_FLAGS", f"floatX=float32,compiledir={Path.home()}/.cache/pytensor-dlt,"
                                     "blas__ldflags=-lopenblas")
    return env


def _cache_dirs(env: dict) -> list[Path]:
    """Where PyTensor keeps compiled code: the C compiledir of PYTENSOR_FLAGS and the base compiledir
    (~/.pytensor; its numba/ folder holds the Numba linker's cache: PyTensor 3's default mode links Numba)."""
    flags = env.get("PYTENSOR_FLAGS", "")
    dirs = [Path(os.path.expanduser(m.group(1))) for m in re.finditer(r"(?:^|,)(?:base_)?compiledir=([^,]+)", flags)]
    return dirs + [Path.home() / ".pytensor"]


def _compiled_entries(d: Path | None) -> set[str]:
    """Entries one and two levels under a compile cache folder (lock_dir excluded): a new one = new code."""
    if d is None or not d.is_dir():
        return set()
    out = set()
    for a in d.iterdir():
        if a.name == "lock_dir":
            continue
        out.add(a.name)
        if a.is_dir():
            out |= {f"{a.name}/{b.name}" for b in a.iterdir() if b.name != "lock_dir"}
    return out


def peer_backend(py: str, threads: int) -> str:
    """The peer's PyTensor version, default mode and linker (c, cvm, numba, ...) under run.sh's flags."""
    code = ("import pytensor; from pytensor.compile.mode import get_default_mode as g; "
            "print(pytensor.__version__, pytensor.config.mode, type(g().linker).__name__, "
            "pytensor.config.blas__ldflags)")
    try:
        r = subprocess.run([py, "-c", code], capture_output=True, text=True, env=peer_env(threads), timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    return (r.stdout.strip() or r.stderr.strip()[-200:])


def run_peer_call(peer: Path, py: str, call: str, pkl: Path, threads: int, log: Path) -> dict:
    """run.sh's mechanism with our own call: a temporary copy of code/ with the theano/ shim inside it and
    data/mnist.pkl.gz beside it; `PY -c CALL` in code/, timed as a whole process (s)."""
    env = peer_env(threads)
    caches = _cache_dirs(env)
    with tempfile.TemporaryDirectory(prefix="roofline-peer-") as w:
        work = Path(w)
        shutil.copytree(peer / "code", work / "code")
        shutil.copytree(peer / "theano", work / "code" / "theano")
        (work / "data").mkdir()
        (work / "data" / "mnist.pkl.gz").symlink_to(pkl)
        before = [_compiled_entries(d) for d in caches]
        t0 = time.perf_counter()
        r = subprocess.run([py, "-c", call], cwd=work / "code", capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        compiled = sum(len(_compiled_entries(d) - b) for d, b in zip(caches, before))
    text = f"$ {py} -c \"{call}\"\n{r.stdout}{r.stderr}"
    log.write_text(text)
    return {"rc": r.returncode, "wall_s": round(wall, 2), "compiled_modules": compiled, "log": log.name}


def full_runs(names: list[str], epochs: list[int], finetune_epochs: int, passes: int, threads: int,
              peer: Path, py: str, data_dir: str | None, out_dir: Path, peak: float, skip: str | None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="roofline-") as tmp_s:
        tmp = Path(tmp_s)
        pkl = tmp / "mnist.pkl.gz"
        if skip is None:
            r = subprocess.run([sys.executable, "-m", "deeptut", "data", "export-pkl", str(pkl)]
                               + (["--data-dir", data_dir] if data_dir else []), capture_output=True, text=True)
            if r.returncode != 0:
                skip = f"deeptut data export-pkl failed: {r.stderr.strip()[-200:]}"
        for name in names:
            fr = FULL_RUNS[name]
            peer_t: dict[int, float] = {}
            ours_t: dict[int, float] = {}
            record = []
            for k in range(1, passes + 1):
                for n in epochs:
                    fill = {"n": str(n), "f": str(finetune_epochs)}
                    one: dict = {"pass": k, "epochs": n}
                    if skip is None:
                        call = fr.peer_call.format(**fill)
                        p = run_peer_call(peer, py, call, pkl, threads, out_dir / f"{name}-peer-e{n}-{k}.log")
                        if p["compiled_modules"] and p["rc"] == 0:  # compiled this time: time it again
                            one["peer_compiling_run"] = p
                            p = run_peer_call(peer, py, call, pkl, threads,
                                              out_dir / f"{name}-peer-e{n}-{k}b.log")
                        one["peer"] = p
                        if p["rc"] == 0:
                            peer_t[n] = min(peer_t.get(n, math.inf), p["wall_s"])
                    cmds = [[a.format(**fill) if "{run_dir}" not in a else a for a in c] for c in fr.deeptut]
                    o = peer_tutorials.run_ours(cmds, threads, data_dir, out_dir / f"{name}-deeptut-e{n}-{k}.log",
                                                tmp)
                    o.pop("text")
                    one["deeptut"] = o
                    if o["rc"] == 0:
                        ours_t[n] = min(ours_t.get(n, math.inf), o["wall_s"])
                    one["uptime"] = peer_tutorials.machine()["uptime"]
                    record.append(one)
                    print(f"{name} {n} epochs pass {k}: peer {one.get('peer', {}).get('wall_s', '-')} s, "
                          f"deeptut {o['wall_s']} s (rc {o['rc']}); {one['uptime']}", flush=True)
            row = full_row(name, peer_t, ours_t, peak)
            row["runs"] = record
            row["peer_skipped"] = skip
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per GEMM shape (best is kept)")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per GEMM repeat, at least")
    ap.add_argument("--peer-json", type=Path, help="bench/peer_tutorials.py's peer.json: the bound table")
    ap.add_argument("--full-runs", action="store_true", help="time both at --full-epochs and extrapolate (slow)")
    ap.add_argument("--full-workloads", default=",".join(FULL_DEFAULT))
    ap.add_argument("--full-epochs", default="1,2", help="epoch counts to time (per layer for SdA / DBN)")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="SdA / DBN fine-tuning epochs in full runs")
    ap.add_argument("--full-passes", type=int, default=1)
    ap.add_argument("--peer", type=Path, default=PEER)
    ap.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    ap.add_argument("--data-dir", help="deeptut's data folder (default: its search path)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: GEMM at 256 and 512, 3 repeats; full runs of logistic_sgd and mlp at 1, 2")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results" / f"roofline-{dt.date.today():%Y%m%d}")
    args = ap.parse_args()
    shapes = SQUARES + TALL
    if args.quick:
        shapes, args.repeats, args.min_time = QUICK_SHAPES, 3, 0.05
        args.full_runs, args.full_workloads, args.full_epochs = True, "logistic_sgd,mlp", "1,2"
    names = [w for w in args.full_workloads.split(",") if w]
    unknown = set(names) - set(FULL_RUNS)
    if unknown:
        ap.error(f"unknown --full-workloads {sorted(unknown)}; known: {', '.join(FULL_RUNS)}")
    epochs = sorted({int(e) for e in args.full_epochs.split(",") if e})
    if args.full_runs and len(epochs) < 2:
        ap.error("--full-epochs needs at least two epoch counts")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    result: dict = {"machine_before": peer_tutorials.machine(), **torch_info(args.threads), "quick": args.quick}
    gemm = measure_gemm(shapes, args.threads, args.repeats, args.min_time)
    best = max(gemm, key=lambda g: g["gflops"])
    peak = best["gflops"]
    result["gemm"] = gemm
    result["peak"] = {"gflops": peak, "shape": [best["m"], best["k"], best["n"]]}
    md = [f"# CPU roofline ({result['machine_before']['date']})", "",
          f"Machine: {result['machine_before']['cpu']}, {result['machine_before']['nproc']} cores; torch "
          f"{result['torch']}, {args.threads} thread(s); load before: {result['machine_before']['uptime']}", "",
          render_gemm(gemm, args.threads), "",
          f"Peak: {peak:.1f} GFLOP/s ({best['m']}x{best['k']} @ {best['k']}x{best['n']}).", ""]

    result["flops"] = flops_table(peak)
    md += ["FLOPs of the matrix products at test.py speed()'s settings (\"<=\": a test evaluation after every "
           "validation assumed):", "", render_flops(result["flops"]), ""]

    if args.peer_json:
        peer = json.loads(args.peer_json.read_text())
        counts = {}
        for row in peer.get("rows", []):
            for p in row.get("passes", []):
                log = args.peer_json.parent / f"{row['workload']}-peer-{p.get('pass', 1)}.log"
                if log.is_file():
                    counts[(row["workload"], p.get("pass", 1))] = count_test_evals(log.read_text())
        rows = bound_rows(peer, peak, counts)
        result["bound"] = {"peer_json": str(args.peer_json), "peer_threads": peer.get("threads"),
                           "peer_machine_before": peer.get("machine_before"), "rows": rows}
        md += [render_bound(rows, peak), ""]
        if peer.get("threads") != args.threads:
            md += [f"NOTE: peer.json was measured at {peer.get('threads')} thread(s), the peak at {args.threads}.",
                   ""]
        md += [f"peer.json: {args.peer_json} (load then: {peer.get('machine_before', {}).get('uptime', '?')})", ""]

    if args.full_runs:
        skip = peer_tutorials.peer_skip_reason(args.peer, args.peer_python)
        backend = peer_backend(args.peer_python, args.threads) if skip is None else None
        rows = full_runs(names, epochs, args.finetune_epochs, args.full_passes, args.threads, args.peer,
                         args.peer_python, args.data_dir, args.out_dir, peak, skip)
        result["full_runs"] = {"epochs": epochs, "finetune_epochs": args.finetune_epochs,
                               "passes": args.full_passes, "peer_python": args.peer_python,
                               "peer_backend": backend, "rows": rows}
        md += [render_full(rows, peak), "", f"Peer: {args.peer_python}, PyTensor (version, mode, linker, "
               f"blas__ldflags): {backend}", ""]
        if skip:
            md += [f"Peer skipped: {skip}", ""]

    result["machine_after"] = peer_tutorials.machine()
    md += [f"Load after: {result['machine_after']['uptime']}"]
    (args.out_dir / "roofline.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out_dir / "roofline.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
