"""Configuration: one frozen dataclass holds every default; presets are TOML files that override some
fields; `--key value` flags override those. Unknown keys and wrong types are rejected.

The resolved config is saved in every run directory (config.json) and is enough to rebuild the model.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from deeptut.errors import ConfigError

MODELS = ("logistic", "mlp", "lenet")


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train -------------------------------------------------------------------------
    model: str = "logistic"  # logistic | mlp | lenet
    preset: str = "logistic"  # name of the preset this config came from (run-directory prefix)
    dataset: str = "mnist"  # mnist | fashion-mnist | idx (any four IDX files, no checksums)
    # --- model shape (tutorial names) ----------------------------------------------------------
    n_in: int = 784  # 28x28 pixels
    n_out: int = 10  # classes
    n_hidden: int = 500  # MLP / LeNet hidden units
    nkerns: tuple[int, int] = (20, 50)  # LeNet kernels in conv layers 1 and 2
    activation: str = "tanh"  # tanh | sigmoid | relu (hidden layers)
    init_seed: int = 1234  # numpy RandomState seed of the tutorial initialisation (LeNet: 23455)
    # --- optimisation --------------------------------------------------------------------------
    learning_rate: float = 0.13  # SGD step size (tutorial logistic 0.13, MLP 0.01, LeNet 0.1)
    batch_size: int = 600  # examples per minibatch (tutorial logistic 600, MLP 20, LeNet 500)
    n_epochs: int = 1000  # upper bound on passes over the training set
    L1_reg: float = 0.0  # lambda_1 * sum|W| over weight matrices
    L2_reg: float = 0.0  # lambda_2 * sum W^2 over weight matrices
    momentum: float = 0.0  # 0 = the tutorials' plain SGD; fast presets use 0.9
    nesterov: bool = False
    weight_decay: float = 0.0  # decoupled from L2_reg: added to the gradient of weights and biases
    lr_schedule: str = "constant"  # constant | cosine | onecycle (over n_epochs * n_train_batches)
    warmup_fraction: float = 0.0  # onecycle: fraction of steps spent rising to learning_rate
    shuffle: bool = False  # reshuffle the training set each epoch (tutorials: False)
    augment_shift: int = 0  # move each training image by a random (dy, dx), |d| <= this many pixels, redrawn
    #   every epoch (data/augment.py); 0 = off, the tutorials. Fast LeNet presets: 2
    # --- early stopping (the tutorials' patience rule; counted in minibatch iterations) ----------
    patience: int = 5000  # look at this many iterations regardless
    patience_increase: float = 2.0  # wait this much longer (x iteration) on a significant improvement
    improvement_threshold: float = 0.995  # a relative improvement of this much is significant
    improvement: str = "threshold"  # threshold: the tutorials' rule above | mcnemar: significant when McNemar's
    #   exact test on the validation examples (new best against the previous best) gives p < mcnemar_alpha
    mcnemar_alpha: float = 0.05  # significance level of improvement = "mcnemar" (typical 0.05)
    validation_frequency: int = 0  # 0 = min(n_train_batches, patience // 2), the tutorial's choice
    # --- evaluation ----------------------------------------------------------------------------
    evaluation: str = "tutorial"  # tutorial: mean over floor(n/batch) minibatches | full: every example
    # --- run -----------------------------------------------------------------------------------
    seed: int = 1234  # torch/numpy/python RNG seed for data order and anything random in training
    device: str = "auto"  # cpu | cuda | auto
    threads: int = 0  # CPU threads for torch and BLAS (0 = their defaults: all cores); recorded. Busy machine: 1
    fast_step: bool = True  # hand-fused CPU step where one exists (see `sparse`); LeNet on CPU: the conv
    #   layers in channels-last format (same function, rounding-level differences). False: plain autograd
    sparse: bool = True  # CPU, with fast_step: logistic regression and the plain-SGD tanh MLP step in C on each
    #   image's nonzero pixels (MNIST: ~19 %): the same function summed in another order. False: the MLP's
    #   fused step (bit-identical to autograd) and logistic regression in numpy
    save_every: int = 0  # keep an intermediate model every N validations (0 = never)
    checkpoint_every: int = 1  # write the resumable `last` checkpoint every N validations
    max_cost: float = 0.0  # stop as diverged when the minibatch cost exceeds this (0 = off)
    # --- GPU (train/graphs.py, data/stream.py; README "On a GPU") ----------------------------------
    device_memory_budget: str = "0"  # bytes of data one split may hold on the device: 0 = unlimited, or
    #   e.g. 200000000, "512MB", "2GiB"; a larger split streams through two chunk buffers within the budget
    graphs: str = "auto"  # auto | on | off: whole stretches of SGD steps and the evaluation as CUDA graphs
    #   (auto = on with CUDA); on without CUDA runs the same multi-step functions eagerly
    compile: bool = False  # torch.compile (inductor) the step that the graphs capture
    amp: str = "off"  # off | bf16: autocast the forward pass to bfloat16 (fast presets; CUDA)
    tf32: bool = False  # CUDA: let float32 convolutions and matrix products use TF32 tensor cores (10-bit
    #   mantissas; fast presets only). False: IEEE float32 throughout, the tutorials' arithmetic
    conv: str = "auto"  # LeNet's conv-pool layers: cudnn (torch's kernels) | gemm (im2col + one matrix product,
    #   autograd) | triton (fused Triton kernels, CUDA) | auto (on CUDA: the fastest measured at the start of
    #   the run, per layer; elsewhere torch's conv2d). On CUDA cudnn/triton/auto use the written-out step
    #   with parallel streams (train/lenet_step.py)

    def __post_init__(self) -> None:
        _check_choice("model", self.model, MODELS)
        _check_choice("dataset", self.dataset, ("mnist", "fashion-mnist", "idx"))
        _check_choice("activation", self.activation, ("tanh", "sigmoid", "relu"))
        _check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine", "onecycle"))
        _check_choice("evaluation", self.evaluation, ("tutorial", "full"))
        _check_choice("device", self.device, ("cpu", "cuda", "auto"))
        _check_choice("graphs", self.graphs, ("auto", "on", "off"))
        _check_choice("amp", self.amp, ("off", "bf16"))
        _check_choice("conv", self.conv, ("auto", "cudnn", "gemm", "triton"))
        _check_choice("improvement", self.improvement, ("threshold", "mcnemar"))
        if not 0 < self.mcnemar_alpha < 1:
            raise ConfigError(f"mcnemar_alpha must be in (0, 1), got {self.mcnemar_alpha}")
        parse_bytes(self.device_memory_budget, "device_memory_budget")
        for name in ("batch_size", "n_epochs", "n_in", "n_out", "n_hidden", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("patience", "validation_frequency", "threads", "save_every", "augment_shift"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.augment_shift:
            from deeptut.data.augment import image_side

            side = image_side(self.n_in)
            if side is None or not 0 < self.augment_shift < side:
                raise ConfigError(f"augment_shift moves square images by fewer pixels than their side: got "
                                  f"augment_shift {self.augment_shift} for n_in {self.n_in}"
                                  + ("" if side is None else f" ({side}x{side} images)"))
        if len(self.nkerns) != 2 or min(self.nkerns) < 1:
            raise ConfigError(f"nkerns must be two positive integers, got {self.nkerns}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["nkerns"] = list(self.nkerns)
        return d

    def model_args(self) -> dict[str, Any]:
        """The fields that determine the model's parameters (saved in model.json)."""
        keys = {
            "logistic": ("n_in", "n_out"),
            "mlp": ("n_in", "n_hidden", "n_out", "activation"),
            "lenet": ("nkerns", "n_hidden", "n_out", "activation"),
        }[self.model]
        d = self.to_dict()
        return {"model": self.model, **{k: d[k] for k in keys}}


_BYTE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(value: str | int, name: str = "size") -> int:
    """'0', '123456', '512MB', '1.5 GiB', '2g' -> bytes (k/M/G/T are powers of 10, Ki/Mi/Gi/Ti of 2)."""
    text = str(value).strip().lower().replace(" ", "").removesuffix("b")
    num = text.rstrip("kmgti")
    unit = text[len(num):]
    try:
        n = float(num) * _BYTE_UNITS[unit]
    except (KeyError, ValueError):
        raise ConfigError(f"{name} must be a byte count such as 0, 200000000, 512MB or 2GiB; got {value!r}") from None
    if not n >= 0 or n == float("inf"):
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return int(n)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Convert `value` (a TOML value or a command-line string) to the field's type, or fail clearly."""
    if key not in FIELDS:
        close = [k for k in FIELDS if k.lower() == key.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{source}: unknown config key {key!r}{hint}")
    typ = _TYPES[key]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if key == "device_memory_budget" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # a byte count written as a TOML integer
            if not isinstance(value, str):
                raise ValueError
            return value
        if typ == tuple[int, int]:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            items = tuple(int(v) for v in value)
            if len(items) != 2:
                raise ValueError
            return items
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{source}: {key} expects {getattr(typ, '__name__', typ)}, got {value!r}")


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("deeptut.presets").iterdir() if p.name.endswith(".toml"))


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return {k: _coerce(k, v, source) for k, v in data.items()}


def load_preset(name: str) -> dict[str, Any]:
    path = resources.files("deeptut.presets") / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    values = _read_toml(path.read_text(), f"preset {name}")
    values.setdefault("preset", name)
    return values


def resolve(preset: str | None = None, config_file: str | Path | None = None,
            overrides: dict[str, Any] | None = None) -> TrainConfig:
    """defaults <- preset <- config file <- overrides, each later one winning."""
    values: dict[str, Any] = {}
    if preset:
        values.update(load_preset(preset))
    if config_file:
        p = Path(config_file)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
        values.update(_read_toml(text, str(p)))
    for k, v in (overrides or {}).items():
        values[k] = _coerce(k, v, "command line")
    return TrainConfig(**values)


def from_dict(d: dict[str, Any], source: str = "config.json") -> TrainConfig:
    """Rebuild a config saved by `TrainConfig.to_dict` (unknown keys rejected)."""
    return TrainConfig(**{k: _coerce(k, v, source) for k, v in d.items()})


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--key value`, `--key=value`, dashes or underscores: ['--n-epochs', '5'] -> {'n_epochs': '5'}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ConfigError(f"unexpected argument {a!r}; config overrides look like --key value")
        key, eq, val = a[2:].partition("=")
        key = key.replace("-", "_")
        if key not in FIELDS:
            _coerce(key, None, "command line")  # raises with a hint
        if not eq:
            if _TYPES[key] is bool and (i + 1 >= len(args) or args[i + 1].startswith("--")):
                val = "true"
            else:
                if i + 1 >= len(args):
                    raise ConfigError(f"--{key} needs a value")
                i += 1
                val = args[i]
        out[key] = val
        i += 1
    return out


def dumps(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2)
