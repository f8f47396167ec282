"""CPU training-step speed and fast-preset time-to-target, in one run.

    python bench/cpu.py [--quick] [--seeds 3] [--rounds 5] [--out-dir bench/results]

Part 1 (always): the training step of the three tutorial models at their tutorial minibatch sizes (logistic
600, MLP 20, LeNet 500) on real MNIST minibatches, three ways, interleaved round by round in this one process
so that they see the same machine load:
  plain      a straightforward PyTorch loop written here: nn.Module, autograd, torch.optim.SGD, loss.item(),
             torch's default thread count
  plain-1t   the same loop at one torch thread
  deeptut    the step `make_train_step` gives for the tutorial preset (fused / channels-last, the preset's
             thread setting), and the same step at torch's default thread count
Medians over rounds; ratios are plain / deeptut. The LeNet line also gives a whole epoch of training steps
(100 minibatches) and one validation pass over the 10,000 validation images.

Part 2 (skipped with --quick): `mlp-fast` and `lenet-fast` trained by deeptut's `fit` for each seed; the
reported figures are the protocol's: the test error of the model with the best validation error, the
training time (data loading excluded), and the time at which the selected model first met the target.
No setting is chosen here: each preset is measured as it stands, and its test error is reported, never
compared between settings. Sweeps that choose settings rank by mean validation error only (bench/selection.py).

Results go to <out-dir>/cpu-<date>.json and <out-dir>/cpu.md (a Markdown table with the machine, torch
version, date and load average: on a shared machine the absolute times move a lot; the ratios less).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deeptut import config
from deeptut.accel import make_train_step, set_threads, thread_counts
from deeptut.data.datasets import load_dataset
from deeptut.models import build_model
from deeptut.train.loop import fit

# Issue 15's targets: (preset, dataset) -> (test error %, seconds per run; None: no time budget). lenet-fast-gpu
# is measured here for its IEEE float32 errors only (its time budget is a GPU's, bench/gpu.py); it is not run
# unless --presets names it (16 epochs of the 32-64-kernel LeNet: minutes a run on a 2-core CPU).
TARGETS = {("mlp-fast", "mnist"): (1.12, 30.0), ("mlp-fast", "fashion-mnist"): (11.5, 30.0),
           ("lenet-fast", "mnist"): (0.82, 60.0), ("lenet-fast", "fashion-mnist"): (9.0, 60.0),
           ("lenet-fast-gpu", "mnist"): (0.60, None), ("lenet-fast-gpu", "fashion-mnist"): (8.0, None)}
DEFAULT_FAST = ("mlp-fast", "lenet-fast")


# --- plain PyTorch ---------------------------------------------------------------------------------------

class PlainLogistic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x)


class PlainMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.out = nn.Linear(784, 500), nn.Linear(500, 10)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


class PlainLeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.conv1 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.hidden, self.out = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        h = torch.tanh(F.max_pool2d(self.conv0(x.view(-1, 1, 28, 28)), 2))
        h = torch.tanh(F.max_pool2d(self.conv1(h), 2))
        return self.out(torch.tanh(self.hidden(h.flatten(1))))


def plain_step(name: str, lr: float, l2: float):
    torch.manual_seed(0)
    model = {"logistic": PlainLogistic, "mlp": PlainMLP, "lenet": PlainLeNet}[name]()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if l2:
            loss = loss + l2 * sum((w ** 2).sum() for w in weights)
        loss.backward()
        opt.step()
        return loss.item()

    return step, model


def deeptut_step(preset: str, overrides: dict | None = None):
    cfg = config.resolve(preset, overrides={"device": "cpu", **(overrides or {})})
    model = build_model(cfg.model_args(), cfg.init_seed)
    step = make_train_step(model, cfg, torch.device("cpu"))
    return (lambda x, y: float(step(x, y, cfg.learning_rate))), model, cfg, type(step).__name__


# --- timing ----------------------------------------------------------------------------------------------

class Threads:
    """torch's thread count (and numpy's BLAS, as `fit` sets both from cfg.threads) inside the block."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        self.saved = thread_counts()
        set_threads(self.n)

    def __exit__(self, *a):
        torch.set_num_threads(self.saved["torch"])
        if self.saved["blas"]:
            from threadpoolctl import threadpool_limits  # present: thread_counts() found a BLAS through it

            threadpool_limits(limits=self.saved["blas"], user_api="blas")


def time_steps(step, batches, threads: int) -> float:
    with Threads(threads):
        step(*batches[0])  # warm (allocations, oneDNN primitives)
        t0 = time.perf_counter()
        for x, y in batches:
            step(x, y)
        return (time.perf_counter() - t0) / len(batches)


def time_eval(model, x, threads: int, chunk: int) -> float:
    with Threads(threads), torch.no_grad():
        model.eval()
        model(x[:chunk])
        t0 = time.perf_counter()
        for i in range(0, len(x), chunk):
            model(x[i:i + chunk]).argmax(1)
        return time.perf_counter() - t0


def bench_steps(data, rounds: int, default_threads: int) -> dict:
    tx, ty = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    vx = torch.from_numpy(data.valid.x)
    out = {}
    specs = [("logistic", "logistic", 600, 40, 0.0, {}), ("mlp", "mlp", 20, 250, 1e-4, {}),
             ("mlp --sparse true", "mlp", 20, 250, 1e-4, {"sparse": True}), ("lenet", "lenet", 500, 4, 0.0, {})]
    for name, preset, batch, n_steps, l2, over in specs:
        dstep, dmodel, cfg, step_type = deeptut_step(preset, over)
        pstep, pmodel = plain_step(preset, cfg.learning_rate, l2)
        p1step, _ = plain_step(preset, cfg.learning_rate, l2)
        dthreads = cfg.threads or default_threads
        times: dict[str, list[float]] = {"plain": [], "plain-1t": [], "deeptut": [], "deeptut-default": []}
        evals: dict[str, list[float]] = {"plain": [], "deeptut": []}
        n_batches = len(tx) // batch
        for r in range(rounds):
            start = (r * n_steps) % max(1, n_batches - n_steps)
            batches = [(tx[(start + i) * batch:(start + i + 1) * batch], ty[(start + i) * batch:(start + i + 1) * batch])
                       for i in range(n_steps)]
            times["plain"].append(time_steps(pstep, batches, default_threads))
            times["plain-1t"].append(time_steps(p1step, batches, 1))
            times["deeptut"].append(time_steps(dstep, batches, dthreads))
            times["deeptut-default"].append(time_steps(dstep, batches, default_threads))
            if name == "lenet":
                evals["plain"].append(time_eval(pmodel, vx, default_threads, 4000))
                evals["deeptut"].append(time_eval(dmodel, vx, dthreads, 4000))
        med = {k: statistics.median(v) for k, v in times.items()}
        rec = {"batch_size": batch, "steps_per_round": n_steps, "rounds": rounds, "n_train_batches": n_batches,
               "deeptut_step": step_type, "threads": {"plain": default_threads, "plain-1t": 1, "deeptut": dthreads},
               "step_ms": {k: v * 1e3 for k, v in med.items()},
               "step_ms_all": {k: [round(t * 1e3, 3) for t in v] for k, v in times.items()},
               "speedup_vs_plain": med["plain"] / med["deeptut"],
               "speedup_vs_plain_1t": med["plain-1t"] / med["deeptut"],
               "speedup_at_default_threads": med["plain"] / med["deeptut-default"],
               "epoch_s_steps_only": {k: v * n_batches for k, v in med.items()}}
        if evals["plain"]:
            rec["valid_pass_s"] = {k: statistics.median(v) for k, v in evals.items()}
        out[name] = rec
        print(f"{name:17s} batch {batch:3d}: plain {med['plain'] * 1e3:9.2f} ms  plain-1t {med['plain-1t'] * 1e3:9.2f} ms"
              f"  deeptut {med['deeptut'] * 1e3:9.2f} ms  ({step_type}, {dthreads} thr)  "
              f"x{rec['speedup_vs_plain']:.2f} vs plain, x{rec['speedup_vs_plain_1t']:.2f} vs plain-1t; deeptut at "
              f"{default_threads} thr {med['deeptut-default'] * 1e3:.2f} ms (x{rec['speedup_at_default_threads']:.2f})",
              flush=True)
        if name == "lenet":
            e = rec["epoch_s_steps_only"]
            print(f"          epoch of steps: plain {e['plain']:.1f} s, plain-1t {e['plain-1t']:.1f} s, deeptut "
                  f"{e['deeptut']:.1f} s; validation pass: plain {rec['valid_pass_s']['plain']:.2f} s, deeptut "
                  f"{rec['valid_pass_s']['deeptut']:.2f} s", flush=True)
    return out


# --- fast presets ----------------------------------------------------------------------------------------

def load_fast_data(names: list[str], data_dir: str | None) -> tuple[dict, dict]:
    """({dataset: Splits} that could be loaded, {dataset: why it was skipped}): Fashion-MNIST is skipped, with
    the reason, where it is not installed (apt-get install dataset-fashion-mnist)."""
    from deeptut.errors import DataError

    loaded, skipped = {}, {}
    for name in names:
        try:
            loaded[name] = load_dataset(name, data_dir if name == "mnist" else None)
        except DataError as e:
            skipped[name] = str(e).splitlines()[0]
            print(f"skipped {name}: {skipped[name]}", flush=True)
    return loaded, skipped


def bench_fast(datasets: dict, seeds: list[int], presets: list[str]) -> dict:
    """Each preset on each dataset as it stands, seeds 1..N: test error of the model selected on validation,
    training time, time to target. Keys "PRESET on DATASET"."""
    out = {}
    for preset in presets:
        for dname, data in datasets.items():
            target, budget = TARGETS[(preset, dname)]
            runs = []
            for seed in seeds:
                cfg = config.resolve(preset, overrides={"seed": seed, "device": "cpu", "dataset": dname})
                n = torch.get_num_threads()
                with tempfile.TemporaryDirectory() as tmp:
                    summary = fit(cfg, data, Path(tmp), quiet=True)
                    metrics = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
                torch.set_num_threads(n)
                hit = next((m["elapsed_s"] for m in metrics
                            if m["test_error"] is not None and m["test_error"] <= target), None)
                run = {"seed": seed, "test_error": summary["test_error"],
                       "valid_error": summary["best_validation_error"], "best_iteration": summary["best_iteration"],
                       "epochs": summary["epochs"], "stopped": summary["stopped"],
                       "train_seconds": summary["train_seconds"], "time_to_target_s": hit,
                       "curve": [(m["epoch"], m["valid_error"], m["test_error"], m["elapsed_s"]) for m in metrics]}
                runs.append(run)
                print(f"{preset:14s} {dname:13s} seed {seed}: test {run['test_error']:.2f} % (valid "
                      f"{run['valid_error']:.2f} %) in {run['train_seconds']:.1f} s; target {target} % "
                      f"{'met at %.1f s' % hit if hit is not None else 'not met'}", flush=True)
            tests = [r["test_error"] for r in runs]
            secs = [r["train_seconds"] for r in runs]
            key = f"{preset} on {dname}"
            out[key] = {"preset": preset, "dataset": dname, "target_test_error": target, "budget_s": budget,
                        "runs": runs, "test_error_mean": statistics.mean(tests),
                        "test_error_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                        "train_seconds_mean": statistics.mean(secs),
                        "train_seconds_std": statistics.stdev(secs) if len(secs) > 1 else 0.0,
                        "met": sum(1 for r in runs if r["time_to_target_s"] is not None
                                   and (budget is None or r["time_to_target_s"] <= budget))}
            o = out[key]
            print(f"{key}: test {o['test_error_mean']:.2f} +- {o['test_error_std']:.2f} %, "
                  f"{o['train_seconds_mean']:.1f} +- {o['train_seconds_std']:.1f} s; target met"
                  f"{' within budget' if budget else ''} in {o['met']}/{len(runs)} runs", flush=True)
    return out


# --- report ----------------------------------------------------------------------------------------------

def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "cores": os.cpu_count(), "torch_threads_default": torch.get_num_threads()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket"):
                info[key.strip()] = val.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# CPU benchmark ({res['date']})", "",
             f"Machine: {m.get('Model name', '?')}, {m.get('CPU(s)', m['cores'])} CPUs; torch {m['torch']}, "
             f"numpy {m['numpy']}, Python {m['python']}; torch default threads {m['torch_threads_default']}. "
             f"Load average at start / end: {res['load_avg_start']} / {res['load_avg_end']} "
             "(a shared machine: absolute times move with the load; the timing columns of a row were measured "
             "interleaved, round by round, in one process)."]
    if res.get("steps"):
        lines += ["", "## Training step at the tutorial minibatch (median ms per step)", "",
                  "| model | batch | plain (default threads) | plain (1 thread) | deeptut (preset threads) | "
                  "deeptut step | x vs plain | x vs plain-1t | deeptut at default threads (x vs plain) |",
                  "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res.get("steps", {}).items():
        s = r["step_ms"]
        lines.append(f"| {name} | {r['batch_size']} | {s['plain']:.2f} | {s['plain-1t']:.2f} | {s['deeptut']:.2f} | "
                     f"{r['deeptut_step']} ({r['threads']['deeptut']} thr) | {r['speedup_vs_plain']:.2f} | "
                     f"{r['speedup_vs_plain_1t']:.2f} | {s['deeptut-default']:.2f} "
                     f"({r['speedup_at_default_threads']:.2f}) |")
    if "lenet" in res.get("steps", {}):
        r = res["steps"]["lenet"]
        e, v = r["epoch_s_steps_only"], r["valid_pass_s"]
        lines += ["", f"LeNet epoch (100 training steps): plain {e['plain']:.1f} s, plain at 1 thread "
                      f"{e['plain-1t']:.1f} s, deeptut {e['deeptut']:.1f} s; one pass over the 10,000 validation "
                      f"images: plain {v['plain']:.2f} s, deeptut {v['deeptut']:.2f} s."]
    if res.get("fast"):
        lines += ["", "## Fast presets (deeptut fit; test error of the model selected on validation)", "",
                  "| preset | dataset | target | seeds | test error % (mean +- std) | valid error % | "
                  "train s (mean +- std) | "
                  "met target (within budget) |", "|---|---|---|---|---|---|---|---|"]
        for o in res["fast"].values():
            vals = [r["valid_error"] for r in o["runs"]]
            budget = f" in <= {o['budget_s']:.0f} s" if o["budget_s"] else ""
            lines.append(f"| {o['preset']} | {o['dataset']} | <= {o['target_test_error']} %{budget} | "
                         f"{', '.join(str(r['seed']) for r in o['runs'])} | {o['test_error_mean']:.2f} +- "
                         f"{o['test_error_std']:.2f} ({', '.join('%.2f' % r['test_error'] for r in o['runs'])}) | "
                         f"{statistics.mean(vals):.2f} | {o['train_seconds_mean']:.1f} +- {o['train_seconds_std']:.1f} | "
                         f"{o['met']}/{len(o['runs'])} |")
    for name, why in res.get("skipped", {}).items():
        lines.append(f"\n{name}: skipped ({why})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="step timings only (skip the fast-preset runs)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per fast preset (1..N)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per model")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--data-dir", help="MNIST's folder (Fashion-MNIST: the usual places, datasets.py)")
    ap.add_argument("--presets", default=",".join(DEFAULT_FAST),
                    help="comma-separated fast presets for part 2 (also lenet-fast-gpu: its IEEE errors, slow)")
    ap.add_argument("--datasets", default="mnist,fashion-mnist",
                    help="comma-separated datasets for part 2 (Fashion-MNIST skipped, saying why, if absent)")
    ap.add_argument("--fast-only", action="store_true", help="part 2 only (skip the step timings)")
    args = ap.parse_args(argv)
    presets = args.presets.split(",")
    unknown = sorted({p for p in presets if not any(k[0] == p for k in TARGETS)})
    if unknown:
        ap.error(f"--presets: no targets for {unknown}; known: {sorted({k[0] for k in TARGETS})}")
    data = load_dataset("mnist", args.data_dir)
    default_threads = torch.get_num_threads()
    res = {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(),
           "load_avg_start": [round(v, 2) for v in os.getloadavg()]}
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, default threads {default_threads}, "
          f"load average {res['load_avg_start']}", flush=True)
    if not args.fast_only:
        res["steps"] = bench_steps(data, args.rounds, default_threads)
    if not args.quick:
        names = args.datasets.split(",")
        others, res["skipped"] = load_fast_data([n for n in names if n != "mnist"], None)
        datasets = {n: data if n == "mnist" else others[n] for n in names if n == "mnist" or n in others}
        res["fast"] = bench_fast(datasets, list(range(1, args.seeds + 1)), presets)
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
    (out / f"cpu-{stamp}.json").write_text(json.dumps(res, indent=1))
    (out / "cpu.md").write_text(markdown(res))
    print(f"wrote {out / f'cpu-{stamp}.json'} and {out / 'cpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
