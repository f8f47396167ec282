"""Chunked streaming: the tutorials' answer to a dataset that does not fit on the device.

A split larger than the device memory budget stays in (pinned) host memory; two device buffers, each a
chunk of whole minibatches, take turns: while the training step reads minibatches from one buffer, the next
chunk is copied into the other on a side CUDA stream (double buffering), so the transfers overlap the
arithmetic and each example crosses the bus once per epoch. Which minibatch holds which examples is exactly
as in the resident `DeviceSplit` (the same order, and the same rows under `permuted(perm)`), so a streamed
run computes what the resident run computes, bit for bit.

`StreamSplit` has DeviceSplit's interface (`__len__`, `n_batches(bs)`, `minibatch(i, bs)`, `permuted(perm)`)
plus `blocks(first, count, bs)` (runs of consecutive minibatches that lie in one buffer, for the CUDA-graph
runner) and `row_chunks(n, rows, bs)` (for evaluation). `make_split` picks resident or streamed per split;
`blocks` and `row_chunks` here accept either kind.

Without CUDA the same code runs with plain synchronous copies (no streams, no pinning), so the chunk and
buffer logic is tested on any machine. The budget is per split: a split that fits is resident, a larger one
gets two buffers of at most budget / 2 bytes each (x rows plus int64 labels).
"""

from __future__ import annotations

import math
import warnings
from typing import Iterator

import numpy as np
import torch

from deeptut.data.device import DeviceSplit
from deeptut.errors import ConfigError

LABEL_BYTES = 8  # int64 labels on the device
ALIGN = 256  # bytes: the largest pointer alignment cuBLAS(Lt) heuristics distinguish


def split_bytes(x: np.ndarray | torch.Tensor) -> int:
    """Device bytes of a split: the rows of x (in their dtype) plus int64 labels."""
    x = torch.as_tensor(x)
    return x.shape[0] * _row_bytes(x)


def _row_bytes(x: torch.Tensor) -> int:
    return int(np.prod(x.shape[1:], dtype=np.int64)) * x.element_size() + LABEL_BYTES


def make_split(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, device: torch.device | str,
               budget_bytes: int = 0) -> "DeviceSplit | StreamSplit":
    """Resident when the split fits the budget (0 = unlimited), else streamed through two chunk buffers."""
    if budget_bytes and split_bytes(x) > budget_bytes:
        return StreamSplit(x, y, device, budget_bytes)
    return DeviceSplit(x, y, device)


def as_bytes(x: torch.Tensor) -> torch.Tensor | None:
    """x as uint8 k when every value is exactly k / 256 (k = 0..255: MNIST as the tutorials scale it), else
    None. float32(k) * 2**-8 gives back exactly the float32 x, from a quarter of the bytes."""
    if x.dtype != torch.float32 or x.numel() == 0:
        return None
    q = x * 256.0  # exact: a power of two
    if not bool(((q >= 0) & (q <= 255) & (q == q.round())).all()):
        return None
    return q.to(torch.uint8)


class _Shared:
    """What a split and its permuted views share: the host copy and the two device buffers.

    Pixels that are exactly k / 256 cross the bus as the bytes k (a quarter of float32's traffic) and are
    scaled back on the device, exactly: the buffers hold the same float32 values either way."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, device: torch.device, budget_bytes: int) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.budget_bytes = budget_bytes
        self.xq = as_bytes(x)  # [n, ...] uint8, or None: transfer float32
        # device bytes per row: the float32 row and label, plus the byte staging row
        self.row_bytes = _row_bytes(x) + (0 if self.xq is None else self.xq[0].numel())
        if self.cuda:
            try:
                if self.xq is None:
                    x = x.pin_memory()
                else:
                    self.xq = self.xq.pin_memory()
                y = y.pin_memory()
            except RuntimeError as e:  # e.g. pinned memory exhausted: copies still work, without overlap
                warnings.warn(f"deeptut: could not pin host memory for streaming ({e}); transfers will not "
                              f"overlap the arithmetic", RuntimeWarning, stacklevel=3)
        self.x, self.y = x, y
        self.ring: _Ring | None = None

    @property
    def source(self) -> torch.Tensor:
        """What is copied to the device: the bytes, or the float32 rows."""
        return self.x if self.xq is None else self.xq

    def ring_for(self, batch_size: int) -> "_Ring":
        if self.ring is None or self.ring.batch_size != batch_size:
            if self.ring is not None:
                self.ring.close()
            self.ring = _Ring(self, batch_size)
        return self.ring


class _Ring:
    """Two device buffers of `rows` rows (a whole number of minibatches) that take turns.

    Each buffer is tagged with the (view, chunk) it holds or is being filled with. `acquire` makes a
    chunk current: it waits (on the compute stream, not the host) for its copy, records that the compute
    stream has finished enqueueing work on the previous buffer, and starts filling that buffer with the next
    chunk on the copy stream, which first waits for the compute stream to be done with it.
    """

    def __init__(self, shared: _Shared, batch_size: int) -> None:
        self.shared, self.batch_size = shared, batch_size
        per_buffer = shared.budget_bytes // 2
        batches = per_buffer // (shared.row_bytes * batch_size)
        n = shared.x.shape[0]
        if batches < 1:
            need = 2 * shared.row_bytes * batch_size
            raise ConfigError(f"device_memory_budget {shared.budget_bytes} bytes is too small to stream this "
                              f"split: two buffers of one minibatch of {batch_size} need {need} bytes")
        # Keep each minibatch's address alignment (mod 256 bytes) what it is in a resident split: cuBLAS picks
        # GEMM algorithms by pointer alignment (up to 256 B), and the same algorithm gives the same bits.
        x_bytes = (shared.row_bytes - LABEL_BYTES) * batch_size
        unit = ALIGN // math.gcd(x_bytes, ALIGN)
        if batches >= unit:
            batches -= batches % unit
        self.batches_per_chunk = batches
        self.rows = min(batches * batch_size, n)
        self.n_chunks = -(-n // (batches * batch_size))
        dev = shared.device
        self.x = [torch.empty((self.rows, *shared.x.shape[1:]), dtype=shared.x.dtype, device=dev) for _ in (0, 1)]
        self.y = [torch.empty(self.rows, dtype=torch.int64, device=dev) for _ in (0, 1)]
        # the bytes land here, then are scaled into x (CUDA: on the copy stream)
        self.xq = None if shared.xq is None else \
            [torch.empty((self.rows, *shared.x.shape[1:]), dtype=torch.uint8, device=dev) for _ in (0, 1)]
        self.tag: list[tuple[object, int] | None] = [None, None]
        self.current: int | None = None
        self.loads = 0  # chunks copied (for tests and benchmarks)
        self.stream = torch.cuda.Stream(device=dev) if shared.cuda else None
        self.copied: list[torch.cuda.Event | None] = [None, None]  # copy into buffer k done (copy stream)
        self.released: list[torch.cuda.Event | None] = [None, None]  # compute stream done with buffer k
        self.staging: list[tuple[torch.Tensor, torch.Tensor] | None] = [None, None]  # pinned, for permuted views
        if self.stream is not None:
            for t in (*self.x, *self.y, *(self.xq or ())):
                t.record_stream(self.stream)  # freeing the buffers waits for copies in flight

    def close(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def chunk_rows(self, c: int) -> tuple[int, int]:
        lo = c * self.batches_per_chunk * self.batch_size
        return lo, min(lo + self.rows, self.shared.x.shape[0])

    def _find(self, token: object, c: int) -> int | None:
        for k in (0, 1):
            if self.tag[k] is not None and self.tag[k][0] is token and self.tag[k][1] == c:
                return k
        return None

    def _load(self, k: int, view: "StreamSplit", c: int) -> None:
        lo, hi = self.chunk_rows(c)
        m = hi - lo
        sh = self.shared
        self.tag[k] = (view.token, c)
        self.loads += 1
        src = sh.source
        land = self.x[k] if self.xq is None else self.xq[k]  # where the copy lands on the device
        if self.stream is None:  # CPU: a synchronous copy (or gather) into the buffer
            if view.order is None:
                land[:m].copy_(src[lo:hi])
                self.y[k][:m].copy_(sh.y[lo:hi])
            else:
                idx = view.order[lo:hi]
                torch.index_select(src, 0, idx, out=land[:m])
                torch.index_select(sh.y, 0, idx, out=self.y[k][:m])
            self._finish(k, view, lo, hi)
            return
        if view.order is None:
            src_x, src_y = src[lo:hi], sh.y[lo:hi]  # slices of pinned memory
        else:  # gather the permuted rows into this buffer's pinned staging area first
            if self.copied[k] is not None:
                self.copied[k].synchronize()  # the previous copy out of this staging area is done
            if self.staging[k] is None:
                pin = src.is_pinned()
                self.staging[k] = (torch.empty((self.rows, *src.shape[1:]), dtype=src.dtype, pin_memory=pin),
                                   torch.empty(self.rows, dtype=torch.int64, pin_memory=pin))
            sx, sy = self.staging[k]
            idx = view.order[lo:hi]
            torch.index_select(src, 0, idx, out=sx[:m])
            torch.index_select(sh.y, 0, idx, out=sy[:m])
            src_x, src_y = sx[:m], sy[:m]
        with torch.cuda.stream(self.stream):
            if self.released[k] is not None:
                self.stream.wait_event(self.released[k])
            land[:m].copy_(src_x, non_blocking=True)
            self.y[k][:m].copy_(src_y, non_blocking=True)
            self._finish(k, view, lo, hi)
            ev = torch.cuda.Event()
            ev.record(self.stream)
        self.copied[k] = ev

    def _finish(self, k: int, view: "StreamSplit", lo: int, hi: int) -> None:
        """On the current stream, once rows lo..hi-1 of `view` have landed in buffer k: bytes k -> float32
        k / 256 (exact), then the view's translations (data/augment.py), if any."""
        m = hi - lo
        if self.xq is not None:
            torch.mul(self.xq[k][:m], 1.0 / 256.0, out=self.x[k][:m])
        if view.shifts is not None:
            from deeptut.data.augment import translate

            dy, dx, side, max_shift = view.shifts
            self.x[k][:m] = translate(self.x[k][:m], dy[lo:hi], dx[lo:hi], side, max_shift)

    def acquire(self, view: "StreamSplit", c: int) -> int:
        """Make chunk c of `view` the current buffer; returns its index (0 or 1)."""
        k = self._find(view.token, c)
        if k is None:
            k = 0 if self.current is None else 1 - self.current
            self._load(k, view, c)
        if k != self.current:
            compute = torch.cuda.current_stream(self.shared.device) if self.stream is not None else None
            if self.current is not None and compute is not None:
                ev = torch.cuda.Event()
                ev.record(compute)  # everything enqueued so far on the old buffer
                self.released[self.current] = ev
            if compute is not None and self.copied[k] is not None:
                compute.wait_event(self.copied[k])
            self.current = k
            nxt = (c + 1) % self.n_chunks  # wraps: an unshuffled split starts the next epoch prefetched
            if self.n_chunks > 1 and self._find(view.token, nxt) is None:
                self._load(1 - k, view, nxt)
        return k


class StreamSplit:
    """A split in host memory, served to the device a chunk of whole minibatches at a time."""

    def __init__(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
                 device: torch.device | str = "cpu", budget_bytes: int = 0, *,
                 _shared: _Shared | None = None, _order: torch.Tensor | None = None,
                 _shifts: tuple[torch.Tensor, torch.Tensor, int, int] | None = None) -> None:
        if _shared is None:
            xt = torch.as_tensor(x).contiguous()
            yt = torch.as_tensor(y).to(torch.int64).contiguous()
            if xt.shape[0] != yt.shape[0]:
                raise ValueError(f"x has {xt.shape[0]} rows but y has {yt.shape[0]}")
            if xt.device.type != "cpu" or yt.device.type != "cpu":
                xt, yt = xt.cpu(), yt.cpu()
            if budget_bytes <= 0:
                raise ValueError("StreamSplit needs a positive budget_bytes (use DeviceSplit for unlimited)")
            _shared = _Shared(xt, yt, torch.device(device), budget_bytes)
        self.shared = _shared
        self.order = _order  # None: the stored order; else a CPU int64 permutation
        self.shifts = _shifts  # None, or (dy [n], dx [n], side, max_shift): row i moved by (dy[i], dx[i])
        self.token = object()  # identifies this view's order in the buffers' tags

    @property
    def device(self) -> torch.device:
        return self.shared.device

    def __len__(self) -> int:
        return self.shared.x.shape[0]

    def n_batches(self, batch_size: int) -> int:
        """Whole minibatches only: the remainder is dropped, as in the tutorial."""
        return len(self) // batch_size

    def buffers(self, batch_size: int) -> _Ring:
        return self.shared.ring_for(batch_size)

    def minibatch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ring = self.buffers(batch_size)
        c, local = divmod(index, ring.batches_per_chunk)
        k = ring.acquire(self, c)
        s = slice(local * batch_size, (local + 1) * batch_size)
        return ring.x[k][s], ring.y[k][s]

    def permuted(self, perm: torch.Tensor) -> "StreamSplit":
        """The split in the order `perm` (as DeviceSplit.permuted): rows are gathered chunk by chunk on
        the host as they are streamed; the view shares this split's host copy and buffers."""
        perm = torch.as_tensor(perm).to(device="cpu", dtype=torch.int64)
        shifts = None if self.shifts is None else (self.shifts[0][perm], self.shifts[1][perm], *self.shifts[2:])
        if self.order is not None:
            perm = self.order[perm]
        return StreamSplit(None, None, _shared=self.shared, _order=perm, _shifts=shifts)  # type: ignore[arg-type]

    def translated(self, dy: torch.Tensor, dx: torch.Tensor, side: int, max_shift: int) -> "StreamSplit":
        """The split with image i moved by (dy[i], dx[i]) pixels (as DeviceSplit.translated): each chunk is
        translated on the device as it lands."""
        dy, dx = torch.as_tensor(dy).to("cpu", torch.int64), torch.as_tensor(dx).to("cpu", torch.int64)
        if dy.shape != (len(self),) or dx.shape != (len(self),):
            raise ValueError(f"expected {len(self)} shifts per axis, got {tuple(dy.shape)} and {tuple(dx.shape)}")
        return StreamSplit(None, None, _shared=self.shared, _order=self.order,  # type: ignore[arg-type]
                           _shifts=(dy, dx, side, max_shift))

    def blocks(self, first: int, count: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Minibatches first .. first+count-1 as runs that lie in one buffer: (x rows, y rows, n minibatches).
        Consume lazily: each next() may switch buffers and start the next refill."""
        ring = self.buffers(batch_size)
        i, end = first, first + count
        while i < end:
            c, local = divmod(i, ring.batches_per_chunk)
            nb = min(end - i, ring.batches_per_chunk - local)
            k = ring.acquire(self, c)
            s = slice(local * batch_size, (local + nb) * batch_size)
            yield ring.x[k][s], ring.y[k][s], nb
            i += nb

    def row_chunks(self, n: int, rows: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first n examples in pieces of at most `rows` (for evaluation)."""
        ring = self.buffers(batch_size)
        for c in range(ring.n_chunks):
            lo, hi = ring.chunk_rows(c)
            if lo >= n:
                break
            k = ring.acquire(self, c)
            for a in range(lo, min(hi, n), rows):
                b = min(a + rows, hi, n)
                yield ring.x[k][a - lo:b - lo], ring.y[k][a - lo:b - lo]


def blocks(split: DeviceSplit | StreamSplit, first: int, count: int,
           batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Runs of consecutive minibatches as contiguous device rows, for either kind of split."""
    if isinstance(split, StreamSplit):
        yield from split.blocks(first, count, batch_size)
    else:
        s = slice(first * batch_size, (first + count) * batch_size)
        yield split.x[s], split.y[s], count


def row_chunks(split: DeviceSplit | StreamSplit, n: int, rows: int,
               batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first n examples of either kind of split, in pieces of at most `rows`."""
    if isinstance(split, StreamSplit):
        yield from split.row_chunks(n, rows, batch_size)
    else:
        for i in range(0, n, rows):
            j = min(i + rows, n)
            yield split.x[i:j], split.y[i:j]
