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


# Mean training cost per validation period (metrics.jsonl `train_cost`) of real runs, measured 2026-11-28 on
# the 2-core CPU with --threads 1 at this branch's parent commit e0e9d0a (`deeptut train PRESET ...`).
# Tutorial presets: their first periods (where a wrong rule would fire); the logistic run is whole.
# lenet-fast and mlp-fast here are those presets as they were then (peak rates 0.2 and 0.3, tanh, pixels
# as they are), before their re-choice on MNIST and Fashion-MNIST (BENCHMARKS.md, 2026-11-28).
MEASURED_NORMAL = {
    # logistic, the whole published run: 73 validations every 83 minibatches; the first 12 and the largest
    "logistic": [0.9447, 0.535, 0.4613, 0.4251, 0.4025, 0.3867, 0.3747, 0.3653, 0.3576, 0.3511, 0.3456,
                 0.3408],
    "mlp --n_epochs 3": [0.7165, 0.4195, 0.3831],  # one validation per epoch (2500 minibatches)
    "lenet --n_epochs 1": [0.9168],  # 100 minibatches of 500
    "lenet-fast --seed 1 (MNIST)": [0.3928, 0.1, 0.0368],  # the preset's whole 3 epochs
    "mlp-fast --seed 1 --n_epochs 4 (MNIST)": [0.7117, 0.3367, 0.2357, 0.1753],
    # the preset's whole 16 epochs; valid 1.26 % at the end
    "mlp-fast --seed 1 (MNIST)": [0.8979, 0.4242, 0.2778, 0.2598, 0.2677, 0.2674, 0.2533, 0.23, 0.2052,
                                  0.1788, 0.1593, 0.1417, 0.1283, 0.1184, 0.1148, 0.1114],
}
MEASURED_DIVERGED = {  # (costs, index of the period that must fire)
    # the run: 64.5 after epoch 1, 92.6 after epoch 2 (2 threads)
    "issue 15: lenet-fast --dataset fashion-mnist --seed 1": ([64.5, 92.6], 0),
    "lenet-fast --dataset fashion-mnist --seed 1": ([73.102, 92.7582, 15.0127], 0),  # 1 thread; valid 90.12 %
    "lenet-fast --dataset fashion-mnist --seed 3 --n_epochs 1": ([58.7547], 0),  # valid 80.18 %
    "lenet-fast --dataset fashion-mnist --seed 1 --n_epochs 2": ([83.6186, 35.2016], 0),  # valid 90.45 %
    "lenet-fast --dataset fashion-mnist --seed 2": ([75.4159, 94.2324, 15.4406], 0),  # valid 89.77 % last
    # the one-cycle peak squeezed into 4 epochs: a blow-up at the peak (valid 73 % -> 34 % -> 23.5 %)
    "mlp-fast --dataset fashion-mnist --seed 1 --n_epochs 4": ([2.2284, 21.6627, 8.6237, 3.0843], 1),
    # the preset's 16 epochs: blows up at the one-cycle peak (valid 18.2 % -> 46.5 %, 34.6 %, 44.3 %) and
    # recovers as the rate anneals (14.43 % valid at the end: the "worse than a plain MLP")
    "mlp-fast --dataset fashion-mnist --seed 1": ([0.9072, 0.6428, 0.6516, 7.7321, 14.7968, 15.8262, 15.1916,
                                                   12.1538, 10.111, 8.0252, 5.4657, 3.587, 2.1868, 1.606,
                                                   1.4623, 1.419], 4),
}


@pytest.mark.parametrize("name", MEASURED_NORMAL)
def test_measured_normal_runs_never_fire(name):
    at, decisions = first_firing(MEASURED_NORMAL[name])
    assert at is None
    assert max(d.mean_cost for d in decisions) < decisions[0].threshold / 4  # a margin of 4x at least


@pytest.mark.parametrize("name", MEASURED_DIVERGED)
def test_measured_diverged_runs_fire(name):
    costs, expected = MEASURED_DIVERGED[name]
    at, decisions = first_firing(costs)
    assert at == expected and decisions[-1].reason == "cost-rise"
