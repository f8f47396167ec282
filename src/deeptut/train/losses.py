"""The tutorials' costs: negative log-likelihood, zero-one loss, and the L1 / squared-L2 penalties."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_log_likelihood(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the minibatch of -log p(y | x). logits [n, n_out], y [n] int64 -> scalar."""
    return F.nll_loss(F.log_softmax(logits, dim=1), y)


def n_errors(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many predictions are wrong (an integer tensor; the tutorial's `errors` is this / n)."""
    return (logits.argmax(dim=1) != y).sum()


def errors(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Zero-one loss: the fraction of the minibatch misclassified."""
    return n_errors(logits, y).double() / y.numel()


def L1(weights: list[torch.Tensor]) -> torch.Tensor:
    return sum(w.abs().sum() for w in weights)


def L2_sqr(weights: list[torch.Tensor]) -> torch.Tensor:
    return sum((w * w).sum() for w in weights)
