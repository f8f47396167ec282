"""numpy's BLAS on a CPU: the skinny float32 products of the tutorials' output layers, and thread counts.

On a small CPU numpy's OpenBLAS computes products like 600x784 by 784x10 about 4x faster than torch's CPU
matmul (measured on the 2-core CI machine: ~110 us against ~440 us). Where no gradient is needed (the CPU
evaluation, evaluate.cpu_forward) the output layer goes through numpy; tensors share memory with the arrays,
so nothing is copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: thread_counts serves a torch-free run too (train/torchless.py)
    import torch


def _numpy_ok(*ts: torch.Tensor) -> bool:
    import torch

    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in ts) and not (
        torch.is_grad_enabled() and any(t.requires_grad for t in ts))


def linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [n, n_in] @ W [n_in, n_out] + b [n_out] -> [n, n_out]."""
    import torch

    if _numpy_ok(x, W, b):
        out = np.matmul(x.detach().numpy(), W.detach().numpy())
        out += b.detach().numpy()
        return torch.from_numpy(out)
    return torch.addmm(b, x, W)


def set_threads(n: int) -> None:
    """Use n CPU threads in torch and in numpy's BLAS. Results depend on the thread count in the last bits
    (reductions split differently), so it is recorded with every run and restored on resume. On a busy
    machine a small count avoids BLAS threads spinning against other processes (measured with the load
    average near 7 on 2 cores: the tutorial logistic run took 160 s with 2 threads, 22 s with 1)."""
    import torch

    torch.set_num_threads(n)
    set_blas_threads(n)  # without threadpoolctl BLAS keeps its own setting (OPENBLAS_NUM_THREADS)


def set_blas_threads(n: int) -> None:
    """numpy's BLAS at n threads (threadpoolctl, when installed), torch left alone (a torch-free run)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")


def blas_threads() -> int | None:
    """The largest thread count of the BLAS libraries loaded (threadpoolctl; None without it)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=None)


def thread_counts(torch_threads: int | None = None) -> dict[str, int | None]:
    """config.json's "threads": torch's intra-op count (`torch_threads`: a torch-free run's, which
    imports no torch) and the BLAS libraries'."""
    if torch_threads is None:
        import torch

        torch_threads = torch.get_num_threads()
    return {"torch": torch_threads, "blas": blas_threads()}
