"""The hand-fused MLP step against the autograd reference.

Promise: with the same torch thread count (the fused step runs at one thread; so does the reference here),
`MLPFusedStep` leaves *bit-identical* parameters and returns the identical cost as `AutogradStep` (autograd +
torch.optim.SGD) after any number of steps, for plain SGD, L1/L2 penalties, weight decay, momentum and
Nesterov, and every activation. Tolerance: zero.
"""

import pytest
import torch

from deeptut import config
from deeptut.accel import make_train_step
from deeptut.accel.cpu.fused import MLPFusedStep
from deeptut.models import build_model
from deeptut.steps import AutogradStep

CASES = {
    "tutorial": {},
    "no-penalty": {"L2_reg": 0.0},
    "L1": {"L1_reg": 1e-3, "L2_reg": 0.0},
    "L1+L2": {"L1_reg": 1e-4},
    "momentum": {"momentum": 0.9},
    "nesterov+wd": {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "sigmoid": {"activation": "sigmoid"},
    "relu": {"activation": "relu", "momentum": 0.5},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=200, n_in=784, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, 256, (n, n_in), generator=g).float() / 256) * (torch.rand(n, n_in, generator=g) < 0.3)
    return x, torch.randint(0, 10, (n,), generator=g)


def _train(step_cls, overrides, n_steps=8, batch=20, n_hidden=64, state=None):
    cfg = config.resolve("mlp", overrides={"n_hidden": n_hidden, "batch_size": batch, **overrides})
    model = build_model(cfg.model_args(), cfg.init_seed)
    with torch.no_grad():  # a non-zero output layer, so that every gradient path carries numbers
        model.logRegressionLayer.W.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    step = step_cls(model, cfg)
    x, y = _data()
    costs = []
    for i in range(n_steps):
        lr = 0.05 * (1 + i % 3)  # a varying learning rate, as a schedule gives
        costs.append(float(step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch], lr)))
    return model, step, costs


@pytest.mark.parametrize("case", list(CASES))
def test_fused_step_is_bit_identical_to_autograd(case):
    ref_model, _, ref_costs = _train(AutogradStep, CASES[case])
    model, _, costs = _train(MLPFusedStep, CASES[case])
    for name, ref in ref_model.state_dict().items():
        got = model.state_dict()[name]
        assert torch.equal(got, ref), f"{name}: max |diff| {(got - ref).abs().max().item():.3g}"
    assert costs == ref_costs


def test_fused_step_at_the_tutorials_shape():
    """784-500-10, batch 20, L2 1e-4: the tutorial's own step, bit for bit."""
    ref_model, _, ref_costs = _train(AutogradStep, {}, n_steps=3, n_hidden=500)
    model, _, costs = _train(MLPFusedStep, {}, n_steps=3, n_hidden=500)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref_model.state_dict().items())
    assert costs == ref_costs


def test_optimizer_state_is_interchangeable_with_autograd_step():
    """A checkpoint's momentum buffers written by one step type continue exactly in the other."""
    ov = {"momentum": 0.9, "nesterov": True}
    full_model, _, _ = _train(MLPFusedStep, ov, n_steps=6)
    model, step, _ = _train(MLPFusedStep, ov, n_steps=3)
    state = step.state_dict()
    assert set(state) == {"state", "param_groups"} and len(state["state"]) == 4
    cfg = config.resolve("mlp", overrides={"n_hidden": 64, "batch_size": 20, **ov})
    other = AutogradStep(model, cfg)
    other.load_state_dict(state)
    x, y = _data()
    for i in range(3, 6):
        other(x[i * 20:(i + 1) * 20], y[i * 20:(i + 1) * 20], 0.05 * (1 + i % 3))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in full_model.state_dict().items())


def test_a_different_minibatch_size_reallocates():
    ref_model, ref_step, _ = _train(AutogradStep, {}, n_steps=2)
    model, step, _ = _train(MLPFusedStep, {}, n_steps=2)
    x, y = _data(7, seed=5)  # 7 rows: not the minibatch size the buffers were made for
    assert float(step(x, y, 0.1)) == float(ref_step(x, y, 0.1))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref_model.state_dict().items())


def test_thread_count_is_restored_after_the_step():
    torch.set_num_threads(2)
    _train(MLPFusedStep, {}, n_steps=1)
    assert torch.get_num_threads() == 2


def test_make_train_step_picks_the_fused_step_on_cpu():
    cpu = torch.device("cpu")
    for overrides, expected in (({}, MLPFusedStep), ({"momentum": 0.9, "nesterov": True}, MLPFusedStep),
                                ({"fast_step": False}, AutogradStep)):
        cfg = config.resolve("mlp", overrides={"n_hidden": 8, **overrides})
        model = build_model(cfg.model_args(), cfg.init_seed)
        assert type(make_train_step(model, cfg, cpu)) is expected
    cfg = config.resolve("lenet", overrides={"nkerns": "2,3", "n_hidden": 8})
    model = build_model(cfg.model_args(), cfg.init_seed)
    step = make_train_step(model, cfg, cpu)
    assert type(step) is AutogradStep and step.forward.channels_last  # the step's forward, not the model
    cfg = config.resolve("lenet", overrides={"nkerns": "2,3", "n_hidden": 8, "fast_step": False})
    assert not make_train_step(model, cfg, cpu).forward.channels_last
