"""Chapter "Stacked Denoising Autoencoders (SdA)" (SdA.py): an MLP of sigmoid layers whose weights are first
pre-trained, layer by layer, as denoising autoencoders, then fine-tuned with the labels.

    h_0 = x                                               x [n, n_ins]
    h_k = sigmoid(h_{k-1} W_k + b_k), k = 1..n_layers     sigmoid_layers[k-1]  W_k [n_{k-1}, n_k]
    p(y | x) = softmax(h_L W_o + b_o)                     logLayer             W_o [n_L, n_outs]

dA_layers[k] shares W and b (its hidden bias) with sigmoid_layers[k] and has its own visible bias b_prime.
Greedy pre-training trains dA_layers[k] on `layer_input(k, x)`, the *uncorrupted* output of the layers below
(the corruption applies to the dA's own input only); since those layers do not change while layer k is
trained, their outputs can be computed once per layer (the tutorials' tip) - `layer_input` is the function to
call for that. Fine-tuning then trains the whole stack through `forward` (logits) like the MLP.

Initialisation is SdA.py's: `numpy_rng = numpy.random.RandomState(89677)`; the SdA draws
`numpy_rng.randint(2 ** 30)` for its Theano RandomStreams (kept here as `corruption_seed`, shared by all the
dAs, as the one theano_rng is), then each HiddenLayer draws its W in order (mlp.py's recipe: U(+-sqrt(6 /
(n_in + n_out))) times 4 for sigmoid); the dAs reuse those W and draw nothing; all biases and the logistic
layer start at zero.

Parameters: `sigmoid_layers` and `logLayer` are registered (the tutorial's `self.params`, what fine-tuning
updates); the dAs are kept in a plain tuple so that the shared tensors appear once in `state_dict()`, and
their visible biases are registered here as `b_prime` (pre-training state a checkpoint must hold).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from deeptut.models.da import dA
from deeptut.models.logistic import LogisticRegression
from deeptut.models.mlp import HiddenLayer, SigmoidStack

DEFAULT_INIT_SEED = 89677  # SdA.py's test_SdA: numpy_rng = numpy.random.RandomState(89677)


def check_layer_sizes(hidden_layers_sizes: Sequence[int], where: str) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in hidden_layers_sizes)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"{where}: hidden_layers_sizes must be one or more sizes >= 1 (got {list(sizes)})")
    return sizes


class SdA(SigmoidStack):
    """forward(x [n, n_ins]) -> logits [n, n_outs]; softmax(logits) is the tutorial's p_y_given_x."""

    def __init__(self, n_ins: int = 784, hidden_layers_sizes: Sequence[int] = (1000, 1000, 1000),
                 n_outs: int = 10, init_seed: int | None = None) -> None:
        super().__init__()
        sizes = check_layer_sizes(hidden_layers_sizes, "SdA")
        self.n_ins, self.hidden_layers_sizes, self.n_outs = n_ins, sizes, n_outs
        self.n_layers = len(sizes)
        numpy_rng = np.random.RandomState(DEFAULT_INIT_SEED if init_seed is None else init_seed)
        self.corruption_seed = int(numpy_rng.randint(2 ** 30))  # SdA.py: RandomStreams(numpy_rng.randint(2 ** 30))
        ins = (n_ins,) + sizes[:-1]
        self.sigmoid_layers = nn.ModuleList(HiddenLayer(n_in, n_out, "sigmoid", numpy_rng)
                                            for n_in, n_out in zip(ins, sizes))
        self.b_prime = nn.ParameterList(nn.Parameter(torch.zeros(n_in)) for n_in in ins)
        self.dA_layers = tuple(dA(n_in, n_out, numpy_rng, self.corruption_seed, W=layer.W, bhid=layer.b,
                                  bvis=b_prime)
                               for n_in, n_out, layer, b_prime in zip(ins, sizes, self.sigmoid_layers, self.b_prime))
        self.logLayer = LogisticRegression(sizes[-1], n_outs)

