"""Evaluation on a CPU: the logistic regression's zero-one loss by the C kernel, the other models through
their forward function with the output layer's product in numpy (blas.linear).

`cpu_evaluator(model)` is what a CPU step with `fast_step` evaluates with (and `deeptut eval` for such a
run), so that evaluation follows the arithmetic of the step that trained the model.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deeptut.accel.cpu import ckernels
from deeptut.accel.cpu.blas import linear
from deeptut.accel.cpu.packed import PackCache
from deeptut.accel.evaluator import ForwardEvaluator
from deeptut.models.lenet import LeNet5
from deeptut.models.logistic import LogisticRegression
from deeptut.models.mlp import MLP


def cpu_forward(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`forward` (default: the model) with the output layer, a LogisticRegression, computed as numpy's
    product where no gradient is needed: on a small CPU numpy's OpenBLAS runs products like 600x784 by
    784x10 about 4x faster than torch's CPU matmul. The same function; float32 rounding may differ."""
    if isinstance(model, LogisticRegression):
        return lambda x: linear(x, model.W, model.b)
    if isinstance(model, MLP):
        out = model.logRegressionLayer
        return lambda x: linear(model.hiddenLayer(x), out.W, out.b)
    if isinstance(model, LeNet5):
        features = getattr(forward, "features", model.features)  # LeNetForward's conv choices, if given
        return lambda x: linear(model.layer2(features(x)), model.layer3.W, model.layer3.b)
    return forward if forward is not None else model


class LogisticErrors:
    """The zero-one loss of a logistic regression on a CPU by the C kernel (csrc/logistic_step.c: sparse
    rows, both cores, no BLAS threads left spinning against the training step's). Where the kernel does not
    take the split (not a resident CPU float32 matrix), `fallback` evaluates it."""

    def __init__(self, model: nn.Module, kernel: Any, fallback: Any = None) -> None:
        self.model, self._c, self.fallback = model, kernel, fallback
        self._pack = PackCache(kernel)  # a split evaluated again and again is packed once
        self._scratch = ckernels.aligned_buffer(kernel.scratch_bytes(*model.W.shape, 1))

    def misclassified(self, split: Any, n: int, rows: int, batch_size: int) -> torch.Tensor | None:
        """bool [n]: argmax(x W + b) != y for the first n examples of `split` (None: evaluate eagerly)."""
        x, y = getattr(split, "x", None), getattr(split, "y", None)
        W, b = self.model.W.detach().numpy(), self.model.b.detach().numpy()
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or n > len(x) or n <= 0 \
                or not ckernels.takes(x[:n], y[:n], W, b):
            return self._fall_back(split, n, rows, batch_size)
        d, k = W.shape
        wrong = np.empty(n, np.uint8)
        rc = self._c.errors(x.data_ptr(), y.data_ptr(), n, d, k, W.ctypes.data, b.ctypes.data,
                            self._scratch.ctypes.data, max(1, torch.get_num_threads()), wrong.ctypes.data,
                            *self._pack.args(x[:n]))
        if rc != 0:
            return self._fall_back(split, n, rows, batch_size)
        return torch.from_numpy(wrong.view(np.bool_))

    def _fall_back(self, split: Any, n: int, rows: int, batch_size: int) -> torch.Tensor | None:
        return self.fallback.misclassified(split, n, rows, batch_size) if self.fallback is not None else None


def cpu_evaluator(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  use_c: bool = True) -> Any:
    """The evaluator for `model` on a CPU (None: not a float32 CPU model, evaluate as the loop does): the
    logistic regression's C kernel where `use_c` and it builds, else `cpu_forward(model, forward)`."""
    params = list(model.parameters())
    if not params or params[0].device.type != "cpu" or params[0].dtype != torch.float32:
        return None
    eager = ForwardEvaluator(cpu_forward(model, forward))
    kernel = ckernels.logistic_step() if use_c and isinstance(model, LogisticRegression) else None
    return LogisticErrors(model, kernel, fallback=eager) if kernel is not None else eager
