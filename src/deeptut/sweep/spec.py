"""Sweep specifications: a TOML file expanded into trials (one ordinary training run each).

    name = "logistic-lr"          # the sweep directory is <sweeps-dir>/<name>-<stamp>/
    preset = "logistic"           # the base preset every trial starts from
    seeds = [1, 2, 3]             # the `seed` of each configuration's trials (or a count n: seeds 1..n)
    samples = 4                   # random draws of [random] (default 1; ignored without [random])
    sample_seed = 0               # the draws are a function of this, so an expansion can be redone
    data_dir = "data/mnist"       # optional: the trials' --data-dir (the command line's --data-dir wins)
    max_attempts = 3              # optional: starts of a trial in all (a died one resumes its checkpoint)

    [base]                        # fixed overrides of the preset, for every trial
    n_epochs = 20
    threads = 1                   # one core per trial (the sweep's default where [base] says nothing)

    [grid]                        # the Cartesian product of these lists
    batch_size = [20, 100]

    [[configs]]                   # explicit configurations ("lists"), crossed with the grid
    n_hidden = 100
    [[configs]]
    n_hidden = 500

    [random]                      # one value per draw; `samples` draws, each crossed with the grid
    learning_rate = { loguniform = [1e-3, 1e-1] }
    momentum = { uniform = [0.0, 0.9] }
    n_hidden = { int = [50, 800] }   # integers, both ends included

    [budget]
    trials = 100                  # at most this many trials (whole configurations, in expansion order)
    wall_time_s = 3600            # stop starting trials after this; running ones checkpoint and stop

Every key of [base], [grid], [[configs]] and [random] is a config field; every value is checked by the
config's own parser (deeptut.config.resolve) before anything runs, and errors name the section and key.
"""

from __future__ import annotations

import itertools
import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeptut import config
from deeptut.errors import ConfigError

TOP_KEYS = {"name", "preset", "seeds", "samples", "sample_seed", "base", "grid", "configs", "random", "budget",
            "data_dir", "max_attempts"}
BUDGET_KEYS = {"trials", "wall_time_s"}
RANGE_KINDS = ("uniform", "loguniform", "int")
# Trials share the cores: one thread each unless the spec says otherwise. And at most one `last` checkpoint
# per 10 s: a short trial validating many times a second spent a third of its time on checkpoints, and two
# workers then gave 1.5x one instead of 1.9-2x (BENCHMARKS.md, "Why, and the fix"); a killed trial resumes
# from a checkpoint at most 10 s old, an interrupted one writes one at once.
SWEEP_DEFAULTS = {"threads": 1, "checkpoint_every_s": 10.0}


@dataclass
class Spec:
    name: str
    preset: str
    seeds: list[int]
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    configs: list[dict[str, Any]] = field(default_factory=list)
    random: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    samples: int = 1
    sample_seed: int = 0
    max_trials: int | None = None
    wall_time_s: float | None = None
    data_dir: str | None = None
    max_attempts: int = 3  # a trial whose process dies is resumed from its checkpoint up to this many times
    source: str = "spec"

    def swept_fields(self) -> list[str]:
        """The fields that vary between configurations (the columns of sweep.csv and the report's plots)."""
        out: list[str] = []
        for k in [*self.grid, *(k for c in self.configs for k in c), *self.random]:
            if k not in out:
                out.append(k)
        return out


def _err(source: str, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {msg}")


def _check_value(spec: Spec, where: str, key: str, value: Any, base: dict[str, Any]) -> None:
    """Let the config's parser judge `key = value` on top of the preset and [base] (unknown keys, types,
    ranges such as learning_rate > 0): the error names the spec section and key."""
    if key in ("seed", "preset"):
        raise _err(spec.source, where, f"{key!r} is set by the sweep itself (use `seeds` / `preset`)")
    try:
        config.resolve(spec.preset, None, {**base, key: value})
    except ConfigError as e:
        raise _err(spec.source, f"{where} {key}", str(e).removeprefix("command line: ")) from None


def parse_spec(text: str, source: str = "spec") -> Spec:
    """Parse and validate a sweep spec (TOML text). Raises ConfigError naming the section and key."""
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    unknown = sorted(set(d) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (a sweep spec has {', '.join(sorted(TOP_KEYS))}; "
                          f"config fields go in [base], [grid], [[configs]] or [random])")
    name, preset = d.get("name"), d.get("preset")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"{source}: name must be a non-empty string without '/', got {name!r}")
    if not isinstance(preset, str):
        raise ConfigError(f"{source}: preset must name a preset ({', '.join(config.preset_names())})")
    if preset not in config.preset_names():
        raise ConfigError(f"{source}: preset: unknown preset {preset!r}; available: "
                          f"{', '.join(config.preset_names())}")
    seeds = d.get("seeds", [1])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"{source}: seeds: a count must be >= 1, got {seeds}")
        seeds = list(range(1, seeds + 1))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: seeds must be a count or a list of distinct integers, got {seeds!r}")
    spec = Spec(name=name, preset=preset, seeds=seeds, source=source)

    for key, kind in (("base", dict), ("grid", dict), ("random", dict), ("budget", dict), ("configs", list)):
        if key in d and not isinstance(d[key], kind):
            raise ConfigError(f"{source}: {key} must be a {'table' if kind is dict else 'list of tables'}")
    base = dict(SWEEP_DEFAULTS)
    for k, v in d.get("base", {}).items():
        _check_value(spec, "[base]", k, v, base)
        base[k] = v
    spec.base = base
    for k, values in d.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise _err(source, f"[grid] {k}", f"needs a non-empty list of values, got {values!r}")
        for v in values:
            _check_value(spec, "[grid]", k, v, base)
        spec.grid[k] = values
    for i, c in enumerate(d.get("configs", [])):
        if not isinstance(c, dict) or not c:
            raise _err(source, f"[[configs]] #{i + 1}", "must be a non-empty table of config fields")
        for k, v in c.items():
            if k in spec.grid:
                raise _err(source, f"[[configs]] #{i + 1} {k}", "is also in [grid]; set it in one place")
            _check_value(spec, f"[[configs]] #{i + 1}", k, v, base)
        spec.configs.append(dict(c))
    for k, r in d.get("random", {}).items():
        where = f"[random] {k}"
        if k in spec.grid or any(k in c for c in spec.configs):
            raise _err(source, where, "is also in [grid] or [[configs]]; set it in one place")
        if not isinstance(r, dict) or len(r) != 1 or next(iter(r)) not in RANGE_KINDS:
            raise _err(source, where, f"must be one of {{ uniform = [low, high] }}, {{ loguniform = [low, high] }}"
                                      f", {{ int = [low, high] }}; got {r!r}")
        kind, bounds = next(iter(r.items()))
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
            raise _err(source, where, f"{kind} needs [low, high], got {bounds!r}")
        low, high = bounds
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise _err(source, where, f"{kind} needs finite low < high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise _err(source, where, f"loguniform needs 0 < low, got [{low}, {high}]")
        if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise _err(source, where, f"int needs integer bounds, got [{low}, {high}]")
        for v in ([int(low), int(high)] if kind == "int" else [low, high]):
            _check_value(spec, "[random]", k, v, base)
        spec.random[k] = {kind: [low, high]}
    samples = d.get("samples", 1)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ConfigError(f"{source}: samples must be an integer >= 1, got {samples!r}")
    spec.samples = samples if spec.random else 1
    spec.sample_seed = d.get("sample_seed", 0)
    if not isinstance(spec.sample_seed, int) or isinstance(spec.sample_seed, bool):
        raise ConfigError(f"{source}: sample_seed must be an integer, got {spec.sample_seed!r}")
    budget = d.get("budget", {})
    bad = sorted(set(budget) - BUDGET_KEYS)
    if bad:
        raise ConfigError(f"{source}: [budget] unknown key {bad[0]!r} (has {', '.join(sorted(BUDGET_KEYS))})")
    if "trials" in budget:
        t = budget["trials"]
        if not isinstance(t, int) or isinstance(t, bool) or t < len(seeds):
            raise ConfigError(f"{source}: [budget] trials must be an integer >= the number of seeds "
                              f"({len(seeds)}), got {t!r}")
        spec.max_trials = t
    if "wall_time_s" in budget:
        w = budget["wall_time_s"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
            raise ConfigError(f"{source}: [budget] wall_time_s must be a number of seconds > 0, got {w!r}")
        spec.wall_time_s = float(w)
    if "data_dir" in d:
        if not isinstance(d["data_dir"], str):
            raise ConfigError(f"{source}: data_dir must be a path string")
        spec.data_dir = d["data_dir"]
    if "max_attempts" in d:
        m = d["max_attempts"]
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ConfigError(f"{source}: max_attempts must be an integer >= 1, got {m!r}")
        spec.max_attempts = m
    return spec


def load_spec(path: str | Path) -> Spec:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read sweep spec: {e.strerror}") from None
    return parse_spec(text, str(p))


def _draw(rng: random.Random, kind: str, low: float, high: float) -> float | int:
    if kind == "uniform":
        return low + (high - low) * rng.random()
    if kind == "loguniform":
        return math.exp(math.log(low) + (math.log(high) - math.log(low)) * rng.random())
    return rng.randint(int(low), int(high))


def configurations(spec: Spec) -> list[dict[str, Any]]:
    """The swept overrides of each configuration (grid x configs x random draws), in a fixed order."""
    keys = list(spec.grid)
    grid = [dict(zip(keys, vals)) for vals in itertools.product(*(spec.grid[k] for k in keys))]
    listed = spec.configs or [{}]
    rng = random.Random(spec.sample_seed)
    ranges = [(k, *next(iter(r.items()))) for k, r in spec.random.items()]  # (field, kind, [low, high])
    draws = [{k: _draw(rng, kind, *bounds) for k, kind, bounds in ranges} for _ in range(spec.samples)]
    return [{**g, **c, **r} for r in draws for c in listed for g in grid]


def expand(spec: Spec) -> list[dict[str, Any]]:
    """Trials: {"id", "config" (index), "seed", "overrides" (swept values), "values" (all overrides)}.
    Every trial's full config is resolved here, so a bad combination fails before anything runs."""
    confs = configurations(spec)
    if spec.max_trials is not None:
        confs = confs[:max(1, spec.max_trials // len(spec.seeds))]
    trials = []
    for ci, over in enumerate(confs):
        for seed in spec.seeds:
            values = {**spec.base, **over, "seed": seed}
            try:
                config.resolve(spec.preset, None, values)
            except ConfigError as e:
                raise _err(spec.source, f"configuration {ci} {over}", str(e).removeprefix("command line: ")) \
                    from None
            trials.append({"id": f"c{ci:03d}-s{seed}", "config": ci, "seed": seed, "overrides": over,
                           "values": values})
    return trials
