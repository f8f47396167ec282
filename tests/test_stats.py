"""McNemar's exact test and Holm's correction against hand-computed values."""

import math

import numpy as np
import pytest

from deeptut import stats
from deeptut.errors import DataError


@pytest.mark.parametrize("b, c, expected", [
    (0, 0, 1.0),                      # no disagreement: nothing to test
    (1, 0, 1.0),                      # 2 * C(1,0) / 2 = 1
    (5, 0, 2 / 32),                   # 2 * 1 / 2^5
    (0, 6, 2 / 64),
    (1, 9, 2 * (1 + 10) / 1024),      # 2 * (C(10,0) + C(10,1)) / 2^10 = 0.021484375
    (3, 10, 2 * (1 + 13 + 78 + 286) / 8192),  # 0.0922851...
    (7, 7, 1.0),                      # balanced: 2 * P(X <= 7) > 1, capped
    (4, 5, 1.0),                      # 2 * P(X <= 4 | n=9) = 2 * 256/512 = 1
])
def test_exact_p_by_hand(b, c, expected):
    assert stats.mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-12)
    assert stats.mcnemar_exact_p(c, b) == pytest.approx(expected, rel=1e-12)


def test_exact_p_large_counts_match_log_space_sum():
    b, c = 400, 520  # big enough that 2^n overflows a float; the exact sum must still be right
    n = b + c
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2) for k in range(b + 1)]
    m = max(logs)
    expected = 2 * math.exp(m) * sum(math.exp(x - m) for x in logs)
    assert stats.mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-9)
    assert 0 < stats.mcnemar_exact_p(b, c) < 1e-3


def test_counts_from_per_example_correctness():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0], bool)
    t = stats.mcnemar(a, b)
    assert (t.n, t.both_right, t.a_only, t.b_only, t.both_wrong) == (8, 2, 3, 1, 2)
    assert t.p_value == pytest.approx(2 * (1 + 4) / 16)  # b=3, c=1: 2 * (C(4,0)+C(4,1)) / 2^4 = 0.625
    same = stats.mcnemar(a, a)
    assert same.discordant == 0 and same.p_value == 1.0
    with pytest.raises(DataError, match="same examples"):
        stats.mcnemar(a, b[:5])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_pairwise_table_names_the_correction():
    rng = np.random.default_rng(0)
    y = [rng.random(50) < p for p in (0.9, 0.7, 0.5)]
    pairs = stats.pairwise_mcnemar(["r1", "r2", "r3"], y)
    assert [(p["a"], p["b"]) for p in pairs] == [("r1", "r2"), ("r1", "r3"), ("r2", "r3")]
    assert [p["p_holm"] for p in pairs] == pytest.approx(stats.holm([p["test"].p_value for p in pairs]))
    text = stats.format_pairwise(pairs)
    assert "Holm" in text and len(text.splitlines()) == 6
    assert "no correction" in stats.format_pairwise(pairs[:1])
