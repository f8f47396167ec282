"""The MLP's plain-SGD step on a CPU on the nonzero pixels of the minibatch (csrc/mlp_step.c).

At the tutorial's minibatch of 20 the step is two products with the 784 x 500 hidden weights; MNIST is
~81 % zeros, and a zero pixel contributes nothing to either. The C kernel compacts each row to its nonzero
pixels (or takes them from a packed copy of the split, packed.py) and touches only those rows of the
hidden weights: ~5x less arithmetic than the dense products, ~4x faster than plain PyTorch's step here
(BENCHMARKS.md). The hidden activation is torch.tanh, between the kernel's two calls, so it is computed as
autograd's forward computes it; the products sum in other orders than autograd's, so parameters agree with
`AutogradStep` to float32 rounding, not bit for bit (tests/test_mlp_sparse.py). Anything the kernel does
not cover (momentum, weight decay, other activations, other dtypes or devices) goes to `fused.MLPFusedStep`,
which also provides the optimizer state for checkpoints.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch
from torch import nn

from deeptut.accel.cpu import ckernels
from deeptut.accel.cpu.fused import MLPFusedStep, _Threads
from deeptut.accel.cpu.packed import PackCache
from deeptut.config import TrainConfig
from deeptut.steps import EagerStep


def supports(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
    from deeptut.models.mlp import MLP

    return (isinstance(model, MLP) and device.type == "cpu" and cfg.activation == "tanh"
            and cfg.momentum == 0 and cfg.weight_decay == 0 and model.hiddenLayer.W.dtype == torch.float32)


def available() -> bool:
    return ckernels.mlp_step() is not None


class MLPNonzeroPixelsStep(EagerStep):
    """Plain SGD with L1 / L2 penalties on the tanh MLP, in C on the nonzero pixels. Falls back to
    `MLPFusedStep` per call when the C kernel is missing or the input is not a float32 CPU matrix."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.batch_size = cfg.batch_size
        self.fallback = MLPFusedStep(model, cfg, threads=1)
        self._one_thread = _Threads(1)
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        hl, out = model.hiddenLayer, model.logRegressionLayer
        self.W1, self.b1, self.W2, self.b2 = (p.detach().numpy() for p in (hl.W, hl.b, out.W, out.b))
        self._c = ckernels.mlp_step()
        packer = ckernels.logistic_step()  # the packing functions live with the logistic kernel
        self._pack = PackCache(packer) if packer is not None else None
        self._cost = ctypes.c_double()
        self.n = 0

    def _alloc(self, n: int) -> None:
        d, H = self.W1.shape
        K = self.W2.shape[1]
        self.n = n
        self.a = np.empty((n, H), np.float32)  # hidden pre-activation, then tanh of it
        self.a_t = torch.from_numpy(self.a)
        self.scratch = ckernels.aligned_buffer(self._c.scratch_bytes(n, d, H, K))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> float:
        if self._c is None or not ckernels.takes(x, y, self.W1, self.b1, self.W2, self.b2):
            return self.fallback(x, y, learning_rate)
        n, d = x.shape
        H, K = self.W1.shape[1], self.W2.shape[1]
        if n != self.n:
            self._alloc(n)
        pk = self._pack.args(x) if self._pack is not None else (None, None, None, 0)
        T = max(1, torch.get_num_threads())  # the result does not depend on it (hidden units are split)
        rc = self._c.forward(x.data_ptr(), n, d, H, K, self.W1.ctypes.data, self.b1.ctypes.data,
                             self.a.ctypes.data, self.scratch.ctypes.data, T, *pk)
        if rc != 0:  # sizes the kernel does not take (nothing changed yet)
            return self.fallback(x, y, learning_rate)
        with self._one_thread:  # waking torch's OpenMP threads would leave them spinning against the kernel's
            torch.tanh(self.a_t, out=self.a_t)
        rc = self._c.backward(y.data_ptr(), n, d, H, K, self.W1.ctypes.data, self.b1.ctypes.data,
                              self.W2.ctypes.data, self.b2.ctypes.data, self.a.ctypes.data,
                              self.scratch.ctypes.data, T, learning_rate, self.L1_reg, self.L2_reg,
                              ctypes.byref(self._cost))
        if rc == -1:
            raise IndexError("label out of range")
        if rc != 0:
            raise RuntimeError(f"mlp_backward failed ({rc})")
        return self._cost.value

    def state_dict(self) -> dict[str, Any]:
        return self.fallback.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fallback.load_state_dict(state)
