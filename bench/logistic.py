"""The tutorial logistic regression run, timed: deeptut's `fit` against a plain-PyTorch implementation of
the same loop (same data, same early stopping), in the same process, alternating A/B.

    python bench/logistic.py [--repeats 3] [--json out.json]

Prints a table of training seconds (data loading excluded) and the ratio plain / deeptut, and checks that
both reach the published 7.500000 % / 7.489583 % after 74 epochs. Each run also records the CPU seconds its
process used while training (all threads) and the 1-minute load average before and after: on a 2-core
machine shared with other work the wall seconds grow with the load (the same commit measured 1.3 s and 6 s
on one machine, bench/results/logistic-xeon-avx512-20261128.md) while the CPU seconds hardly move, so a
figure is quoted with its load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from deeptut import config
from deeptut.data.datasets import load_dataset
from deeptut.train.loop import fit


def plain_pytorch(data, lr=0.13, batch_size=600, n_epochs=1000, patience=5000, patience_increase=2,
                  improvement_threshold=0.995):
    """What a PyTorch user would write: parameters, autograd, torch.optim.SGD, minibatches by slicing."""
    tx, ty = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    vx, vy = torch.from_numpy(data.valid.x), torch.from_numpy(data.valid.y)
    sx, sy = torch.from_numpy(data.test.x), torch.from_numpy(data.test.y)
    W = torch.zeros(784, 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    opt = torch.optim.SGD([W, b], lr=lr)
    n_train_batches = len(tx) // batch_size

    def error(x, y):
        with torch.no_grad():
            return float(np.mean([((x[i:i + batch_size] @ W + b).argmax(1) != y[i:i + batch_size])
                                  .double().mean().item() for i in range(0, len(x) // batch_size * batch_size,
                                                                         batch_size)]))

    validation_frequency = min(n_train_batches, patience // 2)
    best, test_score, epoch, done = math.inf, None, 0, False
    start = time.perf_counter()
    while epoch < n_epochs and not done:
        epoch += 1
        for i in range(n_train_batches):
            x, y = tx[i * batch_size:(i + 1) * batch_size], ty[i * batch_size:(i + 1) * batch_size]
            loss = torch.nn.functional.cross_entropy(x @ W + b, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            it = (epoch - 1) * n_train_batches + i
            if (it + 1) % validation_frequency == 0:
                v = error(vx, vy)
                if v < best:
                    if v < best * improvement_threshold:
                        patience = max(patience, it * patience_increase)
                    best, test_score = v, error(sx, sy)
            if patience <= it:
                done = True
                break
    return time.perf_counter() - start, best * 100, test_score * 100, epoch


def run_one(which: str) -> dict:
    data = load_dataset()
    load0, cpu0 = os.getloadavg()[0], time.process_time()
    if which == "deeptut":
        s = fit(config.resolve("logistic", overrides={"device": "cpu"}), data, quiet=True)
        r = {"train_s": s["train_seconds"], "valid": s["best_validation_error"], "test": s["test_error"],
             "epochs": s["epochs"]}
    else:
        t, v, te, ep = plain_pytorch(data)
        r = {"train_s": t, "valid": v, "test": te, "epochs": ep}
    r["cpu_s"] = time.process_time() - cpu0  # the whole fit, all threads (includes its set-up)
    r["load"] = [load0, os.getloadavg()[0]]  # 1-minute load average before and after
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--one", choices=["deeptut", "plain"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    # Each run in a fresh process, alternating, so neither inherits the other's thread pools or caches.
    names = {"deeptut": "deeptut", "plain": "plain PyTorch"}
    runs = {k: [] for k in names}
    for r in range(args.repeats):
        for which in names:
            out = subprocess.run([sys.executable, __file__, "--one", which], capture_output=True, text=True,
                                 check=True).stdout
            runs[which].append(json.loads(out.strip().splitlines()[-1]))
        print(f"repeat {r + 1}: " + ", ".join(f"{names[k]} {v[-1]['train_s']:.2f} s" for k, v in runs.items()),
              flush=True)
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True,
                         text=True).stdout.strip()
    print(f"\nTutorial logistic regression, full run; {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"numpy {np.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"| implementation | train s (median of {args.repeats}) | min | max | CPU s (median) | valid % | test % "
          "| epochs |")
    print("|---|---|---|---|---|---|---|---|")
    med = {}
    for k, rs in runs.items():
        ts = [x["train_s"] for x in rs]
        med[k] = statistics.median(ts)
        cpus = statistics.median(x["cpu_s"] for x in rs)
        print(f"| {names[k]} | {med[k]:.2f} | {min(ts):.2f} | {max(ts):.2f} | {cpus:.2f} | {rs[-1]['valid']:f} | "
              f"{rs[-1]['test']:f} | {rs[-1]['epochs']} |")
    loads = [a for rs in runs.values() for x in rs for a in x["load"]]
    print(f"\n1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f} "
          f"(the bench's own process counts about 1-2)")
    ratio = med["plain"] / med["deeptut"]
    print(f"\nratio plain PyTorch / deeptut: {ratio:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "ratio": ratio, "cpu": cpu, "torch": torch.__version__,
                       "numpy": np.__version__, "platform": platform.platform(),
                       "date": time.strftime("%Y-%m-%d")}, f, indent=2)


if __name__ == "__main__":
    main()
