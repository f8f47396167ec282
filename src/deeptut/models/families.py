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
    classifier: ClassVar[bool] = True  # False: trained without labels only (no classifier to evaluate)
    # How the family is trained: a procedure's name in deeptut/registry.py PROCEDURES ("sgd": train/loop.py
    # fit; "pretrain": train/pretrain.py). train/runner.py calls it; nothing switches on the family's name.
    procedure: ClassVar[str] = "sgd"
    # Pictures of a run beyond the generic ones (learning curves): None (the image families' own, in
    # viz/render.py), or a "module:function" drawing `fn(run, out_dir, data) -> list[Path]`.
    pictures: ClassVar[str | None] = None

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


def _unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1] (a fraction of the inputs zeroed), got {value}")


def _layer_sizes(sizes: tuple[int, ...]) -> None:
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"hidden_layers_sizes must be one or more sizes >= 1, e.g. 1000,1000,1000; got "
                          f"{','.join(map(str, sizes)) or 'nothing'}")


def _without(args: ModelArgs, *names: str) -> dict[str, Any]:
    """model_args without the fields that shape no parameter (they take their defaults on load)."""
    return {k: v for k, v in ModelArgs.model_args(args).items() if k not in names}


@dataclass(frozen=True)
class DAArgs(ModelArgs):
    """dA.py's denoising autoencoder (tied weights). Trained alone: learning_rate, n_epochs and batch_size
    are the [optim] fields; init_seed 123 in the preset (test_dA's RandomState(123))."""

    procedure: ClassVar[str] = "pretrain"
    classifier: ClassVar[bool] = False

    n_visible: int = 784  # inputs: 28x28 pixels
    n_hidden: int = 500  # hidden units (dA.py: 500)
    corruption_level: float = 0.3  # fraction of the inputs zeroed at each step (dA.py: 0 and 0.3)

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_visible", "n_hidden")
        _unit_interval("corruption_level", self.corruption_level)

    def model_args(self) -> dict[str, Any]:
        return _without(self, "corruption_level")

    def build(self, init_seed: int | None = None) -> "nn.Module":
        import numpy as np

        from deeptut.models.da import DEFAULT_INIT_SEED, dA

        return dA(self.n_visible, self.n_hidden, np.random.RandomState(
            DEFAULT_INIT_SEED if init_seed is None else init_seed))


@dataclass(frozen=True)
class CAArgs(ModelArgs):
    """cA.py's contractive autoencoder. Its n_batchsize (the penalty's divisor) is the config's batch_size,
    set by the training loop."""

    procedure: ClassVar[str] = "pretrain"
    classifier: ClassVar[bool] = False

    n_visible: int = 784  # inputs: 28x28 pixels
    n_hidden: int = 500  # hidden units (test_cA: 500)
    contraction_level: float = 0.1  # weight of the Jacobian penalty (cA.py: 0.1)
    floor_division: bool = False  # True: cA.py's `sum(J ** 2) // n_batchsize` (no gradient: the tutorial's
    #   cA trains as a plain autoencoder) and its printed line's values (models/ca.py); False: true division

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_visible", "n_hidden")
        if not self.contraction_level >= 0:
            raise ConfigError(f"contraction_level must be >= 0, got {self.contraction_level}")

    def model_args(self) -> dict[str, Any]:
        return _without(self, "contraction_level", "floor_division")

    def build(self, init_seed: int | None = None) -> "nn.Module":
        import numpy as np

        from deeptut.models.ca import cA
        from deeptut.models.da import DEFAULT_INIT_SEED

        return cA(self.n_visible, self.n_hidden, 1, np.random.RandomState(
            DEFAULT_INIT_SEED if init_seed is None else init_seed), floor_division=self.floor_division)


@dataclass(frozen=True)
class SdAArgs(ModelArgs):
    """SdA.py's stacked denoising autoencoder: sigmoid layers pre-trained as dAs, then logistic regression
    and fine-tuning ([pretraining] and [optim] fields)."""

    procedure: ClassVar[str] = "pretrain"
    pretrains: ClassVar[bool] = True

    n_in: int = 784  # inputs: 28x28 pixels (SdA.py's n_ins)
    hidden_layers_sizes: tuple[int, ...] = (1000, 1000, 1000)  # sigmoid layers, bottom up (SdA.py: 3 x 1000)
    n_out: int = 10  # classes (SdA.py's n_outs)
    corruption_levels: tuple[float, ...] = (0.1, 0.2, 0.3)  # each layer's dA corruption (SdA.py: .1, .2, .3)

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_in", "n_out")
        _layer_sizes(self.hidden_layers_sizes)
        if len(self.corruption_levels) != len(self.hidden_layers_sizes):
            raise ConfigError(f"corruption_levels needs one level per hidden layer: got "
                              f"{len(self.corruption_levels)} for {len(self.hidden_layers_sizes)} layers "
                              f"(hidden_layers_sizes {','.join(map(str, self.hidden_layers_sizes))})")
        for level in self.corruption_levels:
            _unit_interval("corruption_levels", level)

    def model_args(self) -> dict[str, Any]:
        return _without(self, "corruption_levels")

    @classmethod
    def from_model_args(cls, args: dict[str, Any]) -> "ModelArgs":
        """model.json has no corruption levels (they shape nothing): zeros, one per layer, on load."""
        args = dict(args)
        if "corruption_levels" not in args:
            args["corruption_levels"] = [0.0] * len(args.get("hidden_layers_sizes", cls.hidden_layers_sizes))
        return super().from_model_args(args)

    def build(self, init_seed: int | None = None) -> "nn.Module":
        from deeptut.models.sda import SdA

        return SdA(self.n_in, self.hidden_layers_sizes, self.n_out, init_seed=init_seed)


def _gibbs(args: Any) -> None:
    if args.k < 1:
        raise ConfigError(f"k (Gibbs steps per CD-k / PCD-k update) must be >= 1, got {args.k}")


@dataclass(frozen=True)
class RBMArgs(ModelArgs):
    """rbm.py's binary RBM trained alone with CD-k or PCD-k; init_seed 123 in the preset."""

    procedure: ClassVar[str] = "pretrain"
    classifier: ClassVar[bool] = False

    n_visible: int = 784  # inputs: 28x28 pixels
    n_hidden: int = 500  # hidden units (rbm.py: 500)
    k: int = 15  # Gibbs steps per update (rbm.py: 15)
    persistent: bool = True  # PCD-k, the chain kept across updates (rbm.py); false: CD-k

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_visible", "n_hidden")
        _gibbs(self)

    def model_args(self) -> dict[str, Any]:
        return _without(self, "k", "persistent")

    def build(self, init_seed: int | None = None) -> "nn.Module":
        import numpy as np

        from deeptut.models.rbm import DEFAULT_INIT_SEED, RBM

        return RBM(self.n_visible, self.n_hidden, np.random.RandomState(
            DEFAULT_INIT_SEED if init_seed is None else init_seed))


@dataclass(frozen=True)
class DBNArgs(ModelArgs):
    """DBN.py's deep belief network: sigmoid layers pre-trained as RBMs, then logistic regression and
    fine-tuning ([pretraining] and [optim] fields)."""

    procedure: ClassVar[str] = "pretrain"
    pretrains: ClassVar[bool] = True

    n_in: int = 784  # inputs: 28x28 pixels (DBN.py's n_ins)
    hidden_layers_sizes: tuple[int, ...] = (1000, 1000, 1000)  # sigmoid layers, bottom up (DBN.py: 3 x 1000)
    n_out: int = 10  # classes (DBN.py's n_outs)
    k: int = 1  # Gibbs steps per update (DBN.py: CD-1)
    persistent: bool = False  # PCD-k for every layer's RBM; DBN.py: CD-k

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_in", "n_out")
        _layer_sizes(self.hidden_layers_sizes)
        _gibbs(self)

    def model_args(self) -> dict[str, Any]:
        return _without(self, "k", "persistent")

    def build(self, init_seed: int | None = None) -> "nn.Module":
        from deeptut.models.dbn import DBN

        return DBN(self.n_in, self.hidden_layers_sizes, self.n_out, init_seed=init_seed)


# model name (--model, config.json's and model.json's "model") -> its section
FAMILIES: dict[str, type[ModelArgs]] = {
    "logistic": LogisticArgs,
    "mlp": MLPArgs,
    "lenet": LeNetArgs,
    "da": DAArgs,
    "ca": CAArgs,
    "sda": SdAArgs,
    "rbm": RBMArgs,
    "dbn": DBNArgs,
}


_LISTENERS: list[Any] = []  # called after a family is registered (config.py rebuilds its tables of names)


def register_family(name: str, cls: type[ModelArgs], *, replace: bool = False) -> None:
    """Add a model family: `--model NAME`, a `[NAME]` table, its fields as flags and config.json keys, and
    model.json's "model". `cls` is a frozen dataclass subclassing ModelArgs whose `procedure` names a
    registered procedure (deeptut.registry.register_procedure). Works from outside src/ (a test, a
    notebook); a run directory of such a family is readable wherever the family is registered again."""
    if not (isinstance(cls, type) and issubclass(cls, ModelArgs) and dataclasses.is_dataclass(cls)):
        raise ConfigError(f"family {name!r}: give a dataclass subclassing ModelArgs, got {cls!r}")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"a family name is letters, digits, - and _; got {name!r}")
    if name in FAMILIES and FAMILIES[name] is not cls and not replace:
        raise ConfigError(f"family {name!r} is already registered ({FAMILIES[name].__name__}); pass replace=True")
    old = FAMILIES.get(name)
    FAMILIES[name] = cls
    try:
        for listener in _LISTENERS:
            listener()
    except Exception:  # a clash of field names or types: leave the registry as it was
        if old is None:
            del FAMILIES[name]
        else:
            FAMILIES[name] = old
        for listener in _LISTENERS:
            listener()
        raise


def family(name: str) -> type[ModelArgs]:
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"model must be one of {', '.join(FAMILIES)}; got {name!r}") from None


def owners(field_name: str) -> tuple[str, ...]:
    """The families that have a field of this name."""
    return tuple(n for n, c in FAMILIES.items() if field_name in {f.name for f in dataclasses.fields(c)})
