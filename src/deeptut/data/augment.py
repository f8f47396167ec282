"""Random translations of the training images, redrawn every epoch (the fast presets' data augmentation).

The tutorials train on the 50,000 images as they are. Moving each image by a few pixels, differently each
epoch, is the classic cheap augmentation for MNIST: a digit shifted by one or two pixels is still the same
digit, and a network that has seen the moves generalises better at the same number of epochs (on the CPU,
mean test error over seeds 1-5; BENCHMARKS.md): lenet-fast-gpu's recipe, 12 epochs, 0.79 % without and
0.57 % with moves of up to 2 pixels; mlp-fast, 20 epochs, 1.63 % without and 1.12 % with moves of 1 pixel
(and 1.12 % at 16 epochs, the preset now).
Only the training split is moved; validation and test never are.

The shifts of an epoch are a function of (seed, epoch) only, like its order, so a resumed run and a
streamed run see the same images as the uninterrupted resident run. Pixels moved in from outside the
image are 0 (MNIST's background).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROWS_PER_GATHER = 4096  # rows translated per gather: bounds the int64 index at ~25 MB for 28x28 images


def epoch_shifts(seed: int, epoch: int, n: int, max_shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy [n], dx [n]), int64 in [-max_shift, max_shift]: the move of the i-th example of the epoch (in the
    epoch's order). Its own generator, so the data order (loop.epoch_permutation) does not depend on it."""
    g = torch.Generator().manual_seed((seed * 100_003 + epoch) * 2 + 1)
    d = torch.randint(-max_shift, max_shift + 1, (2, n), generator=g)
    return d[0], d[1]


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, side: int, max_shift: int) -> torch.Tensor:
    """Rows of x [n, side*side] (any dtype) with image i moved down by dy[i] and right by dx[i] pixels
    (negative: up, left; |d| <= max_shift): out[i, r, c] = x[i, r - dy[i], c - dx[i]], 0 outside. On x's
    device; dy and dx are moved there. A new tensor [n, side*side]."""
    n, s, p = x.shape[0], max_shift, side + 2 * max_shift
    if x.shape[1:] != (side * side,):
        raise ValueError(f"expected rows of {side}x{side} = {side * side} pixels, got shape {tuple(x.shape)}")
    out = torch.empty_like(x)
    if n == 0:
        return out
    if s == 0:
        return out.copy_(x)
    dy, dx = dy.to(x.device), dx.to(x.device)
    r = torch.arange(side, device=x.device)
    for lo in range(0, n, ROWS_PER_GATHER):
        hi = min(n, lo + ROWS_PER_GATHER)
        padded = F.pad(x[lo:hi].view(hi - lo, side, side), (s, s, s, s)).view(hi - lo, p * p)
        rows = (r + s)[None, :, None] - dy[lo:hi, None, None]  # [m, side, 1]: source row in `padded`
        cols = (r + s)[None, None, :] - dx[lo:hi, None, None]  # [m, 1, side]
        torch.gather(padded, 1, (rows * p + cols).view(hi - lo, side * side), out=out[lo:hi])
    return out
