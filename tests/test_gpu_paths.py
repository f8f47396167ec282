"""The CUDA-graph step, GraphStep (accel/cuda/graphs.py). What a graph captures is a plain Python *block
function* (n consecutive SGD updates); on CPU it runs eagerly, so its arithmetic and the loop's bookkeeping around
spans are tested here on any machine. Tests that need CUDA skip cleanly without it.

Tolerances: the autograd update at a constant step size is bit-identical to AutogradStep (torch.equal); the
dense update reassociates (L2 folded into the update GEMM, fused bias updates) and stays within 1e-5
relative + 1e-6 absolute of AutogradStep after 20 steps; a scheduled step size held in a device tensor
rounds once more per step (same bound)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from deeptut import config
from deeptut.accel import make_train_step
from deeptut.accel.cuda import graphs, updates
from deeptut.data.datasets import Split, Splits
from deeptut.data.device import DeviceSplit
from deeptut.train.loop import evaluate, fit
from deeptut.steps import AutogradStep

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")


class TinyMLP(nn.Module):
    """The tutorial's MLP layout: W [n_in, n_out] and b per layer, `weights()` for the penalties."""

    def __init__(self, n_in: int = 784, n_hidden: int = 32, n_out: int = 10, activation: str = "tanh",
                 seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        r = math.sqrt(6 / (n_in + n_hidden))
        self.W1 = nn.Parameter((torch.rand(n_in, n_hidden, generator=g) * 2 - 1) * r)
        self.b1 = nn.Parameter(torch.rand(n_hidden, generator=g) * 0.1)
        self.W2 = nn.Parameter(torch.randn(n_hidden, n_out, generator=g) * 0.1)
        self.b2 = nn.Parameter(torch.zeros(n_out))
        self.act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x @ self.W1 + self.b1) @ self.W2 + self.b2

    def weights(self) -> list[torch.Tensor]:
        return [self.W1, self.W2]


class LinearMLP(nn.Module):
    """The same with nn.Linear ([n_out, n_in] weights): the dense update must read it transposed."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.hidden, self.out = nn.Linear(784, 24), nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))

    def weights(self) -> list[torch.Tensor]:
        return [self.hidden.weight, self.out.weight]


def _cfg(model: str = "mlp", **kw) -> config.TrainConfig:
    base = {"device": "cpu", "batch_size": 20, "learning_rate": 0.05}
    base.update({} if model == "logistic" else {"n_hidden": 32})  # logistic regression has no hidden layer
    return config.resolve(model, None, {**base, **kw})


def _batches(n_batches: int, bs: int = 20, seed: int = 0) -> DeviceSplit:
    g = torch.Generator().manual_seed(seed)
    n = n_batches * bs
    return DeviceSplit(torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))


def _eager(model: nn.Module, cfg: config.TrainConfig, data: DeviceSplit, n: int, lr=None) -> float:
    ref = AutogradStep(model, cfg)
    total = torch.zeros(())
    for i in range(n):
        x, y = data.minibatch(i, cfg.batch_size)
        total = total + ref(x, y, cfg.learning_rate if lr is None else lr(i))
    return float(total)


def _close(m1: nn.Module, m2: nn.Module, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    for (name, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def _equal(m1: nn.Module, m2: nn.Module) -> None:
    for (name, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(a, b), name


# --- the dense update (logistic regression / MLP, plain SGD) -------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("L1_reg,L2_reg", [(0.0, 0.0), (0.0, 1e-4), (1e-3, 1e-4)])
def test_dense_block_equals_eager_steps(activation, L1_reg, L2_reg):
    cfg = _cfg(activation=activation, L1_reg=L1_reg, L2_reg=L2_reg)
    data = _batches(20)
    m_ref, m = TinyMLP(activation=activation), TinyMLP(activation=activation)
    cost_ref = _eager(m_ref, cfg, data, 20)
    step = graphs.GraphStep(m, cfg, CPU)
    assert step.kind == "dense"
    cost = float(step.run(data, 0, 20, lambda k: cfg.learning_rate))
    _close(m_ref, m)
    assert cost == pytest.approx(cost_ref, rel=1e-5)


def _dense_run_matches_eager(make_model, cfg, data, n):
    m_ref, m = make_model(), make_model()
    _eager(m_ref, cfg, data, n)
    step = graphs.GraphStep(m, cfg, CPU)
    assert step.kind == "dense"
    step.run(data, 0, n, lambda k: cfg.learning_rate)
    _close(m_ref, m)


def test_dense_update_reads_linear_layers_transposed():
    _dense_run_matches_eager(LinearMLP, _cfg(L2_reg=1e-4), _batches(10), 10)


def test_logistic_dense_update():
    from deeptut.models.logistic import LogisticRegression

    _dense_run_matches_eager(LogisticRegression, _cfg("logistic", batch_size=30, learning_rate=0.13),
                             _batches(12, bs=30), 12)


def test_models_the_dense_update_cannot_read_use_autograd():
    class Odd(nn.Module):  # parameters that are not (matrix, vector) pairs
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.lin = nn.Linear(784, 10)

        def forward(self, x):
            return self.lin(x) * self.scale

        def weights(self):
            return [self.lin.weight]

    assert graphs.GraphStep(Odd(), _cfg("logistic"), CPU).kind == "autograd"
    # right shapes, wrong activation: the numerical forward check rejects it
    assert graphs.GraphStep(TinyMLP(activation="relu"), _cfg(activation="tanh"), CPU).kind == "autograd"
    for kw in ({"momentum": 0.9}, {"weight_decay": 1e-4}, {"lr_schedule": "cosine"}, {"amp": "bf16"}):
        assert graphs.GraphStep(TinyMLP(), _cfg(**kw), CPU).kind == "autograd", kw


# --- the autograd update -------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True},
                                {"momentum": 0.9, "weight_decay": 5e-4, "L2_reg": 1e-4}])
def test_autograd_block_is_bit_identical_at_constant_lr(kw):
    cfg = _cfg(**kw)
    data = _batches(15)
    m_ref, m = TinyMLP(), TinyMLP()
    cost_ref = _eager(m_ref, cfg, data, 15)
    step = graphs.GraphStep(m, cfg, CPU)
    step.update = updates.AutogradUpdate(step.ref, step.params, step.bufs, cfg)  # force autograd for plain SGD
    cost = float(step.run(data, 0, 15, lambda k: cfg.learning_rate))
    _equal(m_ref, m)
    assert cost == cost_ref
    if cfg.momentum:  # the optimizer state that checkpoints save is the graphs' static buffers
        assert all(step.ref.optimizer.state[p]["momentum_buffer"] is b for p, b in zip(step.params, step.bufs))


def test_autograd_block_follows_a_schedule_in_a_device_tensor():
    cfg = _cfg(momentum=0.9, lr_schedule="cosine", n_epochs=1)
    data = _batches(16)
    lrs = [0.05 * (0.5 + 0.5 * math.cos(math.pi * i / 16)) for i in range(16)]
    m_ref, m = TinyMLP(), TinyMLP()
    _eager(m_ref, cfg, data, 16, lr=lambda i: lrs[i])
    step = graphs.GraphStep(m, cfg, CPU)
    step.run(data, 0, 9, lambda k: lrs[k])  # two spans, the second not starting at 0
    step.run(data, 9, 7, lambda k: lrs[9 + k])
    _close(m_ref, m)


def test_bf16_autocast_runs_and_stays_close():
    cfg, cfg_amp = _cfg(), _cfg(amp="bf16")
    data = _batches(10)
    m32, m16 = TinyMLP(), TinyMLP()
    graphs.GraphStep(m32, cfg, CPU).run(data, 0, 10, lambda k: cfg.learning_rate)
    step = graphs.GraphStep(m16, cfg_amp, CPU)
    assert step.kind == "autograd"
    cost = float(step.run(data, 0, 10, lambda k: cfg.learning_rate))
    assert math.isfinite(cost)
    assert not torch.equal(m32.W1, m16.W1)  # bf16 was used
    _close(m32, m16, rtol=0.05, atol=2e-3)


def test_state_dict_round_trip_keeps_the_static_buffers():
    cfg = _cfg(momentum=0.9)
    data = _batches(6)
    a = graphs.GraphStep(TinyMLP(), cfg, CPU)
    a.run(data, 0, 6, lambda k: cfg.learning_rate)
    b = graphs.GraphStep(TinyMLP(), cfg, CPU)
    bufs = list(b.bufs)
    b.load_state_dict(a.state_dict())
    assert all(x is y for x, y in zip(b.bufs, bufs))
    assert all(torch.equal(x, y) for x, y in zip(a.bufs, b.bufs))
    assert all(b.ref.optimizer.state[p]["momentum_buffer"] is buf for p, buf in zip(b.params, b.bufs))
    # and an eager AutogradStep's state loads too (resuming a run that was not using graphs)
    ref = AutogradStep(TinyMLP(), cfg)
    ref(*data.minibatch(0, 20), 0.05)
    b.load_state_dict(ref.state_dict())
    assert torch.equal(b.bufs[0], ref.optimizer.state[ref.optimizer.param_groups[0]["params"][0]]["momentum_buffer"])


# --- the loop around spans ----------------------------------------------------------------------------


def test_span_length():
    eager, runner = object(), type("R", (), {"max_span": 4096})()
    assert graphs.span_length(eager, 0, 100, 100, 5000) == 1
    assert graphs.span_length(runner, 0, 100, 100, 5000) == 100  # one epoch = one validation period
    assert graphs.span_length(runner, 130, 70, 100, 5000) == 70  # to the end of the epoch
    assert graphs.span_length(runner, 130, 900, 100, 5000) == 70  # to the validation after it 199
    assert graphs.span_length(runner, 130, 900, 100, 150.5) == 22  # it 151 is the first with patience <= it
    assert graphs.span_length(runner, 130, 900, 100, 100.0) == 1  # patience already passed
    assert graphs.span_length(runner, 0, 9000, 9000, 1e9) == 4096


def _data(n_train: int = 600, n_eval: int = 200) -> Splits:
    rng = np.random.default_rng(5)

    def split(n):
        y = rng.integers(0, 10, n)
        x = rng.random((n, 784), dtype=np.float32) * 0.3
        x[np.arange(n), y * 70] += 1.0  # learnable
        return Split(x, y)
    return Splits(split(n_train), split(n_eval), split(n_eval), "test", "mnist")


@pytest.mark.parametrize("model,kw", [
    ("logistic", {"batch_size": 20, "learning_rate": 0.13}),
    ("logistic", {"batch_size": 20, "learning_rate": 0.1, "momentum": 0.9, "lr_schedule": "cosine",
                  "shuffle": True}),
])
def test_fit_with_the_graph_step_keeps_the_loops_bookkeeping(tmp_path, model, kw):
    """Validations, the patience stop mid-epoch, metrics lines and summary are those of the eager loop."""
    data = _data()
    base = {"device": "cpu", "n_epochs": 6, "patience": 70, "patience_increase": 1.5,
            "validation_frequency": 7, "fast_step": False, **kw}
    runs = {}
    for name, graphs_mode in (("eager", "off"), ("runner", "on")):
        cfg = config.resolve(model, None, {**base, "graphs": graphs_mode})
        run_dir = tmp_path / name
        run_dir.mkdir()
        summary = fit(cfg, data, run_dir, quiet=True)
        lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
        runs[name] = summary, lines
    (s1, l1), (s2, l2) = runs["eager"], runs["runner"]
    assert s1["stopped"] == s2["stopped"]
    for key in ("iterations", "epochs", "best_iteration"):
        assert s1[key] == s2[key], key
    assert s1["iterations"] < 6 * 30  # the patience stop came first, mid-epoch
    assert [r["iteration"] for r in l1] == [r["iteration"] for r in l2]
    assert [r["minibatch"] for r in l1] == [r["minibatch"] for r in l2]
    for r1, r2 in zip(l1, l2):
        assert r2["train_cost"] == pytest.approx(r1["train_cost"], rel=1e-5)
        assert r2["valid_error"] == pytest.approx(r1["valid_error"], abs=0.51)  # at most one example apart


@pytest.mark.parametrize("kw", [{}, {"shuffle": True, "momentum": 0.9, "nesterov": True,
                                     "lr_schedule": "onecycle", "warmup_fraction": 0.2, "augment_shift": 2}])
def test_interrupted_graph_run_resumes_exactly(tmp_path, monkeypatch, kw):
    """SIGINT after the second span: checkpoint, then --resume ends exactly as the uninterrupted run."""
    import signal

    from deeptut.train import loop

    data = _data(600, 200)
    cfg = config.resolve("mlp", None, {"device": "cpu", "graphs": "on", "n_epochs": 4, "batch_size": 20,
                                       "n_hidden": 16, "learning_rate": 0.05, **kw})
    whole = tmp_path / "whole"
    whole.mkdir()
    s_whole = fit(cfg, data, whole, quiet=True)

    real_run = graphs.GraphStep.run
    calls = []

    def run_then_interrupt(self, *a, **k):
        out = real_run(self, *a, **k)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # fit notices at the end of this span
        return out
    monkeypatch.setattr(graphs.GraphStep, "run", run_then_interrupt)
    cut = tmp_path / "cut"
    cut.mkdir()
    with pytest.raises(loop.Interrupted):
        fit(cfg, data, cut, quiet=True)
    monkeypatch.setattr(graphs.GraphStep, "run", real_run)
    s_cut = fit(cfg, data, cut, quiet=True, resume=True)
    for key in ("best_validation_error", "test_error", "best_iteration", "iterations", "epochs"):
        assert s_whole[key] == s_cut[key], key
    from deeptut.store import tensors

    a = tensors.load_tensors(whole / "best.safetensors")
    b = tensors.load_tensors(cut / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_make_train_step_picks_and_falls_back(monkeypatch, capsys):
    model = TinyMLP()
    assert isinstance(make_train_step(model, _cfg(), CPU), AutogradStep)  # graphs=auto: off on CPU
    assert isinstance(make_train_step(model, _cfg(graphs="on"), CPU), graphs.GraphStep)

    def broken(*a, **k):
        raise RuntimeError("no graphs today")
    monkeypatch.setattr(graphs, "GraphStep", broken)
    with pytest.warns(RuntimeWarning, match="no graphs today"):
        step = make_train_step(model, _cfg(graphs="on"), CPU)
    assert isinstance(step, AutogradStep)
    assert "using eager steps" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DEEPTUT_SKIP_COMPILE") == "1", reason="DEEPTUT_SKIP_COMPILE=1")
def test_compiled_dense_step_equals_eager():
    """torch.compile (inductor, CPU via the C++ compiler) of the step the graphs capture (~1 min cold):
    the step is compiled (dynamo's counters see a graph), runs without falling back, and equals eager."""
    import warnings

    from torch._dynamo.utils import counters

    try:  # inductor needs a working C++ compiler: without one this test cannot say anything
        torch.compile(lambda t: t * 2 + 1, dynamic=False)(torch.ones(3))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"torch.compile (inductor) cannot compile on this machine: {type(e).__name__}: {e}")
    cfg, cfg_c = _cfg(L2_reg=1e-4), _cfg(L2_reg=1e-4, compile=True)
    data = _batches(6)
    m_ref, m = TinyMLP(), TinyMLP()
    graphs.GraphStep(m_ref, cfg, CPU).run(data, 0, 6, lambda k: cfg.learning_rate)
    torch._dynamo.reset()  # forget earlier compilations: what is counted below is this step's
    counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "torch.compile unavailable ... uncompiled" fails
        step = graphs.GraphStep(m, cfg_c, CPU)
        step.run(data, 0, 6, lambda k: cfg.learning_rate)
    assert counters["stats"]["unique_graphs"] >= 1, dict(counters["stats"])
    assert counters["inductor"], "dynamo traced the step but inductor compiled nothing"
    _close(m_ref, m)


# --- the graph runner's bookkeeping, with eager stand-ins for the CUDA calls -------------------------------


class FakeGraph:
    """What a CUDA graph does, eagerly: replay() runs the captured block function again on the same
    (static) tensors. Capture itself runs nothing, as a real capture executes no kernels."""

    def __init__(self, fn) -> None:
        self.fn, self.replays = fn, 0

    def replay(self) -> None:
        self.replays += 1
        self.fn()


@pytest.fixture
def fake_graphs(monkeypatch):
    log = {"captures": 0, "warmups": 0, "fail": False}

    def warm_up(fn, device, times=1):
        log["warmups"] += 1
        for _ in range(times):
            fn()  # real updates: the graph step must undo them

    def capture(fn, pool):
        if log["fail"]:
            raise RuntimeError("operation not permitted when stream is capturing")
        log["captures"] += 1
        return FakeGraph(fn), None  # None: the evaluator falls back to eager evaluation

    monkeypatch.setattr(graphs, "graphs_available", lambda device: True)
    monkeypatch.setattr(graphs, "new_pool", lambda: object())
    monkeypatch.setattr(graphs, "warm_up", warm_up)
    monkeypatch.setattr(graphs, "capture", capture)
    return log


def _fit_with_step(cfg, data):
    from deeptut.train import loop

    made = []
    real = loop.make_train_step
    loop.make_train_step = lambda *a, **k: made.append(real(*a, **k)) or made[-1]
    try:
        summary = fit(cfg, data, None, quiet=True)
    finally:
        loop.make_train_step = real
    return summary, made[-1]


@pytest.mark.parametrize("kw", [
    {},  # dense update, one span per epoch
    {"shuffle": True, "momentum": 0.9, "lr_schedule": "cosine"},  # autograd update, fixed buffer, lr tensor
    {"device_memory_budget": str(2 * 9 * 20 * (784 * 4 + 8))},  # streamed: 5 x 9 + 5 minibatches, 2 buffers
    {"augment_shift": 2},  # moved images, unshuffled: each epoch a new tensor, copied into the fixed buffer
    {"augment_shift": 1, "device_memory_budget": str(2 * 9 * 20 * (784 * 4 + 8))},
])
def test_simulated_graphs_match_eager_steps(fake_graphs, kw):
    data = _data(1000, 200)
    base = {"device": "cpu", "n_epochs": 3, "batch_size": 20, "n_hidden": 16, "patience": 100_000,
            "learning_rate": 0.05, **kw}
    s_eager, eager = _fit_with_step(config.resolve("mlp", None, {**base, "graphs": "off", "fast_step": False}),
                                    data)
    s_graph, step = _fit_with_step(config.resolve("mlp", None, {**base, "graphs": "on"}), data)
    assert isinstance(step, graphs.GraphStep) and step.use_graphs
    assert step.stats["eager_blocks"] == 0
    n_blocks = 1 if "device_memory_budget" not in kw else 6
    assert step.stats["graph_replays"] == 3 * n_blocks
    n_eval = len(step.evaluator.graphs)  # the validation and test splits' evaluation graphs
    assert n_eval == 2
    assert fake_graphs["captures"] - n_eval == step.stats["captures"] == len(step.graphs)
    assert step.stats["captures"] <= (1 if "device_memory_budget" not in kw else 4)  # graphs are reused
    resident_new_each_epoch = (kw.get("shuffle") or kw.get("augment_shift")) and "device_memory_budget" not in kw
    assert step.stats["home_copies"] == (3 if resident_new_each_epoch else 0)
    assert fake_graphs["warmups"] == 1 + n_eval  # the train step warms up once
    _close(step.model, eager.model)  # warm-up updates were undone
    for key in ("iterations", "epochs", "best_iteration"):
        assert s_eager[key] == s_graph[key]


def test_failed_capture_falls_back_to_eager(fake_graphs, capsys):
    fake_graphs["fail"] = True
    data = _data(600, 200)
    base = {"device": "cpu", "n_epochs": 2, "batch_size": 20, "n_hidden": 16, "learning_rate": 0.05}
    s_eager, eager = _fit_with_step(config.resolve("mlp", None, {**base, "graphs": "off", "fast_step": False}),
                                    data)
    with pytest.warns(RuntimeWarning, match="capture failed"):
        s_graph, step = _fit_with_step(config.resolve("mlp", None, {**base, "graphs": "on"}), data)
    assert not step.use_graphs and step.stats["graph_replays"] == 0 and step.stats["eager_blocks"] == 2
    assert "continuing with eager steps" in capsys.readouterr().err
    _close(step.model, eager.model)
    assert s_eager["best_validation_error"] == s_graph["best_validation_error"]


# --- CUDA only ---------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9, "lr_schedule": "cosine"}])
def test_cuda_graph_replay_equals_eager_block(kw):
    dev = torch.device("cuda")
    cfg = _cfg(**kw, device="cuda")
    data = _batches(40)
    data = DeviceSplit(data.x, data.y, dev)
    m_eager, m_graph = TinyMLP().to(dev), TinyMLP().to(dev)
    lr = lambda k: 0.05 * (1 - k / 80)  # noqa: E731
    eager = graphs.GraphStep(m_eager, cfg, dev)
    eager.use_graphs = False
    c1 = float(eager.run(data, 0, 40, lr))
    step = graphs.GraphStep(m_graph, cfg, dev)
    c2 = float(step.run(data, 0, 40, lr))
    assert step.stats["captures"] == 1 and step.stats["graph_replays"] == 1
    _close(m_eager, m_graph, rtol=1e-6, atol=1e-7)  # same kernels: equal up to cuBLAS nondeterminism
    assert c2 == pytest.approx(c1, rel=1e-6)
    step.run(data, 0, 40, lr)  # replays, no new capture
    assert step.stats["captures"] == 1 and step.stats["graph_replays"] == 2


@needs_cuda
@pytest.mark.parametrize("kw", [{}, {"shuffle": True, "augment_shift": 2}])
def test_cuda_streamed_fit_equals_resident(kw):
    data = _data(2000, 400)
    base = {"device": "cuda", "n_epochs": 3, "batch_size": 20, "patience": 10_000, **kw}
    results = []
    for budget in ("0", str(2 * 10 * 20 * (784 * 4 + 8))):
        cfg = config.resolve("logistic", None, {**base, "device_memory_budget": budget})
        results.append(fit(cfg, data, None, quiet=True))
    for key in ("best_validation_error", "test_error", "iterations"):
        assert results[0][key] == results[1][key]


@needs_cuda
def test_cuda_graph_evaluation_equals_eager():
    dev = torch.device("cuda")
    data = _batches(50)
    split = DeviceSplit(data.x, data.y, dev)
    model = TinyMLP().to(dev)
    ev = graphs.GraphEvaluator(model)
    for mode in ("tutorial", "full"):
        assert evaluate(model, split, 30, mode, ev) == evaluate(model, split, 30, mode)
    assert len(ev.graphs) == 2


# --- SdA / DBN fine-tuning: parameters the supervised cost does not use -------------------------------


@pytest.mark.parametrize("family", ["sda", "dbn"])
def test_graph_step_fine_tunes_a_stack_with_pretraining_only_parameters(family):
    """The dAs' / RBMs' visible biases are parameters of the module the supervised cost never uses: the
    graph step leaves them out of its gradient (autograd.grad would refuse them) and matches the eager
    reference, which skips them too (their gradient is None)."""
    from deeptut.models import build_model

    sizes = {"sda": {"corruption_levels": "0.1,0.2"}, "dbn": {}}[family]
    cfg = config.resolve(family, None, {"device": "cpu", "batch_size": 5, "learning_rate": 0.05,
                                        "hidden_layers_sizes": "16,12", "momentum": 0.5, **sizes})
    data = _batches(6, bs=5)
    m_ref, m = (build_model(cfg.model_args(), cfg.init_seed) for _ in range(2))
    _eager(m_ref, cfg, data, 6)
    step = graphs.GraphStep(m, cfg, CPU)
    step.run(data, 0, 6, lambda k: cfg.learning_rate)
    _close(m_ref, m)
    init = build_model(cfg.model_args(), cfg.init_seed)
    unused = "b_prime" if family == "sda" else "vbias"
    for (name, p), (_, p0) in zip(m.named_parameters(), init.named_parameters()):
        assert torch.equal(p, p0) == name.startswith(unused), name
