"""The tutorials' costs: negative log-likelihood, zero-one loss, and the L1 / squared-L2 penalties (used by
the reference step, deeptut/steps.py, and the evaluations of train/ and accel/)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_log_likelihood(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the minibatch of -log p(y | x). logits [n, n_out], y [n] int64 -> scalar."""
    return F.nll_loss(F.log_softmax(logits, dim=1), y)


def n_errors(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many predictions are wrong (an integer tensor; the tutorial's `errors` is this / n)."""
    return (logits.argmax(dim=1) != y).sum()


def wrong_predictions(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bool [n]: argmax(logits [n, k]) != y. On a CPU in numpy: torch's thread pool, woken for so small an
    op, fights BLAS's spinning threads (measured: 1.6 ms against ~0.1 ms for 3,600 rows)."""
    if logits.device.type == "cpu":
        return torch.from_numpy(logits.numpy().argmax(axis=1) != y.numpy())
    return logits.argmax(dim=1) != y


def errors(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Zero-one loss: the fraction of the minibatch misclassified."""
    return n_errors(logits, y).double() / y.numel()


def L1(weights: list[torch.Tensor]) -> torch.Tensor:
    return sum(w.abs().sum() for w in weights)


def L2_sqr(weights: list[torch.Tensor]) -> torch.Tensor:
    return sum((w * w).sum() for w in weights)
