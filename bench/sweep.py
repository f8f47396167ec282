"""Sweep throughput: trials per hour with 1 and 2 workers, local and Ray backends, the same sweep each time.

    python3 bench/sweep.py [--trials 6] [--epochs 400] [--backends local,ray] [--out bench/results/sweep.txt]

Each trial is tiny logistic regression on synthetic MNIST-shaped IDX data (500 training images, one thread,
`--epochs` epochs: ~1-3 s of training plus ~1.5 s of process start and imports), so the figures measure
the sweep machinery and the parallelism, not a model. Wall time counts everything `deeptut sweep` does,
including starting a local Ray runtime (--backend ray without --address) each time. The ratio printed is
(trials/hour with 2 workers) / (with 1); the goal on a 2-core machine is >= 1.8x.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from deeptut.data.idx import write_idx  # noqa: E402


def write_data(folder: Path, seed: int = 0) -> Path:
    """Ten noisy prototypes, as the tests' tiny set: 500 train + 100 validation, 100 test."""
    rng = np.random.default_rng(seed)
    protos = rng.random((10, 784))

    def make(n):
        y = rng.integers(0, 10, n)
        x = np.clip(protos[y] + 2.0 * rng.standard_normal((n, 784)), 0, 255 / 256)
        return (x * 256).astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 600), ("t10k", 100)):
        x, y = make(n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y)
    return folder


def spec_text(trials: int, epochs: int, checkpoint_every: int = 1, checkpoint_every_s: float | None = None) -> str:
    lrs = ", ".join(f"{0.005 * (i + 1):g}" for i in range(trials))
    return (f'name = "bench"\npreset = "logistic"\nseeds = [1]\n[base]\ndataset = "idx"\nbatch_size = 20\n'
            f"n_epochs = {epochs}\npatience = 1000000\nthreads = 1\ncheckpoint_every = {checkpoint_every}\n"
            + (f"checkpoint_every_s = {checkpoint_every_s}\n" if checkpoint_every_s is not None else "")
            + f"[grid]\nlearning_rate = [{lrs}]\n")


def run(backend: str, workers: int, spec: Path, data: Path, root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_USAGE_STATS_ENABLED": "0"}
    sweeps = root / f"{backend}-{workers}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deeptut", "sweep", str(spec), "--backend", backend, "--workers",
                    str(workers), "--data-dir", str(data), "--sweeps-dir", str(sweeps), "--quiet"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--backends", default="local,ray")
    ap.add_argument("--checkpoint-every", type=int, default=1,
                    help="the trials' checkpoint_every (1, the default: a checkpoint at each of the epochs' "
                         "validations; a large value: none but the last)")
    ap.add_argument("--checkpoint-every-s", type=float,
                    help="the trials' checkpoint_every_s (default: the sweep's default, 10 s; 0: a checkpoint at "
                         "every validation, as before 2026-11-28)")
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args()
    lines = [f"# bench/sweep.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}: "
             f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start",
             f"# {args.trials} trials of {args.epochs} epochs (tiny logistic, threads 1, checkpoint_every "
             f"{args.checkpoint_every}, checkpoint_every_s "
             f"{'the sweep default' if args.checkpoint_every_s is None else args.checkpoint_every_s})",
             "| backend | workers | wall s | trials/hour | 2 workers / 1 |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="dtbench") as tmp:
        root = Path(tmp)
        data = write_data(root / "data")
        spec = root / "spec.toml"
        spec.write_text(spec_text(args.trials, args.epochs, args.checkpoint_every,
                                 args.checkpoint_every_s))
        for backend in args.backends.split(","):
            try:
                if backend == "ray":
                    import ray  # noqa: F401
            except ImportError:
                lines.append("| ray | - | - | - | skipped: Ray is not installed |")
                continue
            per_hour = {}
            for workers in (1, 2):
                wall = run(backend, workers, spec, data, root)
                per_hour[workers] = args.trials / wall * 3600
                ratio = f"{per_hour[2] / per_hour[1]:.2f}x" if workers == 2 else ""
                lines.append(f"| {backend} | {workers} | {wall:.1f} | {per_hour[workers]:.0f} | {ratio} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
