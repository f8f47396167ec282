"""One model family per module; `build_model(cfg)` makes the one a config names, initialised as the
tutorial does."""

from __future__ import annotations

from typing import Any

from torch import nn

from deeptut.errors import ConfigError


def build_model(model_args: dict[str, Any], init_seed: int | None = None) -> nn.Module:
    """model_args is `TrainConfig.model_args()` (also what model.json holds)."""
    kind = model_args.get("model")
    args = {k: v for k, v in model_args.items() if k not in ("model", "format")}
    if kind == "logistic":
        from deeptut.models.logistic import LogisticRegression

        return LogisticRegression(**args)
    if kind == "mlp":
        from deeptut.models.mlp import MLP

        return MLP(**args, init_seed=init_seed)
    if kind == "lenet":
        from deeptut.models.lenet import LeNet5

        args["nkerns"] = tuple(args["nkerns"])
        return LeNet5(**args, init_seed=init_seed)
    raise ConfigError(f"unknown model {kind!r}")
