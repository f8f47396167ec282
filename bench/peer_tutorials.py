"""The original tutorials as a peer: each workload of their own test.py speed(), run with the tutorials' code on
PyTensor and with deeptut, one after the other on this machine, whole processes.

    python bench/peer_tutorials.py [--peer DIR] [--peer-python PY] [--workloads logistic_sgd,mlp,...]
                                   [--passes 1] [--threads 1] [--out-dir bench/results/peer-<date>]

The peer is ../shared/peers/dlt_pytensor/ (the tutorials' code, unchanged, a shim mapping `theano` onto
PyTensor, and run.sh, which runs one workload and prints `wall_s SECONDS` last; its README says how to set it
up). None of its code is copied here: this script only starts run.sh as a process and reads what it prints.
A workload is skipped, with its reason, where the peer folder, its run.sh, the peer's Python or PyTensor is
missing, or deeptut has no counterpart (NO_COUNTERPART; none since the logistic-cg and hmc presets).

Per workload and pass: the peer's process (`run.sh W PY`, its own `wall_s`, compilation included: PyTensor
caches compiled code in its compiledir, so pass 1 may include compiling and later passes not), then deeptut's
process(es) doing the same work (`python -m deeptut train ...`, timed here, start-up included; dA and rbm are
two deeptut processes, as the tutorial does two things in one call: both are counted). Both at --threads
(OMP/OpenBLAS threads for the peer, `--threads` for deeptut). Printed values are compared where the arithmetic
is deterministic: logistic_sgd's and mlp's validation and test errors per epoch as printed (%f, to the printed
digits), the dA's epoch costs without corruption (to 1e-5 relative); dA at 30 %, SdA, DBN, rbm and hmc draw
random numbers from different generators, and logistic_cg prints its lines in another form (SciPy's CG, float64
sums), so their values are not compared (`-`).

Writes <out-dir>/peer.json (every pass: times, printed values, agreement, machine, load before/after),
<out-dir>/<workload>-<impl>-<pass>.log (each process's whole output) and <out-dir>/peer.md (the table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "dlt_pytensor"

# workload -> (what test.py speed() runs, deeptut's processes (argument lists after `python -m deeptut`),
#              which printed values are deterministic: "valid" (logistic/mlp lines), "da0" (dA, corruption 0))
WORKLOADS: dict[str, tuple[str, list[list[str]] | None, str | None]] = {
    "logistic_sgd": ("logistic_sgd, 30 epochs",
                     [["train", "logistic", "--n_epochs", "30"]], "valid"),
    "logistic_cg": ("logistic_cg, 30 epochs", [["train", "logistic-cg", "--n_epochs", "30"]], None),
    "mlp": ("mlp, 5 epochs (batch 20)", [["train", "mlp", "--n_epochs", "5"]], "valid"),
    "dA": ("dA, 2 + 2 epochs (0 % and 30 %)",
           [["train", "da", "--n_epochs", "2", "--corruption_level", "0"],
            ["train", "da", "--n_epochs", "2", "--corruption_level", "0.3"]], "da0"),
    "SdA": ("SdA, 1 pre-training + 2 fine-tuning epochs, batch 300",
            [["train", "sda", "--pretraining_epochs", "1", "--n_epochs", "2", "--batch_size", "300"]], None),
    "DBN": ("DBN, 1 + 2 epochs, batch 300",
            [["train", "dbn", "--pretraining_epochs", "1", "--n_epochs", "2", "--batch_size", "300"]], None),
    "rbm": ("rbm, 1 epoch PCD-15 at batch 300 + 1 sample",
            [["train", "rbm", "--n_epochs", "1", "--batch_size", "300", "--sample", "false"],
             ["sample", "{run_dir}", "--n-chains", "1", "--n-samples", "1"]], None),
    "hmc": ("hmc (test_hmc.py)", [["train", "hmc"]], None),
}
NO_COUNTERPART: dict[str, str] = {}  # workload -> why deeptut has none (every workload has one since 2026-12-07)

VALID = re.compile(r"epoch (\d+), minibatch \d+/\d+, (validation error|test error of best model) ([0-9.]+) %")
DA_COST = re.compile(r"Training epoch (\d+), cost\s+([-0-9.e+]+)")
WALL = re.compile(r"^wall_s ([0-9.]+)\s*$", re.M)


def printed_values(kind: str | None, text: str) -> dict[str, str]:
    """The deterministic printed values of one workload's output: key -> the value as printed."""
    if kind == "valid":
        return {f"epoch {e} {what}": v for e, what, v in VALID.findall(text)}
    if kind == "da0":  # the first run of the tutorial's dA is the one without corruption: its epochs 0, 1
        costs = DA_COST.findall(text)
        return {f"epoch {e} cost": v for e, v in costs[:2]}
    return {}


def agree(kind: str | None, peer: dict[str, str], ours: dict[str, str]) -> tuple[bool | None, str]:
    """Whether the deterministic printed values agree: (verdict or None if not compared, detail)."""
    if kind is None:
        return None, "random draws differ: not compared"
    common = sorted(set(peer) & set(ours))
    if not common:
        return False, f"no common printed values (peer {len(peer)}, deeptut {len(ours)})"
    if kind == "valid":
        bad = [k for k in common if f"{float(peer[k]):.6f}" != f"{float(ours[k]):.6f}"]
        return not bad, f"{len(common) - len(bad)}/{len(common)} lines equal as printed" + (
            f"; differ: {bad[:3]}" if bad else "")
    rel = max(abs(float(peer[k]) - float(ours[k])) / abs(float(peer[k])) for k in common)
    return rel < 1e-5, f"{len(common)} costs, largest relative difference {rel:.1e}"


def machine() -> dict:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    model = next((ln.split(":", 1)[1].strip() for ln in out(["lscpu"]).splitlines()
                  if ln.startswith("Model name")), "")
    return {"cpu": model, "nproc": os.cpu_count(), "uptime": out(["uptime"]),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def peer_skip_reason(peer: Path, py: str) -> str | None:
    if not (peer / "run.sh").is_file() or not (peer / "code").is_dir():
        return f"peer folder {peer} (run.sh, code/) not found"
    try:
        r = subprocess.run([py, "-c", "import pytensor, scipy, six, PIL; print(pytensor.__version__)"],
                           capture_output=True, text=True, timeout=120)
    except OSError as e:
        return f"peer python {py}: {e}"
    if r.returncode != 0:
        return f"PyTensor (or scipy/six/pillow) not importable by {py}: {r.stderr.strip().splitlines()[-1:]}"
    return None


def run_peer(peer: Path, py: str, workload: str, data_dir: Path, threads: int, log: Path) -> dict:
    env = dict(os.environ, DLT_DATA=str(data_dir), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(peer / "run.sh"), workload, py], capture_output=True, text=True, env=env)
    outside = time.perf_counter() - t0
    text = r.stdout + r.stderr
    log.write_text(text)
    m = WALL.search(r.stdout)
    return {"rc": r.returncode, "wall_s": float(m.group(1)) if m else None, "outside_s": round(outside, 2),
            "log": log.name, "text": text}


def run_ours(cmds: list[list[str]], threads: int, data_dir: str | None, log: Path, tmp: Path) -> dict:
    """deeptut's processes for one workload, one after the other; wall = the sum of their whole times."""
    total, texts, rc, made = 0.0, [], 0, []
    for args in cmds:
        if args[0] == "train":  # a run directory of its own; "{run_dir}" names the last one
            made.append(tmp / f"run-{time.time_ns()}")
            args = args + ["--threads", str(threads), "--run-dir", str(made[-1])]
        args = [a.replace("{run_dir}", str(made[-1])) if made else a for a in args]
        if data_dir:
            args = args + ["--data-dir", data_dir]
        cmd = [sys.executable, "-m", "deeptut", *args]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        total += time.perf_counter() - t0
        texts.append(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        rc = rc or r.returncode
    text = "\n".join(texts)
    log.write_text(text)
    for run_dir in made:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"rc": rc, "wall_s": round(total, 2), "log": log.name, "text": text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", type=Path, default=PEER)
    ap.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON", "python3"),
                    help="a Python with pytensor, scipy, six, pillow (the peer README's venv)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", help="deeptut's data folder (default: its search path, the bundled MNIST)")
    ap.add_argument("--out-dir", type=Path,
                    default=ROOT / "bench" / "results" / f"peer-{dt.date.today():%Y%m%d}")
    args = ap.parse_args()
    names = [w for w in args.workloads.split(",") if w]
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; known: {', '.join(WORKLOADS)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    skip = peer_skip_reason(args.peer, args.peer_python)
    result = {"machine_before": machine(), "peer": str(args.peer), "peer_python": args.peer_python,
              "threads": args.threads, "passes": args.passes, "peer_skipped": skip, "rows": []}
    try:
        import torch
        result["torch"] = torch.__version__
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp_s:
        tmp = Path(tmp_s)
        if skip is None:  # the tutorials read mnist.pkl.gz: written once from deeptut's MNIST
            r = subprocess.run([sys.executable, "-m", "deeptut", "data", "export-pkl", str(tmp / "mnist.pkl.gz")]
                               + (["--data-dir", args.data_dir] if args.data_dir else []),
                               capture_output=True, text=True)
            if r.returncode != 0:
                skip = f"deeptut data export-pkl failed: {r.stderr.strip()[-200:]}"
                result["peer_skipped"] = skip
        for name in names:
            what, cmds, kind = WORKLOADS[name]
            row: dict = {"workload": name, "what": what, "passes": []}
            reason = skip or NO_COUNTERPART.get(name)
            if reason and (skip or cmds is None):
                row["skipped"] = reason
                if cmds is None and not skip:  # the peer alone, for the record
                    p = run_peer(args.peer, args.peer_python, name, tmp, args.threads,
                                 args.out_dir / f"{name}-peer-1.log")
                    row["passes"].append({"peer_s": p["wall_s"], "peer_rc": p["rc"]})
                result["rows"].append(row)
                print(f"{name}: skipped ({reason})", flush=True)
                continue
            for k in range(1, args.passes + 1):
                p = run_peer(args.peer, args.peer_python, name, tmp, args.threads,
                             args.out_dir / f"{name}-peer-{k}.log")
                o = run_ours(cmds, args.threads, args.data_dir, args.out_dir / f"{name}-deeptut-{k}.log", tmp)
                pv, ov = printed_values(kind, p.pop("text")), printed_values(kind, o.pop("text"))
                verdict, detail = agree(kind, pv, ov)
                one = {"pass": k, "peer_s": p["wall_s"], "peer_rc": p["rc"], "deeptut_s": o["wall_s"],
                       "deeptut_rc": o["rc"],
                       "ratio": round(p["wall_s"] / o["wall_s"], 2) if p["wall_s"] and o["wall_s"] else None,
                       "values_agree": verdict, "values_detail": detail, "peer_values": pv, "deeptut_values": ov,
                       "uptime": machine()["uptime"]}
                row["passes"].append(one)
                print(f"{name} pass {k}: peer {p['wall_s']} s (rc {p['rc']}), deeptut {o['wall_s']} s "
                      f"(rc {o['rc']}), ratio {one['ratio']}, values: {detail}", flush=True)
            result["rows"].append(row)
    result["machine_after"] = machine()
    (args.out_dir / "peer.json").write_text(json.dumps(result, indent=1) + "\n")
    table = render(result)
    (args.out_dir / "peer.md").write_text(table + "\n")
    print(table)


def render(result: dict) -> str:
    lines = ["| workload (test.py speed()) | original on PyTensor, s | deeptut, s | ratio | printed values |",
             "| --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        if row.get("skipped"):
            peer = " / ".join(f"{p['peer_s']}" for p in row["passes"]) or "-"
            lines.append(f"| {row['what']} | {peer} | - | - | skipped: {row['skipped']} |")
            continue
        ps = row["passes"]
        agreed = {p["values_agree"] for p in ps}
        verdict = ("not compared (random draws)" if agreed == {None} else
                   "agree" if agreed == {True} else "DIFFER") + (f" ({ps[0]['values_detail']})"
                                                                if agreed != {None} else "")
        lines.append(f"| {row['what']} | {' / '.join(str(p['peer_s']) for p in ps)} | "
                     f"{' / '.join(str(p['deeptut_s']) for p in ps)} | "
                     f"{' / '.join(str(p['ratio']) + 'x' for p in ps)} | "
                     f"{verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
