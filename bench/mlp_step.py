"""Where the tutorial MLP's CPU step spends its time: the `mlp` preset's step (MLPFusedStep, `sparse = false`:
the kernels autograd calls, in its order) on MNIST minibatches of 20, at one thread.

    python bench/mlp_step.py [--steps 1000] [--out bench/results/mlp-step-<date>.json]

Prints the mean step time, the time of the two products with the 784 x 500 weights measured alone at the
same shapes (torch.addmm 20x784 @ 784x500 and torch.mm 784x20 @ 20x500), and torch.profiler's self time
per ATen op over 200 steps; writes all of it, with the machine and load, to --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from peer_tutorials import machine  # noqa: E402


def per_call(f, calls: int) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"mlp-step-{dt.date.today():%Y%m%d}.json")
    args = ap.parse_args()
    from deeptut import config
    from deeptut.accel import make_train_step
    from deeptut.data.datasets import load_for_config
    from deeptut.train.runner import prepare

    before = machine()
    cfg = config.resolve("mlp", None, {"threads": 1})
    data = load_for_config(cfg)
    device, model = prepare(cfg)
    step = make_train_step(model, cfg, device)
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    n = cfg.batch_size

    def one(i: int) -> None:
        j = (i % 2500) * n
        step(x[j:j + n], y[j:j + n], cfg.learning_rate)

    for i in range(50):
        one(i)
    t0 = time.perf_counter()
    for i in range(args.steps):
        one(i)
    step_s = (time.perf_counter() - t0) / args.steps
    W1 = model.hiddenLayer.W.detach()
    xb, h, dh = x[:n], torch.empty(n, W1.shape[1]), torch.randn(n, W1.shape[1])
    gW = torch.empty_like(W1)
    addmm_s = per_call(lambda: torch.addmm(model.hiddenLayer.b.detach(), xb, W1, out=h), 500)
    mm_s = per_call(lambda: torch.mm(xb.t(), dh, out=gW), 500)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(200):
            one(i)
    ops = sorted(((e.key, e.self_cpu_time_total / 200, e.count / 200) for e in prof.key_averages()),
                 key=lambda r: -r[1])[:12]
    out = {"machine_before": before, "machine_after": machine(), "torch": torch.__version__, "threads": 1,
           "step": type(step).__name__, "steps": args.steps, "step_ms": step_s * 1e3,
           "addmm_20x784x500_ms": addmm_s * 1e3, "mm_784x20x500_ms": mm_s * 1e3,
           "products_ms": (addmm_s + mm_s) * 1e3,
           "profile_per_step": [{"op": k, "self_us": us, "calls": c} for k, us, c in ops]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{before['cpu']}, {before['date']}, load {before['uptime'].split('load average:')[-1].strip()}")
    print(f"{out['step']}: {out['step_ms']:.3f} ms a step; the two products alone: addmm {addmm_s * 1e3:.3f} ms + "
          f"mm {mm_s * 1e3:.3f} ms = {out['products_ms']:.3f} ms")
    for k, us, c in ops:
        print(f"  {k:32s} {us:9.1f} us a step ({c:g} calls)")


if __name__ == "__main__":
    main()
