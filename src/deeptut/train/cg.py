"""logistic_cg.py: logistic regression trained by scipy.optimize.fmin_cg instead of SGD.

The objective is the whole training set's cost, the mean of the minibatch costs (each the mean negative
log-likelihood of `batch_size` = 600 examples; whole minibatches only, as the tutorial's integer division
gives: 83 of them, 49,800 of MNIST's 50,000 examples), and its gradient the mean of the minibatch gradients.
The parameters are the tutorial's flat theta = [W.ravel() (n_in x n_out, row-major), b] starting at zero.
After each CG iteration the tutorial's callback measures the validation error; on a new best, the test
error. At most `n_epochs` (50) CG iterations; fmin_cg may stop sooner (converged, or precision lost).

Arithmetic: SciPy's CG works in float64; the cost and gradient are computed in float64 too (the closed
form: dcost/dlogits = (softmax - onehot) / batch_size), so the line searches see a smooth objective. The
callback's errors are those of the float32 LogisticRegression the run saves (the same numbers `deeptut eval`
gives), averaged over whole minibatches of 600 ("tutorial" evaluation).

Printed lines, as the tutorial prints them: "... building the model", "Optimizing using
scipy.optimize.fmin_cg...", "validation error E %" per iteration, "Optimization complete with best
validation score of V %, with test performance T %", and on stderr "The code for file logistic_cg.py ran
for S s".

The run directory is the supervised families' (store/): config.json, model.json, init.safetensors,
best.safetensors (the best validated parameters), metrics.jsonl (one line per CG iteration: iteration,
epoch, valid_error, test_error on a new best, train_cost), summary.json, and checkpoints/ after every
iteration (theta, the best so far). Resuming restarts fmin_cg from the checkpoint's theta with the
iterations left: CG's search direction is not saved (SciPy does not expose it), so a resumed run is not
bit-identical to an uninterrupted one; every completed iteration and its metrics line are kept.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import deeptut
from deeptut import accel
from deeptut.config import TrainConfig
from deeptut.data.device import DeviceSplit
from deeptut.errors import CheckpointError, ConfigError, TrainingError
from deeptut.models import build_model
from deeptut.store import checkpoint, files, rundir, tensors
from deeptut.train.loop import evaluate, evaluated_examples


class WholeSetObjective:
    """The training set's mean minibatch cost and its gradient as functions of theta (float64 [n_in * n_out
    + n_out]), computed by minibatches; the last (theta, cost, gradient) is kept, since fmin_cg asks for the
    cost and the gradient at the same points."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n_in: int, n_out: int, batch_size: int) -> None:
        self.n_batches = len(x) // batch_size  # whole minibatches only (the tutorial's integer division)
        if self.n_batches == 0:
            raise ConfigError(f"batch_size {batch_size} is larger than the training split ({len(x)} examples)")
        self.x = torch.as_tensor(x[:self.n_batches * batch_size])  # [n, n_in] float32
        self.y = torch.as_tensor(y[:self.n_batches * batch_size]).long()  # [n]
        self.n_in, self.n_out, self.batch_size = n_in, n_out, batch_size
        self._last: tuple[np.ndarray, float, np.ndarray] | None = None
        self.evaluations = 0  # passes over the training set

    def unpack(self, theta: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """theta -> (W [n_in, n_out], b [n_out]), float64 views."""
        t = torch.from_numpy(np.ascontiguousarray(theta, dtype=np.float64))
        k = self.n_in * self.n_out
        return t[:k].view(self.n_in, self.n_out), t[k:k + self.n_out]

    def cost_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        if self._last is not None and np.array_equal(self._last[0], theta):
            return self._last[1], self._last[2]
        W, b = self.unpack(theta)
        gW = torch.zeros_like(W)
        gb = torch.zeros_like(b)
        cost = 0.0
        for i in range(self.n_batches):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            x = self.x[sl].double()  # [B, n_in]
            y = self.y[sl]  # [B]
            logits = torch.addmm(b, x, W)  # [B, n_out]
            logp = torch.log_softmax(logits, dim=1)
            cost += float(-logp[torch.arange(len(y)), y].mean())  # the minibatch's mean NLL
            dlogits = logp.exp()  # softmax [B, n_out]
            dlogits[torch.arange(len(y)), y] -= 1.0
            dlogits /= len(y)  # d(mean NLL) / d logits
            gW += x.T @ dlogits
            gb += dlogits.sum(dim=0)
        n = self.n_batches
        grad = torch.cat([gW.reshape(-1), gb]).numpy() / n
        self.evaluations += 1
        self._last = (np.array(theta, dtype=np.float64, copy=True), cost / n, grad)
        return cost / n, grad

    def cost(self, theta: np.ndarray) -> float:
        return self.cost_and_grad(theta)[0]

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return self.cost_and_grad(theta)[1]


def _manifest(cfg: TrainConfig, loop: dict[str, Any]) -> dict[str, Any]:
    return {"format": checkpoint.CHECKPOINT_FORMAT, "deeptut": deeptut.__version__, "config": cfg.to_dict(),
            "loop": {"kind": "cg", **loop}}


def _restore(run_dir: Path, cfg: TrainConfig, n_params: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    if not checkpoint.has_checkpoint(run_dir):
        return None
    manifest, name, sha = checkpoint.read_manifest(run_dir)
    where = run_dir / checkpoint.CKPT_DIR / checkpoint.MANIFEST
    loop = manifest.get("loop")
    if not isinstance(loop, dict) or loop.get("kind") != "cg":
        raise CheckpointError(f"{where}: not a conjugate-gradient checkpoint")
    if manifest.get("config") != cfg.to_dict():
        raise CheckpointError(f"{where}: written for another config than {run_dir / rundir.CONFIG}'s")
    for key in ("iteration", "best_iteration"):
        if isinstance(loop.get(key), bool) or not isinstance(loop.get(key), int) or loop[key] < 0:
            raise CheckpointError(f"{where}: {key} must be an integer >= 0, got {loop.get(key)!r}")
    for key in ("best_validation_loss", "test_score", "train_seconds"):
        if not isinstance(loop.get(key), (int, float)):
            raise CheckpointError(f"{where}: {key} must be a number, got {loop.get(key)!r}")
    t = checkpoint.read_tensors(run_dir, name, sha, max_bytes=2**31)
    if "theta" not in t or tuple(t["theta"].shape) != (n_params,):
        raise CheckpointError(f"{run_dir / checkpoint.CKPT_DIR / name}: theta must have shape ({n_params},)")
    return loop, t


def train(cfg: TrainConfig, data: Any, run_dir: Path | None = None, *, quiet: bool = False,
          resume: bool = False) -> dict[str, Any]:
    """Train logistic regression by fmin_cg on `data` (a Splits) into `run_dir` (None: nothing written).
    Returns the summary (summary.json)."""
    import scipy.optimize

    say = (lambda *a: None) if quiet else print
    if cfg.threads:
        accel.set_threads(cfg.threads)
    _check_data(cfg, data)
    device = torch.device("cpu")  # SciPy's CG runs on the host; the objective is a few BLAS calls per pass
    say("... building the model")
    model = build_model(cfg.model_args(), cfg.init_seed)  # logistic_sgd.py's LogisticRegression, zeros
    objective = WholeSetObjective(data.train.x, data.train.y, cfg.n_in, cfg.n_out, cfg.batch_size)
    valid, test = DeviceSplit(data.valid.x, data.valid.y), DeviceSplit(data.test.x, data.test.y)
    for name, split in (("validation", valid), ("test", test)):
        if split.n_batches(cfg.batch_size) == 0 and cfg.evaluation == "tutorial":
            raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {name} split ({len(split)} "
                              f"examples)")
    run_dir = None if run_dir is None else Path(run_dir)
    st, theta0, best_params, restored = _open(cfg, data, model, device, run_dir, resume, say)
    metrics = rundir.MetricsLog(run_dir, keep_lines=st["iteration"] if restored else 0)

    def save_checkpoint(theta: np.ndarray) -> None:
        _save_checkpoint(run_dir, cfg, st, theta, best_params, metrics)

    last_theta = [theta0]  # the parameters after the latest CG iteration
    t_start = time.perf_counter()
    seconds_before = st["train_seconds"]

    def callback(theta: np.ndarray) -> None:
        """The tutorial's: the validation error after each CG iteration; on a new best, the test error."""
        st["iteration"] += 1
        last_theta[0] = np.array(theta, dtype=np.float64, copy=True)
        _set_params(model, objective, theta)
        model.eval()
        this_validation_loss = evaluate(model, valid, cfg.batch_size, cfg.evaluation)
        say(f"validation error {this_validation_loss * 100.:f} %")
        train_cost = objective.cost(theta)
        if not np.isfinite(train_cost):
            raise TrainingError(f"CG iteration {st['iteration']}: the training cost became {train_cost}")
        record: dict[str, Any] = {"iteration": st["iteration"], "epoch": st["iteration"], "train_cost": train_cost,
                                  "valid_error": this_validation_loss * 100., "best": False}
        if this_validation_loss < st["best_validation_loss"]:
            st["best_validation_loss"] = this_validation_loss
            st["test_score"] = evaluate(model, test, cfg.batch_size, cfg.evaluation)
            st["best_iteration"] = st["iteration"]
            best_params.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            record.update(best=True, test_error=st["test_score"] * 100.)
            if run_dir is not None:
                tensors.save_tensors(run_dir / rundir.BEST, best_params, metadata=rundir.model_metadata(cfg))
        st["train_seconds"] = seconds_before + time.perf_counter() - t_start
        metrics.write({**record, "elapsed_s": round(st["train_seconds"], 4)})
        save_checkpoint(theta)

    left = cfg.n_epochs - st["iteration"]
    say("Optimizing using scipy.optimize.fmin_cg...")
    warnflag = 0
    if left > 0 and not st["done"]:
        _theta, _fopt, _fcalls, _gcalls, warnflag = scipy.optimize.fmin_cg(
            f=objective.cost, x0=theta0, fprime=objective.grad, callback=callback, disp=0, maxiter=left,
            full_output=True)
    stopped = {0: "converged", 1: "n_epochs", 2: "precision loss"}.get(warnflag, f"warnflag {warnflag}")
    if st["iteration"] >= cfg.n_epochs:
        stopped = "n_epochs"
    st["done"] = True
    seconds = st["train_seconds"] if st["iteration"] else seconds_before + time.perf_counter() - t_start
    say(f"Optimization complete with best validation score of {st['best_validation_loss'] * 100.:f} %, with "
        f"test performance {st['test_score'] * 100.:f} %")
    if not quiet:
        print(f"The code for file logistic_cg.py ran for {seconds:.1f}s", file=sys.stderr)
    summary = _summary(cfg, st, stopped, seconds, valid, test, objective, device)
    if run_dir is not None:
        tensors.save_tensors(run_dir / rundir.BEST, best_params, metadata=rundir.model_metadata(cfg))
        files.atomic_write_json(run_dir / rundir.SUMMARY, summary)
        save_checkpoint(last_theta[0])  # "done": a resume of the finished run trains no further
    return summary


def _set_params(model: torch.nn.Module, objective: Any, theta: np.ndarray) -> None:
    """CG's flat float64 parameters into the model's W [n_in, n_out] and b [n_out]."""
    W, b = objective.unpack(theta)
    with torch.no_grad():
        model.W.copy_(W.to(model.W.dtype))
        model.b.copy_(b.to(model.b.dtype))


def _save_checkpoint(run_dir: Path | None, cfg: TrainConfig, st: dict[str, Any], theta: np.ndarray,
                     best_params: dict[str, torch.Tensor], metrics: Any) -> None:
    """The `last` checkpoint: the parameters after this CG iteration, the best so far, the loop's state."""
    if run_dir is None:
        return
    blob = tensors.serialize_tensors({"theta": torch.from_numpy(np.array(theta, dtype=np.float64)),
                                      **{f"best/{k}": v for k, v in best_params.items()}})
    metrics.sync()
    checkpoint.write_checkpoint(run_dir / checkpoint.CKPT_DIR, blob, _manifest(cfg, st), st["iteration"])


def _check_data(cfg: TrainConfig, data: Any) -> None:
    if data.train.x.shape[1] != cfg.n_in:
        raise ConfigError(f"n_in is {cfg.n_in} but the data's images have {data.train.x.shape[1]} pixels")
    top = max(int(data.train.y.max()), int(data.valid.y.max()), int(data.test.y.max()))
    if top >= cfg.n_out:
        raise ConfigError(f"n_out is {cfg.n_out} but the data has labels up to {top}")


def _open(cfg: TrainConfig, data: Any, model: torch.nn.Module, device: torch.device, run_dir: Path | None,
          resume: bool, say: Any) -> tuple[dict[str, Any], np.ndarray, dict[str, torch.Tensor], bool]:
    """The CG state to start from: fresh (zeros; config.json, init.safetensors written) or, resumed, the last
    checkpoint's (the parameters after its last CG iteration, the best so far). -> (state, theta0,
    best_params, restored)."""
    n_params = cfg.n_in * cfg.n_out + cfg.n_out
    theta0 = np.zeros(n_params, dtype=np.float64)
    st: dict[str, Any] = {"iteration": 0, "best_validation_loss": float("inf"), "test_score": 0.0,
                          "best_iteration": 0, "train_seconds": 0.0, "done": False}
    best_params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    restored = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            rundir.clean_run_dir(run_dir)
            restored = _restore(run_dir, cfg, n_params)
        if restored is None:
            rundir.write_config(run_dir, cfg, device, data, threads=accel.thread_counts())
            (run_dir / rundir.MODEL_JSON).unlink(missing_ok=True)  # a resumed run without a checkpoint
            rundir.save_model(run_dir, model, cfg, name=rundir.INIT)
    if restored is not None:
        loop, t = restored
        st.update({k: loop[k] for k in st if k in loop})
        theta0 = t["theta"].numpy().astype(np.float64)
        best_params = {k[len("best/"):]: v for k, v in t.items() if k.startswith("best/")}
        say(f"resuming {run_dir} after CG iteration {st['iteration']} (fmin_cg restarts from its parameters)")
    return st, theta0, best_params, restored is not None


def _summary(cfg: TrainConfig, st: dict[str, Any], stopped: str, seconds: float, valid: DeviceSplit,
             test: DeviceSplit, objective: Any, device: torch.device) -> dict[str, Any]:
    return {
        "best_validation_error": st["best_validation_loss"] * 100.,
        "test_error": st["test_score"] * 100. if st["best_iteration"] else None,
        "best_iteration": st["best_iteration"],
        "epochs": st["iteration"],  # CG iterations
        "iterations": st["iteration"],
        "stopped": stopped,
        "evaluation": cfg.evaluation,
        "evaluated_examples": {"valid": evaluated_examples(valid, cfg.batch_size, cfg.evaluation),
                               "test": evaluated_examples(test, cfg.batch_size, cfg.evaluation)},
        "train_seconds": round(seconds, 4),
        "training_set_passes": objective.evaluations,  # of this session (a resumed run counts anew)
        "optimizer": "scipy.optimize.fmin_cg",
        "device": str(device),
        "fault": None,
    }

