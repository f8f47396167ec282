"""The MLP chapter: parameter names and shapes, the tutorial's initialisation, the function, a tiny run."""

import json

import numpy as np
import pytest
import torch

from deeptut import config
from deeptut.store import rundir
from deeptut.models import build_model
from deeptut.models.mlp import MLP
from deeptut.train.loop import fit
from synthetic import tiny_splits


@pytest.fixture(autouse=True)
def keep_threads():
    """fit() sets torch's thread count from the config (the presets say 1): put it back afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_parameter_names_shapes_and_count():
    m = MLP()
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"hiddenLayer.W": (784, 500), "hiddenLayer.b": (500,),
                      "logRegressionLayer.W": (500, 10), "logRegressionLayer.b": (10,)}
    assert sum(p.numel() for p in m.parameters()) == 784 * 500 + 500 + 500 * 10 + 10 == 397_510
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert [w is p for w, p in zip(m.weights(), (m.hiddenLayer.W, m.logRegressionLayer.W))] == [True, True]


def test_initialisation_is_the_tutorials_randomstate_draw():
    m = build_model(config.resolve("mlp").model_args(), 1234)
    rng = np.random.RandomState(1234)  # mlp.py: rng = numpy.random.RandomState(1234)
    bound = np.sqrt(6.0 / (784 + 500))
    expected = np.asarray(rng.uniform(low=-bound, high=bound, size=(784, 500)), dtype=np.float32)
    W = m.hiddenLayer.W.detach().numpy()
    assert np.array_equal(W, expected)
    assert np.abs(W).max() <= bound and np.abs(W).max() > 0.99 * bound
    assert not m.hiddenLayer.b.detach().any()
    assert not m.logRegressionLayer.W.detach().any() and not m.logRegressionLayer.b.detach().any()
    # another seed, another draw; None means the tutorial's seed
    assert not np.array_equal(MLP(init_seed=5).hiddenLayer.W.detach().numpy(), expected)
    assert np.array_equal(MLP(init_seed=None).hiddenLayer.W.detach().numpy(), expected)


def test_sigmoid_units_get_four_times_the_tanh_weights():
    tanh, sig = MLP(activation="tanh"), MLP(activation="sigmoid")
    assert torch.equal(sig.hiddenLayer.W, 4 * tanh.hiddenLayer.W)


def test_forward_is_tanh_hidden_then_affine_logits():
    m = MLP(n_in=12, n_hidden=7, n_out=3, init_seed=1)
    with torch.no_grad():
        m.logRegressionLayer.W.normal_()
        m.logRegressionLayer.b.normal_()
        m.hiddenLayer.b.normal_()
    x = torch.rand(5, 12)
    p = {k: v.detach().double().numpy() for k, v in m.state_dict().items()}
    h = np.tanh(x.double().numpy() @ p["hiddenLayer.W"] + p["hiddenLayer.b"])
    logits = h @ p["logRegressionLayer.W"] + p["logRegressionLayer.b"]
    assert m(x).shape == (5, 3)
    np.testing.assert_allclose(m(x).detach().numpy(), logits, rtol=1e-5, atol=1e-6)


def test_tiny_fit_end_to_end(tmp_path):
    cfg = config.resolve("mlp", overrides=dict(n_hidden=32, batch_size=20, n_epochs=3, learning_rate=0.05,
                                               seed=1, device="cpu"))
    data = tiny_splits(n_train=600, n_valid=200, n_test=200)
    summary = fit(cfg, data, tmp_path, quiet=True)
    assert summary["epochs"] == 3 and summary["test_error"] < 30  # chance is 90 %
    model, saved_cfg = rundir.load_model(tmp_path)
    assert isinstance(model, MLP) and saved_cfg.n_hidden == 32
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(np.isfinite(l["train_cost"]) for l in lines)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_every_activation_trains_with_the_fused_step(activation):
    lr = {"tanh": 0.05, "sigmoid": 0.5, "relu": 0.05}[activation]  # sigmoid units learn slowly at small steps
    cfg = config.resolve("mlp", overrides=dict(n_hidden=16, batch_size=20, n_epochs=2, learning_rate=lr,
                                               activation=activation, seed=2, device="cpu"))
    summary = fit(cfg, tiny_splits(n_train=400, n_valid=100, n_test=100), None, quiet=True)
    assert summary["test_error"] < 60
