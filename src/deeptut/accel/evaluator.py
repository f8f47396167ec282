"""Evaluation through a step's own forward function.

The loop's `evaluate` asks `evaluator.misclassified(split, n, rows, batch_size)` for the bool [n] vector of
wrong predictions and computes `model(x)` itself where the step brings no evaluator (or it answers None).
A step that computes the model's function another way (LeNet's convolutions channels-last, numpy's BLAS
for the output layer on a CPU) evaluates through that same function, so evaluation follows the arithmetic
training used.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from deeptut.data.stream import row_chunks
from deeptut.losses import wrong_predictions


class ForwardEvaluator:
    """misclassified(...) by `forward` (x [n, n_in] -> logits [n, n_out]) over the split's rows in chunks."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.forward = forward

    @torch.no_grad()
    def misclassified(self, split: Any, n: int, rows: int, batch_size: int) -> torch.Tensor:
        return torch.cat([wrong_predictions(self.forward(x), y) for x, y in row_chunks(split, n, rows, batch_size)])
