"""A tiny fake run directory, in the format the training loop writes, whose pictures have known content.
For tests and demos of the viz package; nothing here trains.

Logistic: W[:, k] is 1 on pixel column k of the 28x28 image and 0 elsewhere, so the template of class k
is a vertical white line at column k; `synthetic_test_data` makes digits whose prediction is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deeptut.config import TrainConfig


def synthetic_params(model: str, step: int = 0, cfg: TrainConfig | None = None) -> dict[str, np.ndarray]:
    cfg = cfg or TrainConfig(model=model, preset=model)
    rng = np.random.default_rng(100 + step)
    if model == "logistic":
        W = np.zeros((cfg.n_in, cfg.n_out), np.float32)
        for k in range(cfg.n_out):
            W[np.arange(cfg.n_in) % 28 == (k + step) % 28, k] = 1.0
        return {"W": W, "b": np.zeros(cfg.n_out, np.float32)}
    if model == "mlp":
        return {"hiddenLayer.W": rng.standard_normal((cfg.n_in, cfg.n_hidden), np.float32) * 0.05,
                "hiddenLayer.b": np.zeros(cfg.n_hidden, np.float32),
                "logRegressionLayer.W": rng.standard_normal((cfg.n_hidden, cfg.n_out), np.float32) * 0.05,
                "logRegressionLayer.b": np.zeros(cfg.n_out, np.float32)}
    if model == "lenet":
        k0, k1 = cfg.nkerns
        return {"layer0.W": rng.standard_normal((k0, 1, 5, 5), np.float32) * 0.1,
                "layer0.b": np.zeros(k0, np.float32),
                "layer1.W": rng.standard_normal((k1, k0, 5, 5), np.float32) * 0.1,
                "layer1.b": np.zeros(k1, np.float32),
                "layer2.W": rng.standard_normal((k1 * 16, cfg.n_hidden), np.float32) * 0.05,
                "layer2.b": np.zeros(cfg.n_hidden, np.float32),
                "layer3.W": rng.standard_normal((cfg.n_hidden, cfg.n_out), np.float32) * 0.05,
                "layer3.b": np.zeros(cfg.n_out, np.float32)}
    raise ValueError(f"unknown model {model!r}")


def synthetic_test_data(n: int = 30, wrong_every: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Digit i has one bright pixel in column i % 10, so the synthetic logistic model predicts i % 10;
    the label is wrong (i % 10 + 1) for every `wrong_every`-th digit."""
    x = np.zeros((n, 784), np.float32)
    y = np.zeros(n, np.int64)
    for i in range(n):
        c = i % 10
        x[i, 14 * 28 + c] = 0.99
        y[i] = (c + 1) % 10 if i % wrong_every == 0 else c
    return x, y


def make_synthetic_run(run_dir: str | Path, model: str = "logistic", n_checkpoints: int = 3,
                       n_validations: int = 6, n_train_batches: int = 83, **overrides: object) -> Path:
    """Write config.json, model.json, metrics.jsonl, summary.json, best.safetensors and
    models/iter-*.safetensors as the training loop does. Extra keys in `overrides` go into config."""
    from safetensors.numpy import save_file

    path = Path(run_dir)
    (path / "models").mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(model=model, preset=model, n_hidden=20 if model != "logistic" else 500)
    config = cfg.to_dict() | dict(overrides)
    (path / "config.json").write_text(json.dumps({
        "config": config, "versions": {"deeptut": "0.1.0", "torch": "x"}, "git_commit": None,
        "seed": cfg.seed, "device": "cpu", "extra": "tolerated"}, indent=2))
    (path / "model.json").write_text(json.dumps({**cfg.model_args(), "format": 1}))
    lines, best = [], float("inf")
    for v in range(n_validations):
        it = (v + 1) * n_train_batches
        valid = 30.0 / (v + 1) + (2.0 if v == n_validations - 1 else 0.0)  # last one gets worse
        is_best = valid < best
        best = min(best, valid)
        lines.append(json.dumps({
            "epoch": v + 1, "minibatch": n_train_batches, "n_train_batches": n_train_batches, "iteration": it,
            "train_cost": 2.0 / (v + 1), "valid_error": valid, "test_error": valid + 0.5 if is_best else None,
            "best": is_best, "elapsed_s": 0.1 * (v + 1), "unknown_key": [1, 2]}))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (path / "summary.json").write_text(json.dumps({
        "best_validation_error": best, "test_error": best + 0.5, "best_iteration": (n_validations - 1) * n_train_batches,
        "epochs": n_validations, "train_seconds": 0.05 * n_validations,
        "evaluation": "tutorial", "stopped": "n_epochs", "note": "extra keys are fine"}))
    save_file(synthetic_params(model, 0, cfg), str(path / "best.safetensors"))
    for s in range(n_checkpoints):
        save_file(synthetic_params(model, s, cfg), str(path / "models" / f"iter-{(s + 1) * n_train_batches:08d}.safetensors"))
    return path
