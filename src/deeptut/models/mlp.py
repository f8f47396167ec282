"""Chapter "Multilayer Perceptron" (mlp.py): a `HiddenLayer` with a `LogisticRegression` layer on top.

    h = tanh(x W_h + b_h)            hiddenLayer        W_h [n_in, n_hidden]
    p(y | x) = softmax(h W_o + b_o)  logRegressionLayer W_o [n_hidden, n_out]

Initialisation is the tutorial's: the hidden weights are drawn from
`numpy.random.RandomState(1234).uniform(-sqrt(6 / (n_in + n_out)), +sqrt(6 / (n_in + n_out)), (n_in, n_out))`,
cast to float32 (theano.config.floatX) and, for a sigmoid unit, multiplied by 4 (Glorot & Bengio 2010);
the hidden bias and the whole output layer start at zero. The cost the tutorial minimises is
NLL + L1_reg * L1 + L2_reg * L2_sqr over the two weight matrices (`weights()`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deeptut.models.logistic import LogisticRegression

DEFAULT_INIT_SEED = 1234  # mlp.py: rng = numpy.random.RandomState(1234)

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": F.relu}


def tutorial_uniform(rng: np.random.RandomState, n_in: int, n_out: int, activation: str) -> np.ndarray:
    """The tutorial's W for a hidden layer: U(+-sqrt(6 / (n_in + n_out))), float32, x4 for sigmoid.

    relu is not in the tutorial; it gets the tanh recipe.
    """
    bound = np.sqrt(6.0 / (n_in + n_out))
    W = np.asarray(rng.uniform(low=-bound, high=bound, size=(n_in, n_out)), dtype=np.float32)
    if activation == "sigmoid":
        W *= 4
    return W


class HiddenLayer(nn.Module):
    """A fully connected layer with a nonlinearity: activation(x W + b), W [n_in, n_out] (x @ W orientation).

    With `rng` None the weights start at zero (a shell to load saved parameters into).
    """

    def __init__(self, n_in: int, n_out: int, activation: str = "tanh",
                 rng: np.random.RandomState | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.n_in, self.n_out, self.activation = n_in, n_out, activation
        W = tutorial_uniform(rng, n_in, n_out, activation) if rng is not None else np.zeros((n_in, n_out), np.float32)
        self.W = nn.Parameter(torch.from_numpy(W))
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](torch.addmm(self.b, x, self.W))


class MLP(nn.Module):
    """784-500-10 with tanh hidden units in the tutorial. forward(x [n, n_in]) -> logits [n, n_out]."""

    def __init__(self, n_in: int = 784, n_hidden: int = 500, n_out: int = 10, activation: str = "tanh",
                 init_seed: int | None = None) -> None:
        super().__init__()
        self.n_in, self.n_hidden, self.n_out, self.activation = n_in, n_hidden, n_out, activation
        rng = np.random.RandomState(DEFAULT_INIT_SEED if init_seed is None else init_seed)
        self.hiddenLayer = HiddenLayer(n_in, n_hidden, activation, rng)
        self.logRegressionLayer = LogisticRegression(n_hidden, n_out)  # zero-initialised, as in the tutorial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logRegressionLayer(self.hiddenLayer(x))

    def weights(self) -> list[torch.Tensor]:
        """The matrices the L1 / L2 penalties apply to: hiddenLayer.W and logRegressionLayer.W."""
        return [self.hiddenLayer.W, self.logRegressionLayer.W]
