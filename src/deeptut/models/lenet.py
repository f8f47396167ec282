"""Chapter "Convolutional Neural Networks (LeNet)" (convolutional_mlp.py).

    layer0  LeNetConvPoolLayer  1 -> 20 maps, 5x5 "valid" conv, 2x2 max-pool, + b, tanh   28x28 -> 12x12
    layer1  LeNetConvPoolLayer 20 -> 50 maps, same                                        12x12 -> 4x4
    layer2  HiddenLayer        800 -> 500, tanh (input: layer1's output flattened as Theano's .flatten(2))
    layer3  LogisticRegression 500 -> 10

Initialisation follows the tutorial with one `numpy.random.RandomState(23455)` drawn in construction order:
layer0.W (shape (20, 1, 5, 5)), layer1.W ((50, 20, 5, 5)), layer2.W ((800, 500)); conv kernels from
U(+-sqrt(6 / (fan_in + fan_out))) with fan_in = in_maps * 5 * 5 and fan_out = out_maps * 5 * 5 // 4 (the
tutorial's integer division: 312 for layer1, not 312.5); layer2 as the MLP's hidden layer; biases and
layer3 zero.

Theano's conv2d is a true convolution (it flips the kernels); PyTorch's conv2d is a cross-correlation. The
drawn kernels are therefore stored flipped along both spatial axes, so that layer0.W / layer1.W are
PyTorch conv weights and the model computes exactly the tutorial's function with the tutorial's initial
values. (Flipping is exact: the stored numbers are the drawn numbers, reordered.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deeptut.models.logistic import LogisticRegression
from deeptut.models.mlp import ACTIVATIONS, HiddenLayer

DEFAULT_INIT_SEED = 23455  # convolutional_mlp.py: rng = numpy.random.RandomState(23455)
IMAGE = 28  # MNIST images are 28x28
FILTER = 5
POOL = 2


def tutorial_conv_weights(rng: np.random.RandomState, filter_shape: tuple[int, int, int, int],
                          poolsize: tuple[int, int] = (POOL, POOL)) -> np.ndarray:
    """The drawn values of LeNetConvPoolLayer.W (Theano orientation: applied as a true convolution)."""
    fan_in = int(np.prod(filter_shape[1:]))
    fan_out = int(filter_shape[0] * np.prod(filter_shape[2:]) // np.prod(poolsize))
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return np.asarray(rng.uniform(low=-bound, high=bound, size=filter_shape), dtype=np.float32)


def theano_to_torch_kernel(W: np.ndarray) -> np.ndarray:
    """Flip both spatial axes: conv2d_theano(x, W) == cross_correlation(x, W[..., ::-1, ::-1])."""
    return np.ascontiguousarray(W[..., ::-1, ::-1])


class LeNetConvPoolLayer(nn.Module):
    """activation(maxpool2x2(conv_valid(x, W)) + b); W [out_maps, in_maps, 5, 5] in PyTorch's layout."""

    def __init__(self, in_maps: int, out_maps: int, activation: str = "tanh",
                 rng: np.random.RandomState | None = None) -> None:
        super().__init__()
        shape = (out_maps, in_maps, FILTER, FILTER)
        self.activation = activation
        W = theano_to_torch_kernel(tutorial_conv_weights(rng, shape)) if rng is not None \
            else np.zeros(shape, np.float32)
        self.W = nn.Parameter(torch.from_numpy(W))
        self.b = nn.Parameter(torch.zeros(out_maps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, in_maps, h, w] -> [n, out_maps, (h - 4) // 2, (w - 4) // 2]."""
        return self.pool_activate(F.conv2d(x, self.W))

    def pool_activate(self, conv: torch.Tensor) -> torch.Tensor:
        """The layer after its convolution: max-pool 2x2, then + b, then the activation."""
        pooled = F.max_pool2d(conv, POOL)
        return ACTIVATIONS[self.activation](pooled + self.b.view(1, -1, 1, 1))  # bias after pooling, as Theano


class LeNet5(nn.Module):
    """forward(x [n, 784]) -> logits [n, n_out]."""

    def __init__(self, nkerns: tuple[int, int] = (20, 50), n_hidden: int = 500, n_out: int = 10,
                 activation: str = "tanh", init_seed: int | None = None) -> None:
        super().__init__()
        self.nkerns, self.n_hidden, self.n_out, self.activation = tuple(nkerns), n_hidden, n_out, activation
        rng = np.random.RandomState(DEFAULT_INIT_SEED if init_seed is None else init_seed)
        side = ((IMAGE - FILTER + 1) // POOL - FILTER + 1) // POOL  # 28 -> 24 -> 12 -> 8 -> 4
        self.layer0 = LeNetConvPoolLayer(1, nkerns[0], activation, rng)
        self.layer1 = LeNetConvPoolLayer(nkerns[0], nkerns[1], activation, rng)
        self.layer2 = HiddenLayer(nkerns[1] * side * side, n_hidden, activation, rng)
        self.layer3 = LogisticRegression(n_hidden, n_out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv part: x [n, 784] -> layer2's input [n, nkerns[1] * 16] (Theano's .flatten(2) order)."""
        h = self.layer1(self.layer0(x.reshape(-1, 1, IMAGE, IMAGE)))
        return h.reshape(h.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.features(x)))

    def weights(self) -> list[torch.Tensor]:
        """The matrices the L1 / L2 penalties apply to (the tutorial's LeNet uses none; kept for the option)."""
        return [self.layer0.W, self.layer1.W, self.layer2.W, self.layer3.W]
