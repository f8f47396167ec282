"""deeptut: the classic Deep Learning Tutorials (logistic regression, MLP, LeNet, dA, SdA, RBM, DBN, ...)
on PyTorch, exact reproductions and fast presets.

Where to start
--------------
In Python (a notebook; the chapters as notebooks are in the repository's notebooks/):

    import deeptut
    run = deeptut.train("logistic", n_epochs=5)   # a preset and any config field as a keyword
    run.history          # one row per validation (a pandas DataFrame when pandas is installed)
    run.summary          # best_validation_error, test_error (%), epochs, train_seconds, ...
    run.model            # the selected model, in eval mode
    run.plot()           # learning curves, inline;  run.filters(): the first layer's filters
    run = deeptut.load("runs/logistic-20261206-101500")   # a saved run, the same object

On the command line: `deeptut presets` (the presets), `deeptut train logistic --n_epochs 5`, then
`deeptut viz|report|eval|predict RUN_DIR`; `deeptut train PRESET --help` lists the preset's fields.

`deeptut.train(...)` runs exactly what `deeptut train` runs (deeptut.train.runner.train, the one owner of
a run). `deeptut.train` is also the package of the training code (deeptut.train.loop, ...): the package
is callable. See help(deeptut.api) for the details. Importing deeptut loads no torch; the first call does.
"""

import importlib as _importlib
import types as _types

__version__ = "0.1.0"

# deeptut.train is both the package of the training code (deeptut/train/, whose __init__ is empty and
# imports nothing) and the API's `train` function. A function bound to the name would be replaced by the
# package the first time a submodule is imported before this file ran, and would break
# `import deeptut.train.loop as loop`; so the package module itself is made callable, here, once. The API
# is reached through importlib when first called (a lazy import: `import deeptut` loads no torch).
import deeptut.train as _train_package  # noqa: E402


class _CallableTrainPackage(_types.ModuleType):
    def __call__(self, preset_or_config, **kwargs):
        """deeptut.train(preset_or_config, *, data_dir=None, run_dir=None, runs_dir="runs", quiet=False,
        **overrides) -> RunResult: see deeptut.api.train."""
        return _importlib.import_module("deeptut.api").train(preset_or_config, **kwargs)


if not isinstance(_train_package, _CallableTrainPackage):
    _train_package.__class__ = _CallableTrainPackage
if not _train_package.__doc__:
    _train_package.__doc__ = ("The training code (loop.py: fit, pretrain.py, runner.py: the one owner of a "
                              "run, ...). Called, deeptut.train(preset, **overrides) trains and returns a "
                              "RunResult: see help(deeptut.api.train).")
train = _train_package


def load(run_dir):
    """deeptut.load(run_dir) -> RunResult: a saved run (model, history, summary, config, pictures); see
    deeptut.api.load."""
    return _importlib.import_module("deeptut.api").load(run_dir)


def __getattr__(name):
    if name in ("RunResult", "api"):
        api = _importlib.import_module("deeptut.api")
        return api if name == "api" else api.RunResult
    raise AttributeError(f"module 'deeptut' has no attribute {name!r}")


__all__ = ["train", "load", "RunResult", "__version__"]
