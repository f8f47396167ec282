"""Checking a stated figure against its raw result (bench/claims.toml and src/deeptut/claims.toml).

A figure is the number as printed (a string: its decimals are its rounding) and its evidence: `file` (or
`files`), relative to the repository root, and either `json` (a path: keys and list indices, "*" for every
item of a list; or a list of such paths) or `regex` (its first group, every match in the file). The values
found make the figure by `agg`: none (exactly one value), "all" (every value prints as the figure), "mean",
"median", "min", "max", "sum", "maxdiff" (the largest |value_i - against[i]|, for a curve against a
published one). Before `agg`, in this order: `scale` multiplies; `offset` is added (a difference from a
published value); `minus = {evidence}` subtracts another evidence's values one for one (a difference of two
raw results) and `over = {evidence}` divides by them (a ratio); `clock_part = "min"` or `"s"` gives the
minutes or the seconds of a duration printed as "13 min 41 s" (rounded to the second first). `clock = true`
reads h:mm:ss / m:ss as seconds. A regex with alternatives ("A|B") gives whichever group matched. A value
matches the printed figure when it rounds to it: |value - printed| <= half a unit of the printed last digit.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a number as printed: thousands commas, a sign unless it follows a digit (the "23" and "29" of "23-29"); not
# the digits of a name ("H200", "float32"); a ratio's "x5.11" is 5.11
NUMBER = re.compile(r"(?:(?<=(?<![\w.])x)|(?<![\w.,]))-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?")
# a figure with a unit, as the scan of the documents sees it (ranges "23-29 s" and ratios "6.0x", "x5.11")
FIGURE = re.compile(r"(?<![\w.])(?:x\d+(?:\.\d+)?(?![\w.])|-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
                    r"(?:\s?(?:-|/)\s?-?\d+(?:\.\d+)?)*(?:x(?![\w])|\s?%|\s(?:s|ms|us|nats?|min|minutes?|hours?|[kKMG]i?B|bytes)(?![\w])))")


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
            found = [next((g for g in f if g), "") if isinstance(f, tuple) else f for f in found]  # "A|B": its group
            out += [_clock(f) if spec.get("clock") else float(f) for f in found]
        else:
            raise ClaimError(f"{where}: a figure needs `json` or `regex`")
    out = [v * spec.get("scale", 1.0) + spec.get("offset", 0.0) for v in out]
    if "minus" in spec:
        other = evidence_values(spec["minus"], root)
        if len(other) != len(out):
            raise ClaimError(f"{files}: {len(out)} values minus {len(other)}: `minus` needs as many")
        out = [a - b for a, b in zip(out, other)]
    if "over" in spec:
        other = evidence_values(spec["over"], root)
        if len(other) != len(out):
            raise ClaimError(f"{files}: {len(out)} values over {len(other)}: `over` needs as many")
        out = [a / b for a, b in zip(out, other)]
    part = spec.get("clock_part")
    if part is not None:
        if part not in ("min", "s"):
            raise ClaimError(f"clock_part {part!r}: 'min' or 's'")
        out = [float(divmod(round(v), 60)[0 if part == "min" else 1]) for v in out]
    return out


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
        fn = {"mean": statistics.fmean, "median": statistics.median, "min": min, "max": max, "sum": math.fsum}.get(agg)
        if fn is None:
            raise ClaimError(f"unknown agg {agg!r}")
        value = fn(values)
    if not rounds_to(value, printed):
        raise ClaimError(f"printed {printed}, but the raw result gives {value!r} ({agg or 'one value'} of "
                         f"{len(values)} from {spec.get('files') or spec.get('file')})")
    return value
