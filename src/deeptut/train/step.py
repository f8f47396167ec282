"""One minibatch SGD update: `step(x, y, learning_rate) -> cost`.

`AutogradStep` is the reference: cost = NLL + L1_reg * L1 + L2_reg * L2_sqr, gradients by autograd,
update by torch.optim.SGD (momentum, Nesterov and weight decay for the fast presets). Hand-fused steps
compute the same arithmetic without autograd's per-op overhead where that overhead dominates (the
tutorials' small minibatches on a CPU); `make_train_step` picks one.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch
from torch import nn

from deeptut.config import TrainConfig
from deeptut.train.losses import L1, L2_sqr, negative_log_likelihood


class AutogradStep:
    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.model = model
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)

    def cost(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cost = negative_log_likelihood(self.model(x), y)
        if self.L1_reg:
            cost = cost + self.L1_reg * L1(self.model.weights())
        if self.L2_reg:
            cost = cost + self.L2_reg * L2_sqr(self.model.weights())
        return cost

    def __call__(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.optimizer.zero_grad(set_to_none=True)
        cost = self.cost(x, y)
        cost.backward()
        self.optimizer.step()
        return cost.detach()

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


class LogisticFusedStep:
    """Plain SGD on logistic regression, forward and backward written out in numpy (CPU, float32).

    On a 2-core CPU numpy's OpenBLAS runs this model's skinny products (600x784 by 784x10) about 4x faster
    than torch's CPU matmul, and the step has no autograd bookkeeping. The logits are kept transposed,
    [n_out, n], so the per-example reductions of the softmax run along contiguous rows of length n instead
    of rows of length 10 (5-10x faster in numpy). Parameters are updated in place through numpy views of the
    model's tensors, so the model always holds the current values.
    Gradient of the mean NLL w.r.t. the logits: (softmax - onehot) / n.

    Where a C compiler is available the step runs as one fused C kernel instead (deeptut.ckernels,
    csrc/logistic_step.c): one pass over x for the logits, softmax and gradient, rows split over torch's
    thread count T in a fixed way, so results are deterministic for a given T (not bit-identical to numpy's:
    other summation orders). `use_ckernel=False` forces the numpy path.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, use_ckernel: bool = True) -> None:
        self.W = model.W.detach().numpy()  # [n_in, n_out], shares memory with the model
        self.b = model.b.detach().numpy()  # [n_out]
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        n, k = cfg.batch_size, self.W.shape[1]
        self.zt = np.empty((k, n), np.float32)  # logits^T, then softmax^T, then d cost / d logits^T
        self.m = np.empty(n, np.float32)  # per-example max logit, then softmax denominator
        self.gWt = np.empty((k, self.W.shape[0]), np.float32)  # [n_out, n_in]
        self.cols = np.arange(n)
        self._c = None
        if use_ckernel:
            from deeptut import ckernels

            self._c = ckernels.logistic_step()  # None: no compiler or a failed build, numpy path below
        self._c_T = 0
        self._cost = ctypes.c_double()

    def _c_call(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> float | None:
        """The fused C step (one pass over x, rows split over T = torch's thread count), or None to use numpy."""
        if not (x.dtype == torch.float32 and y.dtype == torch.int64 and x.dim() == 2 and x.device.type == "cpu"
                and x.is_contiguous() and y.is_contiguous() and x.shape[1] == self.W.shape[0]
                and y.shape == (x.shape[0],) and self.W.flags.c_contiguous and self.b.flags.c_contiguous):
            return None
        n, d = x.shape
        k = self.W.shape[1]
        T = max(1, min(torch.get_num_threads(), n // 64 or 1))  # a fixed split: results depend on T only
        if T != self._c_T:
            P = self._c.nparts(T)
            self._c_Wt = np.empty((k, d), np.float32)
            self._c_g = np.empty((P, k, d), np.float32)
            self._c_part = np.empty((P, k + 1), np.float64)
            self._c_T = T
        rc = self._c(x.data_ptr(), y.data_ptr(), n, d, k, self.W.ctypes.data, self.b.ctypes.data,
                     self._c_Wt.ctypes.data, self._c_g.ctypes.data, self._c_part.ctypes.data, T,
                     learning_rate, self.L1_reg, self.L2_reg, ctypes.byref(self._cost))
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


def make_train_step(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """The fastest step that computes the reference arithmetic for this model and device.

    CUDA graphs (graphs.StretchStep) where wanted. On CPU with fast_step: logistic: `LogisticFusedStep`
    (plain SGD, numpy); mlp: `fused.MLPFusedStep` (plain SGD, momentum, Nesterov, weight decay, L1/L2;
    bit-identical to AutogradStep at one thread); lenet: `AutogradStep` with the conv layers in
    channels-last format. Everything else, or `fast_step = false`: `AutogradStep`.
    """
    from deeptut.train import graphs  # CUDA graphs of whole stretches of steps (graphs=auto on CUDA)

    if graphs.wanted(cfg, device):
        try:
            return graphs.StretchStep(model, cfg, device)
        except Exception as e:  # noqa: BLE001 - never lose a run to the fast path: fall back to eager steps
            graphs._warn(f"graph step unavailable ({type(e).__name__}: {e}); using eager steps")
    plain_sgd = cfg.momentum == 0 and cfg.weight_decay == 0
    if cfg.fast_step and device.type == "cpu" and plain_sgd and cfg.model == "logistic":
        return LogisticFusedStep(model, cfg)
    if cfg.model == "lenet" and hasattr(model, "channels_last"):
        model.channels_last = cfg.fast_step  # CPU: the conv part in NHWC (oneDNN), same function, not same bits
    if cfg.fast_step and device.type == "cpu" and cfg.model == "mlp":
        from deeptut.train import fused

        if fused.supports(model, cfg, device):
            # one thread at the tutorial's batch of 20 (synchronising a second costs more than it saves);
            # larger batches use the run's thread count
            return fused.MLPFusedStep(model, cfg, threads=1 if cfg.batch_size <= 32 else cfg.threads)
    return AutogradStep(model, cfg)
