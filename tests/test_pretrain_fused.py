"""accel/cpu/pretrain.py: the fused dA / SdA-layer / RBM / DBN-layer updates against the reference update
(train/pretrain.py's `layer_update`, the models' own functions), bit for bit, with the same random draws; the
seam's choices and fallbacks; the thread count held at one inside an update."""

from __future__ import annotations

import pytest
import torch

import synthetic
import tiny
from deeptut import accel
from deeptut.accel.cpu import pretrain as fused
from deeptut.config import TrainConfig
from deeptut.models import build_model
from deeptut.train import pretrain

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)

DATA = synthetic.tiny_splits(n_train=240, n_valid=20, n_test=20, n_in=64, n_out=4)
CPU = torch.device("cpu")

CASES = {
    "da": dict(model="da", n_visible=64, n_hidden=24, corruption_level=0.3, learning_rate=0.1, batch_size=20),
    "da-clean": dict(model="da", n_visible=64, n_hidden=24, corruption_level=0.0, learning_rate=0.1, batch_size=20),
    "ca-floor": dict(model="ca", n_visible=64, n_hidden=24, contraction_level=0.1, floor_division=True,
                     learning_rate=0.05, batch_size=10),
    "rbm-pcd": dict(model="rbm", n_visible=64, n_hidden=24, k=3, persistent=True, learning_rate=0.1, batch_size=20),
    "rbm-cd": dict(model="rbm", n_visible=64, n_hidden=24, k=2, persistent=False, learning_rate=0.1, batch_size=20),
    "sda-batch1": dict(model="sda", n_in=64, hidden_layers_sizes=(30, 20), corruption_levels=(0.1, 0.2), n_out=4,
                       pretrain_lr=0.05, batch_size=1),
    "dbn": dict(model="dbn", n_in=64, hidden_layers_sizes=(30, 20), n_out=4, k=1, pretrain_lr=0.05, batch_size=10),
    "dbn-pcd": dict(model="dbn", n_in=64, hidden_layers_sizes=(30, 20), n_out=4, k=2, persistent=True,
                    pretrain_lr=0.05, batch_size=10),
}


def config(case: str, **kw) -> TrainConfig:
    values = {"preset": f"t-{case}", "threads": 1, "device": "cpu", "seed": 3, **CASES[case], **kw}
    return TrainConfig(**values)


def run_updates(cfg: TrainConfig, layer: int, fast: bool, n_updates: int = 25):
    """n_updates of `layer` from the initial model; returns (model, costs, chains, generator state)."""
    model = build_model(cfg.model_args(), cfg.init_seed)
    x = pretrain.layer_inputs(model, layer, torch.from_numpy(DATA.train.x))
    _, lr = pretrain.schedule(cfg)
    update = pretrain.make_update(model, cfg, layer, lr, CPU) if fast else pretrain.layer_update(model, cfg, layer, lr)
    if not fast:  # the reference at the fused update's thread count: products split over two threads
        update = fused.one_thread(update)  # round differently on some CPUs (seen on an AMD EPYC)
    g = torch.Generator().manual_seed(11)
    chain = pretrain.initial_chain(model, cfg, layer, CPU)
    costs, chains, bs = [], [], cfg.batch_size
    for i in range(n_updates):
        j = i % (len(x) // bs)
        cost, chain = update(x[j * bs:(j + 1) * bs], g, chain, i)
        costs.append(cost.clone())
        chains.append(None if chain is None else chain.clone())
    return model, costs, chains, g.get_state(), update


@pytest.mark.parametrize("case, layer", [("da", 0), ("da-clean", 0), ("ca-floor", 0), ("rbm-pcd", 0), ("rbm-cd", 0),
                                         ("sda-batch1", 0), ("sda-batch1", 1), ("dbn", 1), ("dbn-pcd", 0)])
def test_fused_update_is_the_reference_bit_for_bit(case, layer):
    cfg = config(case)
    ref_model, ref_costs, ref_chains, ref_g, _ = run_updates(cfg, layer, fast=False)
    model, costs, chains, g, update = run_updates(cfg, layer, fast=True)
    expected = {"da": fused.DAFusedUpdate, "sda": fused.DAFusedUpdate, "ca": fused.CAFloorFusedUpdate}.get(
        cfg.model, fused.RBMFusedUpdate)
    assert isinstance(update, expected)
    for a, b in zip(ref_costs, costs):
        assert torch.equal(a, b)
    for a, b in zip(ref_chains, chains):
        assert (a is None and b is None) or torch.equal(a, b)
    if cfg.persistent and cfg.model in ("rbm", "dbn"):  # the chain is binary and moves
        assert set(chains[-1].unique().tolist()) <= {0.0, 1.0} and not torch.equal(chains[0], chains[-1])
    ref_state, state = ref_model.state_dict(), model.state_dict()
    for k in ref_state:
        assert torch.equal(ref_state[k], state[k]), k
    init = build_model(cfg.model_args(), cfg.init_seed).state_dict()
    moved = [k for k in state if not torch.equal(state[k], init[k])]
    assert moved, "the updates changed nothing"
    assert torch.equal(ref_g, g)  # the same draws, so the Generator ends in the same state


def test_da_mask_is_redrawn_every_update_and_the_generator_advances():
    cfg = config("da")
    model = build_model(cfg.model_args(), cfg.init_seed)
    update = pretrain.make_update(model, cfg, 0, cfg.learning_rate, CPU)
    x = torch.ones(20, 64) * 0.5
    g = torch.Generator().manual_seed(0)
    update(x, g, None, 0)
    first = update.keep.clone()
    s = g.get_state()
    update(x, g, None, 1)
    assert not torch.equal(first, update.keep) and not torch.equal(s, g.get_state())
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    keep_rate = first.mean().item()  # 1280 Bernoulli(0.7) draws: sd 0.0128, 5 sd bounds
    assert abs(keep_rate - 0.7) < 5 * 0.0128


def test_update_holds_one_thread_and_restores_the_count():
    torch.set_num_threads(2)
    seen = []
    cfg = config("da")
    model = build_model(cfg.model_args(), cfg.init_seed)
    update = pretrain.make_update(model, cfg, 0, cfg.learning_rate, CPU)
    real = update._update

    def spy(*a):
        seen.append(torch.get_num_threads())
        return real(*a)
    update._update = spy
    update(torch.rand(20, 64), torch.Generator().manual_seed(0), None, 0)
    assert seen == [1] and torch.get_num_threads() == 2


def unit(model, cfg):
    """The bottom layer's trainer (models/trainers.py), what the seam picks a fused update for."""
    return pretrain.layer_trainers(model, cfg)[0]


def test_the_seam_falls_back_to_the_reference():
    cfg = config("da")
    model = build_model(cfg.model_args(), cfg.init_seed)
    ref = pretrain.layer_update(model, cfg, 0, 0.1)
    # fast_step off, or a device that is not the CPU: the reference itself
    assert accel.make_pretrain_update(unit(model, config("da", fast_step=False)), config("da", fast_step=False), 0.1, CPU, ref) is ref
    assert accel.make_pretrain_update(unit(model, cfg), cfg, 0.1, torch.device("meta"), ref) is ref
    # a minibatch above SMALL_BATCH rows keeps the run's thread count (threads 0: torch's own)
    assert accel.make_pretrain_update(unit(model, config("da", batch_size=64, threads=0)), config("da", batch_size=64, threads=0), 0.1, CPU, ref).threads is None
    assert accel.make_pretrain_update(unit(model, cfg), cfg, 0.1, CPU, ref).threads.n == 1
    # the cA with true division: its reference update, at one thread, bit-identical (the same function)
    ca_cfg = TrainConfig(model="ca", preset="t-ca", threads=1, device="cpu", n_visible=64, n_hidden=24,
                         learning_rate=0.05, batch_size=10, floor_division=False)
    outs = []
    for fast in (False, True):
        ca = build_model(ca_cfg.model_args(), ca_cfg.init_seed)
        up = pretrain.make_update(ca, ca_cfg, 0, 0.05, CPU) if fast else \
            fused.one_thread(pretrain.layer_update(ca, ca_cfg, 0, 0.05))  # the same thread count
        x = torch.from_numpy(DATA.train.x[:10])
        outs.append((up(x, None, None, 0)[0], ca.W.detach().clone()))
        if fast:
            assert getattr(up, "threads", None) == 1 and not isinstance(up, fused.CAFloorFusedUpdate)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_momentum_is_not_fused():
    """An optimiser setting the fused updates do not implement goes to the reference."""
    cfg = config("da", momentum=0.9)
    model = build_model(cfg.model_args(), cfg.init_seed)
    ref = pretrain.layer_update(model, cfg, 0, 0.1)
    assert not isinstance(accel.make_pretrain_update(unit(model, cfg), cfg, 0.1, CPU, ref), fused.DAFusedUpdate)


def test_bad_values_are_clear_errors():
    cfg = config("rbm-pcd")
    model = build_model(cfg.model_args(), cfg.init_seed)
    with pytest.raises(ValueError, match="k \\(Gibbs steps per update\\) must be >= 1"):
        fused.RBMFusedUpdate(model, 0.1, 0, True)
    update = fused.RBMFusedUpdate(model, 0.1, 1, True)
    with pytest.raises(ValueError, match="persistent chain has shape"):
        update(torch.rand(20, 64), torch.Generator(), torch.zeros(20, 7), 0)
    with pytest.raises(ValueError, match="corruption_level must be in"):
        fused.DAFusedUpdate(build_model(config("da").model_args(), 123), 1.5, 0.1)


def test_ca_update_uses_the_configs_division():
    """The cA's floor division is a config field that model_args leaves out: the update sets it on the model
    (the tutorial preset trains with the floor division, whose penalty has no gradient)."""
    for floor in (True, False):
        cfg = config("ca-floor", floor_division=floor)
        model = build_model(cfg.model_args(), cfg.init_seed)
        assert model.floor_division is False  # what model_args builds
        pretrain.layer_update(model, cfg, 0, 0.05)
        assert model.floor_division is floor
    # with the floor division the update equals the plain autoencoder's (no penalty gradient): a dA at 0
    cfg = config("ca-floor")
    ca = build_model(cfg.model_args(), cfg.init_seed)
    da = build_model(config("da-clean", n_hidden=24).model_args(), 123)
    da.load_state_dict({"W": ca.W.detach(), "b": ca.b.detach(), "b_prime": ca.b_prime.detach()})
    x = torch.from_numpy(DATA.train.x[:10])
    pretrain.layer_update(ca, cfg, 0, 0.05)(x, None, None, 0)
    da.get_cost_updates(x, 0.0, 0.05)
    assert torch.equal(ca.W, da.W) and torch.equal(ca.b_prime, da.b_prime)


@pytest.mark.parametrize("batch_size", [1, 20])
def test_dA_c_kernel_and_torch_passes_give_the_same_bits(batch_size):
    """csrc/pretrain_update.c's one-pass W update (batch 1: from the vectors; else from the two products)
    rounds as torch's add, multiply and subtract do: the two paths agree bit for bit."""
    from deeptut.accel.cpu import ckernels

    if ckernels.pretrain_update() is None:
        pytest.skip(f"no C kernel here ({ckernels.last_error})")
    cfg = config("da", batch_size=batch_size)
    models = [build_model(cfg.model_args(), cfg.init_seed) for _ in range(2)]
    updates = [fused.DAFusedUpdate(m, 0.3, 0.1, use_ckernel=c) for m, c in zip(models, (True, False))]
    assert updates[0].kernel is not None and updates[1].kernel is None
    x = torch.from_numpy(DATA.train.x)
    gens = [torch.Generator().manual_seed(2) for _ in range(2)]
    for i in range(12):
        xb = x[i * batch_size:(i + 1) * batch_size]
        costs = [u(xb, g, None, i)[0] for u, g in zip(updates, gens)]
        assert torch.equal(costs[0], costs[1])
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
