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


class SigmoidStack(nn.Module):
    """The supervised network of the SdA and DBN chapters ("after pretraining, the SdA is dealt with as a
    normal MLP"): `sigmoid_layers` (HiddenLayers) then `logLayer`. A subclass builds those two (and
    `n_layers`) in its own initialisation order; this class gives what fine-tuning and pre-training read."""

    sigmoid_layers: nn.ModuleList
    logLayer: LogisticRegression
    n_layers: int

    def layer_input(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """The input of layer k (0-based): x for k = 0, else the sigmoid output of layer k - 1 (of the
        uncorrupted x). [n, n_ins] -> [n, n_in of layer k]; k = n_layers gives the logistic layer's input."""
        if not 0 <= k <= self.n_layers:
            raise ValueError(f"layer_input: k must be in [0, {self.n_layers}] (got {k})")
        for layer in self.sigmoid_layers[:k]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logLayer(self.layer_input(self.n_layers, x))

    def p_y_given_x(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    def weights(self) -> list[torch.Tensor]:
        """The weight matrices of the supervised network (L1/L2 would apply to these; SdA.py and DBN.py use
        neither)."""
        return [layer.W for layer in self.sigmoid_layers] + [self.logLayer.W]

    def finetune_parameters(self) -> list[nn.Parameter]:
        """The tutorial's `self.params`: each layer's W, b, then the logistic layer's W, b (not the
        pre-training-only visible biases)."""
        return [p for layer in self.sigmoid_layers for p in (layer.W, layer.b)] + [self.logLayer.W, self.logLayer.b]
