"""Where a family's training procedure and a dataset's loader are found: two small tables of names.

A model family (models/families.py) names its **procedure**, the function that trains it, in its section
class (`procedure = "sgd"`); a config names its **dataset** (`[data] dataset = "mnist"`). This module maps
both names to the code, so that `config.py` can check a name without importing that code, and
`train/runner.py` (the one owner of a run) can call it:

    procedure(cfg, data, run_dir, *, quiet=False, resume=False) -> summary dict
    dataset loader(cfg, data_dir) -> the family's data (MNIST's `Splits`, a sequence corpus, None, ...)

Entries are "module:attribute" strings, imported on first use (a run imports only what it needs: start-up
stays short), or the callables themselves. `register_procedure` and `register_dataset` add entries from
outside `src/` (a notebook, a test, a plug-in); `models.families.register_family` adds a family.

Nothing here imports any other deeptut module: config.py, models/ and train/ may all read it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

# procedure name -> the function that trains a family of that kind
PROCEDURES: dict[str, str | Callable[..., Any]] = {
    "sgd": "deeptut.train.loop:fit",  # minibatch SGD with the tutorials' early stopping (logistic, mlp, lenet)
    "sgd-torchless": "deeptut.train.torchless:fit_logistic",  # fit without torch: the logistic C step, CPU
    "pretrain": "deeptut.train.pretrain:train",  # unsupervised layers (da, ca, rbm), then fine-tuning (sda, dbn)
    "sequence": "deeptut.train.sequence:train",  # minibatches of variable-length sequences (lstm)
    "cg": "deeptut.train.cg:train",  # scipy's conjugate gradient on the whole training set (logistic-cg)
    "mcmc": "deeptut.train.hmc:sample",  # Hybrid Monte-Carlo sampling of an energy (hmc)
    "piano-roll": "deeptut.train.rnnrbm:train",  # the RNN-RBM on piano-rolls, CD-k through an RNN (rnnrbm)
    "slot-filling": "deeptut.train.rnnslu:train",  # one sentence per update, F1 each epoch, rate decay (rnnslu)
}

# dataset name ([data] dataset) -> its loader
DATASETS: dict[str, str | Callable[..., Any]] = {
    "mnist": "deeptut.data.datasets:load_for_config",
    "fashion-mnist": "deeptut.data.datasets:load_for_config",
    "idx": "deeptut.data.datasets:load_for_config",  # any four IDX files in --data-dir (no checksums)
    "imdb": "deeptut.data.imdb:load_for_config",  # the LSTM chapter's imdb.pkl (sequences of word indices)
    "mnist-rows": "deeptut.data.sequences:rows_for_config",  # MNIST, each image a sequence of 28 rows
    "none": "deeptut.data.none:load",  # no data: the family needs none (hmc samples a given energy)
    "nottingham": "deeptut.data.music:load_nottingham",  # rnnrbm.py's folk tunes: --data-dir with train/valid/test MIDI
    "jsb-chorales": "deeptut.data.music:load_chorales",  # the Bach chorales of music21's corpus, as piano-rolls
    "atis": "deeptut.data.atis:load_for_config",  # rnnslu.py's atis.fold<k>.pkl.gz (BIO slot tags)
    "slots": "deeptut.data.slots:load_for_config",  # a generated ATIS-like slot-filling corpus (offline)
}


class RegistryError(LookupError):
    pass


def _register(table: dict[str, Any], what: str, name: str, target: str | Callable[..., Any],
              replace: bool) -> None:
    if not isinstance(name, str) or not name or name != name.strip():
        raise RegistryError(f"a {what} name must be a non-empty string without surrounding spaces; got {name!r}")
    if not (callable(target) or (isinstance(target, str) and ":" in target)):
        raise RegistryError(f"{what} {name!r}: give a callable or a 'module:attribute' string; got {target!r}")
    if name in table and not replace and table[name] is not target:
        raise RegistryError(f"{what} {name!r} is already registered ({table[name]!r}); pass replace=True "
                            f"to replace it")
    table[name] = target


def register_procedure(name: str, fn: str | Callable[..., Any], *, replace: bool = False) -> None:
    """Add a training procedure: `fn(cfg, data, run_dir, *, quiet, resume) -> summary`."""
    _register(PROCEDURES, "procedure", name, fn, replace)


def register_dataset(name: str, loader: str | Callable[..., Any], *, replace: bool = False) -> None:
    """Add a dataset: `loader(cfg, data_dir) -> data` (what the family's procedure takes)."""
    _register(DATASETS, "dataset", name, loader, replace)


def load_target(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """A callable, or the attribute a "module:attribute" string names (the module imported now): how every
    entry here, and a family's `pictures` and `sampler`, are found."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _resolve(table: dict[str, Any], what: str, name: str) -> Callable[..., Any]:
    try:
        target = table[name]
    except (KeyError, TypeError):
        raise RegistryError(f"no {what} named {name!r}; known: {', '.join(sorted(table))}") from None
    return load_target(target)


PLUGINS_ENV = "DEEPTUT_PLUGINS"  # comma-separated module names imported before a command runs
_loaded: set[str] = set()


def load_plugins(names: str | None = None) -> list[str]:
    """Import the plug-in modules named in $DEEPTUT_PLUGINS (or `names`); each registers its families,
    procedures and datasets when imported. The CLI calls this first, so `deeptut train`, `--resume`, `viz`
    and `eval` know a family added outside src/ in every process. Returns the modules newly imported; a
    module that fails to import raises RegistryError naming it. (Installed packages' entry points are not
    scanned: reading every distribution's metadata cost ~85 ms at each start-up.)"""
    import os

    wanted = [n.strip() for n in (os.environ.get(PLUGINS_ENV, "") if names is None else names).split(",")]
    new = []
    for name in (n for n in wanted if n and n not in _loaded):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - said with the module's name
            raise RegistryError(f"{PLUGINS_ENV} module {name!r} failed to import: {type(e).__name__}: {e}") from e
        _loaded.add(name)
        new.append(name)
    return new


def procedure(name: str) -> Callable[..., Any]:
    return _resolve(PROCEDURES, "procedure", name)


def dataset_loader(name: str) -> Callable[..., Any]:
    return _resolve(DATASETS, "dataset", name)
