"""Input normalisation: training-split statistics only, the floor for zero-variance pixels, round trip."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from deeptut.data.normalize import Normalizer, fit_normalizer
from synthetic import tiny_splits


def test_none_is_the_identity():
    x = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    n = Normalizer("none").fit(x)
    assert n.apply(x) is x
    t = torch.from_numpy(x)
    assert n.apply(t) is t
    assert Normalizer.from_dict(json.loads(json.dumps(n.to_dict()))).apply(x) is x


@pytest.mark.parametrize("per_pixel", [False, True])
def test_statistics_from_the_training_split_only(per_pixel):
    s = tiny_splits(n_train=300, n_valid=50, n_test=50)
    a = fit_normalizer(s, "standard", per_pixel)
    rng = np.random.default_rng(5)
    other = lambda split: dataclasses.replace(split, x=rng.random(split.x.shape).astype(np.float32) * 7)
    changed = dataclasses.replace(s, valid=other(s.valid), test=other(s.test))
    b = fit_normalizer(changed, "standard", per_pixel)
    assert a.to_dict() == b.to_dict()
    c = fit_normalizer(dataclasses.replace(s, train=other(s.train)), "standard", per_pixel)
    assert a.to_dict() != c.to_dict()  # the test above can fail


def test_global_closed_form():
    x = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    n = Normalizer("standard").fit(x)
    assert float(n.mean) == 1.5 and float(n.std) == pytest.approx(np.sqrt(1.25))
    y = n.apply(x)
    assert y.dtype == np.float32 and y.mean() == pytest.approx(0) and y.std() == pytest.approx(1)


def test_per_pixel_standardises_each_pixel_and_floors_zero_variance():
    rng = np.random.default_rng(1)
    x = rng.random((1000, 6)).astype(np.float32)
    x[:, 0] = 0.0  # a border pixel: never lit in training
    x[:, 1] = 0.5  # constant but nonzero
    x[:1, 2], x[1:, 2] = 0.5, 0.0  # lit faintly in 1 image: std ~0.016, below the floor (~0.031)
    n = Normalizer("standard", per_pixel=True, std_floor=0.1).fit(x)
    g_std = x.astype(np.float64).std()
    floor = 0.1 * g_std
    assert n.std[0] == pytest.approx(floor) and n.std[1] == pytest.approx(floor)
    assert x[:, 2].std() < floor and n.std[2] == pytest.approx(floor)
    assert n.std[3] == pytest.approx(x[:, 3].astype(np.float64).std())  # above the floor: its own
    y = n.apply(x)
    assert np.isfinite(y).all()
    assert np.all(y[:, :2] == 0)  # training values of a constant pixel stay exactly 0
    np.testing.assert_allclose(y[:, 3:].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y[:, 3:].std(0), 1, atol=1e-4)
    test = np.ones((1, 6), np.float32)  # a stroke where training never had one: bounded
    assert abs(n.apply(test)[0, 0]) == pytest.approx(1 / floor, rel=1e-5)


def test_constant_training_data():
    x = np.full((4, 3), 0.25, np.float32)
    for per_pixel in (False, True):
        n = Normalizer("standard", per_pixel).fit(x)
        assert np.all(n.std == 1.0)
        assert np.all(n.apply(x) == 0)


@pytest.mark.parametrize("per_pixel", [False, True])
def test_round_trip_through_json(per_pixel):
    s = tiny_splits(n_train=200, n_valid=20, n_test=20)
    n = fit_normalizer(s, "standard", per_pixel)
    m = Normalizer.from_dict(json.loads(json.dumps(n.to_dict(), allow_nan=False)))
    np.testing.assert_array_equal(n.apply(s.test.x), m.apply(s.test.x))
    t = torch.from_numpy(s.test.x)
    np.testing.assert_array_equal(m.apply(t).numpy(), n.apply(s.test.x))  # torch and numpy agree


def test_bad_dicts_and_shapes():
    with pytest.raises(ValueError, match="normalize.mode"):
        Normalizer.from_dict({"mode": "minmax"})
    with pytest.raises(ValueError, match="missing field"):
        Normalizer.from_dict({"mode": "standard", "per_pixel": False, "std_floor": 0.1, "mean": 0.1})
    with pytest.raises(ValueError, match="std"):
        Normalizer.from_dict({"mode": "standard", "per_pixel": False, "std_floor": 0.1, "mean": 0.1,
                              "std": 0.0})
    with pytest.raises(ValueError, match="per_pixel"):
        Normalizer.from_dict({"mode": "standard", "per_pixel": False, "std_floor": 0.1, "mean": [0.1],
                              "std": [1.0]})
    with pytest.raises(ValueError, match="normalize must be"):
        Normalizer("zscore")
    n = Normalizer("standard", per_pixel=True).fit(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="shape"):
        n.apply(np.zeros((2, 5), np.float32))
    with pytest.raises(RuntimeError, match="before fit"):
        Normalizer("standard").apply(np.zeros((1, 2)))
