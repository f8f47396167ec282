"""Input normalisation: x -> (x - mean) / std, with statistics of the training split only.

mode "none" is the identity (the tutorials' inputs, pixels in [0, 1): bit-exactness untouched).
mode "standard" subtracts a mean and divides by a standard deviation, either
  * global (per_pixel=False): one mean and one std over every pixel of every training image
    (deeptut's 50,000-image training splits: MNIST 0.1304 and 0.3073, Fashion-MNIST 0.2844 and 0.3514), or
  * per pixel (per_pixel=True): a mean and a std for each input position, over the training images.

Zero and near-zero variance (per pixel): MNIST's border pixels are 0 in every training image, and some
pixels are lit in only a handful; dividing by their std would send a test image's stray stroke there to
hundreds or infinity. So each per-pixel std is floored at `std_floor` x the global std (default 0.1: MNIST
~0.031, so a pixel never lit in training maps a test value of 1 to at most ~32, and the training images'
values there stay exactly 0 after the mean is subtracted). The floor applies to 238 of MNIST's 784 pixels
(67 have zero variance) and 36 of Fashion-MNIST's; the largest standardised value is then 32.4 (MNIST) and
28.3 (Fashion-MNIST), training and test alike.

Augmentation: data/augment.py pads moved images with 0, the raw background. After normalisation the
background is apply(0) = -mean / std (global MNIST: -0.42), so normalise after moving the images (per
minibatch, `apply` on the device tensor) or pad with the normalised background.

If the whole training split is constant (global std 0) the std used is 1: the mean is subtracted and
nothing is scaled.

The statistics are computed in float64 and stored as plain floats / lists (to_dict, from_dict) for
model.json; `apply` computes in float32, the dtype of the splits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptut.errors import CheckpointError

MODES = ("none", "standard")


class Normalizer:
    def __init__(self, mode: str = "none", per_pixel: bool = False, std_floor: float = 0.1) -> None:
        if mode not in MODES:
            raise ValueError(f"normalize must be one of {', '.join(MODES)}, got {mode!r}")
        if not (math.isfinite(std_floor) and std_floor >= 0):
            raise ValueError(f"std_floor must be a finite fraction >= 0 of the global std, got {std_floor}")
        self.mode = mode
        self.per_pixel = bool(per_pixel)
        self.std_floor = float(std_floor)  # fraction of the global std; typical 0.1
        self.mean: np.ndarray | None = None  # float64, shape () global or the input's shape per pixel
        self.std: np.ndarray | None = None  # the std used (floored), same shape; > 0 everywhere
        self._torch: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]] = {}  # (device, dtype) cache

    @property
    def fitted(self) -> bool:
        return self.mode == "none" or self.mean is not None

    def fit(self, train_x: np.ndarray | torch.Tensor) -> "Normalizer":
        """Statistics of the training split's inputs, [n, ...] (e.g. [n, 784]); nothing for mode "none"."""
        self._torch.clear()
        if self.mode == "none":
            return self
        x = train_x.detach().cpu().numpy() if isinstance(train_x, torch.Tensor) else np.asarray(train_x)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"normalize: fit needs a training split [n, ...] with n > 0, got shape "
                             f"{x.shape}")
        x = x.astype(np.float64, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("normalize: the training split has non-finite inputs")
        g_mean, g_std = float(x.mean()), float(x.std())
        if not self.per_pixel:
            self.mean = np.asarray(g_mean)
            self.std = np.asarray(g_std if g_std > 0 else 1.0)
            return self
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        floor = self.std_floor * g_std
        self.std = np.maximum(std, floor) if g_std > 0 else np.ones_like(std)
        self.std[self.std <= 0] = 1.0  # std_floor 0 and a constant pixel: shift only
        return self

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """(x - mean) / std, shape [n, ...] like the training split (float32; a new array or tensor);
        mode "none" returns x itself."""
        if self.mode == "none":
            return x
        if self.mean is None or self.std is None:
            raise RuntimeError("normalize: apply before fit (or from_dict)")
        if self.per_pixel and tuple(x.shape[1:]) != self.mean.shape:
            raise ValueError(f"normalize: inputs of shape {tuple(x.shape[1:])} per example, but the "
                             f"statistics are for {self.mean.shape}")
        if isinstance(x, torch.Tensor):
            key = (x.device, torch.float32)
            if key not in self._torch:
                self._torch[key] = (torch.as_tensor(self.mean, dtype=torch.float32, device=x.device),
                                    torch.as_tensor(self.std, dtype=torch.float32, device=x.device))
            mean, std = self._torch[key]
            return (x.to(torch.float32) - mean) / std
        mean32, std32 = self.mean.astype(np.float32), self.std.astype(np.float32)
        return (np.asarray(x, dtype=np.float32) - mean32) / std32

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for model.json: {"mode": "none"} or mode, per_pixel, std_floor, mean, std (floats,
        or nested lists in the input's shape)."""
        if self.mode == "none":
            return {"mode": "none"}
        if self.mean is None or self.std is None:
            raise RuntimeError("normalize: to_dict before fit")
        return {"mode": self.mode, "per_pixel": self.per_pixel, "std_floor": self.std_floor,
                "mean": self.mean.tolist(), "std": self.std.tolist()}

    def saved(self) -> dict[str, Any] | None:
        """What model.json's "normalize" holds for this normaliser (store/rundir.py save_model writes it as
        given): None for mode "none" (model.json then has no "normalize", as before it existed)."""
        return None if self.mode == "none" else self.to_dict()

    @classmethod
    def from_saved(cls, stats: dict[str, Any] | None, where: str | Path = "model.json") -> "Normalizer":
        """The normaliser of a saved run from model.json's "normalize" (store/rundir.py
        saved_normalization): None (absent) is mode "none"; a bad value is a CheckpointError naming `where`."""
        if stats is None:
            return cls("none")
        try:
            return cls.from_dict(stats)
        except ValueError as e:
            raise CheckpointError(f"{where}: {e}") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        where = "model.json normalize"
        if not isinstance(d, dict) or "mode" not in d:
            raise ValueError(f"{where}: expected an object with a 'mode', got {d!r:.80}")
        if d["mode"] not in MODES:
            raise ValueError(f"{where}.mode: one of {', '.join(MODES)}, got {d['mode']!r}")
        if d["mode"] == "none":
            return cls("none")
        try:
            n = cls(d["mode"], bool(d["per_pixel"]), float(d["std_floor"]))
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
        except KeyError as e:
            raise ValueError(f"{where}: missing field {e}") from e
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: mean/std must be numbers or lists of numbers ({e})") from e
        if mean.shape != std.shape or (not n.per_pixel and mean.ndim != 0):
            raise ValueError(f"{where}: mean {mean.shape} and std {std.shape} do not fit per_pixel="
                             f"{n.per_pixel}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"{where}: mean must be finite and std finite and > 0")
        n.mean, n.std = mean, std
        return n


def fit_normalizer(splits: Any, mode: str = "none", per_pixel: bool = False,
                   std_floor: float = 0.1) -> Normalizer:
    """The normaliser of a dataset (data/datasets.py Splits): fitted on `splits.train.x` only, never on
    the validation or test images (their statistics would leak into model selection and the test)."""
    return Normalizer(mode, per_pixel, std_floor).fit(splits.train.x)


def normalized_splits(splits: Any, normalizer: Normalizer, *, train: bool = True) -> Any:
    """`splits` (data/datasets.py Splits) with every split's inputs through `normalizer.apply`: what a model
    trained with it is fed (the loop, `deeptut eval`). `train=False` leaves the training
    split raw, for a loop that moves its images first (augment_shift) and normalises them afterwards.
    Mode "none" returns `splits` itself."""
    import dataclasses

    if normalizer.mode == "none":
        return splits

    def norm(split: Any) -> Any:
        return dataclasses.replace(split, x=normalizer.apply(split.x))

    return dataclasses.replace(splits, train=norm(splits.train) if train else splits.train,
                               valid=norm(splits.valid), test=norm(splits.test))
