"""The step protocol and the reference step, the tutorials' arithmetic: `step(x, y, learning_rate) -> cost`
for one minibatch, `step.run(split, first, count, lr_at) -> cost` for `count` consecutive minibatches.

Below both the loops (train/) and the accelerators (accel/): the loop calls a step, accel/ builds faster
ones on `EagerStep` and falls back to `AutogradStep`; neither imports the other's modules for it.

`AutogradStep` is the reference: cost = NLL + L1_reg * L1 + L2_reg * L2_sqr, gradients by autograd,
update by torch.optim.SGD (momentum, Nesterov and weight decay for the fast presets). Faster steps that
compute the same arithmetic live in deeptut.accel, whose `make_train_step` picks one; every step has this
interface (`step`, `run`, `state_dict`, `load_state_dict`), so the loop has one way to call any of them.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from deeptut.config import TrainConfig
from deeptut.losses import L1, L2_sqr, negative_log_likelihood


class EagerStep:
    """`run` for a step that updates one minibatch per call: a plain loop over `self(x, y, lr)`."""

    batch_size: int
    evaluator: Any = None  # a faster evaluation in the step's own arithmetic (deeptut.accel), or None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, learning_rate: float) -> Any:
        raise NotImplementedError

    def run(self, split: Any, first: int, count: int, lr_at: Callable[[int], float]) -> Any:
        """Updates on minibatches first .. first+count-1 of `split` (anything with `minibatch(i, batch_size)
        -> (x, y)`); lr_at(k) is the step size of the k-th. Returns the summed cost (a float or a tensor)."""
        total = None
        for k in range(count):
            x, y = split.minibatch(first + k, self.batch_size)
            cost = self(x, y, lr_at(k))
            total = cost if total is None else total + cost
        return total


class AutogradStep(EagerStep):
    """`forward` is the function the cost is computed through: the model itself, or (deeptut.accel) the same
    function computed another way (LeNet's convolutions channels-last or as matrix products)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.model = model
        self.forward = forward if forward is not None else model
        self.batch_size = cfg.batch_size
        self.L1_reg, self.L2_reg = cfg.L1_reg, cfg.L2_reg
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)

    def cost(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cost = negative_log_likelihood(self.forward(x), y)
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
