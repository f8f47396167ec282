"""Each model family's section of the config: the fields its module takes, their defaults (the tutorial's),
their checks, and how to build the module. `FAMILIES` names them; adding a family is one class and one entry.

The config (deeptut/config.py) holds one of these as `cfg.net`; the TOML table named after the family
(`[lenet]`) and the flat flags (`--nkerns 20,50`) set its fields. `init_seed` is not here: it belongs to the
config's model section, and `build` takes it.

Fields are declared in the order model.json has always listed them. Nothing here imports torch at module
level, so that reading a config stays light; `build` imports its module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from deeptut.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

ACTIVATIONS = ("tanh", "sigmoid", "relu")  # hidden units; the tutorials use tanh


def _at_least(obj: Any, minimum: int, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {getattr(obj, name)}")


def _activation(value: str) -> None:
    if value not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {value!r}")


@dataclass(frozen=True)
class ModelArgs:
    """What every family's section offers: its fields as model.json saves them, and `build`."""

    pretrains: ClassVar[bool] = False  # True: the config's [pretraining] fields apply to this family

    def model_args(self) -> dict[str, Any]:
        """The fields that determine the parameters' shapes (model.json, without `model` and `format`). All
        of them here; a family with fields that shape nothing (a corruption level) leaves those out by
        overriding this, and `from_model_args` gives them their defaults."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_model_args(cls, args: dict[str, Any]) -> "ModelArgs":
        """The section from model.json's fields (lists back to tuples; a missing field takes its default)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})

    def build(self, init_seed: int | None = None) -> "nn.Module":
        raise NotImplementedError


@dataclass(frozen=True)
class LogisticArgs(ModelArgs):
    """logistic_sgd.py's LogisticRegression (W and b start at zero: no seed is used)."""

    n_in: int = 784  # inputs: 28x28 pixels
    n_out: int = 10  # classes

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_in", "n_out")

    def build(self, init_seed: int | None = None) -> "nn.Module":
        from deeptut.models.logistic import LogisticRegression

        return LogisticRegression(self.n_in, self.n_out)


@dataclass(frozen=True)
class MLPArgs(ModelArgs):
    """mlp.py's MLP: one hidden layer, then logistic regression."""

    n_in: int = 784  # inputs: 28x28 pixels
    n_hidden: int = 500  # hidden units (mlp.py: 500)
    n_out: int = 10  # classes
    activation: str = "tanh"  # tanh | sigmoid | relu (mlp.py: tanh; sigmoid gets the x4 initialisation)

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_in", "n_hidden", "n_out")
        _activation(self.activation)

    def build(self, init_seed: int | None = None) -> "nn.Module":
        from deeptut.models.mlp import MLP

        return MLP(self.n_in, self.n_hidden, self.n_out, self.activation, init_seed=init_seed)


@dataclass(frozen=True)
class LeNetArgs(ModelArgs):
    """convolutional_mlp.py's LeNet: two conv-pool layers on 28x28 images, a hidden layer, logistic regression."""

    nkerns: tuple[int, int] = (20, 50)  # kernels in conv-pool layers 1 and 2 (the tutorial: 20, 50)
    n_hidden: int = 500  # hidden units of the fully connected layer (the tutorial: 500)
    n_out: int = 10  # classes
    activation: str = "tanh"  # tanh | sigmoid | relu (the tutorial: tanh)

    def __post_init__(self) -> None:
        if len(self.nkerns) != 2 or min(self.nkerns) < 1:
            raise ConfigError(f"nkerns must be two positive integers, got {self.nkerns}")
        _at_least(self, 1, "n_hidden", "n_out")
        _activation(self.activation)

    def build(self, init_seed: int | None = None) -> "nn.Module":
        from deeptut.models.lenet import LeNet5

        return LeNet5(tuple(self.nkerns), self.n_hidden, self.n_out, self.activation, init_seed=init_seed)


# model name (--model, config.json's and model.json's "model") -> its section
FAMILIES: dict[str, type[ModelArgs]] = {
    "logistic": LogisticArgs,
    "mlp": MLPArgs,
    "lenet": LeNetArgs,
}


def family(name: str) -> type[ModelArgs]:
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"model must be one of {', '.join(FAMILIES)}; got {name!r}") from None


def owners(field_name: str) -> tuple[str, ...]:
    """The families that have a field of this name."""
    return tuple(n for n, c in FAMILIES.items() if field_name in {f.name for f in dataclasses.fields(c)})
