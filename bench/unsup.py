"""CPU time per pre-training epoch of each unsupervised model, deeptut vs plain PyTorch, in one run.

    python bench/unsup.py [--rounds 3] [--scale 1.0] [--out-dir bench/results]

Rows (the tutorials' sizes and minibatches, real MNIST):
  da        dA.py: 784 -> 500, batch 20, corruption 0.3, lr 0.1              (2,500 updates an epoch)
  ca        cA.py: 784 -> 500, batch 10, contraction 0.1, floor division     (5,000)
  sda L0-2  SdA.py's pre-training: 784 -> 1000 -> 1000 -> 1000, batch 1, corruption 0.1 / 0.2 / 0.3,
            lr 0.001, each layer on the outputs of the layers below          (50,000)
  rbm       rbm.py: 784 -> 500, batch 20, PCD-15, lr 0.1, PL cost            (2,500)
  dbn L0    DBN.py's first RBM: 784 -> 1000, batch 10, CD-1, lr 0.01, reconstruction cost (5,000)

Three ways, interleaved round by round in this one process so that they see the same machine load:
  deeptut   the update train/pretrain.py runs (`pretrain.make_update`: the fused CPU update through the seam)
            with the preset's thread setting
  plain     a straightforward PyTorch loop written here: nn.Module, autograd, torch.optim.SGD, the cost
            kept as a tensor per minibatch (as the tutorial collects it); the RBM's update by autograd on the
            free-energy difference (chain end detached), its PL / reconstruction cost computed as rbm.py
            does; torch's default thread count
  plain-1t  the same loop at one torch thread
Each timing runs a fixed number of minibatches (scaled by --scale) and is extrapolated to an epoch; medians
over rounds; the ratio is plain / deeptut (target >= 2). The wall seconds follow the machine's load, so
CPU seconds are printed too. The table goes to stdout and <out-dir>/unsup.md, the numbers to
<out-dir>/unsup-<date>.json, with the machine (lscpu), date and load average (uptime) before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from deeptut import config  # noqa: E402
from deeptut.data.datasets import load_dataset  # noqa: E402
from deeptut.models import build_model  # noqa: E402
from deeptut.train import pretrain  # noqa: E402

# row -> (preset, layer, minibatches timed per round at --scale 1)
ROWS = {
    "da": ("da", 0, 60), "ca": ("ca", 0, 60),
    "sda L0": ("sda", 0, 150), "sda L1": ("sda", 1, 150), "sda L2": ("sda", 2, 150),
    "rbm": ("rbm", 0, 12), "dbn L0": ("dbn", 0, 80),
}


# --- plain PyTorch ---------------------------------------------------------------------------------------

class PlainAE(nn.Module):
    """Tied-weight sigmoid autoencoder (dA / cA) in plain PyTorch."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, b_prime: torch.Tensor) -> None:
        super().__init__()
        self.W, self.b, self.b_prime = (nn.Parameter(t.detach().clone()) for t in (W, b, b_prime))

    def forward(self, x: torch.Tensor):
        h = torch.sigmoid(x @ self.W + self.b)
        return h, h @ self.W.t() + self.b_prime


class PlainRBM(nn.Module):
    def __init__(self, W: torch.Tensor, hbias: torch.Tensor, vbias: torch.Tensor) -> None:
        super().__init__()
        self.W, self.hbias, self.vbias = (nn.Parameter(t.detach().clone()) for t in (W, hbias, vbias))

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        return -F.softplus(v @ self.W + self.hbias).sum(1) - v @ self.vbias


def plain_update(kind: str, model: nn.Module, opt: torch.optim.Optimizer, cfg, layer: int):
    """A plain loop's body for one minibatch: (x, generator, chain, i) -> (cost tensor, chain)."""
    if kind in ("da", "sda"):
        level = cfg.corruption_level if kind == "da" else cfg.corruption_levels[layer]

        def step(x, g, chain, i):
            mask = (torch.rand(x.shape, generator=g) < 1 - level).float()
            _, z = model(x * mask)
            loss = F.binary_cross_entropy_with_logits(z, x, reduction="none").sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.detach(), None
        return step
    if kind == "ca":
        def step(x, g, chain, i):
            h, z = model(x)
            rec = F.binary_cross_entropy_with_logits(z, x, reduction="none").sum(1).mean()
            jac = ((h * (1 - h)) ** 2 @ (model.W ** 2).sum(0)).sum()
            jac = torch.div(jac, cfg.batch_size, rounding_mode="floor")  # cA.py's floor division
            loss = rec + cfg.contraction_level * jac
            opt.zero_grad()
            loss.backward()
            opt.step()
            return torch.stack([rec.detach(), jac.detach()]), None
        return step

    def step(x, g, chain, i):  # rbm / dbn: CD-k or PCD-k through autograd on the free-energy difference
        with torch.no_grad():
            ph = torch.sigmoid(x @ model.W + model.hbias)
            h = chain if chain is not None else torch.bernoulli(ph, generator=g)
            for _ in range(cfg.k):
                pre_v = h @ model.W.t() + model.vbias
                v = torch.bernoulli(torch.sigmoid(pre_v), generator=g)
                h = torch.bernoulli(torch.sigmoid(v @ model.W + model.hbias), generator=g)
        loss = model.free_energy(x).mean() - model.free_energy(v).mean()
        with torch.no_grad():  # the monitoring cost, as rbm.py computes it
            if cfg.persistent:
                xi = torch.round(x)
                xf = xi.clone()
                bit = i % xi.shape[1]
                xf[:, bit] = 1 - xf[:, bit]
                cost = (xi.shape[1] * F.logsigmoid(model.free_energy(xf) - model.free_energy(xi))).mean()
            else:
                cost = -F.binary_cross_entropy_with_logits(pre_v, x, reduction="none").sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return cost, (h if cfg.persistent else None)
    return step


# --- timing ----------------------------------------------------------------------------------------------

def machine() -> dict:
    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    model = next((ln.split(":", 1)[1].strip() for ln in sh(["lscpu"]).splitlines()
                  if ln.startswith("Model name")), "unknown")
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Case:
    """One row's three ways, each a (model, update, x, chain) set up once; `time(way, n)` runs n minibatches."""

    def __init__(self, row: str, data_x: torch.Tensor, n_batches: int) -> None:
        preset, layer, _ = ROWS[row]
        self.row, self.layer = row, layer
        self.cfg = config.resolve(preset)
        cfg = self.cfg
        model = build_model(cfg.model_args(), cfg.init_seed)
        rows_needed = n_batches * cfg.batch_size
        self.x = pretrain.layer_inputs(model, layer, data_x[:rows_needed]).contiguous()
        _, lr = pretrain.schedule(cfg)
        self.n_per_epoch = 50000 // cfg.batch_size
        self.ways = {}
        # deeptut: the update the pre-training loop runs, with the preset's thread setting
        self.ways["deeptut"] = (pretrain.make_update(model, cfg, layer, lr, torch.device("cpu")),
                                pretrain.initial_chain(model, cfg, layer, torch.device("cpu")), None)
        unit = {"da": model, "ca": model, "rbm": model}.get(preset) or \
            (model.dA_layers[layer] if preset == "sda" else model.rbm_layers[layer])
        for way, threads in (("plain", None), ("plain-1t", 1)):
            if preset in ("rbm", "dbn"):
                plain = PlainRBM(unit.W, unit.hbias, unit.vbias)
            else:
                plain = PlainAE(unit.W, unit.b, unit.b_prime)
            opt = torch.optim.SGD(plain.parameters(), lr=lr)
            self.ways[way] = (plain_update(preset, plain, opt, cfg, layer),
                              pretrain.initial_chain(model, cfg, layer, torch.device("cpu")), threads)
        self.g = torch.Generator().manual_seed(1)
        self.pos = {w: 0 for w in self.ways}

    def time(self, way: str, n: int, default_threads: int) -> tuple[float, float]:
        """(wall s, CPU s) per minibatch over n minibatches (the data cycling through the slice)."""
        update, chain, threads = self.ways[way]
        torch.set_num_threads(threads or default_threads)
        bs, n_slice = self.cfg.batch_size, len(self.x) // self.cfg.batch_size
        costs = []
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            j = self.pos[way] % n_slice
            cost, chain = update(self.x[j * bs:(j + 1) * bs], self.g, chain, self.pos[way])
            costs.append(cost)
            self.pos[way] += 1
        torch.stack(costs).sum().item()  # the epoch's mean is taken from these, once
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        self.ways[way] = (update, chain, threads)
        torch.set_num_threads(default_threads)
        return wall / n, cpu / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the minibatches timed per round")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of: " + ", ".join(ROWS))
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in rows:
        if r not in ROWS:
            ap.error(f"unknown row {r!r}; rows: {', '.join(ROWS)}")
    default_threads = torch.get_num_threads()
    info = {**machine(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": load(), "default_threads": default_threads, "rounds": args.rounds}
    print(f"# {info['cpu']} ({info['cores']} cores), torch {info['torch']}, {info['date']}, "
          f"load {info['load_before']}", flush=True)
    data_x = torch.as_tensor(load_dataset("mnist").train.x)
    counts = {r: max(2, int(ROWS[r][2] * args.scale)) for r in rows}
    cases = {r: Case(r, data_x, max(counts[r], 100)) for r in rows}
    for c in cases.values():  # warm up each way (buffers, first calls)
        for way in c.ways:
            c.time(way, 2, default_threads)
    samples = {r: {w: [] for w in cases[r].ways} for r in rows}
    t0 = time.perf_counter()
    for rnd in range(args.rounds):
        for r in rows:
            for way in cases[r].ways:
                samples[r][way].append(cases[r].time(way, counts[r], default_threads))
        print(f"  round {rnd + 1}/{args.rounds} done at {time.perf_counter() - t0:.0f} s, load {load()}", flush=True)
    info["load_after"] = load()

    results, lines = [], []
    head = ("| row | batch | updates/epoch | deeptut s/epoch (CPU s) | plain s/epoch (CPU s) | "
            "plain-1t s/epoch (CPU s) | plain / deeptut | plain-1t / deeptut |")
    lines += [f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}; {info['date']}; "
              f"load average {info['load_before']} before, {info['load_after']} after; "
              f"{args.rounds} rounds, medians; epochs extrapolated from {', '.join(f'{r} {counts[r]}' for r in rows)} "
              f"minibatches a round.", "", head, "|" + "---|" * 8]
    for r in rows:
        c = cases[r]
        med = {w: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
               for w, v in samples[r].items()}
        ep = {w: (m[0] * c.n_per_epoch, m[1] * c.n_per_epoch) for w, m in med.items()}
        ratio = {w: ep[w][0] / ep["deeptut"][0] for w in ("plain", "plain-1t")}
        results.append({"row": r, "batch_size": c.cfg.batch_size, "updates_per_epoch": c.n_per_epoch,
                        "seconds_per_epoch": {w: round(e[0], 2) for w, e in ep.items()},
                        "cpu_seconds_per_epoch": {w: round(e[1], 2) for w, e in ep.items()},
                        "ratio": {w: round(v, 2) for w, v in ratio.items()}})
        lines.append(f"| {r} | {c.cfg.batch_size} | {c.n_per_epoch} | {ep['deeptut'][0]:.1f} ({ep['deeptut'][1]:.1f}) | "
                     f"{ep['plain'][0]:.1f} ({ep['plain'][1]:.1f}) | {ep['plain-1t'][0]:.1f} ({ep['plain-1t'][1]:.1f}) | "
                     f"{ratio['plain']:.2f} | {ratio['plain-1t']:.2f} |")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unsup.md").write_text(text + "\n")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M")
    (out / f"unsup-{stamp}.json").write_text(json.dumps({**info, "rows": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
