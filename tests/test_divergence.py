"""The divergence rule on scripted cost sequences and on the period means of real runs."""

import json
import math

import pytest

from deeptut.train.divergence import DivergenceRule, hint


def first_firing(costs, rule=None, period=100):
    """Feed per-period mean costs; return (index of the period that fired or None, decisions)."""
    rule = rule or DivergenceRule.for_classes(10)
    decisions = []
    for i, c in enumerate(costs):
        d = rule.update(c, (i + 1) * period - 1)
        decisions.append(d)
        if d.diverged:
            return i, decisions
    return None, decisions


def test_threshold_closed_form():
    rule = DivergenceRule.for_classes(10)
    assert rule.reference == pytest.approx(math.log(10))
    assert rule.threshold == pytest.approx(4 * math.log(10))  # 9.21
    two = DivergenceRule.for_classes(2)
    assert two.threshold == pytest.approx(max(4 * math.log(2), math.log(2) + 2))  # 2.77


@pytest.mark.parametrize("costs, fires_at, reason", [
    ([2.2, 1.0, 0.5, 0.4], None, ""),  # a normal run
    ([2.30, 2.31, 2.29, 2.30], None, ""),  # stuck at chance: bad, not diverged
    ([9.0, 1.0], None, ""),  # just below 4 x log 10 = 9.21
    ([9.3], 0, "cost-rise"),  # above it in the first period (lenet-fast on Fashion-MNIST: 64.5)
    ([2.2, 0.5, 3.0, 8.0, 9.5], 4, "cost-rise"),  # a slow rise past the threshold
    ([2.2, float("nan")], 1, "non-finite"),
    ([float("inf")], 0, "non-finite"),
    ([2.2, 0.3, -float("inf")], 2, "non-finite"),
])
def test_scripted_sequences(costs, fires_at, reason):
    at, decisions = first_firing(costs)
    assert at == fires_at
    if at is not None:
        d = decisions[-1]
        assert d.reason == reason and d.iteration == (at + 1) * 100 - 1
        json.dumps(d.figures(), allow_nan=False)  # summary.json stays strict JSON
        assert "diverged" in d.message()


def test_figures_of_a_cost_rise():
    rule = DivergenceRule.for_classes(10)
    d = rule.update(64.5, 389)
    assert d.diverged and d.reason == "cost-rise"
    assert d.reference == pytest.approx(math.log(10))
    assert d.ratio == pytest.approx(64.5 / math.log(10))
    assert d.threshold == pytest.approx(4 * math.log(10))
    assert rule.fired == d.figures()


def test_penalised_cost_raises_the_reference():
    """A cost with a big penalty term starts high: the first period's mean becomes the reference."""
    rule = DivergenceRule.for_classes(10)
    assert not rule.update(5.0, 99).diverged
    assert rule.reference == 5.0 and rule.threshold == 20.0
    assert not rule.update(19.0, 199).diverged  # would have fired against log 10
    assert rule.update(21.0, 299).diverged
    assert rule.reference == 5.0  # only the first period moves it


def test_without_chance_level_first_period_is_the_reference():
    rule = DivergenceRule()  # e.g. a dA's reconstruction cross-entropy, ~500 nats at the start
    assert not rule.update(1e6, 99).diverged  # nothing to compare with yet
    assert rule.reference == 1e6
    assert not rule.update(3.9e6, 199).diverged
    assert rule.update(4.1e6, 299).diverged
    rule = DivergenceRule()
    assert rule.update(float("nan"), 0).reason == "non-finite"


def test_state_round_trip():
    a = DivergenceRule.for_classes(10, factor=3.0, margin=1.0)
    for i, c in enumerate([4.0, 2.0]):
        a.update(c, i)
    b = DivergenceRule.for_classes(10)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    assert b.reference == 4.0 and b.threshold == 12.0
    for c in (11.0, 12.5):
        assert a.update(c, 9).diverged == b.update(c, 9).diverged
    assert b.fired == a.fired and b.fired["mean_cost"] == 12.5


def test_bad_arguments_and_state():
    with pytest.raises(ValueError, match="factor"):
        DivergenceRule(2.3, factor=1.0)
    with pytest.raises(ValueError, match="n_out"):
        DivergenceRule.for_classes(1)
    with pytest.raises(ValueError, match="divergence rule state"):
        DivergenceRule().load_state_dict({"factor": 4.0})


def test_hint_halves_the_rate():
    assert "--learning_rate 0.1," in hint(0.2)
