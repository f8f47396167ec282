"""Run directories of the unsupervised families (da, ca, rbm, sda, dbn) as the training side writes them
(train/pretrain.py, store/rundir.py), written without training: the real families' modules are built small,
their parameters set to known patterns, and the files written with the store functions. For the pixel-level
tests of the reading side (sample, eval --log-likelihood, viz, report); tests/test_unsup_end_to_end.py
trains the same families for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import synthetic
from deeptut.accel import thread_counts
from deeptut.data.datasets import Splits
from deeptut.config import TrainConfig
from deeptut.models import build_model
from deeptut.store import files, rundir, tensors

# the families' sections at a small size: 12 hidden units (sda / dbn: 12 then 6)
SMALL = {"da": dict(n_hidden=12), "ca": dict(n_hidden=12), "rbm": dict(n_hidden=12),
         "sda": dict(hidden_layers_sizes=(12, 6), corruption_levels=(0.1, 0.2)),
         "dbn": dict(hidden_layers_sizes=(12, 6))}


def first_layer_key(model: str) -> str:
    return "W" if model in ("da", "ca", "rbm") else "sigmoid_layers.0.W"


def one_hot_filters(n_visible: int, n_hidden: int, shift: int) -> np.ndarray:
    """W [n_visible, n_hidden] whose unit k is 1 on pixel (k * 29 + shift) % n_visible, 0 elsewhere: the
    filter picture's tile k is black with one white pixel at a known place."""
    W = np.zeros((n_visible, n_hidden), np.float32)
    for k in range(n_hidden):
        W[(k * 29 + shift) % n_visible, k] = 1.0
    return W


def _save(path: Path, model: torch.nn.Module, name: str) -> None:
    tensors.save_tensors(path, dict(model.state_dict()), metadata={"model": name, "format": "1"})


def make_unsup_run(run_dir: str | Path, model: str, *, epochs: int = 3, n_layers_pretrained: int | None = None,
                   cost_kind: str | None = None, n_finetune: int = 4, seed: int = 0) -> Path:
    """A finished run directory of `model`: config.json, model.json, init/best.safetensors,
    models/pretrain-layer{L}-epoch{E:04d}.safetensors, metrics.jsonl (pretrain lines, then finetune lines for
    sda/dbn), pretrained.safetensors (sda/dbn), summary.json. Layer 0's filters after epoch E are one-hot
    with shift E (best: shift 100; pretrained: shift 50). rbm's cost_kind defaults to pseudo-likelihood."""
    path = Path(run_dir)
    (path / "models").mkdir(parents=True, exist_ok=True)
    # the config a run of these sizes writes (init_seed 123: the rbm / dA / DBN chapters' RandomState(123))
    cfg = TrainConfig(model=model, preset=model, seed=seed, init_seed=123, batch_size=10, **SMALL[model])
    rundir.write_config(path, cfg, torch.device("cpu"), threads=thread_counts())
    net = build_model(cfg.model_args(), cfg.init_seed)
    rundir.save_model(path, net, cfg, rundir.INIT)  # init.safetensors and model.json
    key = first_layer_key(model)
    n_visible, n_hidden = net.state_dict()[key].shape

    def set_filters(shift: int) -> None:
        with torch.no_grad():
            net.state_dict()[key].copy_(torch.from_numpy(one_hot_filters(n_visible, n_hidden, shift)))

    layers = 1 if model in ("da", "ca", "rbm") else (n_layers_pretrained or len(cfg.hidden_layers_sizes))
    if model == "rbm" and cost_kind is None:
        cost_kind = "pseudo-likelihood"
    lines, t = [], 0.0
    for layer in range(layers):
        for epoch in range(epochs):
            set_filters(epoch)
            _save(path / "models" / f"pretrain-layer{layer}-epoch{epoch:04d}.safetensors", net, model)
            t += 1.5
            rec: dict[str, Any] = {"phase": "pretrain", "layer": layer, "epoch": epoch,
                                   "cost": -90.0 + 10 * epoch if model == "rbm" else 100.0 / (epoch + 1) + layer,
                                   "elapsed_s": t}
            if model == "ca":
                rec["jacobian_norm"] = 20.0 - epoch
            if model == "rbm":
                rec["cost_kind"] = cost_kind
            lines.append(rec)
    summary: dict[str, Any]
    if model in ("sda", "dbn"):
        set_filters(50)
        _save(path / "pretrained.safetensors", net, model)
        set_filters(100)
        n_train_batches, best = 50, float("inf")
        for v in range(n_finetune):
            valid = 20.0 / (v + 1)
            is_best = valid < best
            best = min(best, valid)
            lines.append({"epoch": v + 1, "minibatch": n_train_batches, "n_train_batches": n_train_batches,
                          "iteration": (v + 1) * n_train_batches, "train_cost": 1.0 / (v + 1),
                          "valid_error": valid, "test_error": valid + 0.5 if is_best else None, "best": is_best,
                          "elapsed_s": t + v, "phase": "finetune"})
        summary = {"best_validation_error": best, "test_error": best + 0.5, "epochs": n_finetune,
                   "train_seconds": float(n_finetune), "pretrain_seconds": t, "stopped": "n_epochs"}
    else:
        set_filters(100)
        summary = {"phase": "pretrain", "epochs": epochs, "final_cost": lines[-1]["cost"], "train_seconds": t,
                   "stopped": "n_epochs"}
    _save(path / "best.safetensors", net, model)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    files.atomic_write_json(path / "summary.json", summary)
    return path


def tiny_splits(n_train: int = 200, n_test: int = 40, seed: int = 0) -> Splits:
    """synthetic.tiny_splits at MNIST's shape with n_test validation and test images."""
    return synthetic.tiny_splits(n_train, n_test, n_test, seed=seed)
