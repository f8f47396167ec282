"""Chapter "Deep Belief Networks" (DBN.py): sigmoid layers that share their weights and hidden biases with a
stack of RBMs, pre-trained greedily with CD-k, then a logistic layer on top and supervised fine-tuning.

    h_0 = x                                           x [n, n_ins]
    h_k = sigmoid(h_{k-1} W_k + b_k)                  sigmoid_layers[k-1]   W_k [n_{k-1}, n_k]
    p(y | x) = softmax(h_L W_o + b_o)                 logLayer

rbm_layers[k] has W = sigmoid_layers[k].W, hbias = sigmoid_layers[k].b and its own vbias; it is trained on
`layer_input(k, x)`, the mean-field (sigmoid) output of the layers below, as DBN.py feeds
`self.sigmoid_layers[-1].output` to the next RBM (not a sample).

Initialisation is DBN.py's: test_DBN's `numpy_rng = numpy.random.RandomState(123)`; the DBN draws
`numpy_rng.randint(2 ** 30)` for its MRG_RandomStreams (kept as `sample_seed`, shared by the RBMs), then
each HiddenLayer draws its W (mlp.py's recipe, x4 for sigmoid); the RBMs reuse them and draw nothing. As in
SdA, the RBMs live in a plain tuple (the shared tensors appear once in `state_dict()`) and their visible
biases are registered here as `vbias`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from deeptut.models.logistic import LogisticRegression
from deeptut.models.mlp import HiddenLayer, SigmoidStack
from deeptut.models.rbm import RBM
from deeptut.models.sda import check_layer_sizes

DEFAULT_INIT_SEED = 123  # DBN.py's test_DBN: numpy_rng = numpy.random.RandomState(123)


class DBN(SigmoidStack):
    """forward(x [n, n_ins]) -> logits [n, n_outs]; softmax(logits) is the tutorial's p_y_given_x."""

    def __init__(self, n_ins: int = 784, hidden_layers_sizes: Sequence[int] = (1000, 1000, 1000),
                 n_outs: int = 10, init_seed: int | None = None) -> None:
        super().__init__()
        sizes = check_layer_sizes(hidden_layers_sizes, "DBN")
        self.n_ins, self.hidden_layers_sizes, self.n_outs = n_ins, sizes, n_outs
        self.n_layers = len(sizes)
        numpy_rng = np.random.RandomState(DEFAULT_INIT_SEED if init_seed is None else init_seed)
        self.sample_seed = int(numpy_rng.randint(2 ** 30))  # DBN.py: MRG_RandomStreams(numpy_rng.randint(2 ** 30))
        ins = (n_ins,) + sizes[:-1]
        self.sigmoid_layers = nn.ModuleList(HiddenLayer(n_in, n_out, "sigmoid", numpy_rng)
                                            for n_in, n_out in zip(ins, sizes))
        self.vbias = nn.ParameterList(nn.Parameter(torch.zeros(n_in)) for n_in in ins)
        self.rbm_layers = tuple(RBM(n_in, n_out, numpy_rng, self.sample_seed, W=layer.W, hbias=layer.b,
                                    vbias=vbias)
                                for n_in, n_out, layer, vbias in zip(ins, sizes, self.sigmoid_layers, self.vbias))
        self.logLayer = LogisticRegression(sizes[-1], n_outs)

