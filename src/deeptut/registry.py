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
    "pretrain": "deeptut.train.pretrain:train",  # unsupervised layers (da, ca, rbm), then fine-tuning (sda, dbn)
}

# dataset name ([data] dataset) -> its loader
DATASETS: dict[str, str | Callable[..., Any]] = {
    "mnist": "deeptut.data.datasets:load_for_config",
    "fashion-mnist": "deeptut.data.datasets:load_for_config",
    "idx": "deeptut.data.datasets:load_for_config",  # any four IDX files in --data-dir (no checksums)
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


def _resolve(table: dict[str, Any], what: str, name: str) -> Callable[..., Any]:
    try:
        target = table[name]
    except (KeyError, TypeError):
        raise RegistryError(f"no {what} named {name!r}; known: {', '.join(sorted(table))}") from None
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    return fn


def procedure(name: str) -> Callable[..., Any]:
    return _resolve(PROCEDURES, "procedure", name)


def dataset_loader(name: str) -> Callable[..., Any]:
    return _resolve(DATASETS, "dataset", name)
