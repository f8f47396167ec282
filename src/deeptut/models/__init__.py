"""One model family per module; each family's config section (models/families.py) owns its fields and builds
its module, initialised as the tutorial does. `build_model` makes the one a config or a model.json names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deeptut.models.families import (FAMILIES, CAArgs, DAArgs, DBNArgs, LeNetArgs, LogisticArgs, MLPArgs, ModelArgs,
                                     RBMArgs, SdAArgs, family)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CAArgs", "DAArgs", "DBNArgs", "FAMILIES", "LeNetArgs", "LogisticArgs", "MLPArgs", "ModelArgs", "RBMArgs",
           "SdAArgs", "build_model", "family"]


def build_model(model_args: dict[str, Any], init_seed: int | None = None) -> "nn.Module":
    """model_args is `TrainConfig.model_args()` (also what model.json holds: its `format` is ignored here).
    A field model.json lacks takes its default; an unknown one raises TypeError naming it."""
    args = {k: v for k, v in model_args.items() if k not in ("model", "format")}
    return family(model_args.get("model")).from_model_args(args).build(init_seed)
