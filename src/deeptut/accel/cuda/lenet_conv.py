"""LeNet's forward pass with the convolution chosen for speed: the model's function, computed another way.

`LeNetForward(model)` is a callable with LeNet5's forward function; per conv-pool layer it runs

* channels-last (CPU only; `channels_last`): the input strided as NHWC and the kernels in channels-last
  format, so oneDNN's convolution and the 2x2 pooling run much faster (the tutorial LeNet on a 2-core CPU:
  ~2x). The conv kernels' summation order differs from NCHW's: results agree to float32 rounding, not bits;
* the convolution as one matrix product over the input's patches (`gemm`, per layer: `conv_valid_gemm`);
  on a GPU these few-channel 5x5 convolutions can run faster as one large SGEMM than through cuDNN
  (`conv = "auto"` measures both: `pick_conv`);
* the fused Triton conv-pool kernel (`triton`, per layer: its precision "ieee" | "tf32"; lenet_triton.py)
  in forward passes without gradients (evaluation), where the graph step chose the Triton layers.

The model (models/lenet.py) knows nothing of these: the step that chose them holds the `LeNetForward` and
computes its cost and its evaluations through it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from deeptut.config import TrainConfig
from deeptut.models.lenet import IMAGE, LeNet5, LeNetConvPoolLayer


def conv_valid_gemm(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """F.conv2d(x, W) ("valid" cross-correlation) as one matrix product over the input's patches (im2col).

    x [n, c, h, w], W [o, c, k, k] -> [n, o, h-k+1, w-k+1], returned as a channels-last view. The patches
    are a strided view of x (Tensor.unfold, no copy) gathered by one copy into [n*ho*wo, c*k*k]; autograd
    turns the view back into one scatter-add. The same function in float32 with another summation order.
    """
    n, c, h, w = x.shape
    o, k = W.shape[0], W.shape[-1]
    ho, wo = h - k + 1, w - k + 1
    patches = x.unfold(2, k, 1).unfold(3, k, 1)  # [n, c, ho, wo, k, k], a view
    cols = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)  # W's (c, i, j) order
    out = cols @ W.reshape(o, c * k * k).t()  # [n*ho*wo, o]
    return out.view(n, ho, wo, o).permute(0, 3, 1, 2)


class LeNetForward:
    """forward(x [n, 784]) -> logits [n, n_out]: LeNet5's function with the chosen convolutions."""

    def __init__(self, model: LeNet5, channels_last: bool = False, gemm: tuple[bool, bool] = (False, False),
                 triton: tuple[str | None, str | None] = (None, None)) -> None:
        self.model = model
        self.channels_last = channels_last  # CPU only: the conv part in NHWC memory format
        self.gemm = tuple(gemm)  # per layer (layer0, layer1): the convolution as a matrix product
        self.triton = tuple(triton)  # per layer: the Triton kernels' precision, or None (no-grad passes only)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.layer3(m.layer2(self.features(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv part: x [n, 784] -> layer2's input [n, nkerns[1] * 16] (Theano's .flatten(2) order)."""
        x = x.reshape(-1, 1, IMAGE, IMAGE)
        cl = self.channels_last and x.device.type == "cpu"
        if cl:  # the same numbers, strided as NHWC
            x = x.as_strided(x.shape, (IMAGE * IMAGE, 1, IMAGE, 1))
        m = self.model
        for layer, gemm, triton in zip((m.layer0, m.layer1), self.gemm, self.triton):
            x = self._layer(layer, x, cl, gemm, triton)
        return x.reshape(x.shape[0], -1)  # reshape copies NHWC back to (c, i, j) order: Theano's flatten(2)

    @staticmethod
    def _layer(layer: LeNetConvPoolLayer, x: torch.Tensor, channels_last: bool, gemm: bool,
               triton: str | None) -> torch.Tensor:
        if triton is not None and not (torch.is_grad_enabled() and (x.requires_grad or layer.W.requires_grad)):
            from deeptut.accel.cuda import lenet_triton  # the fused kernels (no autograd): evaluation on CUDA

            if lenet_triton.available(x.device):
                return lenet_triton.conv_pool_forward(x.contiguous(), layer.W, layer.b, layer.activation,
                                                      triton)[0]
        if gemm:
            conv = conv_valid_gemm(x, layer.W)
        else:
            W = layer.W.contiguous(memory_format=torch.channels_last) if channels_last else layer.W
            conv = F.conv2d(x, W)
        return layer.pool_activate(conv)


def pick_conv(forward: LeNetForward, batch_size: int, device: torch.device, repeats: int = 10) -> tuple[bool, bool]:
    """The fastest `gemm` setting for this model, batch size and device, measured: a forward and backward
    pass per setting (cuDNN or GEMM for each conv layer), timed with CUDA events after a warm-up. Uses no
    random numbers and leaves `forward`, the parameters and their gradients as they were."""
    model = forward.model
    x = torch.linspace(0.0, 1.0, batch_size * IMAGE * IMAGE, device=device).view(batch_size, -1)
    old, grads = forward.gemm, [p.grad for p in model.parameters()]
    times = {}
    try:
        for setting in ((False, False), (True, True), (False, True), (True, False)):
            forward.gemm = setting
            for _ in range(3):
                forward(x).sum().backward()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                forward(x).sum().backward()
            end.record()
            end.synchronize()
            times[setting] = start.elapsed_time(end)
    finally:
        forward.gemm = old
        for p, g in zip(model.parameters(), grads):
            p.grad = g
    return min(times, key=times.get)


def choose_forward(model: Any, cfg: TrainConfig, device: torch.device) -> LeNetForward | None:
    """The forward a LeNet step computes through (None for other models): channels-last on CPU with
    `fast_step` (`fast_step = false` gives the plain NCHW function), the convolutions as `cfg.conv` says
    (auto on CUDA: measured by pick_conv)."""
    if not isinstance(model, LeNet5):
        return None
    forward = LeNetForward(model, channels_last=cfg.fast_step)
    if cfg.conv == "auto" and device.type == "cuda":
        forward.gemm = pick_conv(forward, cfg.batch_size, device)  # cuDNN or GEMM per layer, measured
    else:
        forward.gemm = (cfg.conv == "gemm",) * 2
    return forward
