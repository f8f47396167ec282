"""A pre-training epoch's time from the programs' own printed timers, for the full runs whose whole-process pairs
take too long to time (the SdA at the tutorial's batch 1: a peer process at 1 pre-training epoch prints 12.5
minutes of pre-training and 6.8 of fine-tuning on the 2-core EPYC, and one at 2 epochs adds 12.5 more).

    python bench/pretrain_epoch.py DIR --workload SdA [--gemm-stdout FILE | --peak GFLOPS]

DIR holds the logs that bench/cpu_roofline.py --full-runs writes (`<workload>-peer-e<n>-<pass>[b].log`,
`<workload>-deeptut-e<n>-<pass>.log`; each starts with the `$ command` line). Both programs time their
pre-training loop alone and print it: the tutorials "The pretraining code for file SdA.py ran for 12.79m",
deeptut "The pretraining code ran for 12.48m" (minutes, 2 decimals: 0.6 s resolution). That time leaves out
start-up, data, compilation (the tutorials build their functions before the timer starts) and fine-tuning.
Per epoch = printed time / pre-training epochs (read from the command line); the best (least) log of each side
is kept. The full run = the tutorial's epochs (cpu_roofline.FULL_RUNS) x per epoch; fraction of peak = those
epochs' product FLOPs (cpu_roofline's count) / peak / time. The peak is the best GFLOP/s of the GEMM lines that
cpu_roofline printed in the same sitting (--gemm-stdout) or --peak. Writes DIR/pretrain_epoch.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import cpu_roofline  # noqa: E402

PRINTED = re.compile(r"The pretraining code (?:for file \S+ )?ran for ([0-9.]+)m")
EPOCHS = re.compile(r"pretraining_epochs[= ](\d+)")
GEMM = re.compile(r"^gemm (\d+)x(\d+) @ \d+x(\d+): ([0-9.]+) GFLOP/s", re.M)


def read_log(path: Path) -> dict:
    """{'log', 'epochs', 'pretraining_s', 'per_epoch_s'} of one log; ValueError naming the file if a part is missing."""
    text = path.read_text()
    first = text.splitlines()[0] if text else ""
    e, t = EPOCHS.search(first), PRINTED.findall(text)
    if not first.startswith("$ ") or e is None:
        raise ValueError(f"{path}: the first line is not a `$ command` with pretraining_epochs")
    if len(t) != 1:
        raise ValueError(f"{path}: {len(t)} printed pre-training times where one was expected")
    epochs, secs = int(e.group(1)), float(t[0]) * 60
    return {"log": path.name, "epochs": epochs, "pretraining_s": secs, "per_epoch_s": secs / epochs}


def peak_of(gemm_stdout: str) -> dict:
    rows = [(float(g), [int(m), int(k), int(n)]) for m, k, n, g in GEMM.findall(gemm_stdout)]
    if not rows:
        raise ValueError("no `gemm MxK @ KxN: G GFLOP/s` lines")
    g, shape = max(rows)
    return {"gflops": g, "shape": shape}


def summarise(logs: dict[str, list[dict]], workload: str, peak_gflops: float) -> dict:
    fr = cpu_roofline.FULL_RUNS[workload]
    best = {side: min(rows, key=lambda r: r["per_epoch_s"]) for side, rows in logs.items()}
    full = {side: fr.n_full * b["per_epoch_s"] for side, b in best.items()}
    t_peak = fr.n_full * fr.epoch_flops() / (peak_gflops * 1e9)
    return {"workload": workload, "what": fr.what, "n_full": fr.n_full, "logs": logs,
            "peer_per_epoch_s": best["peer"]["per_epoch_s"], "deeptut_per_epoch_s": best["deeptut"]["per_epoch_s"],
            "peer_full_s": full["peer"], "deeptut_full_s": full["deeptut"], "ratio": full["peer"] / full["deeptut"],
            "t_peak_s": t_peak, "deeptut_frac": t_peak / full["deeptut"], "peer_frac": t_peak / full["peer"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--workload", required=True, choices=["SdA", "DBN"])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--gemm-stdout", type=Path, help="cpu_roofline.py's printed output of the same sitting")
    src.add_argument("--peak", type=float, help="GFLOP/s")
    args = ap.parse_args()
    logs = {side: [read_log(p) for p in sorted(args.dir.glob(f"{args.workload}-{side}-e*.log"))]
            for side in ("peer", "deeptut")}
    for side, rows in logs.items():
        if not rows:
            ap.error(f"{args.dir}: no {args.workload}-{side}-e*.log")
    peak = peak_of(args.gemm_stdout.read_text()) if args.gemm_stdout else {"gflops": args.peak, "shape": None}
    out = {"peak": peak, "gemm_stdout": str(args.gemm_stdout) if args.gemm_stdout else None,
           **summarise(logs, args.workload, peak["gflops"])}
    (args.dir / "pretrain_epoch.json").write_text(json.dumps(out, indent=1) + "\n")
    md = [f"# {out['what']}: from the printed pre-training timers", "",
          f"GEMM peak {peak['gflops']:.1f} GFLOP/s" + (f" ({peak['shape']})" if peak["shape"] else ""), "",
          "| side | log | pre-training epochs | printed, s | s an epoch |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {side} | {r['log']} | {r['epochs']} | {r['pretraining_s']:.1f} | {r['per_epoch_s']:.1f} |"
           for side, rows in logs.items() for r in rows]
    md += ["", f"Full run ({out['n_full']} epochs): original {out['peer_full_s']:.0f} s, deeptut "
           f"{out['deeptut_full_s']:.0f} s, ratio {out['ratio']:.2f}x; at the peak {out['t_peak_s']:.0f} s: deeptut "
           f"{out['deeptut_frac']:.1%}, original {out['peer_frac']:.1%} of the peak", ""]
    (args.dir / "pretrain_epoch.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
