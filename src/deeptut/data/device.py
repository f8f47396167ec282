"""Device-resident splits: the tutorials' "shared variables". Each split is moved to the device once; a
minibatch is a slice by index (a view, no copy). Shuffling permutes the whole split once per epoch on the
device, then slices views of the permuted copy (and `translated` moves the images of an epoch the same
way, data/augment.py)."""

from __future__ import annotations

import numpy as np
import torch


def check_device(device: str) -> str:
    """`device` if torch can run there now, else ConfigError naming it (a typo, or cuda without a GPU)."""
    from deeptut.errors import ConfigError

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r}: {e}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available here")
    return str(d)


class DeviceSplit:
    def __init__(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
                 device: torch.device | str = "cpu") -> None:
        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        self.x = x.to(device).contiguous()  # [n, 784] float32
        self.y = y.to(device=device, dtype=torch.int64).contiguous()  # [n]

    def __len__(self) -> int:
        return self.x.shape[0]

    def n_batches(self, batch_size: int) -> int:
        """Whole minibatches only: the remainder is dropped, as in the tutorial."""
        return len(self) // batch_size

    def minibatch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = slice(index * batch_size, (index + 1) * batch_size)
        return self.x[s], self.y[s]

    def permuted(self, perm: torch.Tensor) -> "DeviceSplit":
        """A copy of the split in the order `perm` (one gather per epoch; minibatches stay views)."""
        perm = perm.to(self.x.device)
        return DeviceSplit(self.x[perm], self.y[perm], self.x.device)

    def translated(self, dy: torch.Tensor, dx: torch.Tensor, side: int, max_shift: int) -> "DeviceSplit":
        """A copy with image i moved by (dy[i], dx[i]) pixels (data/augment.py; one gather on the device)."""
        from deeptut.data.augment import translate

        return DeviceSplit(translate(self.x, dy, dx, side, max_shift), self.y, self.x.device)
