"""Packed rows for the logistic C kernel (csrc/logistic_step.c): the nonzero (j, x_j) pairs of every row of
a split, made once, for a split that is read again and again.

The kernel compacts each row to its nonzero pixels anyway (MNIST is ~81 % zeros); a packed split skips that
scan and reads ~6 bytes per nonzero instead of 3,136 bytes per row (MNIST's training split: ~45 MB instead
of 157 MB per epoch). Packed and scanned rows give the same numbers, bit for bit.

Which splits: a tensor is packed once its rows have been used a whole pass's worth, so the tutorial's
unshuffled training split is packed at the start of epoch 2 and the validation split at its second
evaluation, while a shuffled epoch's one-off copy never is. Splits are treated as read-only, as the
tutorials' shared variables are: an in-place change through torch (the tensor's version counter) drops the
packed copy; writing into the memory behind torch's back (through a numpy view) is not noticed.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: pack_array serves a torch-free run
    import torch

WORTH = 0.6  # pack only when the packed copy is under this fraction of the dense bytes (else: no gain)
SLOTS = 4  # packed tensors kept (train, valid, test and one spare), least recently used dropped first
SLACK = 16  # the kernel stores whole 16-lane vectors past a row's end


class Rows:
    """The nonzero pixels of n rows of d float32 pixels at address `data` (pack_count, pack_fill of
    csrc/logistic_step.c): `ptr` [n + 1] row starts, `idx` uint16 pixel indices, `val` float32 values.
    `worth`: False where the packed copy would not be under WORTH of the dense bytes (idx, val not made)."""

    def __init__(self, kernel: Any, data: int, n: int, d: int) -> None:
        self.ptr = np.empty(n + 1, np.int64)
        if kernel.pack_count(data, n, d, self.ptr.ctypes.data) != 0:
            raise ValueError("cannot pack")
        nnz = int(self.ptr[-1])
        self.worth = nnz * (2 + 4) < WORTH * n * d * 4
        if self.worth:
            self.idx = np.empty(nnz + SLACK, np.uint16)
            self.val = np.empty(nnz + SLACK, np.float32)
            if kernel.pack_fill(data, n, d, self.ptr.ctypes.data, self.idx.ctypes.data,
                                self.val.ctypes.data) != 0:
                raise ValueError("the rows changed while they were packed")

    def args(self, row0: int = 0) -> tuple[Any, Any, Any, int]:
        """The kernels' (pk_ptr, pk_idx, pk_val, pk_row0) for rows from `row0` on."""
        return self.ptr.ctypes.data, self.idx.ctypes.data, self.val.ctypes.data, row0


def pack_array(kernel: Any, x: np.ndarray) -> Rows | None:
    """A C-contiguous float32 [n, d] array's rows packed (a torch-free run's splits, train/torchless.py), or
    None where packing does not pay."""
    rows = Rows(kernel, x.ctypes.data, *x.shape)
    return rows if rows.worth else None


class _Packed(Rows):
    def __init__(self, kernel: Any, base: torch.Tensor) -> None:
        self.base, self.version = base, base._version
        super().__init__(kernel, base.data_ptr(), *base.shape)


class PackCache:
    """`args(x)` -> the kernel's (pk_ptr, pk_idx, pk_val, pk_row0) for rows x of a packed tensor, or
    (None, None, None, 0): scan x."""

    NONE = (None, None, None, 0)

    def __init__(self, kernel: Any) -> None:
        self._c = kernel
        self._packed: OrderedDict[int, _Packed] = OrderedDict()
        self._seen: dict[int, tuple[weakref.ref, int]] = {}  # data_ptr -> (the tensor, rows used so far)

    def args(self, x: torch.Tensor) -> tuple[Any, Any, Any, int]:
        import torch

        base = x._base if x._base is not None else x
        if base.dim() != 2 or base.dtype != torch.float32 or not base.is_contiguous() \
                or base.shape[1] != x.shape[1] or base.device.type != "cpu":
            return self.NONE
        row_bytes = base.shape[1] * 4
        offset = x.data_ptr() - base.data_ptr()
        if offset % row_bytes:
            return self.NONE
        key = base.data_ptr()
        p = self._packed.get(key)
        if p is not None and (p.base is not base or p.version != base._version):
            del self._packed[key]
            p = None
        if p is None:
            ref, used = self._seen.get(key, (None, 0))
            if ref is None or ref() is not base:
                used = 0
            used += x.shape[0]
            if len(self._seen) > 16:  # forget tensors that are gone (one per shuffled epoch)
                self._seen = {k: v for k, v in self._seen.items() if v[0]() is not None}
            self._seen[key] = (weakref.ref(base), used)
            if used <= base.shape[0]:  # not yet a whole pass: maybe a one-off (a shuffled epoch's copy)
                return self.NONE
            try:
                p = _Packed(self._c, base)
            except ValueError:
                return self.NONE
            self._packed[key] = p
            self._seen.pop(key, None)
            while len(self._packed) > SLOTS:
                self._packed.popitem(last=False)
        self._packed.move_to_end(key)
        if not p.worth:
            return self.NONE
        return p.args(offset // row_bytes)
