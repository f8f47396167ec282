#!/usr/bin/env python3
"""Every CUDA path of deeptut once, on tiny sizes, in well under a minute: PASS/FAIL per path.

    python3 bench/gpu_smoke.py            # needs CUDA; exit status 1 if any path FAILs
    python3 bench/gpu_smoke.py --compile  # also torch.compile under capture (cold compile: +20-60 s)
    python3 bench/gpu_smoke.py --device cpu  # a dry run of the script's logic (graph checks relaxed)

Paths: graph capture + replay of the dense update (MLP), the autograd update and the LeNet manual update (LeNet, cuDNN
or Triton layers; conv = auto's measured choice), a step-size schedule
with momentum in a device tensor, the shuffled-epoch fixed buffer, chunked streaming on a side stream,
graph-captured evaluation, bf16 autocast, checkpoints of a CUDA run reloaded into a graph step, and
torch.compile under capture. Each compares with the eager computation and prints the tolerance it used; the
step timings (us per update, graph vs eager) are an early read of what bench/gpu.py will find.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deeptut import config  # noqa: E402
from deeptut.data.datasets import Split, Splits  # noqa: E402
from deeptut.data.device import DeviceSplit  # noqa: E402
from deeptut.models import build_model  # noqa: E402
from deeptut.accel.cuda import graphs
from deeptut.train import loop  # noqa: E402
from deeptut.train import state as train_state  # noqa: E402
from deeptut.train.early_stopping import EarlyStopping  # noqa: E402

T0 = time.perf_counter()
DEV = torch.device("cuda")  # --device cpu: a dry run
RESULTS: list[tuple[str, str, str]] = []


def check(name: str):
    def wrap(fn):
        t = time.perf_counter()
        try:
            detail = fn() or ""
            status = "PASS"
        except Exception as e:  # noqa: BLE001
            status, detail = "FAIL", f"{type(e).__name__}: {e}"
            traceback.print_exc(limit=6)
        RESULTS.append((name, status, detail))
        print(f"[+{time.perf_counter() - T0:5.1f}s] {status} {name} ({time.perf_counter() - t:.1f} s) {detail}",
              flush=True)
        return fn
    return wrap


def cfg(preset: str, **kw) -> config.TrainConfig:
    over = {"device": DEV.type, **kw}
    if DEV.type == "cpu" and over.get("graphs", "auto") == "auto":
        over["graphs"] = "on"  # the graph step, eagerly
    return config.resolve(preset, None, over)


def on_cuda() -> bool:
    return DEV.type == "cuda"


def sync() -> None:
    if on_cuda():
        torch.cuda.synchronize()


def rand_split(n: int, seed: int = 0) -> DeviceSplit:
    g = torch.Generator().manual_seed(seed)
    return DeviceSplit(torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g), DEV)


def splits(n_train: int, n_eval: int) -> Splits:
    rng = np.random.default_rng(5)

    def split(n):
        y = rng.integers(0, 10, n)
        x = rng.random((n, 784), dtype=np.float32) * 0.3
        x[np.arange(n), y * 70] += 1.0
        return Split(x, y)
    return Splits(split(n_train), split(n_eval), split(n_eval), "smoke", "mnist")


def max_diff(m1, m2) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(m1.parameters(), m2.parameters()))


def assert_close(m1, m2, rtol: float, atol: float) -> None:
    for (n, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol, msg=lambda m: f"{n}: {m}")


def graph_vs_eager(c: config.TrainConfig, n_steps: int, rtol: float, atol: float, timing: bool = True) -> str:
    data = rand_split(n_steps * c.batch_size)
    m_e, m_g = (build_model(c.model_args(), c.init_seed).to(DEV) for _ in range(2))
    lr = lambda k: c.learning_rate * (1 - 0.5 * k / n_steps)  # noqa: E731
    eager = graphs.GraphStep(m_e, c, DEV)
    eager.use_graphs = False
    if hasattr(eager.update, "side"):  # dense and LeNet updates: the reference on one stream, which the
        eager.update.side = None  # graph's side branches must agree with
    eager.run(data, 0, n_steps, lr)
    step = graphs.GraphStep(m_g, c, DEV)
    step.run(data, 0, n_steps, lr)
    sync()
    if on_cuda() and (step.stats["captures"] != 1 or step.stats["graph_replays"] != 1 or not step.use_graphs):
        raise AssertionError(f"the graph path did not run: {step.stats}")
    assert_close(m_e, m_g, rtol, atol)
    out = f"update {step.kind}, max |diff| {max_diff(m_e, m_g):.2e} (rtol {rtol}, atol {atol})"
    if timing:  # replays and eager blocks of the same span
        def per_step(fn, reps):
            fn()
            sync()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            sync()
            return (time.perf_counter() - t) / (reps * n_steps) * 1e6
        g_us = per_step(lambda: step.run(data, 0, n_steps, lr), 3)
        e_us = per_step(lambda: eager.run(data, 0, n_steps, lr), 1)
        out += f"; {g_us:.1f} us/step graph, {e_us:.1f} us/step eager"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compile", action="store_true", help="also check torch.compile under capture")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()
    global DEV
    DEV = torch.device(args.device)
    if on_cuda() and not torch.cuda.is_available():
        print("FAIL cuda: torch sees no CUDA device (--device cpu for a dry run)")
        return 1

    @check("device")
    def _():
        x = torch.randn(256, 256, device=DEV)
        torch.testing.assert_close((x @ x).cpu(), x.cpu() @ x.cpu(), rtol=1e-3, atol=1e-3)
        if not on_cuda():
            return f"cpu dry run, torch {torch.__version__}"
        p = torch.cuda.get_device_properties(DEV)
        return f"{p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, CUDA {torch.version.cuda}"

    @check("graph: dense update, tutorial MLP (batch 20, 500 steps)")
    def _():
        return graph_vs_eager(cfg("mlp"), 500, 1e-5, 1e-6)

    @check("graph: dense update, tutorial logistic (batch 600, 40 steps)")
    def _():
        return graph_vs_eager(cfg("logistic"), 40, 1e-5, 1e-6)

    @check("graph: autograd update, tutorial LeNet (batch 500, 20 steps)")
    def _():
        return graph_vs_eager(cfg("lenet", conv="gemm"), 20, 1e-4, 1e-5)  # gemm: the autograd update (cuDNN here)

    @check("graph: LeNet manual update, cuDNN layers on parallel streams (batch 500, 20 steps)")
    def _():
        return graph_vs_eager(cfg("lenet", conv="cudnn"), 20, 1e-4, 1e-5)

    @check("graph: LeNet manual update, fused Triton layers (batch 500, 20 steps)")
    def _():
        return graph_vs_eager(cfg("lenet", conv="triton"), 20, 1e-4, 1e-5)

    @check("LeNet conv = auto: the step variants measured (batch 500)")
    def _():
        c = cfg("lenet")
        m = build_model(c.model_args(), c.init_seed).to(DEV)
        s = graphs.GraphStep(m, c, DEV)
        return f"picked {s.kind}; ms per step {s.stats.get('lenet_step_ms')}"

    @check("graph: autograd update, momentum + Nesterov + onecycle lr in a device tensor (mlp-fast)")
    def _():
        c = cfg("mlp-fast") if "mlp-fast" in config.preset_names() else \
            cfg("mlp", momentum=0.9, nesterov=True, lr_schedule="onecycle", warmup_fraction=0.1, batch_size=128)
        return graph_vs_eager(c, 60, 1e-4, 1e-5)

    @check("graph: bf16 autocast (LeNet, batch 500, 10 steps)")
    def _():
        c = cfg("lenet", amp="bf16")
        data = rand_split(10 * 500)
        m = build_model(c.model_args(), c.init_seed).to(DEV)
        step = graphs.GraphStep(m, c, DEV)
        cost = float(step.run(data, 0, 10, lambda k: c.learning_rate))
        if not math.isfinite(cost) or (on_cuda() and step.stats["graph_replays"] != 1):
            raise AssertionError(f"cost {cost}, stats {step.stats}")
        return f"cost {cost / 10:.4f} per step"

    @check("fit: shuffled epochs through the fixed buffer, graphs vs eager CUDA")
    def _():
        data = splits(2000, 400)
        base = {"n_epochs": 3, "batch_size": 20, "shuffle": True, "patience": 100_000}
        spy = []
        real = loop.make_train_step
        loop.make_train_step = lambda *a, **k: spy.append(real(*a, **k)) or spy[-1]
        try:
            s1 = loop.fit(cfg("mlp", n_hidden=64, graphs="off", **base), data, None, quiet=True)
            s2 = loop.fit(cfg("mlp", n_hidden=64, **base), data, None, quiet=True)
        finally:
            loop.make_train_step = real
        st = spy[-1].stats
        if on_cuda() and (st["home_copies"] != 3 or st["graph_replays"] < 3):
            raise AssertionError(f"stats {st}")
        if abs(s1["best_validation_error"] - s2["best_validation_error"]) > 2.0:  # reassociation only
            raise AssertionError(f"{s1['best_validation_error']} vs {s2['best_validation_error']}")
        return f"valid {s1['best_validation_error']:.2f} % eager / {s2['best_validation_error']:.2f} % graphs, {st}"

    @check("fit: chunked streaming on a side stream equals resident (graphs on and off)")
    def _():
        data = splits(3000, 500)
        row = 784 * 4 + 8
        out = []
        for g in (("auto" if on_cuda() else "on"), "off"):
            base = {"n_epochs": 2, "batch_size": 20, "graphs": g, "patience": 100_000, "n_hidden": 64}
            a = loop.fit(cfg("mlp", **base), data, None, quiet=True)
            b = loop.fit(cfg("mlp", device_memory_budget=str(2 * 13 * 20 * row), **base), data, None, quiet=True)
            for k in ("best_validation_error", "test_error", "iterations"):
                if a[k] != b[k]:
                    raise AssertionError(f"graphs={g}: {k} {a[k]} resident vs {b[k]} chunked")
            out.append(f"graphs={g}: {a['train_seconds']:.2f} s resident / {b['train_seconds']:.2f} s chunked")
        return "; ".join(out)

    @check("fit: moved training images (augment_shift 2, shuffled), chunked equals resident on the device")
    def _():
        data = splits(3000, 500)
        row = 784 * 4 + 8
        base = {"n_epochs": 2, "batch_size": 20, "patience": 100_000, "n_hidden": 64, "shuffle": True,
                "augment_shift": 2}
        a = loop.fit(cfg("mlp", **base), data, None, quiet=True)
        b = loop.fit(cfg("mlp", device_memory_budget=str(2 * 13 * 20 * row), **base), data, None, quiet=True)
        plain = loop.fit(cfg("mlp", **{**base, "augment_shift": 0}), data, None, quiet=True)
        for k in ("best_validation_error", "test_error", "iterations"):
            if a[k] != b[k]:
                raise AssertionError(f"{k} {a[k]} resident vs {b[k]} chunked")
        return (f"{a['train_seconds']:.2f} s resident / {b['train_seconds']:.2f} s chunked / "
                f"{plain['train_seconds']:.2f} s without moves")

    @check("evaluation captured as a graph equals eager")
    def _():
        for preset in ("mlp", "lenet"):
            c = cfg(preset)
            m = build_model(c.model_args(), c.init_seed).to(DEV)
            split = rand_split(3100, seed=2)  # tutorial mode reads 3,000 rows, full 3,100: two graphs
            ev = graphs.GraphEvaluator(m)
            for mode in ("tutorial", "full"):
                a = loop.evaluate(m, split, 500, mode, ev)
                b = loop.evaluate(m, split, 500, mode)
                if a != b:
                    raise AssertionError(f"{preset} {mode}: {a} graph vs {b} eager")
            if on_cuda() and (len(ev.graphs) != 2 or ev.broken):
                raise AssertionError(f"graphs {len(ev.graphs)}, broken {ev.broken}")
        return "mlp, lenet; tutorial and full"

    @check("checkpoint of a CUDA graph run reloads into a graph step")
    def _():
        data = splits(1000, 200)
        c = cfg("mlp", n_hidden=32, n_epochs=2, batch_size=20, momentum=0.9)
        with tempfile.TemporaryDirectory() as d:
            run_dir = Path(d)
            loop.fit(c, data, run_dir, quiet=True)
            m = build_model(c.model_args(), c.init_seed).to(DEV)
            step = graphs.GraphStep(m, c, DEV)
            bufs = list(step.bufs)
            train_state.load_last(run_dir, m, step, EarlyStopping(c.patience))
            if not all(a is b for a, b in zip(step.bufs, bufs)) or float(bufs[0].abs().sum()) == 0:
                raise AssertionError("momentum buffers were not loaded into the static buffers")
        return "momentum buffers restored in place"

    if args.compile:
        @check("torch.compile (inductor) under CUDA graph capture, dense MLP step")
        def _():
            return graph_vs_eager(cfg("mlp", compile=True), 100, 1e-4, 1e-5)

    n_fail = sum(s == "FAIL" for _, s, _ in RESULTS)
    lines = [f"smoke: {len(RESULTS) - n_fail} PASS, {n_fail} FAIL in {time.perf_counter() - T0:.1f} s"]
    lines += [f"  {status}  {name}: {detail}" for name, status, detail in RESULTS]
    print("\n" + "\n".join(lines))
    if os.environ.get("OUT"):  # the summary also comes back as a file
        Path(os.environ["OUT"], "gpu_smoke.txt").write_text("\n".join(lines) + "\n")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
