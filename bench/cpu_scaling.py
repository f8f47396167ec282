#!/usr/bin/env python3
"""Do this machine's CPUs run two one-thread jobs at once as fast as one alone? (issue 16: a sweep's 2-worker
throughput against 1 worker.)

    python3 bench/cpu_scaling.py [--repeats 3] [--seconds 4]

Each workload is a separate Python process pinned to one thread (OMP/MKL/OpenBLAS/torch), doing a fixed
amount of work; it is timed alone, then two copies are started together. The ratio printed is the
throughput of two at once over one alone: 2 x t_alone / t_pair (2.0: the two CPUs act as two whole cores;
1.0: no gain). Workloads, from no memory traffic to a sweep trial's own step:
  scalar     a pure-Python integer loop (registers and L1 only)
  matmul     float32 256x256 matrix products with torch at one thread (cache-resident, AVX-512 FMA)
  stream     sums over a 256 MB float32 array (main-memory bandwidth)
  logistic   deeptut's logistic-regression training step on a 600 x 784 minibatch at one thread
             (the sweep benchmark's trials: bench/sweep.py)
Medians over --repeats. The load average is printed before and after: other work on the machine changes
every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each snippet calibrates nothing: it does N units of work, N set from --seconds by one timed pilot run.
WORKLOADS = {
    "scalar": "s = 0\nfor i in range(N * 1_000_000):\n    s += i & 7\n",
    "matmul": ("import torch\ntorch.set_num_threads(1)\na = torch.rand(256, 256)\nb = torch.rand(256, 256)\n"
               "for _ in range(N * 200):\n    c = a @ b\n"),
    "stream": ("import torch\ntorch.set_num_threads(1)\nx = torch.ones(64 * 2**20)\n"
               "for _ in range(N * 4):\n    x.sum()\n"),
    "logistic": ("import sys, torch\nsys.path.insert(0, {src!r})\ntorch.set_num_threads(1)\n"
                 "from deeptut import config\nfrom deeptut.accel import make_train_step\n"
                 "from deeptut.models import build_model\n"
                 "cfg = config.resolve('logistic', overrides={{'device': 'cpu', 'threads': 1}})\n"
                 "model = build_model(cfg.model_args(), cfg.init_seed)\n"
                 "step = make_train_step(model, cfg, torch.device('cpu'))\n"
                 "g = torch.Generator().manual_seed(0)\nx = torch.rand(600, 784, generator=g)\n"
                 "y = torch.randint(0, 10, (600,), generator=g)\n"
                 "for _ in range(N * 100):\n    step(x, y, 0.13)\n"),
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def program(name: str, n: int) -> str:
    body = WORKLOADS[name].format(src=str(ROOT / "src")) if name == "logistic" else WORKLOADS[name]
    # the clock starts after imports and set-up: process start is not the question here
    lines = body.split("\n")
    loop = next(i for i, ln in enumerate(lines) if ln.startswith("for "))
    return "\n".join([f"N = {n}", *lines[:loop], "import time as _t\n_t0 = _t.perf_counter()", *lines[loop:],
                      "print(_t.perf_counter() - _t0)"])


def run(name: str, n: int, copies: int) -> list[float]:
    env = {**os.environ, **ONE_THREAD}
    procs = [subprocess.Popen([sys.executable, "-c", program(name, n)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(copies)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"{name}: a worker failed")
    return [float(o.strip().splitlines()[-1]) for o in outs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="about how long one job runs alone")
    ap.add_argument("--only", help="comma-separated workloads")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(WORKLOADS)
    model = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                  .stdout.splitlines() if ln.startswith("Model name")), "?")
    print(f"{model}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M %Z')}, load average "
          f"{[round(v, 2) for v in os.getloadavg()]}")
    print("| workload | one alone s | two at once s (each) | throughput 2 / 1 |\n|---|---|---|---|")
    for name in names:
        pilot = run(name, 1, 1)[0]
        n = max(1, round(args.seconds / max(pilot, 1e-3)))
        alone, pair = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same drift in load
            alone.append(run(name, n, 1)[0])
            pair.append(max(run(name, n, 2)))
        a, p = statistics.median(alone), statistics.median(pair)
        print(f"| {name} | {a:.2f} | {p:.2f} | {2 * a / p:.2f}x |", flush=True)
    print(f"load average after: {[round(v, 2) for v in os.getloadavg()]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
