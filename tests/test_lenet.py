"""The LeNet chapter: parameter names and shapes, the tutorial's initialisation order, Theano's true
convolution (flipped kernels), the flatten order, channels-last, and a tiny end-to-end run."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deeptut import config
from deeptut.store import rundir
from deeptut.models import build_model
from deeptut.models.lenet import LeNet5
from deeptut.train.loop import fit
from synthetic import tiny_splits


@pytest.fixture(autouse=True)
def keep_threads():
    """fit() sets torch's thread count from the config (the presets say 1): put it back afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)

SHAPES = {"layer0.W": (20, 1, 5, 5), "layer0.b": (20,), "layer1.W": (50, 20, 5, 5), "layer1.b": (50,),
          "layer2.W": (800, 500), "layer2.b": (500,), "layer3.W": (500, 10), "layer3.b": (10,)}


def tutorial_draws(seed=23455, nkerns=(20, 50), n_hidden=500):
    """convolutional_mlp.py's initial values, drawn in its order from one RandomState (Theano orientation)."""
    rng = np.random.RandomState(seed)
    out = {}
    for name, shape in (("layer0.W", (nkerns[0], 1, 5, 5)), ("layer1.W", (nkerns[1], nkerns[0], 5, 5))):
        fan_in = shape[1] * 25
        fan_out = shape[0] * 25 // 4  # Python 2's integer division (// in the Python 3 port): 312 for layer1
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        out[name] = np.asarray(rng.uniform(-bound, bound, shape), dtype=np.float32)
    n_in = nkerns[1] * 16
    bound = np.sqrt(6.0 / (n_in + n_hidden))
    out["layer2.W"] = np.asarray(rng.uniform(-bound, bound, (n_in, n_hidden)), dtype=np.float32)
    return out


def true_conv_valid(x, w):
    """Theano's conv2d (a true convolution, 'valid'): out[n,k,i,j] = sum_{c,u,v} x[n,c,i+u,j+v] w[k,c,K-1-u,K-1-v]."""
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    out = np.zeros((n, k, h - kh + 1, wd - kw + 1))
    for u in range(kh):
        for v in range(kw):
            patch = x[:, :, u:u + h - kh + 1, v:v + wd - kw + 1]  # [n, c, oh, ow]
            out += np.einsum("nchw,kc->nkhw", patch, w[:, :, kh - 1 - u, kw - 1 - v])
    return out


def tutorial_forward(x, p_theano, b):
    """The tutorial's LeNet in float64 numpy with the kernels in Theano's orientation."""
    def convpool(h, W, bias):
        c = true_conv_valid(h, W)
        n, k, hh, ww = c.shape
        pooled = c.reshape(n, k, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
        return np.tanh(pooled + bias[None, :, None, None])

    h = convpool(x.reshape(-1, 1, 28, 28), p_theano["layer0.W"], b["layer0.b"])
    h = convpool(h, p_theano["layer1.W"], b["layer1.b"])
    h = h.reshape(h.shape[0], -1)  # Theano's .flatten(2): C order over (maps, rows, cols)
    h = np.tanh(h @ p_theano["layer2.W"] + b["layer2.b"])
    return h @ p_theano["layer3.W"] + b["layer3.b"]


def test_parameter_names_shapes_and_count():
    m = LeNet5()
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == SHAPES
    assert sum(p.numel() for p in m.parameters()) == sum(int(np.prod(s)) for s in SHAPES.values()) == 431_080
    assert [tuple(w.shape) for w in m.weights()] == [(20, 1, 5, 5), (50, 20, 5, 5), (800, 500), (500, 10)]


def test_initialisation_follows_the_tutorials_randomstate_order_and_is_flipped():
    m = build_model(config.resolve("lenet").model_args(), 23455)
    draws = tutorial_draws()
    for name in ("layer0.W", "layer1.W"):
        stored = m.state_dict()[name].numpy()
        assert np.array_equal(stored, draws[name][..., ::-1, ::-1]), name  # PyTorch cross-correlation kernel
    assert np.array_equal(m.state_dict()["layer2.W"].numpy(), draws["layer2.W"])
    for name in ("layer0.b", "layer1.b", "layer2.b", "layer3.W", "layer3.b"):
        assert not m.state_dict()[name].any(), name
    assert np.abs(draws["layer0.W"]).max() <= np.sqrt(6 / (25 + 125))
    assert np.abs(draws["layer1.W"]).max() <= np.sqrt(6 / (500 + 312))
    # a different seed draws different kernels; nkerns changes every shape
    assert not np.array_equal(LeNet5(init_seed=1).layer0.W.detach().numpy(), m.layer0.W.detach().numpy())
    small = LeNet5(nkerns=(4, 6), n_hidden=32, init_seed=23455)
    small_draws = tutorial_draws(nkerns=(4, 6), n_hidden=32)
    assert np.array_equal(small.layer1.W.detach().numpy(), small_draws["layer1.W"][..., ::-1, ::-1])
    assert tuple(small.layer2.W.shape) == (6 * 16, 32)


def test_conv_layer_computes_theanos_true_convolution_of_the_drawn_kernel():
    """An impulse convolved (truly) with a kernel reproduces the kernel; a cross-correlation would flip it."""
    m = LeNet5()
    drawn = tutorial_draws()["layer0.W"]
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 13] = 1.0
    out = F.conv2d(x, m.layer0.W.detach())[0]  # [20, 24, 24], before pooling
    np.testing.assert_array_equal(out[:, 6:11, 9:14].numpy(), drawn[:, 0])
    # and on a random image against the definition of the true convolution
    img = torch.rand(2, 1, 28, 28)
    np.testing.assert_allclose(F.conv2d(img, m.layer0.W.detach()).numpy(),
                               true_conv_valid(img.double().numpy(), drawn.astype(np.float64)), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("channels_last", [None, False, True])
def test_forward_is_the_tutorials_function(channels_last):
    """Pooling, bias after pooling, tanh, and the flatten order of layer1's output into layer2; the model
    itself (None) and the accelerated forward with its conv part in NCHW or NHWC."""
    from deeptut.accel.cuda.lenet_conv import LeNetForward

    m = LeNet5(init_seed=23455)
    forward = m if channels_last is None else LeNetForward(m, channels_last=channels_last)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero biases and output layer, so that every term shows
        for name in ("layer0.b", "layer1.b", "layer2.b", "layer3.b"):
            m.state_dict()[name].copy_(torch.randn(m.state_dict()[name].shape, generator=g) * 0.1)
        m.layer3.W.copy_(torch.randn(500, 10, generator=g) * 0.1)
    x = torch.rand(3, 784, generator=g)
    p = {k: v.double().numpy() for k, v in m.state_dict().items()}
    theano = dict(p)
    theano["layer0.W"] = tutorial_draws()["layer0.W"].astype(np.float64)
    theano["layer1.W"] = tutorial_draws()["layer1.W"].astype(np.float64)
    expected = tutorial_forward(x.double().numpy(), theano, p)
    got = forward(x).detach().numpy()
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_channels_last_changes_rounding_only():
    from deeptut.accel.cuda.lenet_conv import LeNetForward

    m = LeNet5(init_seed=3)
    with torch.no_grad():
        m.layer3.W.normal_(0, 0.1)
    x = torch.rand(16, 784, generator=torch.Generator().manual_seed(0))
    a = m(x)
    b = LeNetForward(m, channels_last=True)(x)
    assert torch.equal(a, LeNetForward(m, channels_last=False)(x))  # NCHW: the model's own kernels
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # gradients too (the autograd step runs through the channels-last path)
    ga = torch.autograd.grad(F.cross_entropy(a, torch.arange(16) % 10), list(m.parameters()))
    gb = torch.autograd.grad(F.cross_entropy(b, torch.arange(16) % 10), list(m.parameters()))
    for u, v in zip(ga, gb):  # oneDNN picks kernels by shape and alignment: a float32 rounding apart
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_tiny_fit_end_to_end(tmp_path):
    cfg = config.resolve("lenet", overrides=dict(nkerns="4,8", n_hidden=32, batch_size=20, n_epochs=4,
                                                 learning_rate=0.3, seed=1, device="cpu"))
    data = tiny_splits(n_train=300, n_valid=100, n_test=100)
    summary = fit(cfg, data, tmp_path, quiet=True)
    assert summary["epochs"] == 4 and summary["test_error"] < 50  # chance is 90 %
    model, saved_cfg = rundir.load_model(tmp_path)
    assert isinstance(model, LeNet5) and model.nkerns == (4, 8)


# --- convolutions as matrix products (conv = "gemm"; "auto" measures on CUDA) ---------------------------


@pytest.mark.parametrize("shape,kernel", [((3, 1, 28, 28), (20, 1, 5, 5)), ((2, 20, 12, 12), (50, 20, 5, 5)),
                                          ((1, 3, 7, 9), (4, 3, 3, 3))])
def test_conv_valid_gemm_is_conv2d(shape, kernel):
    """Values and both gradients, in float64 (the two differ only in summation order)."""
    import torch.nn.functional as F

    from deeptut.accel.cuda.lenet_conv import conv_valid_gemm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(*kernel, dtype=torch.float64, generator=g, requires_grad=True)
    a, b = conv_valid_gemm(x, W), F.conv2d(x, W)
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    gout = torch.randn(b.shape, dtype=torch.float64, generator=g)
    for u, v in zip(torch.autograd.grad(a, (x, W), gout), torch.autograd.grad(b, (x, W), gout)):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gemm", [(True, True), (True, False), (False, True)])
def test_lenet_with_gemm_convs_is_the_same_function(gemm):
    from deeptut.accel.cuda.lenet_conv import LeNetForward
    from synthetic import random_batch

    m = LeNet5()
    x, _ = random_batch(8, 1)
    ref = m(x)
    torch.testing.assert_close(LeNetForward(m, gemm=gemm)(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv,expected", [("auto", (False, False)), ("cudnn", (False, False)),
                                           ("gemm", (True, True))])
def test_make_train_step_sets_the_conv_choice_on_cpu(conv, expected):
    """The step holds the speed choices (its forward); the model stays the plain tutorial module."""
    from deeptut.accel import make_train_step
    from deeptut.config import TrainConfig

    m = LeNet5()
    step = make_train_step(m, TrainConfig(model="lenet", batch_size=10, conv=conv), torch.device("cpu"))
    assert step.forward.gemm == expected and step.forward.channels_last
    assert not hasattr(m, "conv_gemm") and not hasattr(m, "channels_last")


@pytest.mark.parametrize("fastest", [(False, False), (True, True), (False, True), (True, False)])
def test_pick_conv_returns_the_fastest_measured_setting(monkeypatch, fastest):
    """pick_conv times each gemm setting with CUDA events; here the events are stand-ins that report
    scripted times (ms per `repeats` passes), so the choice is known and the test runs on any machine."""
    from deeptut.accel.cuda.lenet_conv import LeNetForward, pick_conv

    m = LeNet5(nkerns=(2, 3), n_hidden=8, init_seed=0)  # small: 16 forward and backward passes
    forward = LeNetForward(m)
    times = {s: 5.0 for s in ((False, False), (True, True), (False, True), (True, False))}
    times[fastest] = 4.0  # the only setting under 5 ms

    class ScriptedEvent:
        def __init__(self, enable_timing=False):
            self.setting = None

        def record(self):
            self.setting = forward.gemm  # the setting being timed when the start event is recorded

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return times[self.setting]

    monkeypatch.setattr(torch.cuda, "Event", ScriptedEvent)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert pick_conv(forward, 4, torch.device("cpu"), repeats=1) == fastest
    assert forward.gemm == (False, False) and all(p.grad is None for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pick_conv times CUDA kernels; no CUDA device here")
def test_pick_conv_on_cuda_leaves_the_model_alone():
    from deeptut.accel.cuda.lenet_conv import LeNetForward, pick_conv

    m = LeNet5().cuda()
    forward = LeNetForward(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    pick_conv(forward, 50, torch.device("cuda"), repeats=2)
    assert forward.gemm == (False, False) and all(p.grad is None for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_fit_uses_ieee_float32_and_restores_the_flags(monkeypatch):
    """PyTorch lets cuDNN use TF32 by default; fit turns that off unless cfg.tf32 (the flags are global,
    so they are read during a tiny run, at its first training step, and after it)."""
    import tiny

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    old = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark)
    try:
        for tf32 in (False, True):
            # a setting that is neither fit's nor its opposite, so that "restored" can be told apart
            cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = not tf32, tf32, False
            seen = []
            tiny.at_step(monkeypatch, 1, lambda: seen.append((cudnn.allow_tf32, matmul.allow_tf32,
                                                              cudnn.benchmark)))
            summary = fit(tiny.tiny_config(tf32=tf32, n_epochs=1), tiny.tiny_splits(), None, quiet=True)
            assert summary["epochs"] == 1
            assert seen == [(tf32, tf32, True)]
            assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark) == (not tf32, tf32, False)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = old
