"""The thread count on a shared CPU machine (issue 24, point 1): one epoch of mlp-fast with --threads 1, 2 and
the default (0: torch's own, all cores), on the machine as it is ("idle": nothing of ours running) and with one
more busy process (a Python loop spinning on one core). Prints the 6-cell table (train seconds per cell, and
the default's time over the best of 1 and 2 threads per row) and writes the raw figures as JSON after every run
(a run cut short by --run-timeout is recorded as such, so the table always has its six cells).

    # the real table (~6 full mlp-fast epochs: 3-15 min on the 2-core EPYC, depending on load; run it quiet):
    python bench/threads.py --out bench/results/threads-20261206/threads.json
    # a smoke run of the script (1,200 training images, seconds a cell):
    python bench/threads.py --train-images 1200 --out /tmp/threads-smoke.json
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

THREADS = (1, 2, 0)  # 0: torch's default (every core)


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def one_epoch(threads: int, runs: Path, data_args: list[str], epochs: int, timeout: float) -> dict:
    """One `deeptut train mlp-fast` of `epochs` epochs at `threads`, in its own process (the thread pool is
    made at start-up): its summary's train_seconds, the wall time, the test error, the load before."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "deeptut", "train", "mlp-fast", "--n_epochs", str(epochs), "--threads",
           str(threads), "-q", "--runs-dir", str(runs), *data_args]
    row = {"threads": threads, "load_1min_before": round(load, 2)}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return row | {"train_seconds": None, "wall_seconds": round(time.perf_counter() - t0, 2),
                      "test_error": None, "line": f"stopped by --run-timeout {timeout:g} s"}
    wall = time.perf_counter() - t0
    run = max(runs.iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((run / "summary.json").read_text())
    return row | {"train_seconds": summary["train_seconds"], "wall_seconds": round(wall, 2),
                  "test_error": summary["test_error"], "line": out.stdout.strip()}


def table(rows: list[dict]) -> str:
    """The 6 cells: a row per condition (idle, one other busy process), a column per thread count (train s);
    the last column: the default's time over the best of 1 and 2 threads (the issue's bound: <= 1.3x)."""
    def cell(busy: bool, threads: int) -> str:
        r = [x for x in rows if x["extra_busy_process"] == busy and x["threads"] == threads]
        if not r:
            return "-"
        if any(x["train_seconds"] is None for x in r):
            return "timeout"
        return f"{min(x['train_seconds'] for x in r):.2f}"

    lines = ["machine                 | 1 thread s | 2 threads s | default s | default / best of 1, 2",
             "------------------------|------------|-------------|-----------|-----------------------"]
    for busy, name in ((False, "idle (as it is)"), (True, "one other busy process")):
        c = [cell(busy, t) for t in THREADS]
        try:
            ratio = f"{float(c[2]) / min(float(c[0]), float(c[1])):.2f}x"
        except ValueError:
            ratio = "-"
        lines.append(f"{name:<24}| {c[0]:>10} | {c[1]:>11} | {c[2]:>9} | {ratio:>22}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/threads-20261206/threads.json")
    ap.add_argument("--repeats", type=int, default=1, help="runs per cell (the table shows the fastest)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-images", type=int, default=0,
                    help="train on the first N MNIST training images (a slice; 0: all of MNIST, the real table)")
    ap.add_argument("--run-timeout", type=float, default=600.0, help="seconds one run may take (default 600)")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    result = {"machine": machine(), "uptime_before": subprocess.run(["uptime"], capture_output=True,
                                                                    text=True).stdout.strip(),
              "epochs": args.epochs, "train_images": args.train_images or 60_000, "rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        data_args: list[str] = []
        if args.train_images:
            from deeptut.api import small_mnist

            folder = small_mnist(Path(tmp) / "data", n_train=args.train_images, n_test=min(args.train_images, 10_000))
            data_args = ["--dataset", "idx", "--data-dir", str(folder)]
        for busy in (False, True):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                for _ in range(args.repeats):
                    for threads in THREADS:
                        r = one_epoch(threads, Path(tmp) / "runs", data_args, args.epochs, args.run_timeout)
                        r["extra_busy_process"] = busy
                        rows.append(r)
                        print(json.dumps(r), flush=True)
                        out.write_text(json.dumps(result, indent=1) + "\n")  # every row kept, whatever stops us
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result["table"] = table(rows)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{result['machine']}\nbefore: {result['uptime_before']}\nafter:  {result['uptime_after']}")
    print(f"mlp-fast, {args.epochs} epoch(s) on {result['train_images']:,} training images; train seconds "
          f"(fastest of {args.repeats})")
    print(result["table"])


if __name__ == "__main__":
    main()
