"""Checking a stated figure against its raw result (bench/claims.toml and src/deeptut/claims.toml).

A figure is the number as printed (a string: its decimals are its rounding) and its evidence: `file` (or
`files`), relative to the repository root, and either `json` (a path: keys and list indices, "*" for every
item of a list; or a list of such paths) or `regex` (its first group, every match in the file). The values
found make the figure by `agg`: none (exactly one value), "all" (every value prints as the figure), "mean",
"min", "max", "sum", "maxdiff" (the largest |value_i - against[i]|, for a curve against a published one);
`scale` multiplies first; `clock = true` reads h:mm:ss / m:ss as seconds. A value matches the printed figure
when it rounds to it: |value - printed| <= half a unit of the printed last digit.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a number as printed: thousands commas, a sign unless it follows a digit (the "23" and "29" of "23-29"); not
# the digits of a name ("H200", "float32")
NUMBER = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?")
# a figure with a unit, as the scan of the documents sees it (ranges "23-29 s" and ratios "6.0x", "x5.11")
FIGURE = re.compile(r"(?<![\w.])(?:x\d+(?:\.\d+)?(?![\w.])|-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
                    r"(?:\s?(?:-|/)\s?-?\d+(?:\.\d+)?)*(?:x(?![\w])|\s?%|\s(?:s|ms|us|nats?|min)(?![\w])))")


class ClaimError(AssertionError):
    pass


def numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def parse_number(s: str) -> float:
    return float(s.replace(",", ""))


def decimals(s: str) -> int:
    """The printed number's last digit as a power of ten, negated (1.65 -> 2; 1.1e-08 -> 9)."""
    mantissa, _, exp = s.lower().partition("e")
    d = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return d - int(exp) if exp else d


def rounds_to(value: float, printed: str) -> bool:
    """Whether `value` prints as `printed` at its last digit (either way at an exact half)."""
    target, d = parse_number(printed), decimals(printed)
    return math.isfinite(value) and abs(value - target) <= 0.5 * 10.0 ** -d * (1 + 1e-9) + 1e-12 * 10.0 ** -max(d, 0)


def _walk(node, path: list, where: str) -> list:
    if not path:
        return [node]
    key, rest = path[0], path[1:]
    if key == "*":
        if not isinstance(node, list):
            raise ClaimError(f"{where}: '*' applied to a {type(node).__name__}, not a list")
        return [v for item in node for v in _walk(item, rest, where)]
    try:
        return _walk(node[key], rest, where)
    except (KeyError, IndexError, TypeError):
        raise ClaimError(f"{where}: no {key!r} in the JSON path {path}") from None


def _clock(s: str) -> float:
    parts = [float(p) for p in s.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def evidence_values(spec: dict, root: Path = ROOT) -> list[float]:
    """The values a figure's evidence gives, in file order."""
    files = spec.get("files") or [spec["file"]]
    out: list[float] = []
    for name in files:
        path = root / name
        where = f"{name}"
        if not path.is_file():
            raise ClaimError(f"{where}: raw result file not found")
        text = path.read_text()
        if "json" in spec:
            paths = spec["json"]
            paths = paths if paths and isinstance(paths[0], list) else [paths]
            data = json.loads(text)
            for p in paths:
                out += [float(v) for v in _walk(data, list(p), where)]
        elif "regex" in spec:
            found = re.findall(spec["regex"], text)
            if not found:
                raise ClaimError(f"{where}: regex {spec['regex']!r} matches nothing")
            found = [f[0] if isinstance(f, tuple) else f for f in found]
            out += [_clock(f) if spec.get("clock") else float(f) for f in found]
        else:
            raise ClaimError(f"{where}: a figure needs `json` or `regex`")
    return [v * spec.get("scale", 1.0) for v in out]


def check_figure(printed: str, spec: dict, root: Path = ROOT) -> float | list[float]:
    """Raises ClaimError unless the evidence makes `printed`; returns the value(s) it found."""
    values = evidence_values(spec, root)
    agg = spec.get("agg")
    if agg is None:
        if len(values) != 1:
            raise ClaimError(f"{spec.get('file')}: {len(values)} values where one was expected (set agg)")
        value = values[0]
    elif agg == "all":
        bad = [v for v in values if not rounds_to(v, printed)]
        if bad:
            raise ClaimError(f"printed {printed}, but {len(bad)} of {len(values)} values do not print so: {bad[:3]}")
        return values
    elif agg == "maxdiff":
        against = spec["against"]
        if len(values) != len(against):
            raise ClaimError(f"{len(values)} values against {len(against)} published ones")
        value = max(abs(v - a) for v, a in zip(values, against))
    else:
        fn = {"mean": statistics.fmean, "min": min, "max": max, "sum": math.fsum}.get(agg)
        if fn is None:
            raise ClaimError(f"unknown agg {agg!r}")
        value = fn(values)
    if not rounds_to(value, printed):
        raise ClaimError(f"printed {printed}, but the raw result gives {value!r} ({agg or 'one value'} of "
                         f"{len(values)} from {spec.get('files') or spec.get('file')})")
    return value
