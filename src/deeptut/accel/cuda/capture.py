"""The CUDA graph calls: capture a function once, replay it with one launch.

In five functions, so that the tests can replace the first four with eager stand-ins and check the graph
step on a CPU (tests/test_gpu_paths.py's fake_graphs).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from deeptut.accel.fallback import warn


def graphs_available(device: torch.device) -> bool:
    return device.type == "cuda"


def new_pool() -> Any:
    return torch.cuda.graph_pool_handle()


def warm_up(fn: Callable[[], Any], device: torch.device, times: int = 1) -> None:
    """Run fn on a side stream, as PyTorch asks before a capture (lazy initialisation happens here)."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(times):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)


def capture(fn: Callable[[], Any], pool: Any) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Capture fn() into a CUDA graph (the caller has warmed it up); returns (graph, fn's result).

    First in capture mode "global" (PyTorch's default); if that fails -- e.g. a library thread making a
    call that global mode forbids -- once more in "thread_local" mode before giving up."""
    for mode in ("global", "thread_local"):
        g = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(g, pool=pool, capture_error_mode=mode):
                out = fn()
            return g, out
        except Exception as e:  # noqa: BLE001
            if mode != "global":
                raise
            warn(f"CUDA graph capture in mode 'global' failed ({type(e).__name__}: {e}); retrying in "
                  f"mode 'thread_local'")
    raise AssertionError("unreachable")


def replay_ms(fn: Callable[[], Any], reps: int) -> float:
    """GPU milliseconds per call of fn (warmed up by the caller): `reps` calls captured in one CUDA graph and
    replayed, as a run executes them. (Timed as eager launches, Python's launch overhead -- tens of us for
    Triton's launcher -- would be measured instead of the GPU's work.) Eagerly, with a warning, where the
    capture fails."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    try:
        g, _ = capture(lambda: [fn() for _ in range(reps)], new_pool())
        g.replay()
        start.record()
        for _ in range(3):
            g.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / (3 * reps)
    except Exception as e:  # noqa: BLE001 - time eagerly instead
        warn(f"timing without a CUDA graph ({type(e).__name__}: {e})")
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps
