"""Variable-length sequences with one label each: the data of the recurrent chapters (lstm.py's IMDB reviews,
MNIST read row by row, the tests' generated tasks).

A split keeps its sequences end to end in one flat array (`steps`: int64 token indices [total], or float32
feature vectors [total, d]) with each sequence's length; nothing is padded until a minibatch is asked for.
On the device (`SequenceSplit.to(device)`) a minibatch is built from the example indices by one gather:
the steps of each sequence, padded to the longest one in the minibatch, and the mask (1.0 on a sequence's
steps, 0.0 on padding), as imdb.py's `prepare_data` builds them, but batch-major (x [n, T], mask [n, T])
and without copying the split. Padding is token 0 (imdb.py's) or a zero vector.

`batches` gives the minibatches of an epoch (lstm.py's `get_minibatches_idx`: whole minibatches in the
epoch's order, then what is left as a smaller one); `bucketed` sorts each run of `window` minibatches by
length first, so a minibatch holds sequences of similar lengths (less padding, the same examples per
epoch). Both are exact because the mask is: a padded step changes nothing (models/lstm.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from deeptut.errors import DataError


@dataclass(frozen=True)
class SequenceSplit:
    steps: np.ndarray  # int64 [total] token indices (>= 1), or float32 [total, d] feature vectors
    lengths: np.ndarray  # int64 [n] steps of each sequence, each >= 1
    y: np.ndarray  # int64 [n] labels

    def __post_init__(self) -> None:
        if self.lengths.ndim != 1 or self.y.shape != self.lengths.shape:
            raise DataError(f"{len(self.lengths)} sequences but {len(self.y)} labels")
        if len(self.lengths) and int(self.lengths.min()) < 1:
            i = int(np.argmin(self.lengths))
            raise DataError(f"sequence {i} is empty")
        if int(self.lengths.sum()) != len(self.steps):
            raise DataError(f"the lengths add up to {int(self.lengths.sum())} steps, there are {len(self.steps)}")

    @classmethod
    def from_lists(cls, seqs: Sequence[Any], labels: Sequence[int], where: str = "sequences",
                   n_features: int | None = None) -> "SequenceSplit":
        """From a list of sequences (each a list of token indices, or [T, n_features] arrays) and labels;
        an empty sequence or a length mismatch is a DataError naming `where` and the entry."""
        if len(seqs) != len(labels):
            raise DataError(f"{where}: {len(seqs)} sequences but {len(labels)} labels")
        lengths = np.fromiter((len(s) for s in seqs), np.int64, len(seqs))
        if len(lengths) and lengths.min() < 1:
            raise DataError(f"{where}: entry {int(np.argmin(lengths))} is an empty sequence")
        if n_features is None:
            steps = np.fromiter((t for s in seqs for t in s), np.int64, int(lengths.sum()))
        else:
            steps = np.concatenate([np.asarray(s, np.float32).reshape(-1, n_features) for s in seqs]) \
                if len(seqs) else np.zeros((0, n_features), np.float32)
        return cls(steps, lengths, np.asarray(labels, np.int64).reshape(-1))

    @classmethod
    def from_padded(cls, x: np.ndarray, lengths: np.ndarray, y: np.ndarray) -> "SequenceSplit":
        """From padded arrays x [n, T] or [n, T, d] and the lengths (each <= T)."""
        lengths = np.asarray(lengths, np.int64)
        if x.shape[0] != len(lengths) or (len(lengths) and lengths.max() > x.shape[1]):
            raise DataError(f"padded array {x.shape} does not hold sequences of lengths up to "
                            f"{int(lengths.max()) if len(lengths) else 0}")
        keep = np.arange(x.shape[1])[None, :] < lengths[:, None]  # [n, T]
        return cls(np.ascontiguousarray(x[keep]), lengths, np.asarray(y, np.int64))

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def x(self) -> np.ndarray:
        """The steps, flat (what a data fingerprint samples; train/state.py data_fingerprint)."""
        return self.steps

    @property
    def n_features(self) -> int | None:
        """None for token sequences, d for feature vectors."""
        return None if self.steps.ndim == 1 else self.steps.shape[1]

    def subset(self, index: np.ndarray) -> "SequenceSplit":
        """The sequences at `index` (numpy int array), in that order."""
        index = np.asarray(index, np.int64)
        offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        pos = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in index]) if len(index) else \
            np.zeros(0, np.int64)
        return SequenceSplit(self.steps[pos], self.lengths[index], self.y[index])

    def padded(self, index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x [n, T], mask float32 [n, T], y [n]) in numpy: prepare_data's arrays, batch-major."""
        d = self.to("cpu")
        idx = torch.arange(len(self)) if index is None else torch.as_tensor(np.asarray(index, np.int64))
        x, mask, y = d.batch(idx)
        return x.numpy(), mask.numpy(), y.numpy()

    def to(self, device: torch.device | str) -> "DeviceSequences":
        return DeviceSequences(self, device)


class DeviceSequences:
    """A SequenceSplit held on the device: minibatches padded and masked there, by index."""

    def __init__(self, split: SequenceSplit, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.steps = torch.as_tensor(split.steps).to(self.device)  # [total] int64 or [total, d] float32
        self.lengths = torch.as_tensor(split.lengths).to(self.device)  # [n]
        self.y = torch.as_tensor(split.y).to(self.device)  # [n]
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths  # [n] where each sequence starts
        self.lengths_np = np.asarray(split.lengths)  # host copy: the padded width of a minibatch

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x [n, T], mask float32 [n, T], y [n]) of the sequences at `index` (T: the longest of them).
        x holds token indices (0 on padding) or feature vectors [n, T, d] (zeros on padding)."""
        index = index.to(self.device)
        width = int(self.lengths_np[index.cpu().numpy()].max())
        t = torch.arange(width, device=self.device)  # [T]
        lengths = self.lengths[index]  # [n]
        valid = t[None, :] < lengths[:, None]  # [n, T]
        pos = torch.where(valid, self.offsets[index][:, None] + t[None, :], 0)  # [n, T] into steps
        x = self.steps[pos]  # [n, T] or [n, T, d]
        if x.dim() == 2:
            x = torch.where(valid, x, 0)
        else:
            x = x * valid[:, :, None].to(x.dtype)
        return x, valid.to(torch.float32), self.y[index]


def batches(n: int, batch_size: int, order: np.ndarray | None = None) -> list[np.ndarray]:
    """lstm.py's get_minibatches_idx: whole minibatches of `order` (default 0..n-1), then what is left."""
    idx = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, np.int64)
    return [idx[i:i + batch_size] for i in range(0, n, batch_size)]


def bucketed(lengths: np.ndarray, batch_size: int, order: np.ndarray, window: int = 50) -> list[np.ndarray]:
    """Minibatches of similar lengths: `order` cut into runs of `window` minibatches, each run sorted by
    length (stable), cut into minibatches; the minibatches' order is then that of their first example in
    `order`, so an epoch still visits the runs in a shuffled order."""
    out = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = np.asarray(order[start:start + span], np.int64)
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return out


def by_length(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation minibatches in order of length (imdb.py sorts valid and test by length: less padding)."""
    return batches(len(lengths), batch_size, np.argsort(lengths, kind="stable"))


@dataclass(frozen=True)
class SequenceSets:
    """train / valid / test sequences, as a dataset loader returns them (deeptut/registry.py)."""

    train: SequenceSplit
    valid: SequenceSplit
    test: SequenceSplit
    source: str  # the file or dataset they came from
    name: str  # "imdb", "mnist-rows", ...
    n_classes: int  # labels lie in 0 .. n_classes - 1
    vocabulary: int | None = None  # token sequences: indices lie in 1 .. vocabulary - 1 (None: features)

    @property
    def n_features(self) -> int | None:
        return self.train.n_features

    def check(self) -> None:
        """Labels in range, tokens inside the vocabulary, the same kind of step in every split."""
        for name in ("train", "valid", "test"):
            s: SequenceSplit = getattr(self, name)
            if s.n_features != self.n_features:
                raise DataError(f"{self.source}: {name} has steps of {s.n_features or 'tokens'}, train of "
                                f"{self.n_features or 'tokens'}")
            bad = np.flatnonzero((s.y < 0) | (s.y >= self.n_classes))
            if len(bad):
                raise DataError(f"{self.source}: {name} entry {int(bad[0])} has label {int(s.y[bad[0]])}, "
                                f"outside 0..{self.n_classes - 1}")
            if self.vocabulary is not None and len(s.steps):
                out = np.flatnonzero((s.steps < 1) | (s.steps >= self.vocabulary))
                if len(out):
                    entry = int(np.searchsorted(np.cumsum(s.lengths), out[0], side="right"))
                    raise DataError(f"{self.source}: {name} entry {entry} has token {int(s.steps[out[0]])}, "
                                    f"outside the vocabulary 1..{self.vocabulary - 1}")

    def fingerprint_view(self) -> Any:
        """What train/state.py's data_fingerprint reads (x, y per split), with the lengths in `y`, so that
        a resumed run checks the sequences' boundaries too."""
        from types import SimpleNamespace

        def view(s: SequenceSplit) -> Any:
            return SimpleNamespace(x=s.steps, y=np.concatenate([s.y, s.lengths]))
        return SimpleNamespace(train=view(self.train), valid=view(self.valid), test=view(self.test))


def rows_of_images(x: np.ndarray, y: np.ndarray, side: int = 28) -> SequenceSplit:
    """Images [n, side*side] as sequences of `side` rows of `side` pixels each (row-by-row MNIST)."""
    n = len(x)
    steps = np.ascontiguousarray(np.asarray(x, np.float32).reshape(n * side, side))  # [n * side, side]
    return SequenceSplit(steps, np.full(n, side, np.int64), np.asarray(y, np.int64))


def rows_for_config(cfg: Any, data_dir: Any = None) -> SequenceSets:
    """The registry's loader of "mnist-rows": MNIST (data/datasets.py, found as for the image families), each
    image a sequence of 28 rows of 28 pixels (pixel / 256, the tutorials' scaling); 10 classes."""
    from deeptut.data.datasets import load_dataset

    d = load_dataset(cfg.dataset.removesuffix("-rows"), data_dir)
    sets = [rows_of_images(s.x, s.y) for s in (d.train, d.valid, d.test)]
    return SequenceSets(*sets, source=d.source, name=cfg.dataset, n_classes=10)
