"""Configuration in sections. One frozen dataclass per section holds its fields' defaults (the only place
they are written); presets are TOML files whose tables set some of them; `--key value` flags override those.
Unknown keys and wrong types are rejected.

    model            `model` (which family), `init_seed`, and the family's own section `cfg.net`
                     (models/families.py: LogisticArgs, MLPArgs, LeNetArgs, DAArgs, CAArgs, SdAArgs, RBMArgs,
                     DBNArgs; TOML tables [logistic], [mlp], [lenet], [da], [ca], [sda], [rbm], [dbn])
    optim            Optimisation: learning rate, minibatches, epochs, penalties, momentum, schedule
    early_stopping   EarlyStoppingSection: the tutorials' patience rule, validation, evaluation, divergence
    data             Data: which dataset, the order and the moves of the training images, input normalisation
    pretraining      Pretraining: greedy layer-wise pre-training (only for families with `pretrains`)
    run              RunSection: preset name, seed, device, threads, what is saved and when
    accel            Accelerators: how the steps are made fast; none changes what is computed beyond rounding

Every field keeps one flat name, the same everywhere: the flag (`--learning_rate`), the key inside its TOML
table (`[optim] learning_rate = 0.13`; a flat top-level key is accepted too), the key in config.json, and
the attribute (`cfg.learning_rate`, the same value as `cfg.optim.learning_rate`).

A field of one model family (`nkerns`) or restricted to some (`conv`: LeNet; the pre-training fields) set
to a value other than its default for a model without it is an error naming the field and the models that
have it. Read on such a config it gives its default. config.json holds only the fields that apply.

The resolved config is saved in every run directory (config.json, flat keys in section order) and is enough
to rebuild the model; config.json files written before the sections (every field, flat) still load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from deeptut import registry
from deeptut.errors import ConfigError
from deeptut.models import families as _families
from deeptut.models.families import DEFAULT_MODEL, FAMILIES, ModelArgs, _at_least, family, owners, with_trait  # one _at_least for every section

MODELS = tuple(FAMILIES)  # the families registered at import (FAMILIES itself also holds later ones)

_CONV_ONLY = {"trait": "convolutional"}  # field metadata: the families (by their section's trait) a field applies to


def image_side(n_in: int) -> int | None:
    """The side of a square image of n_in pixels (784 -> 28), or None when n_in is not a square: what
    augment_shift moves (data/augment.py translates by it; the loop passes it)."""
    side = math.isqrt(n_in)
    return side if side * side == n_in else None


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class Optimisation:
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

    def __post_init__(self) -> None:
        _check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine", "onecycle"))
        _at_least(self, 1, "batch_size", "n_epochs")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class EarlyStoppingSection:
    """The tutorials' patience rule, counted in minibatch iterations: the settings of train/early_stopping.py's
    EarlyStopping, the rule itself."""

    patience: int = 5000  # look at this many iterations regardless
    patience_increase: float = 2.0  # wait this much longer (x iteration) on a significant improvement
    improvement_threshold: float = 0.995  # a relative improvement of this much is significant
    improvement: str = "threshold"  # threshold: the tutorials' rule above | mcnemar: significant when McNemar's
    #   exact test on the validation examples (new best against the previous best) gives p < mcnemar_alpha
    mcnemar_alpha: float = 0.05  # significance level of improvement = "mcnemar" (typical 0.05)
    validation_frequency: int = 0  # 0 = min(n_train_batches, patience // 2), the tutorial's choice
    evaluation: str = "tutorial"  # tutorial: mean over floor(n/batch) minibatches | full: every example
    max_cost: float = 0.0  # stop as diverged when the minibatch cost exceeds this (0 = off)
    divergence: str = "on"  # on | off: stop as diverged when a validation period's mean training cost is
    #   non-finite or above max(4 x, 2 nats +) where it started (log n_out: 2.30 for 10 classes, so 9.21;
    #   train/divergence.py). Never fires on the tutorials' runs (their means stay below 2.35). off: train on

    def __post_init__(self) -> None:
        _check_choice("evaluation", self.evaluation, ("tutorial", "full"))
        _check_choice("divergence", self.divergence, ("on", "off"))
        _at_least(self, 0, "patience", "validation_frequency")
        _check_choice("improvement", self.improvement, ("threshold", "mcnemar"))
        if not 0 < self.mcnemar_alpha < 1:
            raise ConfigError(f"mcnemar_alpha must be in (0, 1), got {self.mcnemar_alpha}")


@dataclass(frozen=True)
class Data:
    dataset: str = "mnist"  # mnist | fashion-mnist | idx (any four IDX files, no checksums)
    shuffle: bool = False  # reshuffle the training set each epoch (tutorials: False)
    augment_shift: int = 0  # move each training image by a random (dy, dx), |d| <= this many pixels, redrawn
    #   every epoch (data/augment.py); 0 = off, the tutorials. Fast LeNet presets: 2
    normalize: str = "none"  # none (the tutorials' pixels in [0, 1)) | standard: (x - mean) / std with the
    #   training split's statistics only (data/normalize.py; MNIST 0.1304 / 0.3073), applied after the image
    #   moves and saved in model.json, so eval, predict and viz feed the model what it was trained on
    normalize_per_pixel: bool = False  # standard: a mean and std per input position (std floored at 0.1 x
    #   the global std) instead of one global pair; global is the default (not measured to train worse)
    binarize: str = field(default="none", metadata={"trait": "samples"})  # RBMs: train on 0/1 images.
    #   none (rbm.py's grey pixels) | round (>= 0.5) | stochastic: each pixel drawn once from
    #   Bernoulli(intensity) with a fixed seed, one fixed binarised set (data/binarize.py)

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, tuple(registry.DATASETS))
        _check_choice("normalize", self.normalize, ("none", "standard"))
        _check_choice("binarize", self.binarize, ("none", "round", "stochastic"))
        _at_least(self, 0, "augment_shift")


@dataclass(frozen=True)
class Pretraining:
    """Greedy layer-wise pre-training (SdA.py, DBN.py): each layer trained on an unsupervised cost, then
    fine-tuning of the whole stack through `fit` with the [optim] fields. Applies to the families whose
    section sets `pretrains = True`; what one family alone uses (corruption_levels, k, persistent, ...)
    belongs in that family's section."""

    pretraining_epochs: int = 15  # epochs per layer (SdA.py: 15; DBN.py: 100)
    pretrain_lr: float = 0.001  # SGD step size of pre-training (SdA.py: 0.001; DBN.py: 0.01)
    # The fine-tuning step size is [optim] learning_rate; `finetune_lr` (SdA.py's and DBN.py's name) is
    # accepted as another name for it, for these families only (ALIASES). batch_size serves both phases and
    # n_epochs bounds fine-tuning, as in SdA.py / DBN.py.

    def __post_init__(self) -> None:
        _at_least(self, 1, "pretraining_epochs")
        if not self.pretrain_lr > 0:
            raise ConfigError(f"pretrain_lr must be > 0, got {self.pretrain_lr}")


@dataclass(frozen=True)
class RunSection:
    """How a run is made and kept (store/rundir.py's Run reads a run directory back)."""

    preset: str = DEFAULT_MODEL  # name of the preset this config came from (run-directory prefix)
    seed: int = 1234  # torch/numpy/python RNG seed for data order and anything random in training
    device: str = "auto"  # cpu | cuda | auto
    threads: int = 0  # CPU threads for torch and BLAS (0 = their defaults: all cores); recorded. Busy machine: 1
    save_every: int = 0  # keep an intermediate model every N validations (0 = never)
    checkpoint_every: int = 1  # write the resumable `last` checkpoint every N validations
    checkpoint_every_s: float = 0.0  # ... and not sooner than this many seconds after the last one (0: no
    #   wait). For short runs that validate many times a second (a sweep's tiny trials: 5-30); an interrupted
    #   run still writes one at once, so only a killed (SIGKILL) run loses up to this much work

    def __post_init__(self) -> None:
        _check_choice("device", self.device, ("cpu", "cuda", "auto"))
        _at_least(self, 0, "threads", "save_every")
        _at_least(self, 1, "checkpoint_every")
        if not self.checkpoint_every_s >= 0:  # also rejects nan
            raise ConfigError(f"checkpoint_every_s must be >= 0 seconds; got {self.checkpoint_every_s!r}")


@dataclass(frozen=True)
class Accelerators:
    """How the steps run fast (deeptut's own, not the tutorials'): read by `make_train_step` and the loop."""

    fast_step: bool = True  # hand-fused CPU step where one exists (see `sparse`); LeNet on CPU: the conv
    #   layers in channels-last format (same function, rounding-level differences). False: plain autograd
    sparse: bool = True  # CPU, with fast_step: logistic regression and the plain-SGD tanh MLP step in C on each
    #   image's nonzero pixels (MNIST: ~19 %): the same function summed in another order. False: the MLP's
    #   fused step (bit-identical to autograd) and logistic regression in numpy
    device_memory_budget: str = "0"  # bytes of data one split may hold on the device: 0 = unlimited, or
    #   e.g. 200000000, "512MB", "2GiB"; a larger split streams through two chunk buffers within the budget
    graphs: str = "auto"  # auto | on | off: whole spans of SGD updates and the evaluation as CUDA graphs
    #   (auto = on with CUDA); on without CUDA runs the same multi-step functions eagerly
    compile: bool = False  # torch.compile (inductor) the step that the graphs capture
    amp: str = "off"  # off | bf16: autocast the forward pass to bfloat16 (fast presets; CUDA)
    tf32: bool = False  # CUDA: let float32 convolutions and matrix products use TF32 tensor cores (10-bit
    #   mantissas; fast presets only). False: IEEE float32 throughout, the tutorials' arithmetic
    conv: str = field(default="auto", metadata=_CONV_ONLY)  # LeNet's conv-pool layers: cudnn (torch's
    #   kernels) | gemm (im2col + one matrix product, autograd) | triton (fused Triton kernels, CUDA) | auto (on
    #   CUDA: the fastest measured at the start of the run, per layer; elsewhere torch's conv2d). On CUDA
    #   cudnn/triton/auto use the manual update with parallel streams (accel/cuda/lenet_manual.py)

    def __post_init__(self) -> None:
        _check_choice("graphs", self.graphs, ("auto", "on", "off"))
        _check_choice("amp", self.amp, ("off", "bf16"))
        _check_choice("conv", self.conv, ("auto", "cudnn", "gemm", "triton"))
        parse_bytes(self.device_memory_budget, "device_memory_budget")


# section attribute (and TOML table) -> its class, in the order config.json lists them
SECTIONS: dict[str, type] = {"optim": Optimisation, "early_stopping": EarlyStoppingSection, "data": Data,
                             "pretraining": Pretraining, "run": RunSection, "accel": Accelerators}


def _family_defaults() -> dict[str, Any]:
    """Each family field's default, from the first family that has it (what reading it elsewhere gives)."""
    out: dict[str, Any] = {}
    for cls in FAMILIES.values():
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, f.default)
    return out


_FAMILY_DEFAULTS: dict[str, Any] = {}  # filled by _rebuild_names below


def _restricted_to(key: str) -> tuple[str, ...] | None:
    """The models a general field applies to (None: every model)."""
    if key in _SECTION_OF and _SECTION_OF[key] == "pretraining":
        return with_trait("pretrains")
    f = _GENERAL_FIELDS.get(key)
    return None if f is None or "trait" not in f.metadata else with_trait(f.metadata["trait"])


def applies(key: str, model: str) -> bool:
    """Whether the flat field `key` means something to `model` (and so is saved in its config.json)."""
    if key in _FAMILY_DEFAULTS and key not in _SECTION_OF:
        return key in _FIELD_NAMES[FAMILIES[model]]
    only = _restricted_to(key)
    return only is None or model in only


def _not_for(key: str, model: str) -> ConfigError:
    have = _restricted_to(key) if key in _SECTION_OF else owners(key)
    whose = f"model{'s' * (len(have) > 1)} {', '.join(have)}" if have else "models that pre-train (none yet)"
    return ConfigError(f"{key} is a field of {whose}, not of {model}: leave it out, or train one of those "
                       f"(--model)")


def _same(a: Any, b: Any) -> bool:
    return (tuple(a) if isinstance(a, list) else a) == (tuple(b) if isinstance(b, list) else b)


@dataclass(frozen=True, init=False)
class TrainConfig:
    """The whole config: the model section (`model`, `init_seed`, `net`) and the other sections.

    Build it from flat fields, `TrainConfig(model="mlp", learning_rate=0.01)`, from sections
    (`TrainConfig(model="lenet", net=LeNetArgs(...), optim=Optimisation(...))`, missing ones default), or
    both, flat fields winning; `cfg.replace(**flat)` and `dataclasses.replace` give an updated copy. Every
    flat field reads as an attribute (`cfg.nkerns`)."""

    # --- model (the family's own fields are in `net`) ------------------------------------------------
    model: str = DEFAULT_MODEL  # which family: logistic | mlp | lenet | ... (models/families.py FAMILIES)
    init_seed: int = 1234  # numpy RandomState seed of the tutorial's initialisation (mlp.py: 1234; LeNet: 23455)
    net: ModelArgs = field(default_factory=lambda: FAMILIES[DEFAULT_MODEL]())
    # --- the other sections ------------------------------------------------------------------------
    optim: Optimisation = field(default_factory=Optimisation)
    early_stopping: EarlyStoppingSection = field(default_factory=EarlyStoppingSection)
    data: Data = field(default_factory=Data)
    pretraining: Pretraining = field(default_factory=Pretraining)
    run: RunSection = field(default_factory=RunSection)
    accel: Accelerators = field(default_factory=Accelerators)

    def __init__(self, **values: Any) -> None:
        parts = {k: values.pop(k) for k in ("net", *SECTIONS) if k in values}
        given_family = [n for n, c in FAMILIES.items() if type(parts.get("net")) is c]  # net=MLPArgs(): mlp
        model = values.pop("model", given_family[0] if given_family else _TOP["model"].default)
        fam = family(model)
        init_seed = values.pop("init_seed", _TOP["init_seed"].default)
        # the family's section: a given one (another family's: the fields both have), then flat fields
        old = parts.get("net")
        kw = {k: v for k, v in ({} if old is None else dataclasses.asdict(old)).items() if k in _FIELD_NAMES[fam]}
        kw.update({k: values.pop(k) for k in list(values) if k in _FIELD_NAMES[fam] and k not in _SECTION_OF})
        net = fam(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
        for k in [k for k in values if k in _FAMILY_DEFAULTS and k not in _SECTION_OF]:  # another family's
            if not _same(values.pop(k), _FAMILY_DEFAULTS[k]):
                raise _not_for(k, model)
        sections = {}
        for name, cls in SECTIONS.items():
            base = parts.get(name, None) or cls()
            if not isinstance(base, cls):
                raise ConfigError(f"{name} must be an instance of {cls.__name__}, got {type(base).__name__}")
            mine = {k: values.pop(k) for k in list(values) if _SECTION_OF.get(k) == name}
            sections[name] = dataclasses.replace(base, **mine) if mine else base
            for f in dataclasses.fields(cls):
                if not applies(f.name, model) and not _same(getattr(sections[name], f.name), f.default):
                    raise _not_for(f.name, model)
        if values:
            key = next(iter(values))
            raise ConfigError(f"unknown config key {key!r}{did_you_mean(key, FIELDS)}")
        for k, v in (("model", model), ("init_seed", init_seed), ("net", net), *sections.items()):
            object.__setattr__(self, k, v)
        # every flat field as a plain attribute: reads cost what they did before the sections
        for k, v in {**_FAMILY_DEFAULTS, **dataclasses.asdict(net)}.items():
            object.__setattr__(self, k, v)
        for sec in sections.values():
            for f in dataclasses.fields(sec):
                object.__setattr__(self, f.name, getattr(sec, f.name))
        self._check_across_sections()

    def _check_across_sections(self) -> None:
        if self.augment_shift:
            side = image_side(self.n_in)
            if side is None or not 0 < self.augment_shift < side:
                raise ConfigError(f"augment_shift moves square images by fewer pixels than their side: got "
                                  f"augment_shift {self.augment_shift} for n_in {self.n_in}"
                                  + ("" if side is None else f" ({side}x{side} images)"))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed, flat names or sections: `cfg.replace(learning_rate=0.1)`."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Flat, in section order, only the fields that apply to this model (what config.json holds)."""
        d: dict[str, Any] = {"model": self.model, "init_seed": self.init_seed, **dataclasses.asdict(self.net)}
        for name in SECTIONS:
            d.update({k: v for k, v in dataclasses.asdict(getattr(self, name)).items() if applies(k, self.model)})
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def sections(self) -> dict[str, Any]:
        """The same fields nested as the TOML tables: {"model": ..., "init_seed": ..., "lenet": {...},
        "optim": {...}, ...} (empty tables left out). `from_dict` reads it back."""
        flat = self.to_dict()
        out: dict[str, Any] = {"model": self.model, "init_seed": self.init_seed}
        out[self.model] = {f.name: flat[f.name] for f in dataclasses.fields(self.net)}
        for name in SECTIONS:
            table = {k: flat[k] for k in _SECTION_KEYS[name] if k in flat}
            if table:
                out[name] = table
        return {k: v for k, v in out.items() if v != {}}

    def model_args(self) -> dict[str, Any]:
        """The fields that determine the model's parameters (saved in model.json)."""
        return {"model": self.model, **self.net.model_args()}


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


# --- the flat names: where each lives and its type ----------------------------------------------------
# Rebuilt whenever a family is registered (models/families.py register_family), so that a family added
# from outside src/ gets its flags, its TOML table and its config.json keys like the built-in ones.
_TOP = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name in ("model", "init_seed")}
_SECTION_KEYS = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in SECTIONS.items()}
_SECTION_OF = {k: name for name, keys in _SECTION_KEYS.items() for k in keys}  # flat key -> section
_GENERAL_FIELDS = {f.name: f for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
_FIELD_NAMES: dict[type, set[str]] = {}
_TABLES: dict[str, tuple[str, ...]] = {}  # table name (TOML, the nested form) -> the keys it may hold
FIELDS: dict[str, dataclasses.Field] = {}  # every flat name -> its dataclass field
_TYPES: dict[str, Any] = {}
assert len(_SECTION_OF) == sum(map(len, _SECTION_KEYS.values())), "a field in two sections"


def _rebuild_names() -> None:
    fields: dict[str, dataclasses.Field] = dict(_TOP)
    types: dict[str, Any] = {k: typing.get_type_hints(TrainConfig)[k] for k in _TOP}
    for cls in (*FAMILIES.values(), *SECTIONS.values()):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            # one name, one type; a family may share a name with another family, never with a section
            if types.setdefault(f.name, hints[f.name]) != hints[f.name]:
                raise ConfigError(f"{cls.__name__}.{f.name}: another family has a field {f.name} of type "
                                  f"{types[f.name]}; give it another name or the same type")
            if cls not in SECTIONS.values() and f.name in _SECTION_OF:
                raise ConfigError(f"{cls.__name__}.{f.name}: {f.name} is a field of the [{_SECTION_OF[f.name]}] "
                                  f"section; a family's field needs another name")
            fields.setdefault(f.name, f)
    clash = set(fields) & {"net", *SECTIONS, *FAMILIES}
    if clash:
        raise ConfigError(f"{', '.join(sorted(clash))}: a flat name that is also a section's or table's")
    _FAMILY_DEFAULTS.clear()
    _FAMILY_DEFAULTS.update(_family_defaults())
    _FIELD_NAMES.clear()
    _FIELD_NAMES.update({cls: {f.name for f in dataclasses.fields(cls)} for cls in FAMILIES.values()})
    _TABLES.clear()
    _TABLES.update({**_SECTION_KEYS, **{name: tuple(f.name for f in dataclasses.fields(cls))
                                        for name, cls in FAMILIES.items()}})
    FIELDS.clear()
    FIELDS.update(fields)
    _TYPES.clear()
    _TYPES.update(types)


_rebuild_names()
_families._LISTENERS.append(_rebuild_names)


# Other names for a field: the tutorials' name where deeptut keeps one field for two of its scripts' names.
# finetune_lr (SdA.py, DBN.py) is learning_rate, the step size of the supervised phase; only for the
# families that pre-train (for the others it would read as if there were a second rate). config.json records
# learning_rate.
ALIASES = {"finetune_lr": "learning_rate"}


def _dealias(values: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
    """(values with each alias renamed to its field, whether an alias was used); both names at once is an
    error."""
    out, used = dict(values), False
    for alias, name in ALIASES.items():
        if alias in out:
            if name in out:
                raise ConfigError(f"{source}: {alias} is another name for {name}: give one of them")
            out[name] = out.pop(alias)
            used = True
    return out, used


def did_you_mean(name: str, known: Any) -> str:
    """" (did you mean 'x'?)" for the closest of `known` names (a case-insensitive match first, then
    difflib's), or ""."""
    import difflib

    known = list(known)
    close = [k for k in known if k.lower() == name.lower()]
    close = close or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(key: str, value: Any, source: str) -> Any:
    """Convert `value` (a TOML value or a command-line string) to the field's type, or fail clearly."""
    key = ALIASES.get(key, key)
    if key not in FIELDS:
        raise ConfigError(f"{source}: unknown config key {key!r}{did_you_mean(key, FIELDS)}")
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
        if typing.get_origin(typ) is tuple:  # tuple[int, int] (nkerns), tuple[int, ...], tuple[float, ...]
            args = typing.get_args(typ)
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            if isinstance(value, (bool, int, float)) or any(isinstance(v, bool) for v in value):
                raise ValueError
            items = list(value)
            kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
            if len(kinds) != len(items) or not items:
                raise ValueError
            out = []
            for kind, v in zip(kinds, items):
                if kind is int and isinstance(v, float) and not v.is_integer():
                    raise ValueError
                out.append(kind(v))
            return tuple(out)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{source}: {key} expects {getattr(typ, '__name__', typ)}, got {value!r}")


def _flatten(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Tables (`[optim]`, `[lenet]`; nested objects in JSON) and flat top-level keys -> flat, coerced keys.
    A key in a table it does not belong to, or given twice, is an error."""
    out: dict[str, Any] = {}

    def put(k: str, v: Any) -> None:
        if k in out:
            raise ConfigError(f"{source}: {k} is given twice")
        out[k] = _coerce(k, v, source)

    for k, v in data.items():
        if not isinstance(v, dict):
            put(k, v)
            continue
        if k not in _TABLES:
            raise ConfigError(f"{source}: unknown table [{k}]; tables: {', '.join(_TABLES)}")
        for kk, vv in v.items():
            if kk not in _TABLES[k] and not (ALIASES.get(kk) in _TABLES[k] or (kk in ALIASES and k == "pretraining")):
                _coerce(kk, vv, source)  # an unknown key: says so, with a hint
                home = _SECTION_OF.get(kk) or "/".join(owners(kk)) or "the top level"
                raise ConfigError(f"{source}: {kk} belongs in [{home}], not in [{k}]")
            put(kk, vv)
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("deeptut.presets").iterdir() if p.name.endswith(".toml"))


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return _flatten(data, source)


def load_preset(name: str) -> dict[str, Any]:
    """A preset's fields, flat (its tables flattened)."""
    path = resources.files("deeptut.presets") / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}{did_you_mean(name, preset_names())}; available: "
                          f"{', '.join(preset_names())}")
    values = _read_toml(path.read_text(), f"preset {name}")
    values.setdefault("preset", name)
    return values


def resolve(preset: str | None = None, config_file: str | Path | None = None,
            overrides: dict[str, Any] | None = None, *, source: str = "command line") -> TrainConfig:
    """defaults <- preset <- config file <- overrides, each later one winning. `source` names where the
    overrides came from in errors ("command line"; the Python API: "deeptut.train(...)")."""
    values: dict[str, Any] = {}
    aliased = False
    if preset:
        layer, used = _dealias(load_preset(preset), f"preset {preset}")
        values.update(layer)
        aliased |= used
    if config_file:
        p = Path(config_file)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
        layer, used = _dealias(_read_toml(text, str(p)), str(p))
        values.update(layer)
        aliased |= used
    layer, used = _dealias({k: _coerce(k, v, source) for k, v in (overrides or {}).items()}, source)
    values.update(layer)
    aliased |= used
    cfg = TrainConfig(**values)
    if aliased and not family(cfg.model).pretrains:
        have = ", ".join(n for n, c in FAMILIES.items() if c.pretrains)
        raise ConfigError(f"finetune_lr is the fine-tuning step size of the models that pre-train ({have}); "
                          f"for {cfg.model} say learning_rate")
    return cfg


def from_dict(d: dict[str, Any], source: str = "config.json") -> TrainConfig:
    """Rebuild a config saved by `TrainConfig.to_dict` (or `sections`). Unknown keys are rejected; a missing
    one takes its default (it was added later: the default is the behaviour before it). A field that means
    nothing to the saved model is dropped: config.json files written before the sections held every field
    (`nkerns` for logistic regression), and it had no effect."""
    flat = _flatten(d, source)
    model = flat.get("model", _TOP["model"].default)
    family(model)
    return TrainConfig(**{k: v for k, v in flat.items() if k in _TOP or applies(k, model)})


def differences(saved: Any, cfg: TrainConfig) -> list[str]:
    """The flat fields in which a saved config (a checkpoint's or config.json's, any form `from_dict` reads)
    differs from `cfg`; ["layout"] where it cannot be read."""
    try:
        theirs = from_dict(saved, "saved config").to_dict() if isinstance(saved, dict) else None
    except ConfigError:
        theirs = None
    if theirs is None:
        return ["layout"]
    mine = cfg.to_dict()
    return sorted(k for k in {*mine, *theirs} if theirs.get(k, object()) != mine.get(k, object()))


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
        if key not in FIELDS and key not in ALIASES:
            _coerce(key, None, "command line")  # raises with a hint
        if not eq:
            if _TYPES[ALIASES.get(key, key)] is bool and (i + 1 >= len(args) or args[i + 1].startswith("--")):
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


def field_docs(model: str) -> list[tuple[str, str, Any, str]]:
    """(table, field, default, meaning) for every field that applies to `model`, in config.json's order:
    the family's table first, then the sections. The meaning is the comment after the field's line in the
    source (with its continuation lines), the one place defaults and their units are written."""
    import inspect
    import re

    cls_of = {family(model).__name__: family(model), **{c.__name__: c for c in SECTIONS.values()}}
    docs: dict[str, str] = {}
    for cls in (TrainConfig, *cls_of.values()):
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):  # no source (a frozen install): names and defaults only
            continue
        current = None
        for line in lines:
            m = re.match(r"\s+(\w+): [^=]+?(?:= .*?)?\s+#\s?(.*)$", line)
            if m and not line.lstrip().startswith("#"):
                current = m.group(1)
                docs.setdefault(current, m.group(2).strip())
                continue
            cont = re.match(r"\s+#\s{2,}(.*)$", line)  # "    #   more of the comment above"
            if cont and current is not None and current in docs:
                docs[current] += " " + cont.group(1).strip()
            else:
                current = None
    out: list[tuple[str, str, Any, str]] = [("model", "init_seed", _TOP["init_seed"].default, docs.get("init_seed", ""))]
    for f in dataclasses.fields(family(model)):
        out.append((model, f.name, f.default, docs.get(f.name, "")))
    for table, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if applies(f.name, model):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                out.append((table, f.name, default, docs.get(f.name, "")))
    return out
