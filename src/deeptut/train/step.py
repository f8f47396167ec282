"""One minibatch SGD update: `step(x, y, learning_rate) -> cost`.

`AutogradStep` is the reference: cost = NLL + L1_reg * L1 + L2_reg * L2_sqr, gradients by autograd,
update by torch.optim.SGD (momentum, Nesterov and weight decay for the fast presets). Hand-fused steps
compute the same arithmetic without autograd's per-op overhead where that overhead dominates (the
tutorials' small minibatches on a CPU); `make_train_step` picks one.
"""

from __future__ import annotations

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

    On a 2-core CPU, numpy's OpenBLAS runs the skinny products of this model (600x784 by 784x10) several
    times faster than torch's CPU matmul, and the step has no autograd bookkeeping. Parameters are updated in
    place through numpy views of the model's tensors, so the model always holds the current values.
    Gradient of the mean NLL w.r.t. the logits: (softmax - onehot) / n.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.W = model.W.detach().numpy()  # [n_in, n_out], shares memory with the model
        self.b = model.b.detach().numpy()  # [n_out]
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        n, k = cfg.batch_size, self.W.shape[1]
        self.z = np.empty((n, k), np.float32)  # logits, then softmax, then d cost / d logits
        self.gW = np.empty_like(self.W)
        self.rows = np.arange(n)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> float:
        xn, yn, z = x.numpy(), y.numpy(), self.z
        n = xn.shape[0]
        np.matmul(xn, self.W, out=z)
        z += self.b
        z -= z.max(axis=1, keepdims=True)
        logp_y = z[self.rows, yn]  # [n] shifted logits of the true classes
        np.exp(z, out=z)
        s = z.sum(axis=1, keepdims=True)  # [n, 1]
        cost = float(np.mean(np.log(s[:, 0]) - logp_y))
        z /= s  # softmax
        z[self.rows, yn] -= 1.0
        z *= np.float32(1.0 / n)
        np.matmul(xn.T, z, out=self.gW)
        gb = z.sum(axis=0)
        if self.L1_reg:
            self.gW += np.float32(self.L1_reg) * np.sign(self.W)
        if self.L2_reg:
            self.gW += np.float32(2 * self.L2_reg) * self.W
        lr = np.float32(learning_rate)
        self.W -= lr * self.gW
        self.b -= lr * gb
        return cost

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def make_train_step(model: nn.Module, cfg: TrainConfig, device: torch.device):
    plain_sgd = cfg.momentum == 0 and cfg.weight_decay == 0
    if cfg.fast_step and device.type == "cpu" and plain_sgd and cfg.model == "logistic":
        return LogisticFusedStep(model, cfg)
    return AutogradStep(model, cfg)
