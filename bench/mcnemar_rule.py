#!/usr/bin/env python3
"""Early stopping by McNemar's test against the tutorials' 0.995 threshold on one preset (issue 16):
the same run twice, `improvement = "threshold"` and `"mcnemar"`, everything else equal; prints epochs run,
best validation error, the selected model's test error and training seconds for each.

    python3 bench/mcnemar_rule.py --preset lenet --device cuda [--alpha 0.05] [--override conv=cudnn]
    python3 bench/mcnemar_rule.py --preset logistic --device cpu --quick     # a dry run (a tenth of the data)

On CUDA pass `--override conv=cudnn` for LeNet: `conv = auto` picks its kernels by a timing at the start of
each run, so two runs could use different arithmetic; a fixed choice keeps the comparison about the rule.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="lenet")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="any config field, for both runs, as `deeptut train --KEY VALUE` takes it")
    ap.add_argument("--quick", action="store_true", help="a tenth of the data (dry runs)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    import torch

    from deeptut import config
    from deeptut.data.datasets import Split, Splits, load_dataset
    from deeptut.train.loop import fit

    common = {"device": args.device, **config.parse_overrides([f"--{kv}" for kv in args.override])}
    rules = {"threshold 0.995": {"improvement": "threshold"},
             f"mcnemar, alpha {args.alpha}": {"improvement": "mcnemar", "mcnemar_alpha": args.alpha}}
    cfgs = {name: config.resolve(args.preset, overrides={**common, **over}) for name, over in rules.items()}
    data = load_dataset(next(iter(cfgs.values())).dataset)
    if args.quick:
        data = Splits(*[Split(s.x[:len(s.x) // 10], s.y[:len(s.y) // 10])
                        for s in (data.train, data.valid, data.test)], source=data.source, name=data.name)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    res = {"preset": args.preset, "device": dev, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
           "overrides": common, "quick": args.quick, "rows": {}}
    print(f"{args.preset} on {dev}, torch {torch.__version__}, overrides {common}")
    print("| rule | epochs | best validation % | test % | train s |\n|---|---|---|---|---|")
    for name, cfg in cfgs.items():
        s = fit(cfg, data, quiet=True)
        res["rows"][name] = {k: s[k] for k in ("epochs", "best_iteration", "best_validation_error", "test_error",
                                               "train_seconds", "stopped")}
        print(f"| {name} | {s['epochs']} | {s['best_validation_error']:.4f} | {s['test_error']:.4f} | "
              f"{s['train_seconds']:.1f} |", flush=True)
    out = (Path(args.out) if args.out else Path(os.environ["OUT"], f"mcnemar-{args.preset}.json")
           if os.environ.get("OUT") else None)
    if out:
        out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
