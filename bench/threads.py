"""The thread count on a shared CPU machine (issue 24, point 1): one epoch of mlp-fast with --threads 1, 2 and
the default (0: torch's own, all cores), on the machine as it is and with one more busy process (a Python
loop spinning on one core). Prints the table and writes the raw figures as JSON.

    python bench/threads.py [--out bench/results/threads-20261206/threads.json] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def one_epoch(threads: int, runs: Path) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "deeptut", "train", "mlp-fast", "--n_epochs", "1", "--threads",
                          str(threads), "-q", "--runs-dir", str(runs)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    run = max(runs.iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((run / "summary.json").read_text())
    return {"threads": threads, "train_seconds": summary["train_seconds"], "wall_seconds": round(wall, 2),
            "test_error": summary["test_error"], "load_1min_before": load, "line": out.stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/threads-20261206/threads.json")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for busy in (False, True):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                for _ in range(args.repeats):
                    for threads in (1, 2, 0):
                        r = one_epoch(threads, Path(tmp) / "runs")
                        r["extra_busy_process"] = busy
                        rows.append(r)
                        print(json.dumps(r), flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    result = {"machine": machine(), "uptime_after": subprocess.run(["uptime"], capture_output=True,
                                                                   text=True).stdout.strip(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{result['machine']}\n{result['uptime_after']}")
    print("extra busy process | threads | train s | wall s | load before | test error %")
    for r in rows:
        print(f"{'yes' if r['extra_busy_process'] else 'no':>18} | {r['threads'] or 'default':>7} | "
              f"{r['train_seconds']:7.2f} | {r['wall_seconds']:6.2f} | {r['load_1min_before']:11.2f} | "
              f"{r['test_error']:.4f}")


if __name__ == "__main__":
    main()
