"""Choosing among settings by validation error only: the one rule every sweep script in bench/ uses.

The tutorials' protocol: the validation split chooses (early stopping, and here also which setting of a sweep
wins); the test split is looked at once, for the model and the setting already chosen. A sweep that ranks by
test error reports an optimistically biased figure (the minimum of several noisy test estimates) and may pick
a setting that is worse on new data. So the scripts record every run's test error in their raw JSON (for
later audits), but `rank` and `choose` never read it, and `report` prints it only for the chosen setting.

A table maps a setting's name to its runs, one per seed: dicts with "valid" (best validation error, %),
"test" (the test error of that model, %) and optionally "s" (training seconds) and "failed" (true where the
run stopped on a training error: divergence, a non-finite cost; the scripts catch deeptut's TrainingError
and record its summary). For example

    table = {"preset": [{"seed": 1, "valid": 0.81, "test": 0.88, "s": 1.7}, ...],
             "14 epochs": [{"seed": 1, "valid": 0.77, "test": 0.78, "s": 1.8}, ...]}
    name = choose(table, max_seconds=2.0)
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Mapping, Sequence

Runs = Sequence[Mapping[str, Any]]


def _mean(rows: Runs, key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return statistics.mean(vals) if vals else math.nan


FAILED_STOPS = ("diverged", "non-finite")  # summary.json's `stopped` values that mean the run failed


def failed(run: Mapping[str, Any]) -> bool:
    """A run that diverged or met a non-finite cost: its setting is not ranked, whatever its errors."""
    return bool(run.get("failed")) or run.get("stopped") in FAILED_STOPS


def summarize(table: Mapping[str, Runs]) -> dict[str, dict[str, Any]]:
    """Per setting: n (runs), mean_valid and std_valid (%), mean_s (seconds, nan where not recorded).
    No test figure: nothing derived from the test split goes into what the ranking sees."""
    out = {}
    for name, rows in table.items():
        for r in rows:
            if "valid" not in r:
                raise KeyError(f"setting {name!r}: a run without 'valid' (its best validation error): {dict(r)}")
        valid = [float(r["valid"]) for r in rows]
        finite = all(math.isfinite(v) for v in valid)  # a diverged run (inf / nan) makes the mean non-finite
        out[name] = {"n": len(rows), "mean_valid": statistics.mean(valid) if valid and finite else math.nan,
                     "std_valid": (statistics.stdev(valid) if len(valid) > 1 else 0.0) if finite else math.nan,
                     "mean_s": _mean(rows, "s"), "failed": sum(1 for r in rows if failed(r))}
    return out


def rank(table: Mapping[str, Runs], max_seconds: float | None = None) -> list[str]:
    """Names of the eligible settings, best first: lowest mean validation error; ties by name, so the order
    never depends on anything else. Eligible: as many runs as the most complete setting (a setting cut short
    by a time budget is compared on fewer seeds, so it is left out rather than ranked on luck), no failed run
    (a setting that diverged at any seed is not robust, however good its other seeds), a finite mean
    validation error, and, with `max_seconds`, a mean training time within it (a setting without recorded
    times is then not eligible)."""
    s = summarize(table)
    n_full = max((v["n"] for v in s.values()), default=0)
    ok = [k for k, v in s.items() if not _why_not(v, n_full, max_seconds)]
    return sorted(ok, key=lambda k: (s[k]["mean_valid"], k))


def _why_not(v: Mapping[str, Any], n_full: int, max_seconds: float | None) -> str:
    """Why a summarized setting is not eligible ("" when it is)."""
    if v["failed"]:
        return f"{v['failed']} failed run(s)"
    if v["n"] < n_full or n_full == 0:
        return f"{v['n']} seeds where others have {n_full}"
    if not math.isfinite(v["mean_valid"]):
        return "non-finite validation error"
    if max_seconds is not None and not (math.isfinite(v["mean_s"]) and v["mean_s"] <= max_seconds):
        return f"mean time over {max_seconds} s"
    return ""


def choose(table: Mapping[str, Runs], max_seconds: float | None = None) -> str:
    """The setting with the lowest mean validation error among the eligible ones (see `rank`)."""
    order = rank(table, max_seconds)
    if not order:
        raise ValueError("no eligible setting: every one is incomplete, non-finite"
                         + (f" or slower than {max_seconds} s on average" if max_seconds is not None else ""))
    return order[0]


def report(table: Mapping[str, Runs], max_seconds: float | None = None) -> tuple[str | None, list[str]]:
    """(the chosen name or None, lines to print): every setting's mean validation error and time, in rank
    order, then the chosen setting's test error (mean over its seeds and per seed): the only test figure."""
    s, order = summarize(table), rank(table, max_seconds)
    n_full = max((v["n"] for v in s.values()), default=0)
    lines = []
    for k in order + [k for k in table if k not in order]:
        v = s[k]
        why = "" if k in order else f"  (not ranked: {_why_not(v, n_full, max_seconds)})"
        lines.append(f"{k:40s} valid {v['mean_valid']:.3f} +- {v['std_valid']:.3f} % over {v['n']} seeds, "
                     f"{v['mean_s']:.2f} s{why}")
    if not order:
        lines.append("no setting chosen")
        return None, lines
    best = order[0]
    tests = [float(r["test"]) for r in table[best] if r.get("test") is not None]
    lines.append(f"chosen by mean validation error: {best}: valid {s[best]['mean_valid']:.3f} %, test "
                 + (f"{statistics.mean(tests):.3f} % (" + ", ".join(f"{t:.2f}" for t in tests) + ")"
                    if tests else "not recorded"))
    return best, lines


def rank_across(tables: Mapping[str, Mapping[str, Runs]], max_seconds: float | None = None) -> list[str]:
    """Settings swept on several datasets (tables: dataset -> setting -> runs), best first.

    Eligible: eligible on every dataset (see `rank`: complete, no failed run, within max_seconds), so a
    setting that diverges at one seed of one dataset is out. Score: the mean over datasets of the setting's
    mean validation error divided by the lowest mean validation error among the eligible settings on that
    dataset (1.0 = the best there). Dividing makes a dataset with 10 % errors weigh no more than one with
    1 %: Fashion-MNIST's errors would otherwise decide alone. Ties by name. Test errors are never read."""
    if not tables:
        return []
    names = [k for k in next(iter(tables.values()))]
    ok = [k for k in names if all(k in rank(t, max_seconds) for t in tables.values())]
    if not ok:
        return []
    summaries = {d: summarize(t) for d, t in tables.items()}
    best = {d: min(s[k]["mean_valid"] for k in ok) for d, s in summaries.items()}

    def score(k: str) -> float:
        return statistics.mean(summaries[d][k]["mean_valid"] / best[d] for d in tables)

    return sorted(ok, key=lambda k: (score(k), k))


def report_across(tables: Mapping[str, Mapping[str, Runs]],
                  max_seconds: float | None = None) -> tuple[str | None, list[str]]:
    """(the chosen name or None, lines): each dataset's table as `report` prints it but without its test
    line, then the joint ranking (`rank_across`) and the chosen setting's test error on every dataset: the
    only test figures printed."""
    lines: list[str] = []
    for d, t in tables.items():
        lines.append(f"--- {d}")
        lines += [ln for ln in report(t, max_seconds)[1] if not ln.startswith(("chosen by", "no setting"))]
    order = rank_across(tables, max_seconds)
    lines.append("--- joint ranking (mean over datasets of valid / best valid there): "
                 + (" | ".join(order[:5]) if order else "none eligible on every dataset"))
    if not order:
        return None, lines
    best = order[0]
    for d, t in tables.items():
        tests = [float(r["test"]) for r in t[best] if r.get("test") is not None]
        v = summarize(t)[best]
        lines.append(f"chosen by validation on all datasets: {best}: {d}: valid {v['mean_valid']:.3f} %, test "
                     + (f"{statistics.mean(tests):.3f} % (" + ", ".join(f"{x:.2f}" for x in tests) + ")"
                        if tests else "not recorded"))
    return best, lines
