"""Chapter "Classifying MNIST digits using Logistic Regression" (logistic_sgd.py).

p(y | x) = softmax(x W + b); the prediction is the most probable class. W and b start at zero, as in the
tutorial, so the run is fully determined by the data order.
"""

from __future__ import annotations

import torch
from torch import nn


class LogisticRegression(nn.Module):
    def __init__(self, n_in: int = 784, n_out: int = 10) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.W = nn.Parameter(torch.zeros(n_in, n_out))  # [n_in, n_out], the tutorial's orientation
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, n_in] -> logits [n, n_out]; softmax(logits) is the tutorial's p_y_given_x."""
        return torch.addmm(self.b, x, self.W)

    def p_y_given_x(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    def weights(self) -> list[torch.Tensor]:
        """The matrices the L1/L2 penalties apply to (biases are not penalised, as in the tutorials)."""
        return [self.W]
