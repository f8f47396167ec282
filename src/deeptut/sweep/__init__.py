"""Sweeps over models, hyper-parameters and seeds (README "Sweeps"): spec.py parses and expands a TOML
spec, run.py drives the trials and selects, trial.py runs one trial as a `deeptut train` process,
backends.py schedules trials locally or on Ray, report.py writes the sweep's plot."""

from deeptut.sweep.run import run_sweep  # noqa: F401
from deeptut.sweep.spec import Spec, expand, load_spec, parse_spec  # noqa: F401
