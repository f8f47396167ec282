"""LeNet's SGD update with the backward pass written by hand, independent work on parallel CUDA streams.

Autograd runs LeNet's backward pass as one chain on one stream, but half of it is off the critical path:
each layer's weight and bias gradients are needed only by the update at the end, while the data gradient
feeds the layer below. Each of these kernels fills only part of a large GPU (batch 500, 20-50 channels),
so the weight gradients run on side streams beside the data gradients (a CUDA graph capture turns them into
parallel branches). The critical path that remains is the forward pass, then per layer: the activation's
derivative, the pooling's backward and the convolution's data gradient (layer 1), then layer 0's weight
gradient.

Each conv-pool layer runs either
* "cudnn": torch's own kernels (cuDNN on CUDA): convolution, max_pool2d_with_indices, bias add,
  activation; backward: activation', max-pool backward, bias sum, convolution_backward split into its
  weight and data halves -- the same kernels autograd calls; or
* "triton": the fused kernels of lenet_triton.py (the convolution's output never written; the
  pooling's backward folded into the weight gradient). With either layer in Triton, the hidden layer's
  activation, the output layer, the cost and their backward run as one kernel too (tail_triton.py).

The dense layers, the cost and the update are the autograd step's (addmm, log_softmax, nll, foreach SGD).
The same function, so the same parameters up to float32 rounding: on CPU (one stream) the "cudnn" variant
calls the very kernels autograd calls (the tests compare them), and on CUDA the order of independent
kernels changes nothing in their results. `choose` measures the variants at the start of a CUDA run.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from deeptut.accel.cuda import capture, lenet_triton, tail_triton
from deeptut.accel.cuda.lenet_triton import CONV_ARGS as _CONV
from deeptut.accel.cuda.updates import AutogradUpdate, _act_backward, _branch, _wait, sgd_update
from deeptut.accel.fallback import warn
from deeptut.config import TrainConfig
from deeptut.models.lenet import FILTER, IMAGE, POOL, LeNet5
from deeptut.models.mlp import ACTIVATIONS as _ACT
from deeptut.steps import AutogradStep

LAYER_KINDS = ("cudnn", "triton")
_POOL = ([2, 2], [2, 2], [0, 0], [1, 1], False)  # kernel, stride, padding, dilation, ceil_mode


def supports(model: Any, cfg: TrainConfig) -> bool:
    """The manual update covers LeNet5 with the loop's options except bf16 autocast."""
    return isinstance(model, LeNet5) and cfg.amp == "off" and cfg.activation in _ACT


class LeNetManualUpdate(AutogradUpdate):
    """AutogradUpdate's interface (block, _step) with the gradients computed by `gradients`."""

    def __init__(self, ref: AutogradStep, params: list[torch.Tensor], bufs: list[torch.Tensor] | None,
                 cfg: TrainConfig, model: Any, layers: tuple[str, str] = ("cudnn", "cudnn")) -> None:
        super().__init__(ref, params, bufs, cfg)
        if any(k not in LAYER_KINDS for k in layers):
            raise ValueError(f"layer kinds must be in {LAYER_KINDS}, got {layers}")
        self.model, self.layers = model, tuple(layers)
        self.act = cfg.activation
        self.precision = "tf32" if cfg.tf32 else "ieee"
        # with Triton layers, the dense layers' middle (activation, output layer, cost and back) is fused too
        if "triton" in self.layers:
            self.fused_tail = tail_triton.supports(model.n_hidden, model.n_out)
        else:
            self.fused_tail = False
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        dev = params[0].device
        # side streams: [dense layers' weight gradients, layer 1's weight gradient]; None on CPU
        self.side = [torch.cuda.Stream(device=dev) for _ in range(2)] if dev.type == "cuda" else None
        m = model
        self.conv = [(m.layer0.W, m.layer0.b), (m.layer1.W, m.layer1.b)]
        self.dense = [(m.layer2.W, m.layer2.b), (m.layer3.W, m.layer3.b)]

    def _step(self, x: torch.Tensor, y: torch.Tensor, lr: float | torch.Tensor, acc: torch.Tensor) -> None:
        with torch.no_grad():
            grads, cost = self.gradients(x, y)
            sgd_update(self.params, grads, self.bufs, lr, self.momentum, self.nesterov, self.weight_decay)
            acc.add_(cost)

    # -- the forward and the backward by hand ---------------------------------------------------------------

    @torch.no_grad()
    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the gradients in `params` order, the cost) for the minibatch x [n, 784], y [n]."""
        n, act = x.shape[0], self.act
        main = torch.cuda.current_stream(x.device) if self.side else None
        dense_side, conv_side = (self.side if self.side else (None, None))
        grads: dict[int, torch.Tensor] = {}
        # forward: [n, 1, 28, 28] -> [n, 20, 12, 12] -> [n, 50, 4, 4] -> [n, 500] -> [n, 10]
        h = x.reshape(n, 1, 28, 28)
        saved = []
        for kind, (W, b) in zip(self.layers, self.conv):
            out, aux = self._conv_forward(kind, h, W, b)
            saved.append((h, out, aux))
            h = out
        f = h.reshape(n, -1)
        (W2, b2), (W3, b3) = self.dense
        if self.fused_tail:  # hidden activation .. cost .. gradient of the hidden pre-activation: one kernel
            hid, dz, dpre, nll = tail_triton.dense_tail(torch.addmm(b2, f, W2), W3, b3, y, act, self.precision)
            cost = nll.mean()
        else:
            hid = _ACT[act](torch.addmm(b2, f, W2))
            logp = F.log_softmax(torch.addmm(b3, hid, W3), dim=1)
            cost = F.nll_loss(logp, y)
            t = torch.zeros_like(logp).scatter_(1, y[:, None], -1.0 / n)
            dz = torch._log_softmax_backward_data(t, logp, 1, logp.dtype)  # (softmax - onehot) / n
            dpre = _act_backward(dz.mm(W3.t()), hid, act)
        forked, keep = [dense_side], []  # keep: what the branches read, alive until the join
        with _branch(dense_side, main):
            grads[id(W3)], grads[id(b3)] = hid.t().mm(dz), dz.sum(0)
            grads[id(W2)], grads[id(b2)] = f.t().mm(dpre), dpre.sum(0)
        gy = dpre.mm(W2.t()).view(h.shape)
        for i in (1, 0):
            (W, b), kind, (inp, out, aux) = self.conv[i], self.layers[i], saved[i]
            gy = self._conv_backward(kind, gy, inp, out, aux, W, b, grads, keep, need_dx=i > 0,
                                     side=conv_side if i > 0 else None, main=main)
            if i > 0:
                forked.append(conv_side)
        for s in forked:
            _wait(main, s)  # join: the update reads every gradient
        del keep
        if self.L1_reg or self.L2_reg:
            for W in self.model.weights():
                g = grads[id(W)]
                if self.L1_reg:
                    cost = cost + self.L1_reg * W.abs().sum()
                    g = g + self.L1_reg * torch.sign(W)
                if self.L2_reg:
                    cost = cost + self.L2_reg * (W * W).sum()
                    g = g + (2.0 * self.L2_reg) * W
                grads[id(W)] = g
        return [grads[id(p)] for p in self.params], cost

    def _conv_forward(self, kind: str, x: torch.Tensor, W: torch.Tensor,
                      b: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if kind == "triton":
            y, pos = lenet_triton.conv_pool_forward(x, W, b, self.act, self.precision)
            return y, pos
        c = torch.ops.aten.convolution(x, W, None, *_CONV)
        m, idx = torch.ops.aten.max_pool2d_with_indices(c, *_POOL)
        return _ACT[self.act](m + b.view(1, -1, 1, 1)), (c, idx)

    def _conv_backward(self, kind: str, gy: torch.Tensor, x: torch.Tensor, y: torch.Tensor, aux: Any,
                       W: torch.Tensor, b: torch.Tensor, grads: dict[int, torch.Tensor], keep: list[Any],
                       need_dx: bool, side: torch.cuda.Stream | None,
                       main: torch.cuda.Stream | None) -> torch.Tensor | None:
        """Store dW, db in `grads` (on `side` where given; what it reads goes into `keep`); return dx (or
        None)."""
        keep.append((gy, x, y, aux))
        if kind == "triton":
            with _branch(side, main):
                grads[id(W)], grads[id(b)] = lenet_triton.weight_grad(gy, y, aux, x, W, self.act, self.precision)
            return lenet_triton.data_grad(gy, y, aux, x, W, self.act) if need_dx else None
        c, idx = aux
        dm = _act_backward(gy, y, self.act)  # [n, OC, P, P]
        dc = torch.ops.aten.max_pool2d_with_indices_backward(dm, c, *_POOL, idx)  # [n, OC, 2P, 2P]
        keep.append((dm, dc))
        with _branch(side, main):
            grads[id(b)] = dm.sum((0, 2, 3))
            grads[id(W)] = torch.ops.aten.convolution_backward(dc, x, W, None, *_CONV, [False, True, False])[1]
        if not need_dx:
            return None
        return torch.ops.aten.convolution_backward(dc, x, W, None, *_CONV, [True, False, False])[0]


def candidates(cfg: TrainConfig, device: torch.device) -> list[tuple[str, str]]:
    """The layer kinds worth measuring on `device`: cuDNN always; Triton for each layer whose shape the
    Triton kernels cover (layer 0: [n, 1, 28, 28] -> nkerns[0] maps; layer 1: [n, nkerns[0], 12, 12] ->
    nkerns[1]), where Triton runs."""
    if not lenet_triton.available(device):
        return [("cudnn", "cudnn")]
    side1 = (IMAGE - FILTER + 1) // POOL
    ok = (lenet_triton.supports((1, 1, IMAGE, IMAGE), cfg.nkerns[0], cfg.activation),
          lenet_triton.supports((1, cfg.nkerns[0], side1, side1), cfg.nkerns[1], cfg.activation))
    k0, k1 = [("cudnn", "triton") if o else ("cudnn",) for o in ok]
    return [(a, b) for a in k0 for b in k1]


def choose(make: Callable[[Any], Any], options: list[Any], state: list[torch.Tensor], x: torch.Tensor,
           y: torch.Tensor, lr: float, reference: list[torch.Tensor] | None = None, tolerance: float = 1e-3,
           repeats: int = 10) -> tuple[Any, dict[Any, float]]:
    """The fastest of `options`: make(option) builds an update whose _step(x, y, lr, acc) is timed (after a
    warm-up that compiles and tunes; on CUDA as replays of a captured graph, as the run executes it). The
    steps are real updates, so the `state` tensors (parameters, momentum buffers) are restored after each
    option. An update with `gradients` is first checked against `reference` (the autograd gradients at x, y,
    in the same order): each gradient within `tolerance` of it in relative norm (an update that miscomputes
    on this device is never picked for its speed). An option that fails either way is left out, with a
    warning. Returns (the fastest, {option: ms per step})."""
    saved = [t.detach().clone() for t in state]
    acc = torch.zeros(1, 1, device=x.device)
    times: dict[Any, float] = {}
    for opt in options:
        try:
            k = make(opt)
            if reference is not None and hasattr(k, "gradients"):
                got = k.gradients(x, y)[0]
                err = max(float((a - b).norm() / b.norm().clamp_min(1e-30)) for a, b in zip(got, reference))
                if not err <= tolerance:
                    raise RuntimeError(f"gradients differ from autograd's by {err:.2e} (relative norm)")
            times[opt] = _ms_per_call(lambda: k._step(x, y, lr, acc), repeats, x.device)
        except Exception as e:  # noqa: BLE001 - e.g. a Triton kernel that does not compile on this GPU
            warn(f"LeNet step {opt} unavailable ({type(e).__name__}: {e})")
        finally:
            with torch.no_grad():
                for t, v in zip(state, saved):
                    t.copy_(v)
    if not times:
        raise RuntimeError("no LeNet step variant runs")
    return min(times, key=times.get), times


def measure(ref: AutogradStep, params: list[torch.Tensor], bufs: list[torch.Tensor] | None, cfg: TrainConfig,
            model: Any, x: torch.Tensor, y: torch.Tensor, repeats: int = 10) -> tuple[Any, dict[str, float]]:
    """`conv = "auto"`'s measurement on the minibatch x, y: the manual update with each of `candidates`'
    layer kinds and the autograd update (updates.AutogradUpdate), on these parameters and momentum buffers,
    checked against autograd's gradients and timed by `choose`. Returns (the fastest: layer kinds or
    "autograd", {"cudnn-triton" ... or "autograd": ms per step})."""
    options = [*candidates(cfg, x.device), "autograd"]
    make = lambda o: AutogradUpdate(ref, params, bufs, cfg) if o == "autograd" \
        else LeNetManualUpdate(ref, params, bufs, cfg, model, o)  # noqa: E731
    with torch.enable_grad():
        reference = list(torch.autograd.grad(ref.cost(x, y), params))
    best, times = choose(make, options, [*params, *(bufs or [])], x, y, cfg.learning_rate, reference,
                         1e-2 if cfg.tf32 else 1e-3, repeats)
    return best, {("-".join(o) if o != "autograd" else o): round(t, 4) for o, t in times.items()}


def _ms_per_call(fn: Callable[[], Any], repeats: int, device: torch.device, warm: int = 3) -> float:
    """ms per call of fn after `warm` calls: on CUDA as replays of a captured graph (capture.replay_ms), the
    way the run executes the step; on CPU by the wall clock."""
    if device.type == "cuda":
        capture.warm_up(fn, device, times=warm)  # compiles, tunes, initialises handles (on a side stream)
        return capture.replay_ms(fn, repeats)
    for _ in range(warm):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) * 1e3 / repeats
