#!/usr/bin/env python3
"""LeNet's Triton kernels (accel/cuda/lenet_triton.py) compiled ahead of time for an NVIDIA GPU, without one:
registers and spills (stack bytes) per thread for each launch configuration, at the tutorial LeNet's two
layer shapes, in both precisions. What CONFIGS lists was chosen from this table (spill-free, larger tiles
first); the GPU then times the listed ones at the start of a run.

    python3 bench/triton_aot.py [--arch 90] [--all] [--first] [--precision ieee|tf32] [--out FILE]
    # --all: the whole grid, not only CONFIGS (minutes); --first: each list's first configuration only

Needs Triton with its NVIDIA backend (pip install triton); no GPU, no CUDA driver.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.pop("TRITON_INTERPRET", None)  # compile, not interpret
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from deeptut.accel.cuda import lenet_triton as lt  # noqa: E402
from deeptut.accel.cuda.triton_compile import compile_for_gpu  # noqa: E402

LAYERS = {"layer0": (1, 28, 20), "layer1": (20, 12, 50)}  # (in maps, input side, out maps)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (80: A100, 90: H100/H200)")
    ap.add_argument("--all", action="store_true", help="every BLOCK_R x BLOCK_K x warps combination")
    ap.add_argument("--first", action="store_true", help="only the first (default) configuration of each list")
    ap.add_argument("--precision", choices=["ieee", "tf32"], help="only this precision")
    ap.add_argument("--out", help="JSON file (default: print only)")
    args = ap.parse_args()
    if lt.triton is None:
        print("Triton is not installed", file=sys.stderr)
        return 2
    rows = []
    precisions = (args.precision,) if args.precision else ("ieee", "tf32")
    for (layer, (ic, h, oc)), kernel, prec in itertools.product(LAYERS.items(), ("forward", "weight_grad"),
                                                                precisions):
        k = ic * 25
        if args.all:
            grid = [(r, b, w) for r, b, w in itertools.product((16, 32, 64, 128), (16, 32, 64), (2, 4, 8))
                    if b <= max(16, lt._pow2(k))]
            cands = grid if kernel == "forward" else [(r, b, 2, w) for r, b, w in grid]
        else:
            cands = lt.configs(kernel, k, prec)[:1 if args.first else None]
        for c in cands:
            t = time.perf_counter()
            try:
                reg, stack = compile_for_gpu(kernel, ic, h, oc, c, prec, args.arch)
                row = {"layer": layer, "kernel": kernel, "precision": prec, "config": c, "registers": reg,
                       "stack_bytes": stack}
            except Exception as e:  # noqa: BLE001
                row = {"layer": layer, "kernel": kernel, "precision": prec, "config": c,
                       "error": f"{type(e).__name__}: {str(e)[:300]}"}
            rows.append(row)
            print(f"{layer} {kernel:11s} {prec} {str(c):18s} "
                  + (f"{row['registers']:3d} registers, {row['stack_bytes']:5d} stack bytes"
                     if "error" not in row else row["error"]) + f"  ({time.perf_counter() - t:.1f} s)",
                  flush=True)
    for layer, (ic, h, oc) in list(LAYERS.items())[1:]:  # the data gradient's col2im: layer 1 only
        t = time.perf_counter()
        try:
            reg, stack = compile_for_gpu("fold", ic, h, oc, (512, 4), "ieee", args.arch)
            row = {"layer": layer, "kernel": "fold", "config": (512, 4), "registers": reg, "stack_bytes": stack}
        except Exception as e:  # noqa: BLE001
            row = {"layer": layer, "kernel": "fold", "config": (512, 4), "error": f"{type(e).__name__}: {e}"[:300]}
        rows.append(row)
        print(f"{layer} fold        -    (512, 4)           "
              + (f"{row['registers']:3d} registers, {row['stack_bytes']:5d} stack bytes"
                 if "error" not in row else row["error"]) + f"  ({time.perf_counter() - t:.1f} s)", flush=True)
    from deeptut.accel.cuda import tail_triton

    for prec in precisions:  # the dense tail: LeNet's 500 hidden units, 10 classes
        for c in tail_triton.CONFIGS[:1 if args.first else None]:
            try:
                reg, stack = compile_for_gpu("tail", 500, 0, 10, c, prec, args.arch)
                row = {"layer": "dense", "kernel": "tail", "precision": prec, "config": c, "registers": reg,
                       "stack_bytes": stack}
            except Exception as e:  # noqa: BLE001
                row = {"layer": "dense", "kernel": "tail", "precision": prec, "config": c,
                       "error": f"{type(e).__name__}: {e}"[:300]}
            rows.append(row)
            print(f"dense  tail        {prec} {str(c):18s} "
                  + (f"{row['registers']:3d} registers, {row['stack_bytes']:5d} stack bytes"
                     if "error" not in row else row["error"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"arch": args.arch, "triton": lt.triton.__version__, "rows": rows},
                                             indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
