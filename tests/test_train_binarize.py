"""[data] binarize: an RBM trained on one fixed 0/1 draw of the images (data/binarize.py), recorded in
config.json; the stochastic draw is the one `deeptut eval --log-likelihood --binarize stochastic` scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

import synthetic
from deeptut.train.runner import train
from deeptut.config import resolve
from deeptut.data.binarize import BINARIZE_SEED, binarized_splits
from deeptut.errors import ConfigError
from deeptut.store.rundir import Run
from deeptut.train import loglik

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stochastic_training_draw_is_fixed_and_is_evals_draw():
    s = synthetic.tiny_splits(n_train=300, n_valid=50, n_test=80)
    a, b = binarized_splits(s, "stochastic"), binarized_splits(s, "stochastic")
    for name in ("train", "valid", "test"):
        x = getattr(a, name).x
        assert x.dtype == np.float32 and x.shape == getattr(s, name).x.shape and set(np.unique(x)) <= {0.0, 1.0}
        assert np.array_equal(x, getattr(b, name).x)  # one fixed binarised set, run after run
        assert np.array_equal(getattr(a, name).y, getattr(s, name).y)
    # eval's stochastic protocol draws train then test from default_rng(the same seed): the same bits
    assert BINARIZE_SEED == loglik.BINARIZE_SEED
    rng = np.random.default_rng(loglik.BINARIZE_SEED)
    assert np.array_equal(a.train.x, loglik.binarize(s.train.x, "stochastic", rng))
    assert np.array_equal(a.test.x, loglik.binarize(s.test.x, "stochastic", rng))
    # a draw, not a threshold: grey pixels go either way, in proportion to their intensity
    grey = (s.train.x > 0.2) & (s.train.x < 0.8)
    assert 0.05 < abs(a.train.x[grey] - binarized_splits(s, "round").train.x[grey]).mean() < 0.6
    assert abs(a.train.x.mean() - s.train.x.mean()) < 0.01
    assert np.array_equal(binarized_splits(s, "round").test.x, (s.test.x >= 0.5).astype(np.float32))
    assert binarized_splits(s, "none") is s
    with pytest.raises(ValueError, match="binarize"):
        binarized_splits(s, "threshold")


def test_rbm_trains_on_the_binarised_images_and_records_it(tmp_path):
    s = synthetic.tiny_splits(n_train=100, n_valid=20, n_test=20)
    common = {"device": "cpu", "threads": 1, "batch_size": 20, "n_hidden": 8, "n_epochs": 1, "k": 1}

    def weights(name, data, **over):
        cfg = resolve("rbm", overrides={**common, **over})
        train(cfg, data, tmp_path / name, quiet=True)
        return Run.open(tmp_path / name).best_params()["W"]

    drawn = weights("drawn", s, binarize="stochastic")
    assert json.loads((tmp_path / "drawn" / "config.json").read_text())["config"]["binarize"] == "stochastic"
    # exactly the run on the pre-binarised images, and not the run on the grey ones
    assert np.array_equal(drawn, weights("given", binarized_splits(s, "stochastic")))
    assert not np.allclose(drawn, weights("grey", s))
    assert json.loads((tmp_path / "grey" / "config.json").read_text())["config"]["binarize"] == "none"
    with pytest.raises(ConfigError, match="binarize is a field of model rbm, not of dbn"):
        resolve("dbn-fast", overrides={"binarize": "stochastic"})
