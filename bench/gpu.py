#!/usr/bin/env python3
"""deeptut vs plain PyTorch on one GPU, side by side, in one unattended call (default budget 330 s).

    python3 bench/gpu.py                      # on a CUDA machine; writes $OUT/gpu_bench.json or bench/results/
    python3 bench/gpu.py --device cpu --quick # a dry run of every row on tiny sizes (CI / no GPU)

Rows, in order (each row's errors are caught and reported; the JSON is rewritten after every row):
  env         the card, driver, torch
  logistic    tutorial logistic regression, full run, deeptut and plain PyTorch
  lenet       tutorial LeNet: deeptut the full 200 epochs; plain PyTorch a few epochs, extrapolated
  lenet-fast  the fast preset, mean over 5 seeds (time and test error)
  mlp         tutorial MLP: deeptut the full 1000-epoch budget when it fits the time left (else as many
              epochs as fit, extrapolated); plain PyTorch 2 epochs, extrapolated
  chunked     resident vs streamed with device_memory_budget = 1/4 of the dataset (MLP, LeNet, logistic)
  mlp-fast    the fast preset, mean over 5 seeds
  sda, dbn    the full SdA.py / DBN.py tutorial runs (greedy pre-training, then fine-tuning) through
              train/pretrain.py, each within --unsup-limit-s seconds (default 270: both rows and the start
              fit one 10-minute call with --budget-s 570); at the limit the row reports how far it got
              (pre-training epochs, fine-tuning epochs, best validation / test error) and projects the whole
              run's time from the pace so far. Not in the default --rows: run them as
                  python3 bench/gpu.py --rows env,sda,dbn --budget-s 570
              --quick runs them on a slice of MNIST with 100-unit layers, one epoch per phase (seconds on a CPU).
  extras      short runs of variants: graphs off (eager CUDA), the MLP's dense update on one stream vs with
              side branches, bf16 autocast, LeNet's conv-pool layers by cuDNN or fused Triton kernels (the
              manual update) or as GEMMs (the autograd step), TF32, torch.compile
              (last: cold compiles are slow)
Near the deadline the remaining rows are skipped (recorded as skipped). "Plain PyTorch" is written in this
file: nn.Module + autograd + torch.optim.SGD, data resident on the device, the tutorials' loop (minibatch
slices, validation every epoch with the same early-stopping rule, test error on each new best).
No setting is chosen here: the presets are measured as they stand (test errors reported against their
targets, never compared between settings); sweeps that choose rank by validation only (bench/selection.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout, without installing (e.g. the GPU image's python3)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from deeptut import config  # noqa: E402
from deeptut.data.datasets import Split, Splits, load_dataset  # noqa: E402
from deeptut.accel.cuda import updates  # noqa: E402
from deeptut.train import loop  # noqa: E402

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


class RowTimeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise RowTimeout("row time limit reached")


# ------------------------------------------------------------------------------------------------------
# plain PyTorch


def _uniform_(w: torch.Tensor, fan_in: int, fan_out: int, g: torch.Generator) -> None:
    r = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        w.copy_((torch.rand(w.shape, generator=g) * 2 - 1) * r)


class PlainLogistic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(784, 10)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x)

    def weights(self) -> list[torch.Tensor]:
        return [self.out.weight]


class PlainMLP(nn.Module):
    def __init__(self, n_hidden: int = 500, seed: int = 1234) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.hidden, self.out = nn.Linear(784, n_hidden), nn.Linear(n_hidden, 10)
        _uniform_(self.hidden.weight, 784, n_hidden, g)
        for t in (self.hidden.bias, self.out.weight, self.out.bias):
            nn.init.zeros_(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))

    def weights(self) -> list[torch.Tensor]:
        return [self.hidden.weight, self.out.weight]


class PlainLeNet(nn.Module):
    def __init__(self, nkerns: tuple[int, int] = (20, 50), n_hidden: int = 500, seed: int = 23455) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1, self.conv2 = nn.Conv2d(1, nkerns[0], 5), nn.Conv2d(nkerns[0], nkerns[1], 5)
        self.fc, self.out = nn.Linear(nkerns[1] * 16, n_hidden), nn.Linear(n_hidden, 10)
        _uniform_(self.conv1.weight, 25, nkerns[0] * 25 // 4, g)
        _uniform_(self.conv2.weight, nkerns[0] * 25, nkerns[1] * 25 // 4, g)
        _uniform_(self.fc.weight, nkerns[1] * 16, n_hidden, g)
        for t in (self.conv1.bias, self.conv2.bias, self.fc.bias, self.out.weight, self.out.bias):
            nn.init.zeros_(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.view(-1, 1, 28, 28)
        h = torch.tanh(F.max_pool2d(self.conv1(h), 2))
        h = torch.tanh(F.max_pool2d(self.conv2(h), 2))
        h = torch.tanh(self.fc(h.flatten(1)))
        return self.out(h)

    def weights(self) -> list[torch.Tensor]:
        return [self.conv1.weight, self.conv2.weight, self.fc.weight, self.out.weight]


def plain_model(cfg: config.TrainConfig) -> nn.Module:
    if cfg.model == "logistic":
        return PlainLogistic()
    if cfg.model == "mlp":
        return PlainMLP(cfg.n_hidden, cfg.init_seed)
    return PlainLeNet(tuple(cfg.nkerns), cfg.n_hidden, cfg.init_seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_fit(cfg: config.TrainConfig, data: Splits, device: torch.device, max_epochs: int) -> dict[str, Any]:
    """The tutorials' loop in plain PyTorch: same minibatches, validation frequency, patience rule; in IEEE
    float32 like deeptut's tutorial presets (PyTorch's default would let cuDNN use TF32)."""
    with loop.cuda_precision(cfg):
        torch.backends.cudnn.benchmark = False  # PyTorch's default
        return _plain_fit(cfg, data, device, max_epochs)


def _plain_fit(cfg: config.TrainConfig, data: Splits, device: torch.device, max_epochs: int) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    model = plain_model(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                          nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    X, Y = (torch.as_tensor(data.train.x).to(device), torch.as_tensor(data.train.y).to(device))
    Xv, Yv = (torch.as_tensor(data.valid.x).to(device), torch.as_tensor(data.valid.y).to(device))
    Xt, Yt = (torch.as_tensor(data.test.x).to(device), torch.as_tensor(data.test.y).to(device))
    bs = cfg.batch_size
    n_batches = X.shape[0] // bs
    vf = min(n_batches, cfg.patience // 2)
    patience, best, best_iter, test_score = float(cfg.patience), math.inf, 0, math.nan

    @torch.no_grad()
    def error(x: torch.Tensor, y: torch.Tensor) -> float:  # tutorial: mean over whole minibatches
        n = (x.shape[0] // bs) * bs
        wrong = torch.cat([model(x[i:i + 5000]).argmax(1) != y[i:i + 5000] for i in range(0, n, 5000)])[:n]
        return float(wrong.view(-1, bs).float().mean(1).double().mean().item())

    _sync(device)
    start = time.perf_counter()
    epoch, done, it = 0, False, 0
    while epoch < max_epochs and not done:
        epoch += 1
        for i in range(n_batches):
            it = (epoch - 1) * n_batches + i
            x, y = X[i * bs:(i + 1) * bs], Y[i * bs:(i + 1) * bs]
            opt.zero_grad(set_to_none=True)
            cost = F.cross_entropy(model(x), y)
            if cfg.L1_reg:
                cost = cost + cfg.L1_reg * sum(w.abs().sum() for w in model.weights())
            if cfg.L2_reg:
                cost = cost + cfg.L2_reg * sum((w * w).sum() for w in model.weights())
            cost.backward()
            opt.step()
            if (it + 1) % vf == 0:
                v = error(Xv, Yv)
                if v < best:
                    if v < best * cfg.improvement_threshold:
                        patience = max(patience, it * cfg.patience_increase)
                    best, best_iter, test_score = v, it, error(Xt, Yt)
            if patience <= it:
                done = True
                break
    _sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "epochs": epoch, "iterations": it + 1,
            "seconds_per_epoch": round(seconds / epoch, 5), "best_validation_error": best * 100,
            "best_iteration": best_iter + 1, "test_error": test_score * 100,
            "stopped": "patience" if done else "n_epochs"}


# ------------------------------------------------------------------------------------------------------
# deeptut


class StepSpy:
    """Wraps loop.make_train_step to record which step ran (update, graph replays, captures, fallbacks)."""

    def __init__(self) -> None:
        self.step: Any = None
        self.real = loop.make_train_step

    def __enter__(self) -> "StepSpy":
        def spy(*a: Any, **k: Any) -> Any:
            self.step = self.real(*a, **k)
            self.model = a[0]
            return self.step
        loop.make_train_step = spy
        return self

    def __exit__(self, *exc: Any) -> None:
        loop.make_train_step = self.real

    def info(self) -> dict[str, Any]:
        s = self.step
        out: dict[str, Any] = {"step": type(s).__name__}
        if hasattr(getattr(s, "forward", None), "gemm"):
            out["conv_gemm"] = list(s.forward.gemm)  # LeNet: (layer0, layer1) as GEMM, else cuDNN
        if hasattr(s, "stats"):
            out.update(update=s.kind, graphs_active=s.use_graphs, **s.stats)
        return out


def deeptut_fit(cfg: config.TrainConfig, data: Splits) -> dict[str, Any]:
    threads = torch.get_num_threads()  # a preset may set `threads`; keep it from leaking into later rows
    try:
        with StepSpy() as spy:
            t = time.perf_counter()
            summary = loop.fit(cfg, data, None, quiet=True)
            wall = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
    keep = ("best_validation_error", "test_error", "best_iteration", "epochs", "iterations", "stopped",
            "train_seconds")
    return {**{k: summary[k] for k in keep}, "wall_seconds": round(wall, 3), **spy.info()}


# ------------------------------------------------------------------------------------------------------
# the rows


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.deadline = T0 + args.budget_s
        self.rows: list[dict[str, Any]] = []
        out = os.environ.get("OUT")
        self.out_dir = Path(args.out or out or ROOT / "bench" / "results")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = "" if (args.out or out) else time.strftime("-%Y%m%d-%H%M%S")
        self.path = self.out_dir / f"gpu_bench{stamp}.json"
        self._data: Splits | None = None
        signal.signal(signal.SIGALRM, _alarm)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    @property
    def data(self) -> Splits:
        if self._data is None:
            d = load_dataset("mnist")
            if self.args.quick:  # tiny sizes for a dry run
                cut = lambda s, n: Split(s.x[:n], s.y[:n])  # noqa: E731
                d = Splits(cut(d.train, 3000), cut(d.valid, 1000), cut(d.test, 1000), d.source, d.name)
            self._data = d
        return self._data

    def cfg(self, preset: str, **overrides: Any) -> config.TrainConfig:
        over = {"device": self.args.device, **overrides}
        if self.args.device == "cpu":
            over.setdefault("graphs", "on")  # the dry run goes through the graph step (eagerly)
        if self.args.quick:  # a slice of the data for a few steps: the code paths run, the rates mean nothing
            over.setdefault("divergence", "off")
        return config.resolve(preset, None, over)

    def epochs(self, n: int) -> int:
        return max(1, min(n, 2)) if self.args.quick else n

    def run(self, name: str, fn: Callable[[], dict[str, Any]], min_s: float) -> None:
        left = self.left()
        if left < min_s:
            log(f"{name}: skipped ({left:.0f} s left, the row needs about {min_s:.0f} s)")
            self.rows.append({"row": name, "status": "skipped", "reason": f"{left:.0f} s left < {min_s:.0f} s"})
            self.save()
            return
        log(f"{name}: start ({left:.0f} s left)")
        t = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, max(5.0, left))
        try:
            result = {"row": name, "status": "ok", **fn()}
        except RowTimeout:
            result = {"row": name, "status": "timeout", "reason": "the global deadline (--budget-s) passed"}
        except Exception as e:  # noqa: BLE001 - one failing row must not lose the others
            result = {"row": name, "status": "error", "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=8)}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        result["row_seconds"] = round(time.perf_counter() - t, 2)
        self.rows.append(result)
        self.save()
        log(f"{name}: {result['status']} in {result['row_seconds']} s")
        for line in summarize(result):
            log(f"    {line}")
        if result["status"] == "error":
            print(result["traceback"], flush=True)

    def save(self) -> None:
        doc = {"bench": "deeptut bench/gpu.py", "argv": sys.argv[1:], "budget_s": self.args.budget_s,
               "elapsed_s": round(time.perf_counter() - T0, 1), "rows": self.rows}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        tmp.replace(self.path)

    # -- rows --------------------------------------------------------------------------------------------

    def env(self) -> dict[str, Any]:
        d: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                             "numpy": np.__version__, "device": str(self.device)}
        if self.device.type == "cuda":
            p = torch.cuda.get_device_properties(self.device)
            d.update(gpu=torch.cuda.get_device_name(self.device), sm_count=p.multi_processor_count,
                     memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version(), capability=list(torch.cuda.get_device_capability()))
        d["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        d["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        d["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        return d

    def tutorial(self, preset: str, plain_epochs: int | None, target: tuple[float, float] | None) -> dict[str, Any]:
        """deeptut's full run (epochs capped when the time left would not hold it) and plain PyTorch
        (full, or `plain_epochs` extrapolated to deeptut's epoch count)."""
        full = self.cfg(preset)
        n_epochs = self.epochs(full.n_epochs)
        out: dict[str, Any] = {"preset": preset}
        if preset == "mlp":  # long: probe the speed first (1 and 4 epochs: the
            # difference is 3 epochs without the one-off graph capture)
            p1, p4 = (deeptut_fit(self.cfg(preset, n_epochs=n), self.data) for n in (1, 4))
            per_epoch = max(1e-3, (p4["train_seconds"] - p1["train_seconds"]) / 3)
            out["probe"] = {"1_epoch": p1, "4_epochs": p4, "seconds_per_epoch": round(per_epoch, 5)}
            room = self.left() - self.args.reserve_s - 20 - 3 * 2.0 * (plain_epochs or 0)
            out["probe"]["projected_full_seconds"] = round(p1["train_seconds"] + per_epoch * (n_epochs - 1), 1)
            log(f"    {preset}: {per_epoch * 1000:.1f} ms/epoch after the capture; the full run projects to "
                f"{out['probe']['projected_full_seconds']} s; {room:.0f} s available")
            if p1["train_seconds"] + per_epoch * (n_epochs - 1) > room:
                n_epochs = max(3, int((room - p1["train_seconds"]) / per_epoch))
                out["deeptut_capped_epochs"] = n_epochs
                log(f"    {preset}: {per_epoch * 1000:.1f} ms/epoch; running {n_epochs} epochs, not "
                    f"{full.n_epochs}, to stay within the budget")
        dt = deeptut_fit(self.cfg(preset, n_epochs=n_epochs), self.data)
        out["deeptut"] = dt
        extrapolated_dt = n_epochs < self.epochs(full.n_epochs) and dt["stopped"] == "n_epochs"
        if extrapolated_dt:
            dt["extrapolated_seconds"] = round(dt["train_seconds"] / dt["epochs"] * full.n_epochs, 2)
        # plain PyTorch
        pe = self.epochs(plain_epochs) if plain_epochs else n_epochs
        pl = plain_fit(self.cfg(preset), self.data, self.device, pe)
        out["plain"] = pl
        if pl["epochs"] < dt["epochs"] or extrapolated_dt:
            target_epochs = full.n_epochs if extrapolated_dt else dt["epochs"]
            pl["extrapolated_seconds"] = round(pl["seconds_per_epoch"] * target_epochs, 2)
            pl["extrapolated_to_epochs"] = target_epochs
        d_s = dt.get("extrapolated_seconds", dt["train_seconds"])
        p_s = pl.get("extrapolated_seconds", pl["seconds"])
        out["speedup"] = round(p_s / d_s, 2) if d_s else None
        if target and not self.args.quick:
            max_s, err = target
            out["targets"] = {"seconds<=": max_s, "seconds_ok": d_s <= max_s,
                              "test_error": err, "test_error_ok": abs(dt["test_error"] - err) <= 0.10
                              if not extrapolated_dt else None}
        return out

    def fast(self, preset: str, seeds: int, target: tuple[float, float] | None) -> dict[str, Any]:
        if preset not in config.preset_names():
            raise RuntimeError(f"preset {preset!r} does not exist yet (presets: {config.preset_names()})")
        runs = []
        for seed in range(1, seeds + 1):
            if self.left() < 10:
                break
            cfg = self.cfg(preset, seed=seed, n_epochs=self.epochs(self.cfg(preset).n_epochs))
            runs.append(deeptut_fit(cfg, self.data))
        secs = [r["train_seconds"] for r in runs]
        errs = [r["test_error"] for r in runs]
        out = {"preset": preset, "seeds": len(runs), "runs": runs,
               "mean_seconds": round(float(np.mean(secs)), 3), "mean_test_error": round(float(np.mean(errs)), 4),
               "max_test_error": round(float(np.max(errs)), 4)}
        if target and not self.args.quick:
            out["targets"] = {"seconds<=": target[0], "test_error<=": target[1],
                              "ok": out["mean_seconds"] <= target[0] and out["mean_test_error"] <= target[1]}
        return out

    def chunked(self) -> dict[str, Any]:
        d = self.data
        total = sum(s.x.shape[0] * (s.x.shape[1] * 4 + 8) for s in (d.train, d.valid, d.test))
        budget = total // 4 if not self.args.quick else total // 2  # quick: room for two batches of 600
        out: dict[str, Any] = {"dataset_bytes": total, "budget_bytes": budget}
        for preset, epochs in (("mlp", 20), ("lenet", 20), ("logistic", 20)):
            if self.left() < self.args.reserve_s:
                out[preset] = {"status": "skipped (time)"}
                continue
            n = self.epochs(epochs)
            times: dict[str, list[float]] = {"resident": [], "chunked": []}
            res: dict[str, Any] = {}
            for rep in range(2):  # alternate, keep the best of two
                for mode, b in (("resident", "0"), ("chunked", str(budget))):
                    r = deeptut_fit(self.cfg(preset, n_epochs=n, device_memory_budget=b), d)
                    times[mode].append(r["train_seconds"])
                    res[mode] = r
            a, c = min(times["resident"]), min(times["chunked"])
            out[preset] = {"epochs": n, "resident_s": a, "chunked_s": c,
                           "overhead_pct": round(100 * (c / a - 1), 1) if a else None,
                           "same_result": all(res["resident"][k] == res["chunked"][k]
                                              for k in ("best_validation_error", "test_error", "iterations")),
                           "resident": res["resident"], "chunked": res["chunked"]}
        return out

    def extras(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        variants = [
            ("lenet graphs=off (eager CUDA)", "lenet", 5, {"graphs": "off"}),
            ("lenet graphs=on", "lenet", 5, {}),
            ("mlp graphs=off (eager CUDA)", "mlp", 1, {"graphs": "off"}),
            ("mlp graphs=on", "mlp", 5, {}),
            ("mlp dense update on one stream", "mlp", 5, {"_one_stream": True}),
            ("lenet amp=bf16", "lenet", 5, {"amp": "bf16"}),
            ("lenet conv=cudnn (manual update)", "lenet", 5, {"conv": "cudnn"}),
            ("lenet conv=triton (manual update)", "lenet", 5, {"conv": "triton"}),
            ("lenet conv=gemm (autograd step)", "lenet", 5, {"conv": "gemm"}),
            ("lenet tf32", "lenet", 5, {"tf32": True}),
            ("lenet compile", "lenet", 5, {"compile": True}),
            ("mlp compile", "mlp", 5, {"compile": True}),
        ]
        for label, preset, epochs, over in variants:
            if self.left() < 25:
                out[label] = {"status": "skipped (time)"}
                continue
            over = dict(over)
            one_stream = over.pop("_one_stream", False)
            updates.DenseUpdate.side_streams = not one_stream
            try:
                r = deeptut_fit(self.cfg(preset, n_epochs=self.epochs(epochs), **over), self.data)
                r["seconds_per_epoch"] = round(r["train_seconds"] / r["epochs"], 5)
                out[label] = r
            except RowTimeout:
                raise
            except Exception as e:  # noqa: BLE001
                out[label] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
            finally:
                updates.DenseUpdate.side_streams = True
            log(f"    {label}: {out[label].get('seconds_per_epoch', out[label].get('error'))} s/epoch")
        return out

    def unsup(self, preset: str) -> dict[str, Any]:
        """The sda / dbn tutorial run, pre-training then fine-tuning, within the row's time limit."""
        import tempfile

        from deeptut.train import pretrain

        over: dict[str, Any] = {"save_every": 0}
        if self.args.quick:  # seconds on a CPU: small layers, one epoch per phase, on the data slice
            over.update(hidden_layers_sizes="100,100,100", pretraining_epochs=1, n_epochs=1)
        cfg = self.cfg(preset, **over)
        full = self.cfg(preset)
        data = self.data
        if self.args.quick:  # batch 1 steps are slow on a CPU: a smaller slice still
            cut = lambda s, n: Split(s.x[:n], s.y[:n])  # noqa: E731
            data = Splits(cut(data.train, 600), cut(data.valid, 200), cut(data.test, 200), data.source, data.name)
        limit = max(5.0, min(self.args.unsup_limit_s, self.left() - 5))
        out: dict[str, Any] = {"preset": preset, "limit_s": round(limit, 1), "batch_size": cfg.batch_size,
                               "pretraining_epochs": cfg.pretraining_epochs, "layers": len(cfg.hidden_layers_sizes)}
        threads = torch.get_num_threads()
        with tempfile.TemporaryDirectory() as d:
            run_dir = Path(d)
            signal.setitimer(signal.ITIMER_REAL, limit)  # this row's own limit (run() clears it after)
            t = time.perf_counter()
            try:
                summary = pretrain.train(cfg, data, run_dir, quiet=True)
                out["finished"] = True
                out.update({k: summary.get(k) for k in ("best_validation_error", "test_error", "epochs",
                                                         "stopped", "pretrain_seconds", "train_seconds")})
            except RowTimeout:
                out["finished"] = False
            except Exception as e:  # noqa: BLE001 - the alarm can land inside a library (an import) and
                # come out as another exception: past the limit that is the limit, before it a real error
                if time.perf_counter() - t < limit - 0.5:
                    raise
                out["finished"], out["limit_note"] = False, f"{type(e).__name__} at the limit: {e}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                torch.set_num_threads(threads)
            out["wall_seconds"] = round(time.perf_counter() - t, 2)
            lines = []
            metrics = run_dir / "metrics.jsonl"
            if metrics.exists():
                for raw in metrics.read_text().splitlines():
                    try:
                        lines.append(json.loads(raw))
                    except json.JSONDecodeError:
                        break  # a line cut by the limit
        pre = [m for m in lines if m.get("phase") == "pretrain"]
        fine = [m for m in lines if m.get("phase") != "pretrain"]
        n_pre = out["layers"] * cfg.pretraining_epochs
        out["pretrain_epochs_done"] = f"{len(pre)}/{n_pre}"
        if pre:
            out["pretrain_costs_last"] = [round(m["cost"], 4) for m in pre[-3:]]
            per_epoch = pre[-1]["elapsed_s"] / len(pre)
            out["pretrain_seconds_per_epoch"] = round(per_epoch, 2)
            if not self.args.quick:  # the tutorial's whole pre-training at this pace
                out["projected_pretrain_seconds"] = round(per_epoch * len(full.hidden_layers_sizes)
                                                          * full.pretraining_epochs, 1)
        if fine:
            valid = [m["valid_error"] for m in fine if "valid_error" in m]
            tests = [m["test_error"] for m in fine if m.get("test_error") is not None]
            out["finetune_validations"] = len(fine)
            out["best_valid_error"] = min(valid) if valid else None
            out["last_test_error"] = tests[-1] if tests else None
        if not self.args.quick:
            out["targets"] = {"seconds<=": 600, "published_valid_test": {"sda": (1.39, 1.3), "dbn": (1.27, 1.34)}[preset],
                              "within": 0.15}
        return out


def summarize(r: dict[str, Any]) -> list[str]:
    """A few readable lines per row (also the final table's cells)."""
    if r.get("status") != "ok":
        return [r.get("reason") or r.get("error") or r["status"]]
    name = r["row"]
    if name == "env":
        return [f"{r.get('gpu', r['device'])}, torch {r['torch']}, CUDA {r.get('cuda')}"]
    if "deeptut" in r:
        d, p = r["deeptut"], r["plain"]
        ds = d.get("extrapolated_seconds", d["train_seconds"])
        ps = p.get("extrapolated_seconds", p["seconds"])
        p_note = f" (extrap. from {p['epochs']} epochs)" if "extrapolated_seconds" in p else ""
        return [f"deeptut {ds:.2f} s{' (extrap.)' if 'extrapolated_seconds' in d else ''} "
                f"({d['epochs']} epochs, test {d['test_error']:.4f} %, {d.get('update', d.get('kernel', d['step']))}, "
                f"{d.get('graph_replays', 0)} replays / {d.get('eager_blocks', 0)} eager blocks); "
                f"plain {ps:.2f} s{p_note}; speedup {r['speedup']}x"
                + (f"; targets {r['targets']}" if "targets" in r else "")]
    if "mean_seconds" in r:
        return [f"{r['seeds']} seeds: mean {r['mean_seconds']:.3f} s, mean test error {r['mean_test_error']:.4f} % "
                f"(max {r['max_test_error']:.4f} %)" + (f"; targets {r['targets']}" if "targets" in r else "")]
    if name in ("sda", "dbn"):
        return [f"{'finished' if r['finished'] else 'limit reached'} in {r['wall_seconds']} s: pre-training "
                f"{r['pretrain_epochs_done']} epochs ({r.get('pretrain_seconds_per_epoch')} s each, whole "
                f"pre-training projected {r.get('projected_pretrain_seconds')} s); fine-tuning "
                f"{r.get('finetune_validations', 0)} validations, best valid {r.get('best_valid_error')} %, "
                f"test {r.get('test_error', r.get('last_test_error'))} %"]
    if name == "chunked":
        return [f"{k}: resident {v['resident_s']:.3f} s, chunked {v['chunked_s']:.3f} s, overhead "
                f"{v['overhead_pct']} %, same result {v['same_result']}" if "resident_s" in v else f"{k}: {v}"
                for k, v in r.items() if isinstance(v, dict)]
    if name == "extras":
        return [f"{k}: {v.get('seconds_per_epoch', v.get('status') or v.get('error'))} s/epoch"
                f" ({v.get('update', v.get('kernel', ''))} {v.get('graph_replays', '')} replays)" for k, v in r.items()
                if isinstance(v, dict)]
    return [json.dumps({k: v for k, v in r.items() if k != "row"}, default=str)[:300]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=330.0, help="global deadline in seconds (default 330)")
    ap.add_argument("--reserve-s", type=float, default=45.0,
                    help="time the MLP row leaves for the rows after it (default 45)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="tiny data and epochs: a dry run of every row")
    ap.add_argument("--rows", default="env,logistic,lenet,lenet-fast-gpu,lenet-fast,mlp,chunked,mlp-fast,extras",
                    help="comma-separated subset of rows, in the order given")
    ap.add_argument("--unsup-limit-s", type=float, default=270.0,
                    help="time limit of each of the sda / dbn rows in seconds (default 270)")
    ap.add_argument("--out", help="output folder (default: $OUT, else bench/results/)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: torch sees no CUDA device; use --device cpu --quick for a dry run", file=sys.stderr)
        return 2
    b = Bench(args)
    log(f"deeptut GPU bench: budget {args.budget_s:.0f} s, rows {args.rows}, JSON -> {b.path}")
    rows = {
        "env": (b.env, 0),
        "logistic": (lambda: b.tutorial("logistic", None, None), 15),
        "lenet": (lambda: b.tutorial("lenet", 10, (10.0, 0.92)), 30),
        "lenet-fast": (lambda: b.fast("lenet-fast", 5, (2.0, 0.80)), 15),
        "lenet-fast-gpu": (lambda: b.fast("lenet-fast-gpu", 5, (2.0, 0.80)), 15),
        "mlp": (lambda: b.tutorial("mlp", 2, (120.0, 1.65)), 40),
        "chunked": (b.chunked, 20),
        "mlp-fast": (lambda: b.fast("mlp-fast", 5, None), 15),
        "extras": (b.extras, 25),
        "sda": (lambda: b.unsup("sda"), 30),
        "dbn": (lambda: b.unsup("dbn"), 30),
    }
    for name in [r.strip() for r in args.rows.split(",") if r.strip()]:
        if name not in rows:
            log(f"unknown row {name!r}; rows: {', '.join(rows)}")
            continue
        fn, min_s = rows[name]
        b.run(name, fn, 0 if args.quick else min_s)
    log("summary")
    for r in b.rows:
        for i, line in enumerate(summarize(r)):
            print(f"  {r['row'] if i == 0 else '':<11} {r['status'] if i == 0 else '':<8} {line}", flush=True)
    log(f"done; JSON in {b.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
