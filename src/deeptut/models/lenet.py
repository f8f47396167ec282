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


def conv_valid_gemm(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """F.conv2d(x, W) ("valid" cross-correlation) as one matrix product over the input's patches (im2col).

    x [n, c, h, w], W [o, c, k, k] -> [n, o, h-k+1, w-k+1], returned as a channels-last view. The patches
    are a strided view of x (Tensor.unfold, no copy) gathered by one copy into [n*ho*wo, c*k*k]; autograd
    turns the view back into one scatter-add. The same function in float32 with another summation order;
    on a GPU these few-channel 5x5 convolutions can run faster as one large SGEMM (and its two backward
    products) than through cuDNN (`conv = "auto"` measures both; see pick_conv).
    """
    n, c, h, w = x.shape
    o, k = W.shape[0], W.shape[-1]
    ho, wo = h - k + 1, w - k + 1
    patches = x.unfold(2, k, 1).unfold(3, k, 1)  # [n, c, ho, wo, k, k], a view
    cols = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)  # W's (c, i, j) order
    out = cols @ W.reshape(o, c * k * k).t()  # [n*ho*wo, o]
    return out.view(n, ho, wo, o).permute(0, 3, 1, 2)


def pick_conv(model: "LeNet5", batch_size: int, device: torch.device, repeats: int = 10) -> tuple[bool, bool]:
    """The fastest `conv_gemm` setting for this model, batch size and device, measured: a forward and
    backward pass per setting (cuDNN or GEMM for each conv layer), timed with CUDA events after a warm-up.
    Uses no random numbers and leaves the parameters and their gradients as they were."""
    x = torch.linspace(0.0, 1.0, batch_size * IMAGE * IMAGE, device=device).view(batch_size, -1)
    old, grads = model.conv_gemm, [p.grad for p in model.parameters()]
    times = {}
    try:
        for setting in ((False, False), (True, True), (False, True), (True, False)):
            model.conv_gemm = setting
            for _ in range(3):
                model(x).sum().backward()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                model(x).sum().backward()
            end.record()
            end.synchronize()
            times[setting] = start.elapsed_time(end)
    finally:
        model.conv_gemm = old
        for p, g in zip(model.parameters(), grads):
            p.grad = g
    return min(times, key=times.get)


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

    def forward(self, x: torch.Tensor, channels_last: bool = False, gemm: bool = False,
                triton: str | None = None) -> torch.Tensor:
        if triton is not None and not (torch.is_grad_enabled() and (x.requires_grad or self.W.requires_grad)):
            from deeptut.models import lenet_triton  # the fused kernels (no autograd): evaluation on CUDA

            if lenet_triton.available(x.device):
                return lenet_triton.conv_pool_forward(x.contiguous(), self.W, self.b, self.activation, triton)[0]
        if gemm:
            conv = conv_valid_gemm(x, self.W)
        else:
            W = self.W.contiguous(memory_format=torch.channels_last) if channels_last else self.W
            conv = F.conv2d(x, W)
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
        # CPU only: run the conv part in channels-last (NHWC) memory format. The function is the same; the
        # conv kernels' summation order differs from NCHW's, so results agree to float32 rounding, not bits.
        # `make_train_step` sets it from cfg.fast_step; `fast_step = false` gives the plain NCHW model.
        self.channels_last = True
        # Convolutions as matrix products (conv_valid_gemm) instead of cuDNN: per layer, (layer0, layer1).
        self.conv_gemm = (False, False)
        # Per layer, the Triton kernels' precision ("ieee" | "tf32") where the training step chose the fused
        # Triton layer (train/lenet_step.py); forward passes without gradients then use it too.
        self.conv_triton: tuple[str | None, str | None] = (None, None)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv part: x [n, 784] -> layer2's input [n, nkerns[1] * 16] (Theano's .flatten(2) order)."""
        x = x.reshape(-1, 1, IMAGE, IMAGE)
        cl = self.channels_last and x.device.type == "cpu"
        if cl:  # the same numbers, strided as NHWC: oneDNN's conv and the 2x2 pooling are much faster so
            x = x.as_strided(x.shape, (IMAGE * IMAGE, 1, IMAGE, 1))
        (g0, g1), (t0, t1) = self.conv_gemm, self.conv_triton
        h = self.layer1(self.layer0(x, cl, g0, t0), cl, g1, t1)
        return h.reshape(h.shape[0], -1)  # reshape copies NHWC back to (c, i, j) order: Theano's flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.features(x)))

    def weights(self) -> list[torch.Tensor]:
        """The matrices the L1 / L2 penalties apply to (the tutorial's LeNet uses none; kept for the option)."""
        return [self.layer0.W, self.layer1.W, self.layer2.W, self.layer3.W]
