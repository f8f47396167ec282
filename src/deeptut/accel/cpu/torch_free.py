"""The logistic regression's C kernel (csrc/logistic_step.c) on numpy arrays, without torch: what a
torch-free run (train/torchless.py) trains and evaluates with. The same calls as `LogisticFusedStep` and
`LogisticErrors` (fused.py, evaluate.py) make on torch tensors' memory, so the same numbers, bit for bit.

    kernel = torch_free_logistic(cfg, data, threads)   # None: no C compiler or a failed build
    cost = kernel.step(minibatch_index, learning_rate)
    wrong = kernel.misclassified(kernel.valid, n)       # uint8 [n]
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from deeptut.accel.cpu import ckernels
from deeptut.accel.cpu.packed import pack_array

ROWS_PER_THREAD = 64  # LogisticFusedStep's split: at most one thread per 64 rows of a minibatch


class KernelSplit:
    """One split as the kernels read it: x float32 [n, n_in] and y int64 [n], C-contiguous numpy arrays, and
    its nonzero pixels once packed (packed.py: the same numbers, fewer bytes read)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y
        self.packed: Any = None

    def __len__(self) -> int:
        return len(self.x)

    def n_batches(self, batch_size: int) -> int:
        return len(self) // batch_size  # whole minibatches only, as in the tutorial

    def pack(self, kernel: Any) -> None:
        if self.packed is None:
            self.packed = pack_array(kernel, self.x) or False

    def rows(self, first: int, n: int) -> tuple[int, int, tuple[Any, ...]]:
        """(x's address at row `first`, y's, the kernels' packed-rows arguments)."""
        pk = self.packed.args(first) if self.packed else (None, None, None, 0)
        return self.x[first:first + n].ctypes.data, self.y[first:first + n].ctypes.data, pk


class LogisticParams:
    """The LogisticRegression's parameters as numpy arrays: W [n_in, n_out] and b [n_out], zeros at the
    start as in the tutorial (models/logistic.py); the names and order of its state_dict."""

    def __init__(self, n_in: int, n_out: int) -> None:
        self.W = np.zeros((n_in, n_out), np.float32)
        self.b = np.zeros(n_out, np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "b": self.b}

    def named_parameters(self) -> Any:
        return iter(self.state_dict().items())

    def load_state_dict(self, params: dict[str, np.ndarray]) -> None:
        self.W[...], self.b[...] = params["W"], params["b"]

    def copy(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.state_dict().items()}

    def eval(self) -> "LogisticParams":  # nn.Module's modes: nothing to switch (no dropout)
        return self

    def train(self) -> "LogisticParams":
        return self


class TorchFreeLogistic:
    """The model, its three splits, plain SGD on minibatch i of the training split (`step`, as
    LogisticFusedStep's C call: T = the thread count, at most one per 64 rows) and the C evaluation
    (`misclassified`, as LogisticErrors'). Plain SGD keeps no state: `state_dict()` is {}."""

    def __init__(self, kernel: Any, cfg: Any, data: Any, threads: int) -> None:
        self.kernel, self.cfg, self.threads = kernel, cfg, threads
        self.model = LogisticParams(cfg.n_in, cfg.n_out)
        self.train, self.valid, self.test = (KernelSplit(s.x, s.y) for s in (data.train, data.valid, data.test))
        for split in (self.valid, self.test):  # evaluated at every validation / new best: packed at once
            split.pack(kernel)
        self.T = max(1, min(threads, cfg.batch_size // ROWS_PER_THREAD or 1))
        self.scratch = ckernels.aligned_buffer(kernel.scratch_bytes(cfg.n_in, cfg.n_out, self.T))
        self.eval_scratch = ckernels.aligned_buffer(kernel.scratch_bytes(cfg.n_in, cfg.n_out, 1))
        self.cost = ctypes.c_double()

    def pack_train(self) -> None:
        """Pack the training split (LogisticFusedStep's PackCache does once a whole pass has read it)."""
        self.train.pack(self.kernel)

    def step(self, index: int, learning_rate: float) -> float:
        n, m, cfg = self.cfg.batch_size, self.model, self.cfg
        x, y, pk = self.train.rows(index * n, n)
        rc = self.kernel(x, y, n, cfg.n_in, cfg.n_out, m.W.ctypes.data, m.b.ctypes.data, self.scratch.ctypes.data,
                         self.T, learning_rate, cfg.L1_reg, cfg.L2_reg, ctypes.byref(self.cost), *pk)
        if rc == -1:
            raise IndexError("label out of range")
        if rc != 0:
            raise RuntimeError(f"logistic_step returned {rc}")
        return self.cost.value

    def misclassified(self, split: KernelSplit, n: int) -> np.ndarray:
        """uint8 [n]: argmax(x W + b) != y for the first n examples of `split`."""
        m, cfg = self.model, self.cfg
        wrong = np.empty(n, np.uint8)
        x, y, pk = split.rows(0, n)
        rc = self.kernel.errors(x, y, n, cfg.n_in, cfg.n_out, m.W.ctypes.data, m.b.ctypes.data,
                                self.eval_scratch.ctypes.data, max(1, self.threads), wrong.ctypes.data, *pk)
        if rc != 0:
            raise RuntimeError(f"logistic_errors returned {rc}")
        return wrong

    def state_dict(self) -> dict[str, Any]:
        return {}


def torch_free_logistic(cfg: Any, data: Any, threads: int) -> TorchFreeLogistic | None:
    """The kernel's run of `cfg` on `data` (numpy splits) at `threads`, or None: no C kernel."""
    kernel = ckernels.logistic_step()
    return None if kernel is None else TorchFreeLogistic(kernel, cfg, data, threads)
