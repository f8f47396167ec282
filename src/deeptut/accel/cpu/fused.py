"""Hand-fused CPU training steps: the arithmetic of `AutogradStep`, without autograd.

`LogisticFusedStep`: logistic regression, plain SGD, in one C kernel on the nonzero pixels (or numpy).
`MLPFusedStep`: the MLP with every optimizer setting, the ATen kernels autograd calls, in autograd's order.

The MLP step at the tutorial's minibatch of 20 does ~16 MFLOP of matrix products; in eager PyTorch most of
its time goes to per-op overhead: building and walking the autograd graph, allocating every intermediate,
the optimizer's Python loop, and (on a 2-core machine shared with other work) waking a second OpenMP thread
for products too small to split. `MLPFusedStep` calls the very ATen kernels autograd would call, in the
order it calls them, into buffers allocated once, with torch's intra-op thread pool held at one thread for
the duration of the step. Because it is the same kernels on the same operands in the same order, the
result is bit-identical to `AutogradStep` run with the same thread count (tests/test_fused.py checks this
for plain SGD, L1/L2 penalties, weight decay, momentum and Nesterov).

What autograd computes, for cost = NLL(log_softmax(z), y) + L1_reg * sum|W| + L2_reg * sum W^2 with
h = act(x W_h + b_h), z = h W_o + b_o (the order matters for rounding and is reproduced exactly):

    dlogp   = nll_loss_backward(1, logp, y)                 (-1/n at the targets)
    dz      = _log_softmax_backward_data(dlogp, logp)
    gW_o    = h^T dz            gb_o = sum_rows(dz)          dh = dz W_o^T
    dhpre   = act_backward(dh, h)
    gW_h    = x^T dhpre         gb_h = sum_rows(dhpre)
    gW     += (2 * (L2_reg * W) + L1_reg * sign(W))          penalty paths reach W first (created last)
    SGD: g += wd * p;  buf = m * buf + g (buf = g at the first step);  g = g + m * buf (Nesterov) or buf;
         p -= lr * g

The optimizer state is a real `torch.optim.SGD` state (momentum buffers), so checkpoints written with the
fused step and with `AutogradStep` are interchangeable.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch
from torch import nn

from deeptut.accel.cpu import ckernels
from deeptut.accel.cpu.evaluate import cpu_evaluator
from deeptut.accel.cpu.packed import PackCache
from deeptut.config import TrainConfig
from deeptut.steps import EagerStep

aten = torch.ops.aten
MEAN = 1  # at::Reduction::Mean
IGNORE_INDEX = -100  # F.nll_loss's default


class _Threads:
    """Hold torch's intra-op pool at `n` threads inside the block, restored afterwards (~0.2 us a pair)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.saved = 0

    def __enter__(self) -> None:
        self.saved = torch.get_num_threads()
        if self.saved != self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        if self.saved != self.n:
            torch.set_num_threads(self.saved)


def supports(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
    """Whether `MLPFusedStep` implements this model on this device (it implements every optimizer setting the
    config has: SGD with momentum, Nesterov, weight decay, L1 and L2)."""
    from deeptut.models.mlp import MLP

    return (isinstance(model, MLP) and device.type == "cpu" and model.hiddenLayer.W.dtype == torch.float32
            and cfg.activation in ("tanh", "sigmoid", "relu"))


class MLPFusedStep(EagerStep):
    """SGD (+ momentum / Nesterov, weight decay, L1 / L2 penalties) on the MLP, forward and backward by hand.

    Parameters are updated in place (the model always holds the current values). `threads` is the torch
    intra-op thread count used inside the step (default 1: at the tutorial's sizes a second thread costs
    more in synchronisation than it saves; the thread count outside the step is left as it was).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, threads: int = 1) -> None:
        self.model = model
        self.batch_size = cfg.batch_size
        self.activation = model.activation
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        self.momentum, self.nesterov, self.weight_decay = cfg.momentum, cfg.nesterov, cfg.weight_decay
        self.threads = _Threads(threads) if threads else None
        hl, lr_ = model.hiddenLayer, model.logRegressionLayer
        self.params = [hl.W, hl.b, lr_.W, lr_.b]  # torch.optim.SGD's order (model.parameters())
        self.W1, self.b1, self.W2, self.b2 = (p.detach() for p in self.params)
        # The optimizer only holds the state (momentum buffers) and makes state_dict() the same as
        # AutogradStep's; its step() is never called.
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.learning_rate, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        n_in, n_hidden = self.W1.shape
        n_out = self.W2.shape[1]
        self._alloc(cfg.batch_size, n_in, n_hidden, n_out)
        self.grads = [self.gW1, self.gb1, self.gW2, self.gb2]
        self.one = torch.ones(())  # d cost / d cost
        weights = (self.W1, self.W2)
        self.l2_w = [torch.empty_like(w) for w in weights] if self.L2_reg else None  # L2_reg * W
        self.l1_w = [torch.empty_like(w) for w in weights] if self.L1_reg else None  # L1_reg * sign(W)
        self.sq = [torch.empty_like(w) for w in weights] if self.L2_reg else None  # W * W (the L2 cost term)
        self.wd_g = [torch.empty_like(p) for p in self.params] if self.weight_decay else None
        self.nest_g = [torch.empty_like(p) for p in self.params] if self.nesterov else None

    def _alloc(self, n: int, n_in: int, n_hidden: int, n_out: int) -> None:
        self.n = n
        self.h = torch.empty(n, n_hidden)  # hidden pre-activation, then activation
        self.z = torch.empty(n, n_out)  # logits
        self.logp = torch.empty(n, n_out)
        self.dlogp = torch.empty(n, n_out)
        self.dz = torch.empty(n, n_out)
        self.dh = torch.empty(n, n_hidden)  # d cost / d h, then d cost / d pre-activation
        self.gW1 = torch.empty(n_in, n_hidden)
        self.gb1 = torch.empty(n_hidden)
        self.gW2 = torch.empty(n_hidden, n_out)
        self.gb2 = torch.empty(n_out)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> float:
        if self.threads is None:
            return self._step(x, y, learning_rate)
        with self.threads:
            return self._step(x, y, learning_rate)

    @torch.no_grad()
    def _step(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> float:
        if x.shape[0] != self.n:
            self._alloc(x.shape[0], self.W1.shape[0], self.W1.shape[1], self.W2.shape[1])
            self.grads = [self.gW1, self.gb1, self.gW2, self.gb2]
        W1, b1, W2, b2 = self.W1, self.b1, self.W2, self.b2
        h, z, logp = self.h, self.z, self.logp
        # ---- forward --------------------------------------------------------------------------------
        torch.addmm(b1, x, W1, out=h)
        if self.activation == "tanh":
            torch.tanh(h, out=h)
        elif self.activation == "sigmoid":
            torch.sigmoid(h, out=h)
        else:
            torch.relu_(h)
        torch.addmm(b2, h, W2, out=z)
        aten._log_softmax.out(z, 1, False, out=logp)
        nll, total_weight = aten.nll_loss_forward(logp, y, None, MEAN, IGNORE_INDEX)
        cost = nll
        weights = (W1, W2)
        if self.L1_reg:
            l1 = sum(w.abs().sum() for w in weights)
            cost = cost + self.L1_reg * l1
        if self.L2_reg:
            l2 = sum(torch.mul(w, w, out=s).sum() for w, s in zip(weights, self.sq))
            cost = cost + self.L2_reg * l2
        # ---- backward -------------------------------------------------------------------------------
        aten.nll_loss_backward.grad_input(self.one, logp, y, None, MEAN, IGNORE_INDEX, total_weight,
                                          grad_input=self.dlogp)
        dz = aten._log_softmax_backward_data.out(self.dlogp, logp, 1, torch.float32, out=self.dz)
        torch.sum(dz, 0, out=self.gb2)
        torch.mm(h.t(), dz, out=self.gW2)
        dh = torch.mm(dz, W2.t(), out=self.dh)
        if self.activation == "tanh":
            aten.tanh_backward.grad_input(dh, h, grad_input=dh)
        elif self.activation == "sigmoid":
            aten.sigmoid_backward.grad_input(dh, h, grad_input=dh)
        else:
            aten.threshold_backward.grad_input(dh, h, 0, grad_input=dh)
        torch.sum(dh, 0, out=self.gb1)
        torch.mm(x.t(), dh, out=self.gW1)
        # Penalty gradients: autograd accumulates them into W's gradient before the product's (their graph
        # nodes were created last, so the engine runs them first): g = ((L2 w + L2 w) [+ L1 sgn w]) + g_mm.
        for i, (w, g) in enumerate(zip(weights, (self.gW1, self.gW2))):
            if self.L2_reg and not self.L1_reg:
                a = torch.mul(w, self.L2_reg, out=self.l2_w[i])
                g.add_(a, alpha=2.0)  # g + (a + a) in one pass: a + a = 2a is exact, so the rounding is the same
            elif self.L1_reg:
                d = torch.mul(torch.sign(w, out=self.l1_w[i]), self.L1_reg, out=self.l1_w[i])
                if self.L2_reg:
                    a = torch.mul(w, self.L2_reg, out=self.l2_w[i])
                    d = d.add_(a, alpha=2.0)  # (a + a) + d
                g.add_(d)  # x + g == g + x: the order of the last sum does not matter
        # ---- SGD update (torch.optim.SGD's single-tensor algorithm) -----------------------------------
        self._sgd(learning_rate)
        return cost.item()

    def _sgd(self, lr: float) -> None:
        state = self.optimizer.state
        for i, (p, g) in enumerate(zip((self.W1, self.b1, self.W2, self.b2), self.grads)):
            if self.weight_decay:
                g = torch.add(g, p, alpha=self.weight_decay, out=self.wd_g[i])
            if self.momentum:
                st = state[self.params[i]]
                buf = st.get("momentum_buffer")
                if buf is None:
                    st["momentum_buffer"] = buf = g.clone()
                else:
                    buf.mul_(self.momentum).add_(g, alpha=1.0)  # dampening 0
                g = torch.add(g, buf, alpha=self.momentum, out=self.nest_g[i]) if self.nesterov else buf
            p.add_(g, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


class LogisticFusedStep(EagerStep):
    """Plain SGD on logistic regression without autograd (CPU, float32).

    Where a C compiler is available the step is one fused C kernel (ckernels.py, csrc/logistic_step.c):
    each row of x is compacted to its nonzero pixels (MNIST is ~81 % zeros), then logits, softmax and
    gradient in one pass; rows are split over torch's thread count T in a fixed way, so results are
    deterministic for a given T. Otherwise numpy: its OpenBLAS runs this model's skinny products (600x784
    by 784x10) about 4x faster than torch's CPU matmul on a 2-core CPU, and the logits are kept transposed,
    [n_out, n], so the per-example reductions of the softmax run along contiguous rows of length n (5-10x
    faster in numpy). The two paths sum in different orders, so they agree to float32 rounding, not bit
    for bit. `use_ckernel=False` forces numpy. Parameters are updated in place through numpy views of the
    model's tensors, so the model always holds the current values.
    Gradient of the mean NLL w.r.t. the logits: (softmax - onehot) / n.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, use_ckernel: bool = True) -> None:
        self.W = model.W.detach().numpy()  # [n_in, n_out], shares memory with the model
        self.b = model.b.detach().numpy()  # [n_out]
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        self.batch_size = cfg.batch_size
        n, k = cfg.batch_size, self.W.shape[1]
        self.zt = np.empty((k, n), np.float32)  # logits^T, then softmax^T, then d cost / d logits^T
        self.m = np.empty(n, np.float32)  # per-example max logit, then softmax denominator
        self.gWt = np.empty((k, self.W.shape[0]), np.float32)  # [n_out, n_in]
        self.cols = np.arange(n)
        self._c = None
        if use_ckernel:
            self._c = ckernels.logistic_step()  # None: no compiler or a failed build, numpy path below
        if self._c is not None:
            self._pack = PackCache(self._c)  # the training split's nonzeros, once it is read a second time
        # evaluation in the same arithmetic: the C kernel's, or numpy's product (fit() uses it)
        self.evaluator = cpu_evaluator(model, use_c=self._c is not None)
        self._c_T = 0
        self._cost = ctypes.c_double()

    def _c_call(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> float | None:
        """The fused C step (rows split over T = torch's thread count), or None to use numpy."""
        if not ckernels.takes(x, y, self.W, self.b):
            return None
        n, d = x.shape
        k = self.W.shape[1]
        T = max(1, min(torch.get_num_threads(), n // 64 or 1))  # a fixed split: results depend on T only
        if T != self._c_T:
            self._c_scratch = ckernels.aligned_buffer(self._c.scratch_bytes(d, k, T))
            self._c_T = T
        rc = self._c(x.data_ptr(), y.data_ptr(), n, d, k, self.W.ctypes.data, self.b.ctypes.data,
                     self._c_scratch.ctypes.data, T, learning_rate, self.L1_reg, self.L2_reg,
                     ctypes.byref(self._cost), *self._pack.args(x))
        if rc == -1:
            raise IndexError("label out of range")
        if rc != 0:
            return None
        return self._cost.value

    def __call__(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> float:
        if self._c is not None:
            cost = self._c_call(x, y, learning_rate)
            if cost is not None:
                return cost
        xn, yn, zt, m = x.numpy(), y.numpy(), self.zt, self.m
        n = xn.shape[0]
        np.matmul(self.W.T, xn.T, out=zt)  # [k, n]
        zt += self.b[:, None]
        np.maximum.reduce(zt, axis=0, out=m)
        zt -= m  # shifted logits: exp cannot overflow
        logit_y = zt[yn, self.cols]  # [n] shifted logit of the true class
        np.exp(zt, out=zt)
        np.add.reduce(zt, axis=0, out=m)  # softmax denominators
        cost = float((np.log(m) - logit_y).sum(dtype=np.float64)) / n
        zt /= m  # softmax^T
        zt[yn, self.cols] -= 1.0
        zt *= np.float32(1.0 / n)
        np.matmul(zt, xn, out=self.gWt)  # [k, n_in] = (x^T g)^T
        gb = np.add.reduce(zt, axis=1)
        gW = self.gWt.T
        if self.L1_reg:  # cost as the tutorial's train_model returns it: NLL plus the penalties
            cost += self.L1_reg * float(np.abs(self.W).sum(dtype=np.float64))
            gW += np.float32(self.L1_reg) * np.sign(self.W)
        if self.L2_reg:
            cost += self.L2_reg * float(np.square(self.W).sum(dtype=np.float64))
            gW += np.float32(2 * self.L2_reg) * self.W
        lr = np.float32(learning_rate)
        self.W -= lr * gW
        self.b -= lr * gb
        return cost

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
