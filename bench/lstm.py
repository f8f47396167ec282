"""Time per epoch of deeptut's LSTM (models/lstm.py: the chapter's cell, a Python loop over the steps, the
exact mask) against a plain PyTorch loop on torch's `nn.LSTM` (one fused kernel call per layer; packed
sequences for variable lengths), on the same data, in one run, interleaved round by round so that both see
the same machine load.

    python bench/lstm.py [--rounds 3] [--batches 20] [--threads 1] [--out bench/results/lstm-20261206/bench.json]

Cases (both ways: the same sizes, Adam, cross-entropy, the mean of the outputs over valid steps):
  rows     row-by-row MNIST: 28 steps of 28 pixels, a linear projection to 128, 128 LSTM units, batch 128,
           10 classes (real MNIST when found, else random pixels: the time does not depend on the values)
  tokens   IMDB-shaped: token sequences of 10..99 steps (uniform), vocabulary 10,000, embedding 128, 128
           units, batch 16 (lstm.py's minibatch), 2 classes
Each timing runs `--batches` minibatches and is extrapolated to an epoch (rows: 391 minibatches of 50,000;
tokens: 1,249 of ~19,980, IMDB's training reviews under 100 words at lstm.py's cut); medians over rounds.
Wall seconds follow the machine's load: CPU seconds (this process) are printed too. The ratio is
deeptut / nn.LSTM (above 1: deeptut slower). With CUDA, a third row times nn.LSTM on the GPU (cuDNN).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from deeptut.data.sequences import SequenceSplit, rows_of_images  # noqa: E402
from deeptut.models.lstm import LSTMClassifier  # noqa: E402

EPOCH_BATCHES = {"rows": 391, "tokens": 1249}


class PlainLSTM(nn.Module):
    """The same network the usual PyTorch way: nn.Embedding / nn.Linear, nn.LSTM, mean over valid steps."""

    def __init__(self, inputs: str, n_in: int, dim: int, n_out: int) -> None:
        super().__init__()
        self.inputs = inputs
        self.proj = nn.Embedding(n_in, dim) if inputs == "tokens" else nn.Linear(n_in, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.out = nn.Linear(dim, n_out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        e = self.proj(x)  # [n, T, dim]
        if bool((lengths == x.shape[1]).all()):
            h, _ = self.lstm(e)  # [n, T, dim]
        else:
            packed = nn.utils.rnn.pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                                    total_length=x.shape[1])
        return self.out(h.sum(1) / lengths[:, None].to(h.dtype))


def case_data(name: str, n: int, seed: int = 0) -> SequenceSplit:
    rng = np.random.default_rng(seed)
    if name == "rows":
        try:
            from deeptut.data.datasets import load_dataset

            d = load_dataset("mnist", download=False).train
            x, y = d.x[:n], d.y[:n]
        except Exception:  # no MNIST here: random pixels time the same
            x, y = rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)
        return rows_of_images(x, y)
    lengths = rng.integers(10, 100, n)
    return SequenceSplit.from_lists([list(rng.integers(2, 10_000, k)) for k in lengths],
                                    list(rng.integers(0, 2, n)))


def time_epoch(way: str, name: str, split, batch: int, n_batches: int, device: torch.device) -> tuple[float, float]:
    """(wall s, CPU s) of n_batches updates."""
    torch.manual_seed(0)
    n_in, n_out = (28, 10) if name == "rows" else (10_000, 2)
    if way == "deeptut":
        model = LSTMClassifier(n_in if name == "tokens" else 10_000, 128, n_out, use_dropout=False,
                               inputs=name, n_in=28).to(device)
    else:
        model = PlainLSTM(name, n_in, 128, n_out).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    idx = [torch.arange(i * batch, (i + 1) * batch) for i in range(n_batches + 1)]

    def step(i: int) -> None:
        x, mask, y = split.batch(idx[i])
        opt.zero_grad(set_to_none=True)
        if way == "deeptut":
            loss = model.cost(model(x, mask), y)
        else:
            loss = nn.functional.cross_entropy(model(x, mask.sum(1).long()), y)
        loss.backward()
        opt.step()

    step(n_batches)  # warm-up (first-call costs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n_batches):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def machine() -> dict:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"cpu": sh("lscpu | grep 'Model name' | sed 's/.*: *//'"), "uptime": sh("uptime"),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "git": sh("git rev-parse HEAD")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=20, help="minibatches timed per case and round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/lstm-20261206/bench.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    before = machine()
    cpu = torch.device("cpu")
    ways = [("deeptut", cpu), ("nn.LSTM", cpu)] + ([("nn.LSTM", torch.device("cuda"))]
                                                   if torch.cuda.is_available() else [])
    results: dict = {}
    for name, batch in (("rows", 128), ("tokens", 16)):
        data = case_data(name, batch * (args.batches + 1))
        splits = {d.type: data.to(d) for _, d in ways}
        for r in range(args.rounds):
            for way, device in ways:
                key = f"{name} {way} {device.type}"
                wall, cpu_s = time_epoch(way, name, splits[device.type], batch, args.batches, device)
                scale = EPOCH_BATCHES[name] / args.batches
                results.setdefault(key, []).append({"wall_s": wall * scale, "cpu_s": cpu_s * scale})
                print(f"round {r + 1} {key}: {wall * scale:.1f} s wall, {cpu_s * scale:.1f} s CPU per epoch",
                      flush=True)
    after = machine()
    table = {k: {"wall_s": statistics.median(v["wall_s"] for v in vs),
                 "cpu_s": statistics.median(v["cpu_s"] for v in vs), "rounds": vs} for k, vs in results.items()}
    print("\n| case | way | device | s/epoch wall | s/epoch CPU |\n|---|---|---|---|---|")
    for k, v in table.items():
        name, way, device = k.split()
        print(f"| {name} | {way} | {device} | {v['wall_s']:.1f} | {v['cpu_s']:.1f} |")
    ratios = {}
    for name in ("rows", "tokens"):
        a, b = table[f"{name} deeptut cpu"], table[f"{name} nn.LSTM cpu"]
        ratios[name] = {"wall": a["wall_s"] / b["wall_s"], "cpu": a["cpu_s"] / b["cpu_s"]}
        print(f"{name}: deeptut / nn.LSTM = {ratios[name]['wall']:.2f} (wall), {ratios[name]['cpu']:.2f} (CPU)")
    print(f"machine: {before['cpu']}, torch {before['torch']}, {args.threads} thread(s)\nbefore: {before['uptime']}"
          f"\nafter:  {after['uptime']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "before": before, "after": after, "table": table,
                               "ratio_deeptut_over_nn_lstm": ratios}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
