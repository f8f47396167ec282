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

from deeptut import ckernels
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
    """Plain SGD on logistic regression without autograd (CPU, float32).

    Where a C compiler is available the step is one fused C kernel (deeptut.ckernels, csrc/logistic_step.c):
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
        n, k = cfg.batch_size, self.W.shape[1]
        self.zt = np.empty((k, n), np.float32)  # logits^T, then softmax^T, then d cost / d logits^T
        self.m = np.empty(n, np.float32)  # per-example max logit, then softmax denominator
        self.gWt = np.empty((k, self.W.shape[0]), np.float32)  # [n_out, n_in]
        self.cols = np.arange(n)
        self._c = None
        if use_ckernel:
            self._c = ckernels.logistic_step()  # None: no compiler or a failed build, numpy path below
        if self._c is not None:
            from deeptut.train.packed import PackCache

            self._pack = PackCache(self._c)  # the training split's nonzeros, once it is read a second time
        self.evaluator = LogisticErrors(model, self._c) if self._c is not None else None  # fit() uses it
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


class LogisticErrors:
    """The zero-one loss of a logistic regression on a CPU by the C kernel (csrc/logistic_step.c: sparse
    rows, both cores, no BLAS threads left spinning against the training step's). Same interface as
    graphs.GraphEvaluator."""

    def __init__(self, model: nn.Module, kernel: Any) -> None:
        from deeptut.train.packed import PackCache

        self.model, self._c = model, kernel
        self._pack = PackCache(kernel)  # a split evaluated again and again is packed once
        self._scratch = ckernels.aligned_buffer(kernel.scratch_bytes(*model.W.shape, 1))

    def misclassified(self, split: Any, n: int, rows: int, batch_size: int) -> torch.Tensor | None:
        """bool [n]: argmax(x W + b) != y for the first n examples of `split`, or None (not a resident
        CPU float32 split: evaluate eagerly instead)."""
        x, y = getattr(split, "x", None), getattr(split, "y", None)
        W, b = self.model.W.detach().numpy(), self.model.b.detach().numpy()
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or n > len(x) or n <= 0 \
                or not ckernels.takes(x[:n], y[:n], W, b):
            return None
        d, k = W.shape
        wrong = np.empty(n, np.uint8)
        rc = self._c.errors(x.data_ptr(), y.data_ptr(), n, d, k, W.ctypes.data, b.ctypes.data,
                            self._scratch.ctypes.data, max(1, torch.get_num_threads()), wrong.ctypes.data,
                            *self._pack.args(x[:n]))
        if rc != 0:
            return None
        return torch.from_numpy(wrong.view(np.bool_))


def cpu_evaluator(model: nn.Module) -> LogisticErrors | None:
    """A faster evaluator for `model` on the CPU where there is one (logistic regression with the C
    kernel), else None."""
    from deeptut.models.logistic import LogisticRegression

    if not isinstance(model, LogisticRegression) or model.W.device.type != "cpu" \
            or model.W.dtype != torch.float32:
        return None
    kernel = ckernels.logistic_step()
    return LogisticErrors(model, kernel) if kernel is not None else None


def make_train_step(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """The fastest step that computes the reference arithmetic for this model and device.

    CUDA graphs (graphs.StretchStep) where wanted. On CPU with fast_step: logistic: `LogisticFusedStep`
    (plain SGD, numpy); mlp: `fused.MLPFusedStep` (plain SGD, momentum, Nesterov, weight decay, L1/L2;
    bit-identical to AutogradStep at one thread); lenet: `AutogradStep` with the conv layers in
    channels-last format. Everything else, or `fast_step = false`: `AutogradStep`.
    """
    from deeptut.train import graphs  # CUDA graphs of whole stretches of steps (graphs=auto on CUDA)

    if cfg.model == "lenet" and hasattr(model, "channels_last"):
        model.channels_last = cfg.fast_step  # CPU: the conv part in NHWC (oneDNN), same function, not same bits
        if cfg.conv == "auto" and device.type == "cuda":
            from deeptut.models.lenet import pick_conv

            model.conv_gemm = pick_conv(model, cfg.batch_size, device)  # cuDNN or GEMM per layer, measured
        else:
            model.conv_gemm = (cfg.conv == "gemm",) * 2
        if cfg.conv == "triton" and not graphs.wanted(cfg, device):
            # the Triton layers run only in the graph step, which itself warns where Triton cannot run
            graphs._warn("conv = 'triton' runs in the CUDA graph step (device cuda, graphs auto/on); "
                         "using torch's convolutions")

    if graphs.wanted(cfg, device):
        try:
            return graphs.StretchStep(model, cfg, device)
        except Exception as e:  # noqa: BLE001 - never lose a run to the fast path: fall back to eager steps
            graphs._warn(f"graph step unavailable ({type(e).__name__}: {e}); using eager steps")
    plain_sgd = cfg.momentum == 0 and cfg.weight_decay == 0
    if cfg.fast_step and device.type == "cpu" and plain_sgd and cfg.model == "logistic":
        return LogisticFusedStep(model, cfg, use_ckernel=cfg.sparse)
    if cfg.fast_step and device.type == "cpu" and cfg.model == "mlp":
        from deeptut.train import fused, mlp_sparse

        if cfg.sparse and mlp_sparse.supports(model, cfg, device) and mlp_sparse.available():
            return mlp_sparse.MLPSparseStep(model, cfg)
        if fused.supports(model, cfg, device):
            # one thread at the tutorial's batch of 20 (synchronising a second costs more than it saves);
            # larger batches use the run's thread count
            return fused.MLPFusedStep(model, cfg, threads=1 if cfg.batch_size <= 32 else cfg.threads)
    return AutogradStep(model, cfg)
