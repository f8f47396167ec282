"""LeNet's manual update, its backward pass written by hand (accel/cuda/lenet_manual.py), and its fused
Triton conv-pool kernels (accel/cuda/lenet_triton.py).

Oracles: torch's conv2d / max_pool2d / activation under autograd. On CPU the "cudnn" variant calls the very
kernels autograd calls, so its gradients are compared bit for bit; the Triton kernels (run by Triton's
interpreter without CUDA; tests/conftest.py selects it) sum in another order and are compared within float32
rounding (1e-5). Ties in the pooling window (all-zero inputs) go to the first maximum, as in max_pool2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deeptut import config
from deeptut.accel.cuda import lenet_triton
from deeptut.accel.cuda import lenet_manual
from deeptut.accel.cuda.graphs import GraphStep
from deeptut.accel.cuda.updates import AutogradUpdate
from deeptut.models.lenet import LeNet5
from deeptut.steps import AutogradStep

CPU = torch.device("cpu")
needs_triton = pytest.mark.skipif(not lenet_triton.available(CPU) and not torch.cuda.is_available(),
                                  reason="Triton is not installed (pip install triton: its interpreter runs "
                                         "the kernels on CPU)")
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


def reference_layer(x, W, b, activation):
    c = F.conv2d(x, W)
    m, idx = F.max_pool2d(c, 2, return_indices=True)
    o = c.shape[-1]
    pos = (idx // o % 2) * 2 + idx % o % 2  # the window position of the maximum, row by row
    return ACT[activation](m + b.view(1, -1, 1, 1)), pos


def layer_inputs(n, ic, h, oc, seed=0, zeros=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, ic, h, h) if zeros else torch.randn(n, ic, h, h, generator=g)
    W = torch.randn(oc, ic, 5, 5, generator=g) * (0.5 / ic)
    b = torch.randn(oc, generator=g) * 0.1
    return x.to(DEV), W.to(DEV), b.to(DEV)


SHAPES = [(3, 1, 12, 5, "tanh"), (2, 3, 12, 7, "sigmoid"), (2, 4, 8, 3, "relu"), (5, 1, 28, 20, "tanh")]


@needs_triton
@pytest.mark.parametrize("n,ic,h,oc,activation", SHAPES)
def test_triton_forward_is_conv_pool_bias_activation(n, ic, h, oc, activation):
    x, W, b = layer_inputs(n, ic, h, oc)
    y, pos = lenet_triton.conv_pool_forward(x, W, b, activation)
    ref, ref_pos = reference_layer(x, W, b, activation)
    assert y.shape == ref.shape and pos.dtype == torch.uint8
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(pos.long(), ref_pos)


@needs_triton
def test_triton_ties_go_to_the_first_maximum_as_in_max_pool2d():
    x, W, b = layer_inputs(2, 2, 12, 3, zeros=True)  # every window all zeros
    y, pos = lenet_triton.conv_pool_forward(x, W, b, "tanh")
    assert torch.equal(pos, torch.zeros_like(pos))
    torch.testing.assert_close(y, torch.tanh(b).view(1, -1, 1, 1).expand_as(y), rtol=1e-6, atol=1e-7)


@needs_triton
@pytest.mark.parametrize("n,ic,h,oc,activation", SHAPES)
@pytest.mark.parametrize("zeros", [False, True])
def test_triton_gradients_are_autograds(n, ic, h, oc, activation, zeros):
    x, W, b = layer_inputs(n, ic, h, oc, seed=1, zeros=zeros)
    if zeros:
        x[0, 0, 3:7, 2:9] = 1.0  # ties in most windows, a few real maxima
    xg, Wg, bg = (t.clone().requires_grad_() for t in (x, W, b))
    ref, _ = reference_layer(xg, Wg, bg, activation)
    gy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2)).to(DEV)
    dx, dW, db = torch.autograd.grad(ref, (xg, Wg, bg), gy)
    y, pos = lenet_triton.conv_pool_forward(x, W, b, activation)
    tW, tb = lenet_triton.weight_grad(gy, y, pos, x, W, activation)
    tx = lenet_triton.data_grad(gy, y, pos, x, W, activation, how="cudnn")
    fx = lenet_triton.data_grad(gy, y, pos, x, W, activation, how="fold")  # product + col2im gather
    for got, want in ((tW, dW), (tb, db), (tx, dx), (fx, dx)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("n,hidden,classes", [(37, 50, 10), (16, 20, 3)])
def test_dense_tail_is_activation_softmax_nll_and_their_backward(activation, n, hidden, classes):
    from deeptut.accel.cuda import tail_triton

    g = torch.Generator().manual_seed(3)
    pre = torch.randn(n, hidden, generator=g).to(DEV).requires_grad_()
    W = (torch.randn(hidden, classes, generator=g) * 0.3).to(DEV)
    b = (torch.randn(classes, generator=g) * 0.1).to(DEV)
    y = torch.randint(0, classes, (n,), generator=g).to(DEV)
    h = ACT[activation](pre)
    z = h @ W + b
    cost = F.nll_loss(F.log_softmax(z, dim=1), y)
    dpre, dz = torch.autograd.grad(cost, (pre, z))
    th, tdz, tdpre, nll = tail_triton.dense_tail(pre.detach(), W, b, y, activation)
    for got, want in ((th, h), (tdz, dz), (tdpre, dpre), (nll.mean(), cost)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)


def test_supports_needs_an_even_convolution_output():
    assert lenet_triton.supports((1, 1, 28, 28), 20, "tanh") and lenet_triton.supports((1, 20, 12, 12), 50, "relu")
    assert not lenet_triton.supports((1, 1, 27, 27), 20, "tanh")  # 23x23: the pooling drops a row
    assert not lenet_triton.supports((1, 1, 28, 28), 20, "softplus")


def test_candidates_offer_triton_only_for_the_layers_it_covers(monkeypatch):
    monkeypatch.setattr(lenet_triton, "available", lambda device: True)
    both = lenet_manual.candidates(config.TrainConfig(model="lenet", nkerns=(20, 50)), CPU)
    assert sorted(both) == sorted([(a, b) for a in ("cudnn", "triton") for b in ("cudnn", "triton")])
    # layer 1 with 200 maps is beyond the kernels (<= 128 output maps): only layer 0 may use Triton
    wide = lenet_manual.candidates(config.TrainConfig(model="lenet", nkerns=(20, 200)), CPU)
    assert sorted(wide) == [("cudnn", "cudnn"), ("triton", "cudnn")]
    monkeypatch.setattr(lenet_triton, "available", lambda device: False)
    assert lenet_manual.candidates(config.TrainConfig(model="lenet"), CPU) == [("cudnn", "cudnn")]


# --- the manual update -------------------------------------------------------------------------------


def lenet_and_batch(activation="tanh", n=8, seed=0, **cfg_kw):
    cfg = config.TrainConfig(model="lenet", batch_size=n, learning_rate=0.1, activation=activation, **cfg_kw)
    m = LeNet5(activation=activation).to(DEV)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move the zero-initialised layers off zero, so every gradient is exercised
        m.layer3.W.copy_(torch.randn(m.layer3.W.shape, generator=g) * 0.1)
        for layer in (m.layer0, m.layer1, m.layer2, m.layer3):
            layer.b.copy_(torch.randn(layer.b.shape, generator=g) * 0.1)
    x = torch.rand(n, 784, generator=g).to(DEV)
    x[:, :100] = 0.0  # MNIST-like blank borders: ties in the first layer's pooling
    y = torch.randint(0, 10, (n,), generator=g).to(DEV)
    return cfg, m, x, y


def kernel(cfg, m, layers):
    ref = AutogradStep(m, cfg)
    params = [p for grp in ref.optimizer.param_groups for p in grp["params"]]
    bufs = [torch.zeros_like(p) for p in params] if cfg.momentum else None
    return lenet_manual.LeNetManualUpdate(ref, params, bufs, cfg, m, layers), ref, params, bufs


@pytest.mark.skipif(DEV.type != "cpu", reason="bit-identity holds for the CPU kernels")
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_written_out_cudnn_gradients_are_autograds_bit_for_bit_on_cpu(activation):
    cfg, m, x, y = lenet_and_batch(activation)
    k, ref, params, _ = kernel(cfg, m, ("cudnn", "cudnn"))
    cost = ref.cost(x, y)
    want = torch.autograd.grad(cost, params)
    got, got_cost = k.gradients(x, y)
    assert torch.equal(got_cost, cost.detach())
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_written_out_gradients_with_l1_and_l2_penalties():
    cfg, m, x, y = lenet_and_batch(L1_reg=1e-3, L2_reg=1e-2)
    k, ref, params, _ = kernel(cfg, m, ("cudnn", "cudnn"))
    cost = ref.cost(x, y)
    want = torch.autograd.grad(cost, params)
    got, got_cost = k.gradients(x, y)
    torch.testing.assert_close(got_cost, cost.detach(), rtol=1e-6, atol=1e-7)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.slow  # ~7 s for the three (Triton's interpreter on CPU)
@pytest.mark.parametrize("layers", [("cudnn", "cudnn"),
                                    pytest.param(("triton", "cudnn"), marks=needs_triton),
                                    pytest.param(("triton", "triton"), marks=needs_triton)])
def test_written_out_steps_follow_the_autograd_steps(layers):
    """Steps with Nesterov momentum, weight decay and a device-tensor step size (the fast presets' options)
    from the same start: the same parameters and momentum buffers, and the same summed cost. Bit for bit
    with torch's kernels on CPU (5 steps); within rounding with Triton's (3 steps: on this random tiny
    batch a rounding-level change in the parameters grows ~10x per step in the gradients, as it would
    between any two summation orders)."""
    cfg, m, x, y = lenet_and_batch(momentum=0.9, nesterov=True, weight_decay=5e-4)
    m2 = LeNet5().to(DEV)
    m2.load_state_dict(m.state_dict())
    k, _, params, bufs = kernel(cfg, m, layers)
    ref = AutogradStep(m2, cfg)
    params2 = [p for grp in ref.optimizer.param_groups for p in grp["params"]]
    bufs2 = [torch.zeros_like(p) for p in params2]
    a = AutogradUpdate(ref, params2, bufs2, cfg)
    acc, acc2 = torch.zeros(1, 1, device=DEV), torch.zeros(1, 1, device=DEV)
    lr = torch.tensor(0.05, device=DEV)
    exact = layers == ("cudnn", "cudnn") and DEV.type == "cpu"
    for _ in range(5 if exact else 3):
        k._step(x, y, lr, acc)
        a._step(x, y, lr, acc2)
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-4, atol=1e-5)
    for p, q in zip(params + bufs, params2 + bufs2):
        torch.testing.assert_close(p, q, **tol)
    torch.testing.assert_close(acc, acc2, **tol)


@needs_triton
def test_triton_forward_serves_evaluation_without_gradients():
    from deeptut.accel.cuda.lenet_conv import LeNetForward

    _, m, x, _ = lenet_and_batch()
    forward = LeNetForward(m, triton=("ieee", "ieee"))
    with torch.no_grad():
        ref = m(x)
        got = forward(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # with gradients the autograd path runs (the fused kernels have no backward)
        assert forward(x).requires_grad


def test_choose_times_the_options_and_restores_the_parameters():
    cfg, m, x, y = lenet_and_batch()
    k, ref, params, _ = kernel(cfg, m, ("cudnn", "cudnn"))
    before = [p.detach().clone() for p in params]

    def make(option):
        if option == "broken":
            raise RuntimeError("this variant does not compile here")
        return AutogradUpdate(ref, params, None, cfg) if option == "autograd" else kernel(cfg, m, option)[0]

    with pytest.warns(RuntimeWarning, match="broken"):
        best, times = lenet_manual.choose(make, [("cudnn", "cudnn"), "broken", "autograd"], params, x, y, 0.1,
                                        repeats=2)
    assert set(times) == {("cudnn", "cudnn"), "autograd"} and best == min(times, key=times.get)
    assert all(t > 0 for t in times.values())
    assert all(torch.equal(p, q) for p, q in zip(params, before))


def test_choose_leaves_out_a_kernel_whose_gradients_are_wrong():
    cfg, m, x, y = lenet_and_batch()
    k, ref, params, _ = kernel(cfg, m, ("cudnn", "cudnn"))
    reference = list(torch.autograd.grad(ref.cost(x, y), params))

    class Off(lenet_manual.LeNetManualUpdate):
        def gradients(self, x, y):
            g, c = super().gradients(x, y)
            g[2] = g[2] * 1.01  # layer1.W's gradient 1 % off
            return g, c

    def make(option):
        return Off(ref, params, None, cfg, m, ("cudnn", "cudnn")) if option == "off" else k

    with pytest.warns(RuntimeWarning, match="off.*differ from autograd"):
        best, times = lenet_manual.choose(make, ["off", "good"], params, x, y, 0.1, reference, 1e-3, repeats=1)
    assert best == "good" and set(times) == {"good"}


@pytest.mark.slow  # ~10 s on CPU
@needs_triton
def test_measure_checks_and_times_every_variant_and_the_autograd_step():
    """conv = auto's measurement (as GraphStep and bench/gpu_lenet.py call it), here in Triton's interpreter:
    every candidate passes the gradient check, gets a time, and the parameters are left as they were."""
    cfg, m, x, y = lenet_and_batch(n=4, momentum=0.9)
    _, ref, params, bufs = kernel(cfg, m, ("cudnn", "cudnn"))
    before = [t.detach().clone() for t in (*params, *bufs)]
    best, times = lenet_manual.measure(ref, params, bufs, cfg, m, x, y, repeats=1)
    want = ["-".join(o) for o in lenet_manual.candidates(cfg, x.device)] + ["autograd"]
    assert sorted(times) == sorted(want) and len(want) == 5
    assert all(t > 0 for t in times.values())
    assert best in lenet_manual.candidates(cfg, x.device) + ["autograd"]
    assert ("-".join(best) if best != "autograd" else best) == min(times, key=times.get)
    assert all(torch.equal(t, v) for t, v in zip((*params, *bufs), before))


@pytest.mark.slow  # ~13 s on CPU
@needs_triton
def test_conv_triton_runs_the_manual_update_in_a_tiny_fit(tmp_path):
    """conv = "triton" on CPU (the interpreter) through the graph step and the loop, against conv =
    "cudnn" (torch's kernels, autograd): the same run up to float32 rounding."""
    from deeptut.train.loop import fit
    from synthetic import tiny_splits

    data = tiny_splits(n_train=60, n_valid=40, n_test=40)
    out = {}
    for conv in ("triton", "cudnn"):
        cfg = config.resolve("lenet", overrides=dict(nkerns="4,8", n_hidden=16, batch_size=20, n_epochs=1,
                                                     learning_rate=0.1, seed=1, device=DEV.type, graphs="on",
                                                     conv=conv, threads=1))
        (tmp_path / conv).mkdir()
        out[conv] = fit(cfg, data, tmp_path / conv, quiet=True)
    assert out["triton"]["test_error"] == pytest.approx(out["cudnn"]["test_error"], abs=2.5)  # <= 1 example
    from deeptut.store import rundir

    a, _ = rundir.load_model(tmp_path / "triton")
    b, _ = rundir.load_model(tmp_path / "cudnn")
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


@needs_triton
def test_graph_step_picks_the_manual_update_for_conv_triton():
    cfg, m, x, y = lenet_and_batch(graphs="on", conv="triton")
    s = GraphStep(m, cfg, DEV)
    assert s.kind == "lenet-triton-triton" and s.forward.triton == ("ieee", "ieee")
    cfg2 = config.TrainConfig(model="lenet", batch_size=8, graphs="on", conv="cudnn")
    assert GraphStep(LeNet5(), cfg2, CPU).kind == "autograd"  # on CPU only conv = "triton" selects it


def test_conv_choice_is_checked():
    assert config.TrainConfig(model="lenet", conv="triton").conv == "triton"
    with pytest.raises(Exception, match="conv"):
        config.TrainConfig(model="lenet", conv="fft")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="conv = 'auto' measures the variants on CUDA")
def test_auto_measures_the_variants_on_cuda():
    cfg, m, x, y = lenet_and_batch(n=64, conv="auto")
    s = GraphStep(m, cfg, DEV)
    times = s.stats["lenet_step_ms"]
    assert "cudnn-cudnn" in times and "autograd" in times
    best = min(times, key=times.get)
    assert s.kind == ("autograd" if best == "autograd" else "lenet-" + best)


@needs_triton
def test_conv_triton_falls_back_to_torchs_kernels_when_triton_fails(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no such instruction on this GPU")

    monkeypatch.setattr(lenet_triton, "conv_pool_forward", broken)
    cfg, m, x, y = lenet_and_batch(graphs="on", conv="triton")
    with pytest.warns(RuntimeWarning, match="Triton conv-pool kernels failed.*no such instruction"):
        s = GraphStep(m, cfg, DEV)
    assert s.kind == "lenet-cudnn-cudnn" and s.forward.triton == (None, None)


def _nvidia_backend() -> bool:
    import importlib.util
    import os

    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        return False
    base = list(spec.submodule_search_locations)[0]
    return os.path.exists(os.path.join(base, "backends", "nvidia", "bin", "ptxas"))


@pytest.mark.slow  # ~6 s
@pytest.mark.skipif(not _nvidia_backend(), reason="needs Triton with its NVIDIA backend (ptxas) to compile for a GPU")
def test_kernels_compile_for_an_h100_without_spilling(tmp_path):
    """What the interpreter cannot check: each kernel's default configuration compiles for sm_90 (H100/H200),
    within the 255 registers a thread has and without spilling. In a child process: the interpreter is on
    in this one, and the kernels must be compiled from their source."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "aot.json"
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(root / "bench" / "triton_aot.py"), "--first", "--precision", "ieee",
                        "--arch", "90", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 6  # forward and weight gradient at both layer shapes; layer 1's col2im; the dense tail
    for row in rows:
        assert 0 < row["registers"] <= 255 and row["stack_bytes"] == 0, row


def test_conv_triton_without_cuda_says_it_uses_torchs_convolutions(monkeypatch):
    from deeptut.accel import make_train_step

    monkeypatch.setattr(lenet_triton, "available", lambda device: False)
    with pytest.warns(RuntimeWarning, match="conv = 'triton' runs in the CUDA graph step"):
        step = make_train_step(LeNet5(), config.TrainConfig(model="lenet", batch_size=10, conv="triton"), CPU)
    assert isinstance(step, AutogradStep)
    # in the graph step (graphs on): one warning, the graph step's
    with pytest.warns(RuntimeWarning) as said:
        step = make_train_step(LeNet5(), config.TrainConfig(model="lenet", batch_size=10, conv="triton",
                                                            graphs="on"), CPU)
    assert [str(w.message) for w in said] == ["conv = 'triton' needs Triton and a CUDA device; using torch's "
                                              "convolutions"]
    assert isinstance(step, GraphStep) and step.kind == "autograd"
