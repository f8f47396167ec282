#!/usr/bin/env python3
"""LeNet's training step on one GPU, measured: the step variants (accel/cuda/lenet_manual.py's manual update with
cuDNN or fused Triton conv-pool layers, the autograd step with cuDNN or GEMM convolutions), per step and per
epoch, in IEEE float32 and with TF32; kernel profiles; plain PyTorch's epoch for reference. Optionally a
sweep of mlp-fast settings over seeds (an MLP run takes ~1.5 s on a GPU and gives the CPU's errors).

    python3 bench/gpu_lenet.py [--epochs 6] [--parts variants,plain,profile,full,mlp] [--out DIR]
    python3 bench/gpu_lenet.py --device cpu --quick --epochs 3   # a dry run

Prints tables; writes gpu_lenet.json to --out (default $OUT, else bench/results/).

The sweeps (--parts lenet-fast, mlp) choose by mean validation error over seeds only (bench/selection.py):
they print each setting's validation error and the test error of the chosen setting alone; every run's test
error stays in gpu_lenet.json for audits and is never used for a choice. (Before 2026-11-28 they printed
both means side by side and chose nothing.)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import selection  # noqa: E402

from deeptut import config  # noqa: E402
from deeptut.data.datasets import load_dataset  # noqa: E402
from deeptut.errors import TrainingError  # noqa: E402
from deeptut.train import loop  # noqa: E402

T0 = time.perf_counter()
DEVICE = "cuda"  # --device cpu: a dry run


def log(msg: str) -> None:
    print(f"[+{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def _gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed_fit(preset: str, data: Any, overrides: dict[str, Any], gemm: tuple[bool, bool] | None = None
              ) -> dict[str, Any]:
    """fit() with a run directory (metrics.jsonl gives the time of every epoch); `gemm` overrides the conv
    choice per layer."""
    cfg = config.resolve(preset, overrides={"device": DEVICE, **overrides})
    real = loop.make_train_step

    def patched(model: Any, c: Any, device: Any) -> Any:
        step = real(model, c, device)
        if gemm is not None:
            step.forward.gemm = gemm  # the step's LeNetForward: its convolutions
        return step

    loop.make_train_step = patched
    try:
        with tempfile.TemporaryDirectory() as d:
            s = loop.fit(cfg, data, Path(d), quiet=True)
            el = [json.loads(line)["elapsed_s"] for line in open(Path(d) / "metrics.jsonl")]
    finally:
        loop.make_train_step = real
    n = len(el)
    per_epoch = (el[-1] - el[1]) / (n - 2) if n > 2 else None
    return {"train_seconds": s["train_seconds"], "epochs": s["epochs"], "s_per_epoch": per_epoch,
            "valid": s["best_validation_error"], "test": s["test_error"]}


def step_times(overrides: dict[str, Any], repeats: int = 20) -> dict[str, float]:
    """ms per training step of each LeNet step variant (accel/cuda/lenet_manual.py's candidates and the autograd
    step), as `conv = "auto"` measures them at the start of a run, on a random batch."""
    from deeptut.accel.cuda import lenet_manual
    from deeptut.accel.cuda.graphs import GraphStep
    from deeptut.models import build_model

    cfg = config.resolve("lenet", overrides={"device": DEVICE, **overrides})
    dev = torch.device(DEVICE)
    with loop.cuda_precision(cfg):
        model = build_model(cfg.model_args(), cfg.init_seed).to(dev)
        s = GraphStep(model, dataclasses.replace(cfg, conv="gemm"), dev)  # its state only: no choice made here
        return lenet_manual.measure(s.ref, s.params, s.bufs, cfg, model, *s._probe_batch(), repeats=repeats)[1]


def profile_written(data: Any, overrides: dict[str, Any], layers: tuple[str, str], steps: int = 20) -> list[str]:
    """Top kernels of `steps` eager steps of the LeNet manual update with these layer kinds."""
    from torch.profiler import ProfilerActivity, profile as prof

    from deeptut.accel.cuda import lenet_manual
    from deeptut.models import build_model
    from deeptut.steps import AutogradStep

    cfg = config.resolve("lenet", overrides={"device": DEVICE, **overrides})
    dev = torch.device(DEVICE)
    with loop.cuda_precision(cfg):
        model = build_model(cfg.model_args(), cfg.init_seed).to(dev)
        ref = AutogradStep(model, cfg)
        k = lenet_manual.LeNetManualUpdate(ref, list(model.parameters()), None, cfg, model, layers)
        x = torch.as_tensor(data.train.x[:cfg.batch_size]).to(dev)
        y = torch.as_tensor(data.train.y[:cfg.batch_size]).long().to(dev)
        acc = torch.zeros(1, 1, device=dev)
        for _ in range(3):
            k._step(x, y, cfg.learning_rate, acc)
        acts = [ProfilerActivity.CUDA] if DEVICE == "cuda" else [ProfilerActivity.CPU]
        with prof(activities=acts) as p:
            for _ in range(steps):
                k._step(x, y, cfg.learning_rate, acc)
            if DEVICE == "cuda":
                torch.cuda.synchronize()
    table = p.key_averages().table(sort_by=f"{'cuda' if DEVICE == 'cuda' else 'cpu'}_time_total", row_limit=16,
                                   max_name_column_width=60)
    return table.splitlines()


def sweep(preset: str, grid: dict[str, dict[str, Any]], data: Any, out: dict[str, Any], save: Any,
          quick: bool, max_seconds: float | None = None) -> str | None:
    """Each setting of `grid` (overrides on `preset`) over seeds 1-5 (1 on CPU), into out[name]: every run's
    validation and test errors and seconds. Chosen by mean validation error only (bench/selection.py; among
    the settings whose mean time fits `max_seconds`), into out["chosen"]; the test error is printed for the
    chosen setting only and kept in the raw runs for audits, never compared."""
    for name, over in grid.items():
        rows = []
        for seed in range(1, 6 if DEVICE == "cuda" else 2):
            cfg = config.resolve(preset, overrides={"device": DEVICE, "seed": seed, **over,
                                                    **({"n_epochs": 1} if quick else {})})
            try:
                s, failed = loop.fit(cfg, data, None, quiet=True), False
            except TrainingError as e:  # diverged: recorded, and its setting is not ranked
                s, failed = e.summary, True
            rows.append({"seed": seed, "valid": s["best_validation_error"], "test": s["test_error"],
                         "s": s["train_seconds"], "stopped": s.get("stopped"), "failed": failed})
        v = selection.summarize({name: rows})[name]
        out[name] = {"overrides": over, "runs": rows, "mean_valid": v["mean_valid"], "mean_s": v["mean_s"]}
        log(f"{preset} {name:24s} valid {v['mean_valid']:.3f} in {v['mean_s']:.2f} s: "
            + " ".join(f"{r['valid']:.2f}" for r in rows))
        save()
    table = {name: out[name]["runs"] for name in grid}
    chosen, lines = selection.report(table, max_seconds)
    out["chosen"] = chosen
    for line in lines:
        log(f"{preset} {line}")
    save()
    return chosen


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--parts", default="steps,variants,plain,profile",
                    help="comma list of: steps (ms per step of each step variant), variants (epochs of each), "
                         "plain, profile, full (the 200-epoch tutorial run: auto, manual cudnn, autograd "
                         "cudnn), lenet-fast (a lenet-fast-gpu sweep), mlp (an mlp-fast sweep; both over seeds "
                         "1-5)")
    ap.add_argument("--out")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run")
    ap.add_argument("--quick", action="store_true", help="a tenth of the data (dry runs)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    global DEVICE
    DEVICE = args.device
    out = Path(args.out or os.environ.get("OUT") or ROOT / "bench" / "results")
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                           "torch": torch.__version__,
                           "date": time.strftime("%Y-%m-%d %H:%M")}
    log(f"{res['device']}, torch {res['torch']}")
    data = load_dataset()
    if args.quick:
        from deeptut.data.datasets import Split, Splits

        tenth = [Split(s.x[:len(s.x) // 10], s.y[:len(s.y) // 10]) for s in (data.train, data.valid, data.test)]
        data = Splits(*tenth, source=data.source, name=data.name)

    def save() -> None:
        (out / "gpu_lenet.json").write_text(json.dumps(res, indent=1))

    res["steps"] = {}
    for name, over in (("batch 500, fp32", {"tf32": False}), ("batch 256, tf32", {"batch_size": 256, "tf32": True}),
                       ("batch 500, tf32", {"tf32": True})) if "steps" in parts else ():
        try:
            r = step_times(over)
        except Exception as e:  # noqa: BLE001
            r = {"error": f"{type(e).__name__}: {e}"}
        res["steps"][name] = r
        log(f"ms per step, {name:18s} {r}")
        save()
    ep = {"n_epochs": args.epochs, "patience": 10**9}
    variants = [  # (name, overrides, the gemm choice forced after the step is made: the autograd step's convolutions)
        ("autograd cudnn, fp32", {"tf32": False, "conv": "gemm"}, (False, False)),
        ("manual cudnn, fp32", {"tf32": False, "conv": "cudnn"}, None),
        ("triton, fp32", {"tf32": False, "conv": "triton"}, None),
        ("auto, fp32", {"tf32": False}, None),
        ("gemm both, fp32", {"tf32": False, "conv": "gemm"}, (True, True)),
        ("manual cudnn, tf32", {"tf32": True, "conv": "cudnn"}, None),
        ("triton, tf32", {"tf32": True, "conv": "triton"}, None),
        ("auto, tf32", {"tf32": True}, None),
    ]
    res["variants"] = {}
    for name, over, gemm in variants if "variants" in parts else []:
        try:
            r = timed_fit("lenet", data, {**ep, **over}, gemm)
        except Exception as e:  # noqa: BLE001
            r = {"error": f"{type(e).__name__}: {e}"}
        res["variants"][name] = r
        log(f"{name:28s} {r}")
        save()
    gb = _gpu_bench()
    res["plain"] = {}
    for tf32 in (False, True) if "plain" in parts else ():
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        cfg = config.resolve("lenet", overrides={"device": DEVICE})
        try:
            r = gb.plain_fit(cfg, data, torch.device(DEVICE), 4 if DEVICE == "cuda" else 1)
        except Exception as e:  # noqa: BLE001
            r = {"error": f"{type(e).__name__}: {e}"}
        res["plain"][f"tf32={tf32}"] = r
        log(f"plain PyTorch lenet, tf32={tf32}: {r}")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
    save()
    res["profiles"] = {}
    for name, layers in (("manual cudnn", ("cudnn", "cudnn")), ("triton", ("triton", "triton")),
                         ("triton layer 0", ("triton", "cudnn"))) if "profile" in parts else ():
        try:
            lines = profile_written(data, {"tf32": False}, layers)
        except Exception as e:  # noqa: BLE001
            lines = [f"{type(e).__name__}: {e}"]
        res["profiles"][name] = lines
        print(f"--- profile, {name}, fp32, 20 eager steps", *lines, sep="\n", flush=True)
    save()
    if "full" in parts:
        res["full"] = {}
        for name, over, gemm in (("auto (fp32)", {}, None), ("manual cudnn (fp32)", {"conv": "cudnn"}, None),
                                 ("autograd cudnn (fp32)", {"conv": "gemm"}, (False, False))):
            r = timed_fit("lenet", data, {**over, **({"n_epochs": args.epochs} if args.quick else {})}, gemm)
            res["full"][name] = r
            log(f"full tutorial lenet, {name}: {r}")
            save()
    if "lenet-fast" in parts:
        # A faster step buys epochs within the 2 s budget: choose by mean validation error among the
        # settings whose mean time fits (on the CPU dry run no time limit: it only checks the script runs)
        sweep("lenet-fast-gpu", {
            "preset": {},
            "10 epochs": {"n_epochs": 10},
            "14 epochs": {"n_epochs": 14},
            "16 epochs": {"n_epochs": 16},
            "lr 0.3": {"learning_rate": 0.3},
            "moves of 1 pixel": {"augment_shift": 1},
            "no moves, lr 0.3 (the preset before augment_shift)": {"augment_shift": 0, "learning_rate": 0.3},
        }, data, res.setdefault("lenet_fast_sweep", {}), save, args.quick,
            max_seconds=2.0 if DEVICE == "cuda" else None)
    if "mlp" in parts:
        sweep("mlp-fast", {
            "preset": {},
            "b256 lr0.6 e20": {"batch_size": 256, "learning_rate": 0.6, "n_epochs": 20},
            "b256 lr0.4 e20": {"batch_size": 256, "learning_rate": 0.4, "n_epochs": 20},
            "e20 warm0.3": {"n_epochs": 20, "warmup_fraction": 0.3},
            "mom0.95 lr0.15": {"momentum": 0.95, "learning_rate": 0.15},
            "L2 5e-5": {"L2_reg": 5e-5},
            "L2 2e-4": {"L2_reg": 2e-4},
            "lr0.2": {"learning_rate": 0.2},
            "cosine": {"lr_schedule": "cosine"},
        }, data, res.setdefault("mlp_sweep", {}), save, args.quick)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
