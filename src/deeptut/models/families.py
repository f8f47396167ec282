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

    from deeptut.models.trainers import LayerTrainer

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
    # The same procedure without torch for the cases it covers (a procedure's name, or None): it returns
    # None for any other case, and `procedure` runs. "sgd-torchless": train/torchless.py, the logistic C step.
    torchless: ClassVar[str | None] = None
    # Pictures of a run beyond the generic ones (learning curves): None (the image families' own, in
    # viz/render.py), or a "module:function" drawing `fn(run, out_dir, data) -> list[Path]`.
    pictures: ClassVar[str | None] = None
    # How viz draws the first layer's weights: (style, parameter name), style "templates" (one image per class:
    # logistic regression's W[:, k]), "units" (a hidden layer's W.T), "kernels" (a conv layer's kernels) or
    # "chapter" (the unsupervised chapters' 10 x 10 grid of W.T); None: no such picture
    first_layer: ClassVar[tuple[str, str] | None] = None
    convolutional: ClassVar[bool] = False  # the [accel] conv field applies (LeNet's conv-pool layers)
    dense: ClassVar[bool] = False  # its module is dense layers (W [n_in, n_out], b) that the CUDA graph step
    #   may update with its fused DenseUpdate (accel/cuda/updates.py), checked against autograd at the start
    samples: ClassVar[bool] = False  # an RBM that samples (rbm.py): samples.png after training, `deeptut sample`,
    #   `eval --log-likelihood` (AIS), its filters after every epoch and the published PL curve

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

    def layer_trainers(self, model: "nn.Module", batch_size: int) -> list["LayerTrainer"]:
        """procedure "pretrain": what each layer trains on, bottom up (models/trainers.py). A family that is
        not a classifier is trained so alone (dA, cA, RBM); a classifier is fine-tuned afterwards (SdA, DBN)."""
        raise NotImplementedError(f"{type(self).__name__} has no unsupervised layers to train")


@dataclass(frozen=True)
class LogisticArgs(ModelArgs):
    """logistic_sgd.py's LogisticRegression (W and b start at zero: no seed is used)."""

    first_layer: ClassVar[tuple[str, str] | None] = ("templates", "W")
    dense: ClassVar[bool] = True
    torchless: ClassVar[str | None] = "sgd-torchless"  # a CPU run starts in a fraction of a second

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

    first_layer: ClassVar[tuple[str, str] | None] = ("units", "hiddenLayer.W")
    dense: ClassVar[bool] = True

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

    first_layer: ClassVar[tuple[str, str] | None] = ("kernels", "layer0.W")
    convolutional: ClassVar[bool] = True

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

    first_layer: ClassVar[tuple[str, str] | None] = ("chapter", "W")
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

    def layer_trainers(self, model: "nn.Module", batch_size: int) -> list["LayerTrainer"]:
        import deeptut.models.trainers as trainers  # the submodule (not read from the package)

        return [trainers.denoising(model, self.corruption_level,
                                   trainers.mean_line("Training epoch {epoch}, cost  {cost}"))]  # dA.py


@dataclass(frozen=True)
class CAArgs(ModelArgs):
    """cA.py's contractive autoencoder. Its n_batchsize (the penalty's divisor) is the config's batch_size,
    set by the training loop."""

    first_layer: ClassVar[tuple[str, str] | None] = ("chapter", "W")
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

    def layer_trainers(self, model: "nn.Module", batch_size: int) -> list["LayerTrainer"]:
        import deeptut.models.trainers as trainers  # the submodule (not read from the package)

        return [trainers.contractive(model, self.contraction_level, batch_size, self.floor_division)]


@dataclass(frozen=True)
class SdAArgs(ModelArgs):
    """SdA.py's stacked denoising autoencoder: sigmoid layers pre-trained as dAs, then logistic regression
    and fine-tuning ([pretraining] and [optim] fields)."""

    first_layer: ClassVar[tuple[str, str] | None] = ("chapter", "sigmoid_layers.0.W")
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

    def layer_trainers(self, model: "nn.Module", batch_size: int) -> list["LayerTrainer"]:
        import deeptut.models.trainers as trainers  # the submodule (not read from the package)

        line = trainers.mean_line(trainers.STACKED_LINE)
        return [trainers.denoising(dA, level, line) for dA, level in zip(model.dA_layers, self.corruption_levels)]


def _gibbs(args: Any) -> None:
    if args.k < 1:
        raise ConfigError(f"k (Gibbs steps per CD-k / PCD-k update) must be >= 1, got {args.k}")


@dataclass(frozen=True)
class RBMArgs(ModelArgs):
    """rbm.py's binary RBM trained alone with CD-k or PCD-k; init_seed 123 in the preset."""

    first_layer: ClassVar[tuple[str, str] | None] = ("chapter", "W")
    samples: ClassVar[bool] = True
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

    def layer_trainers(self, model: "nn.Module", batch_size: int) -> list["LayerTrainer"]:
        import deeptut.models.trainers as trainers  # the submodule (not read from the package)

        return [trainers.rbm(model, self.k, self.persistent, "Training epoch {epoch}, cost is  {cost}")]  # rbm.py


@dataclass(frozen=True)
class DBNArgs(ModelArgs):
    """DBN.py's deep belief network: sigmoid layers pre-trained as RBMs, then logistic regression and
    fine-tuning ([pretraining] and [optim] fields)."""

    first_layer: ClassVar[tuple[str, str] | None] = ("chapter", "sigmoid_layers.0.W")
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

    def layer_trainers(self, model: "nn.Module", batch_size: int) -> list["LayerTrainer"]:
        import deeptut.models.trainers as trainers  # the submodule (not read from the package)

        return [trainers.rbm(rbm, self.k, self.persistent, trainers.STACKED_LINE) for rbm in model.rbm_layers]


@dataclass(frozen=True)
class LogisticCGArgs(LogisticArgs):
    """logistic_cg.py: logistic_sgd.py's model (W and b start at zero) trained by scipy.optimize.fmin_cg on the
    whole training set's mean cost and gradient, summed by minibatches of [optim] batch_size (600); at most
    [optim] n_epochs (50) CG iterations (train/cg.py)."""

    procedure: ClassVar[str] = "cg"
    torchless: ClassVar[str | None] = None  # the torch-free run is fit's ("sgd"), not CG's
    # pictures: logistic regression's own (first_layer "templates" from LogisticArgs, confusion, errors)


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:  # also rejects nan
            raise ConfigError(f"{name} must be > 0, got {getattr(obj, name)}")


@dataclass(frozen=True)
class HMCArgs(ModelArgs):
    """hmc.py's sampler on test_hmc.py's target: a Gaussian in `dim` dimensions drawn from numpy
    RandomState(init_seed) (the preset: 123, the published target), `n_chains` chains started at its randn
    draws. The defaults are hmc.py's new_from_shared_positions; the momenta come from a torch.Generator seeded
    with [run] seed (train/hmc.py). build() gives the target's energy."""

    procedure: ClassVar[str] = "mcmc"  # train/hmc.py sample
    classifier: ClassVar[bool] = False
    pictures: ClassVar[str | None] = "deeptut.viz.hmc:draw"  # trace and scatter of the draws

    dim: int = 5  # dimensions of the Gaussian target (test_hmc: 5)
    n_chains: int = 3  # chains sampled in parallel (test_hmc's batchsize: 3)
    initial_stepsize: float = 0.01  # leapfrog step at the first draw (hmc.py: 0.01; test_hmc: 1e-3)
    target_acceptance_rate: float = 0.9  # the step size tracks this acceptance rate (hmc.py: 0.9)
    n_steps: int = 20  # leapfrog steps per draw (hmc.py: 20)
    stepsize_dec: float = 0.98  # step x this when the average acceptance is below target (hmc.py: 0.98)
    stepsize_min: float = 0.001  # lower bound of the step (hmc.py: 0.001)
    stepsize_max: float = 0.25  # upper bound of the step (hmc.py: 0.25; test_hmc: 0.5)
    stepsize_inc: float = 1.02  # step x this when the average acceptance is above target (hmc.py: 1.02)
    avg_acceptance_slowness: float = 0.9  # weight of the old average in the acceptance average (hmc.py: 0.9)
    burnin: int = 1000  # draws thrown away before keeping any (test_hmc: 1000)
    n_samples: int = 1000  # draws kept per chain (test_hmc: 1000)
    checkpoint_draws: int = 100  # write the resumable checkpoint every this many draws

    def __post_init__(self) -> None:
        _at_least(self, 1, "dim", "n_chains", "n_steps", "n_samples", "checkpoint_draws")
        _at_least(self, 0, "burnin")
        if self.n_samples < 4:
            raise ConfigError(f"n_samples must be >= 4 (R-hat and the ESS split each chain in halves), got "
                              f"{self.n_samples}")
        _positive(self, "initial_stepsize", "stepsize_min", "stepsize_dec", "stepsize_inc")
        if not self.stepsize_min <= self.stepsize_max:
            raise ConfigError(f"stepsize_min ({self.stepsize_min}) must be <= stepsize_max ({self.stepsize_max})")
        for name in ("target_acceptance_rate", "avg_acceptance_slowness"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def model_args(self) -> dict[str, Any]:
        return {"dim": self.dim}  # only the dimension shapes the target's tensors

    def build(self, init_seed: int | None = None) -> "nn.Module":
        from deeptut.models.hmc import GaussianEnergy, gaussian_target

        mu, cov, _positions = gaussian_target(self.dim, self.n_chains, 123 if init_seed is None else init_seed)
        return GaussianEnergy(mu, cov)


LSTM_INPUTS = ("tokens", "rows")  # models/lstm.py INPUTS
LSTM_OPTIMIZERS = ("adadelta", "sgd", "rmsprop", "adam")  # lstm.py's three, then deeptut's Adam


@dataclass(frozen=True)
class LSTMArgs(ModelArgs):
    """lstm.py's LSTM sentiment classifier (IMDB, dataset "imdb"), or the same network reading MNIST row by
    row (inputs = "rows", dataset "mnist-rows"). Trained by train/sequence.py: minibatches of [optim]
    batch_size (lstm.py: 16) for at most n_epochs (max_epochs), validated once per epoch, stopped by
    lstm.py's rule after [early_stopping] patience validations (lstm.py: 10) without a new best;
    [optim] learning_rate is lstm.py's lrate (sgd, rmsprop, adam; adadelta has none). The data fields
    (n_words, maxlen, valid_portion, test_size) cut IMDB as imdb.py's load_data does."""

    procedure: ClassVar[str] = "sequence"
    classifier: ClassVar[bool] = False  # no digit classifier: `deeptut eval` / `predict` do not apply
    pictures: ClassVar[str | None] = "deeptut.train.sequence:pictures"  # learning curves only

    inputs: str = "tokens"  # tokens: word indices through the embedding Wemb | rows: feature vectors (n_in
    #   each, e.g. 28 pixels of an MNIST row) through a linear projection
    n_words: int = 10_000  # vocabulary (lstm.py's n_words): indices >= n_words read as 1, unknown
    n_in: int = 28  # inputs = rows: features per step (28 pixels)
    dim_proj: int = 128  # embedding size = LSTM units (lstm.py: 128)
    n_out: int = 2  # classes (lstm.py's ydim: 2 for IMDB)
    use_dropout: bool = True  # lstm.py's dropout of the pooled vector (p 0.5; x 0.5 in evaluation)
    optimizer: str = "adadelta"  # adadelta (lstm.py's default, rho 0.95, eps 1e-6) | sgd | rmsprop (lstm.py's:
    #   its 1e-4 step is learning_rate) | adam (torch's, at learning_rate)
    decay_c: float = 0.0  # lstm.py's weight decay of the classifier: + decay_c * sum(U^2)
    clip_norm: float = 0.0  # clip the gradient's global L2 norm to this (0 = off, lstm.py); typical 5
    maxlen: int = 100  # imdb: training sequences of maxlen steps or more are dropped (lstm.py: 100; 0 = none)
    valid_portion: float = 0.05  # imdb: fraction of the training sequences held out for validation (lstm.py)
    valid_batch_size: int = 64  # sequences per evaluation minibatch (lstm.py: 64)
    test_size: int = -1  # imdb: keep a random test_size test sequences (lstm.py's __main__: 500; -1 = all)
    bucket: bool = False  # training minibatches of similar lengths (data/sequences.py bucketed); lstm.py: off

    def __post_init__(self) -> None:
        if self.inputs not in LSTM_INPUTS:
            raise ConfigError(f"inputs must be one of {', '.join(LSTM_INPUTS)}; got {self.inputs!r}")
        if self.optimizer not in LSTM_OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(LSTM_OPTIMIZERS)}; got {self.optimizer!r}")
        _at_least(self, 1, "dim_proj", "n_in", "valid_batch_size")
        _at_least(self, 2, "n_words", "n_out")
        _at_least(self, 0, "maxlen")
        if not self.decay_c >= 0:
            raise ConfigError(f"decay_c must be >= 0, got {self.decay_c}")
        if not self.clip_norm >= 0:
            raise ConfigError(f"clip_norm must be >= 0 (0 = off), got {self.clip_norm}")
        if not 0.0 < self.valid_portion < 1.0:
            raise ConfigError(f"valid_portion must be in (0, 1), got {self.valid_portion}")
        if self.test_size == 0 or self.test_size < -1:
            raise ConfigError(f"test_size must be -1 (all) or >= 1, got {self.test_size}")

    def model_args(self) -> dict[str, Any]:
        return _without(self, "optimizer", "decay_c", "clip_norm", "maxlen", "valid_portion", "valid_batch_size",
                        "test_size", "bucket")

    def build(self, init_seed: int | None = None) -> "nn.Module":
        from deeptut.models.lstm import LSTMClassifier

        return LSTMClassifier(self.n_words, self.dim_proj, self.n_out, self.use_dropout, self.inputs, self.n_in,
                              init_seed=init_seed)


@dataclass(frozen=True)
class RNNSLUArgs(ModelArgs):
    """rnnslu.py's Elman network for slot filling (models/rnnslu.py), trained by train/rnnslu.py: one
    sentence per update at [optim] learning_rate (0.0971), batch_size 1 (more: padded sentences, the fast
    preset), at most n_epochs (60), halving the rate after 10 epochs without a better validation F1; init_seed
    and [run] seed 345. n_words and n_out are set from the data when left at 0."""

    procedure: ClassVar[str] = "slot-filling"
    classifier: ClassVar[bool] = False  # tags words, no digit classifier: `deeptut eval` / `predict` do not apply
    pictures: ClassVar[str | None] = "deeptut.train.rnnslu:pictures"  # validation and test F1 per epoch

    n_words: int = 0  # vocabulary (rnnslu.py's ne; ATIS: 572); 0 = the corpus's
    n_out: int = 0  # slot tags (nc; ATIS: 127 with O); 0 = the corpus's
    emb_dimension: int = 50  # word embedding size (de; the chapter: 50)
    nhidden: int = 200  # recurrent sigmoid units (nh; the chapter: 200)
    win: int = 7  # words in the context window, odd (cs; the chapter: 7)
    decay: bool = True  # halve the rate and go back to the best model after 10 epochs without a better F1
    fold: int = 3  # dataset "atis": which atis.fold<k>.pkl.gz, 0..4 (the chapter: 3)

    def __post_init__(self) -> None:
        _at_least(self, 0, "n_words", "n_out")
        _at_least(self, 1, "emb_dimension", "nhidden", "win")
        if self.win % 2 != 1:
            raise ConfigError(f"win (the context window) must be odd, got {self.win}")
        if not 0 <= self.fold <= 4:
            raise ConfigError(f"fold must be one of 0..4 (atis.fold<k>.pkl.gz), got {self.fold}")

    def model_args(self) -> dict[str, Any]:
        return _without(self, "decay", "fold")

    def build(self, init_seed: int | None = None) -> "nn.Module":
        from deeptut.models.rnnslu import DEFAULT_INIT_SEED, ElmanSLU

        if self.n_words < 1 or self.n_out < 1:
            raise ConfigError("rnnslu: n_words and n_out must be known to build the network (train/rnnslu.py "
                              "sets them from the corpus)")
        return ElmanSLU(self.n_words, self.n_out, self.emb_dimension, self.nhidden, self.win,
                        DEFAULT_INIT_SEED if init_seed is None else init_seed)


RNNRBM_OPTIMIZERS = ("sgd", "adam")  # rnnrbm.py's plain SGD, or torch's Adam (the fast preset)


@dataclass(frozen=True)
class RnnRbmArgs(ModelArgs):
    """rnnrbm.py's RNN-RBM on piano-rolls (datasets "nottingham", "jsb-chorales"): the RBM's biases at each
    frame set by an RNN; CD-k on each frame, back-propagated through the RNN (train/rnnrbm.py). [optim]
    batch_size is the tutorial's: frames per training subsequence (100), learning_rate its lr (0.001),
    n_epochs its num_epochs (200); init_seed 0xbeef (48879) its numpy.random.seed."""

    procedure: ClassVar[str] = "piano-roll"
    classifier: ClassVar[bool] = False
    pictures: ClassVar[str | None] = "deeptut.viz.music:draw"  # a generated piano-roll, the cost per epoch
    # what `deeptut sample RUN_DIR` calls for a run of this family: fn(run_dir, *, seed, device) -> [Path]
    sampler: ClassVar[str | None] = "deeptut.viz.music:write_sample"

    n_visible: int = 88  # piano-roll pitches from pitch_low (rnnrbm.py's r = (21, 109): 88 keys)
    n_hidden: int = 150  # hidden units of each frame's RBM (rnnrbm.py: 150)
    n_hidden_recurrent: int = 100  # RNN units (rnnrbm.py: 100)
    k: int = 15  # Gibbs steps per CD update of every frame (rnnrbm.py: 15)
    generate_k: int = 25  # Gibbs steps per generated frame (rnnrbm.py: 25)
    generate_frames: int = 200  # frames of a generated piece (rnnrbm.py: 200)
    pitch_low: int = 21  # MIDI pitch of the piano-roll's first column (rnnrbm.py: 21, A0)
    frame_seconds: float = 0.3  # seconds per frame reading MIDI files and writing samples (rnnrbm.py's dt)
    frame_quarters: float = 0.5  # jsb-chorales: quarter notes per frame (0.5: eighth notes)
    sequences_per_batch: int = 1  # subsequences of batch_size frames per update, padded (rnnrbm.py: 1)
    optimizer: str = "sgd"  # sgd (rnnrbm.py) | adam (torch's, at learning_rate; the fast preset)
    clip_norm: float = 0.0  # clip the gradient's global L2 norm to this (0 = off, rnnrbm.py); typical 5
    max_train_seconds: float = 0.0  # stop after the epoch that passes this many seconds of training (0 = off)
    ais_frames: int = 100  # frames of each of valid and test whose log-likelihood AIS estimates (0 = none)
    ais_steps: int = 500  # AIS: intermediate temperatures, evenly spaced, per frame
    ais_runs: int = 20  # AIS: parallel runs per frame

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_visible", "n_hidden", "n_hidden_recurrent", "generate_k", "generate_frames",
                  "sequences_per_batch", "ais_steps")
        _gibbs(self)
        _at_least(self, 0, "pitch_low", "ais_frames")
        _at_least(self, 2, "ais_runs")
        if self.pitch_low + self.n_visible > 128:
            raise ConfigError(f"pitch_low + n_visible must be <= 128 (MIDI pitches 0..127), got "
                              f"{self.pitch_low} + {self.n_visible}")
        _positive(self, "frame_seconds", "frame_quarters")
        if self.optimizer not in RNNRBM_OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(RNNRBM_OPTIMIZERS)} for rnnrbm; got "
                              f"{self.optimizer!r}")
        for name in ("clip_norm", "max_train_seconds"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")

    def model_args(self) -> dict[str, Any]:
        return {"n_visible": self.n_visible, "n_hidden": self.n_hidden,
                "n_hidden_recurrent": self.n_hidden_recurrent}

    def build(self, init_seed: int | None = None) -> "nn.Module":
        import numpy as np

        from deeptut.models.rnnrbm import DEFAULT_INIT_SEED, RnnRbm

        return RnnRbm(self.n_visible, self.n_hidden, self.n_hidden_recurrent, np.random.RandomState(
            DEFAULT_INIT_SEED if init_seed is None else init_seed))


DEFAULT_MODEL = "logistic"  # a config that names no model: logistic_sgd.py, the first chapter

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
    "lstm": LSTMArgs,
    "logistic-cg": LogisticCGArgs,
    "hmc": HMCArgs,
    "rnnslu": RNNSLUArgs,
    "rnnrbm": RnnRbmArgs,
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


def unregister_family(name: str) -> None:
    """Remove a family registered with register_family (a notebook's or a test's); unknown names are ignored."""
    if FAMILIES.pop(name, None) is not None:
        for listener in _LISTENERS:
            listener()


def family(name: str) -> type[ModelArgs]:
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"model must be one of {', '.join(FAMILIES)}; got {name!r}") from None


def with_trait(trait: str) -> tuple[str, ...]:
    """The registered families whose section sets the ClassVar `trait` (e.g. "samples", "pretrains")."""
    return tuple(n for n, c in FAMILIES.items() if getattr(c, trait, False))


def owners(field_name: str) -> tuple[str, ...]:
    """The families that have a field of this name."""
    return tuple(n for n, c in FAMILIES.items() if field_name in {f.name for f in dataclasses.fields(c)})
