"""Significance tests for comparing classifiers on the same examples.

McNemar's test (exact form): two models A and B are evaluated on the same n examples. Only the examples
on which they disagree say anything about which is better:
    b = A right and B wrong,   c = A wrong and B right.
Under the null hypothesis (equal error rates) each disagreement goes either way with probability 1/2, so
b ~ Binomial(b + c, 1/2). The two-sided exact p-value is
    p = min(1, 2 * sum_{k=0}^{min(b,c)} C(b+c, k) / 2^(b+c)),   and p = 1 when b + c = 0.
It is computed in exact integer arithmetic (no normal approximation, no continuity correction), which is
right for the small counts that close models give and still fast for b + c in the tens of thousands.

Several pairwise tests: Holm's step-down correction (controls the family-wise error rate like Bonferroni,
never less powerful), applied to the m = k(k-1)/2 pairwise p-values of k models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from deeptut.errors import DataError


@dataclass(frozen=True)
class McNemar:
    n: int  # examples compared
    both_right: int
    a_only: int  # b: A right, B wrong
    b_only: int  # c: A wrong, B right
    both_wrong: int
    p_value: float  # two-sided exact

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))


def mcnemar(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> McNemar:
    """McNemar's exact test on two models' per-example correctness (bool arrays, the same examples)."""
    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    b = np.asarray(correct_b, dtype=bool).reshape(-1)
    if a.shape != b.shape:
        raise DataError(f"McNemar needs the same examples for both models: {a.size} against {b.size}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return McNemar(n=int(a.size), both_right=int(np.sum(a & b)), a_only=a_only, b_only=b_only,
                   both_wrong=int(np.sum(~a & ~b)), p_value=mcnemar_exact_p(a_only, b_only))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (same order as given): the i-th smallest is multiplied by (m - i), made
    monotone, capped at 1. Reject at level alpha where the adjusted p-value is <= alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def pairwise_mcnemar(names: Sequence[str], correct: Sequence[np.ndarray]) -> list[dict]:
    """Every pair (i < j): counts, raw exact p-value and the Holm-adjusted p-value over all pairs."""
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            pairs.append({"a": names[i], "b": names[j], "test": mcnemar(correct[i], correct[j])})
    for pair, adj in zip(pairs, holm([p["test"].p_value for p in pairs])):
        pair["p_holm"] = adj
    return pairs


def format_pairwise(pairs: list[dict], split: str = "test") -> str:
    """A text table: one line per pair, with the contingency counts and the raw and Holm p-values."""
    if not pairs:
        return ""
    wa = max(len("A"), *(len(p["a"]) for p in pairs))
    wb = max(len("B"), *(len(p["b"]) for p in pairs))
    head = (f"{'A'.ljust(wa)}  {'B'.ljust(wb)}  {'n':>6}  {'both ok':>7}  {'A only':>6}  {'B only':>6}  "
            f"{'both wrong':>10}  {'p (exact)':>10}  {'p (Holm)':>10}")
    lines = [f"McNemar's exact test on the {split} examples (A only: A right and B wrong); "
             + ("one pair, no correction" if len(pairs) == 1 else
                f"{len(pairs)} pairs, Holm-corrected for multiple comparisons"), head, "-" * len(head)]
    for p in pairs:
        t: McNemar = p["test"]
        lines.append(f"{p['a'].ljust(wa)}  {p['b'].ljust(wb)}  {t.n:>6}  {t.both_right:>7}  {t.a_only:>6}  "
                     f"{t.b_only:>6}  {t.both_wrong:>10}  {t.p_value:>10.4g}  {p['p_holm']:>10.4g}")
    return "\n".join(lines)
