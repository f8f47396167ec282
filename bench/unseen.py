#!/usr/bin/env python3
"""The fast presets on 10-class 28 x 28 grayscale sets nobody tuned them on (issue 15): does any seed
diverge, and what error do they reach? No setting is chosen here: each preset runs as it stands.

    python3 bench/unseen.py [--presets mlp-fast,lenet-fast] [--seeds 3] [--threads 1] [--sets digits,mnist-inverted,...]

Sets, written as IDX files into a temporary folder and trained on as `--dataset idx` (the last sixth of the
training images validates):
  digits            scikit-learn's copy of the UCI optical digits (1,797 images of 8 x 8, 17 grey levels),
                    each pixel made 3 x 3 and the 24 x 24 image centred in 28 x 28; 1,497 train+valid, the
                    last 300 test. Read from sklearn/datasets/data/digits.csv.gz (--digits-csv, or found through
                    an installed scikit-learn); skipped, saying why, where neither is at hand.
  fashion-mnist-inverted
                    Fashion-MNIST with every pixel v -> 255 - v (a white background: pixel statistics the
                    presets' earlier raw-pixel versions were never tried on)
  mnist-inverted    MNIST likewise
Prints a Markdown table (test error of the model selected on validation, training seconds, how it stopped).
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from deeptut.data.idx import write_idx  # noqa: E402


def digits_csv(path: str | None) -> Path:
    if path:
        return Path(path)
    try:
        import sklearn
    except ImportError as e:
        raise FileNotFoundError("no --digits-csv and scikit-learn is not installed") from e
    return Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"


def write_set(folder: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
              y_test: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x.astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))
    return folder


def make_digits(folder: Path, csv: Path) -> Path:
    with gzip.open(csv, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    x8 = table[:, :64].reshape(-1, 8, 8)  # 0..16
    y = table[:, 64].astype(np.uint8)
    big = np.kron(x8, np.ones((3, 3)))  # (n, 24, 24)
    x = np.zeros((len(y), 28, 28))
    x[:, 2:26, 2:26] = np.round(big * 255 / 16)
    return write_set(folder, x[:-300], y[:-300], x[-300:], y[-300:])


def make_inverted(folder: Path, name: str) -> Path:
    from deeptut.data.datasets import load_dataset

    d = load_dataset(name)
    # the loader gives value/256 in [0, 1): back to bytes, inverted
    def inv(x):
        return 255 - np.round(np.asarray(x).reshape(-1, 28, 28) * 256).astype(np.int64)
    x_train = np.concatenate([inv(d.train.x), inv(d.valid.x)])
    y_train = np.concatenate([np.asarray(d.train.y), np.asarray(d.valid.y)])
    return write_set(folder, x_train, y_train, inv(d.test.x), np.asarray(d.test.y))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="mlp-fast,lenet-fast")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0: the preset's")
    ap.add_argument("--sets", default="digits,fashion-mnist-inverted")
    ap.add_argument("--digits-csv")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="a config field for every run, as `deeptut train --KEY VALUE` takes it, e.g. "
                         "learning_rate=0.05")
    args = ap.parse_args(argv)

    from deeptut import config
    from deeptut.data.datasets import load_dataset
    from deeptut.errors import ConfigError, DataError, TrainingError

    extra = config.parse_overrides([f"--{kv}" for kv in args.override])  # as `deeptut train --KEY VALUE`
    from deeptut.train.loop import fit

    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs, load average "
          f"{[round(v, 2) for v in os.getloadavg()]}, overrides {extra}")
    print("| preset | set | seed | valid % | test % | train s | stopped |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="unseen") as tmp:
        folders = {}
        for name in args.sets.split(","):
            try:
                if name == "digits":
                    folders[name] = make_digits(Path(tmp, name), digits_csv(args.digits_csv))
                elif name.endswith("-inverted"):
                    folders[name] = make_inverted(Path(tmp, name), name[: -len("-inverted")])
                else:
                    raise SystemExit(f"--sets: unknown set {name!r}")
            except (OSError, DataError) as e:
                print(f"| - | {name} | - | - | - | - | skipped: {e} |")
        for preset in args.presets.split(","):
            for name, folder in folders.items():
                data = load_dataset("idx", folder)
                tests = []
                for seed in range(1, args.seeds + 1):
                    over = {"seed": seed, "device": "cpu", "dataset": "idx",
                            **({"threads": args.threads} if args.threads else {}), **extra}
                    cfg = config.resolve(preset, overrides=over)
                    try:
                        s = fit(cfg, data, quiet=True)
                    except TrainingError as e:
                        s = e.summary
                    except ConfigError as e:  # e.g. a batch larger than the set's validation split
                        print(f"| {preset} | {name} | {seed} | - | - | - | refused: {e} |", flush=True)
                        break
                    t = s["test_error"]
                    tests.append(t)
                    print(f"| {preset} | {name} | {seed} | {s['best_validation_error']:.2f} | "
                          f"{'-' if t is None else f'{t:.2f}'} | {s['train_seconds']:.1f} | {s['stopped']} |",
                          flush=True)
                ok = [t for t in tests if t is not None]
                if ok:
                    print(f"| {preset} | {name} | mean | | {statistics.mean(ok):.2f} | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
