"""The HMC chapter's test (the hmc preset) over several momentum seeds: the chapter's printed block and the
figures the issue's targets are judged on, one run directory per seed.

    python bench/hmc_seeds.py [--seeds 1 2 3 4 5] [--out bench/results/hmc-20261206]

Writes OUT/seed-S/ (the run directory: config.json, summary.json, samples.safetensors, ...), OUT/seed-S.log
(what the run printed) and OUT/seeds.json: per seed the final acceptance rate and step size, the largest
errors of the empirical mean and covariance, R-hat, ESS and the sampling seconds, with the targets
(acceptance within 0.1 of 0.9; errors at most twice the published 0.048 / 0.063), the machine, the load
average and the versions. One thread (--threads 1), as every figure in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deeptut import config
from deeptut.train.runner import train

TARGETS = {"acceptance_within": 0.1, "max_abs_mean_error": 2 * 0.048, "max_abs_cov_error": 2 * 0.063}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--out", default="bench/results/hmc-20261206")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        cfg = config.resolve("hmc", None, {"seed": seed, "threads": args.threads})
        run_dir = out / f"seed-{seed}"
        if run_dir.exists():
            raise SystemExit(f"{run_dir} exists: remove it or pick another --out")
        load_before = os.getloadavg()[0]
        buf = io.StringIO()
        t = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            s = train(cfg, None, run_dir)
        wall = time.perf_counter() - t
        (out / f"seed-{seed}.log").write_text(buf.getvalue())
        row = {"seed": seed, "final_acceptance_rate": s["final_acceptance_rate"],
               "final_stepsize": s["final_stepsize"], "max_abs_mean_error": s["max_abs_mean_error"],
               "max_abs_cov_error": s["max_abs_cov_error"], "split_rhat_max": max(s["split_rhat"]),
               "ess_min": min(s["ess"]), "ess_per_second_min": min(s["ess_per_second"]),
               "sample_seconds": s["sample_seconds"], "wall_seconds": round(wall, 2),
               "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}
        row["meets_targets"] = bool(abs(row["final_acceptance_rate"] - 0.9) < TARGETS["acceptance_within"]
                                    and row["max_abs_mean_error"] <= TARGETS["max_abs_mean_error"]
                                    and row["max_abs_cov_error"] <= TARGETS["max_abs_cov_error"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "what": "deeptut train hmc (test_hmc.py: dim 5, 3 chains, 1000 burn-in + 1000 kept) over momentum seeds",
        "targets": TARGETS, "published": {"final_acceptance_rate": 0.922502043428, "final_stepsize": 0.460446628091,
                                          "max_abs_mean_error": 0.048, "max_abs_cov_error": 0.063},
        "runs": rows, "all_meet_targets": all(r["meets_targets"] for r in rows),
        "mean_max_abs_mean_error": float(np.mean([r["max_abs_mean_error"] for r in rows])),
        "mean_max_abs_cov_error": float(np.mean([r["max_abs_cov_error"] for r in rows])),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "threads": args.threads},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join([sys.executable, *sys.argv]),
    }
    (out / "seeds.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"all meet the targets: {result['all_meet_targets']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
