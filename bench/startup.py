"""Start-up: a 1-epoch logistic run as a whole process (issue 27's goal: <= 1.5 s on a quiet machine).

    python bench/startup.py [--repeats 7] [--threads 1] [--out-dir bench/results/startup-<date>]

Times, as whole processes from outside (start to exit, wall clock), one after the other in turn:
  torch-free  `python -m deeptut train logistic --n_epochs 1 --quiet` (train/torchless.py: no torch imported)
  cold data   the same, with the decoded copies of the IDX files removed before each run (data/datasets.py
              decodes the .gz files again and writes the copies: a first run's data cost)
  with torch  the same with DEEPTUT_TORCHLESS=0 (fit, train/loop.py: what every run did before)
  import torch  `python -c "import torch"` (the floor of any run that imports torch)
and prints each one's median and fastest, and the ratios against the torch-free run measured in the same
sitting. The printed result line of every run must be the same (the torch-free run is fit's, bit for bit).
Writes <out-dir>/startup.json (every run, the machine, the load before and after) and startup.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from peer_tutorials import machine  # noqa: E402  (lscpu model, cores, uptime, date)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str, int]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    return time.perf_counter() - t0, (r.stdout + r.stderr).strip(), r.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results" / f"startup-{dt.date.today():%Y%m%d}")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    from deeptut.data.datasets import decoded_dir

    tmp = Path(tempfile.mkdtemp(prefix="startup-"))
    train = [sys.executable, "-m", "deeptut", "train", "logistic", "--n_epochs", "1", "--quiet",
             "--threads", str(args.threads)]
    base = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    kinds = {
        "torch-free": (train, {}),
        "cold data": (train, {}),
        "with torch": (train, {"DEEPTUT_TORCHLESS": "0"}),
        "import torch": ([sys.executable, "-c", "import torch"], {}),
    }
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    before = machine()
    timed(train + ["--run-dir", str(tmp / "warm")], base)  # the C kernel built, the decoded copies written
    for i in range(args.repeats):
        for kind, (cmd, extra) in kinds.items():
            if kind == "cold data":
                shutil.rmtree(decoded_dir("mnist"), ignore_errors=True)
            full = cmd + (["--run-dir", str(tmp / f"{kind}-{i}".replace(" ", "-"))] if cmd is train else [])
            wall, out, rc = timed(full, {**base, **extra})
            result = out.splitlines()[-1].split(" (")[0] if cmd is train and out else ""  # without the timing
            runs[kind].append({"wall_s": round(wall, 4), "rc": rc, "result": result})
    shutil.rmtree(tmp, ignore_errors=True)
    after = machine()
    results = {r["result"] for k in ("torch-free", "cold data", "with torch") for r in runs[k]}
    ref = statistics.median(r["wall_s"] for r in runs["torch-free"])
    rows = []
    for kind, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        rows.append({"kind": kind, "median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
                     "max_s": round(max(walls), 3), "ratio_to_torch_free": round(statistics.median(walls) / ref, 2),
                     "rc": sorted({r["rc"] for r in rs})})
    out = {"machine_before": before, "machine_after": after, "repeats": args.repeats, "threads": args.threads,
           "python": sys.version.split()[0], "rows": rows, "runs": runs,
           "same_result": len(results) == 1, "result": sorted(results)}
    (args.out_dir / "startup.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"{before['cpu']}, {before['nproc']} CPUs, {before['date']}, load before: {before['uptime']}",
             f"{args.repeats} runs each, in turn, --threads {args.threads}; printed result the same in every run: "
             f"{out['same_result']} ({'; '.join(out['result'])})", "",
             "| process | median, s | fastest, s | slowest, s | median / torch-free |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['kind']} | {r['median_s']} | {r['min_s']} | {r['max_s']} | {r['ratio_to_torch_free']}x |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    (args.out_dir / "startup.md").write_text(text)
    print(text, end="")
    print(f"load after: {after['uptime']}")


if __name__ == "__main__":
    main()
