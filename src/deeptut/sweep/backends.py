"""Where trials run. Both backends call the same trial.run_trial, which starts `deeptut train` as its own
OS process, so the backends differ only in how those supervisors are scheduled.

local: a pool of `workers` supervising threads, each running one trial process at a time: `workers`
    trials in parallel, each its own process (no GIL shared, torch's threads set by the trial's config).
ray: each trial is a Ray *task* (num_cpus=1) that runs the same supervisor on whichever node Ray picks.
    Tasks rather than Ray Tune trials: a trial is already a resumable process with its own checkpoints and
    early stopping, so Tune's schedulers and checkpoint syncing would duplicate what the run directory does;
    a task's automatic retry on worker death plus `deeptut train --resume` is the whole fault tolerance.
    Results and checkpoints go straight to the sweep directory, which every node must see at the same path
    (NFS or similar shared storage), as must this Python interpreter and the data directory.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from typing import Any

import deeptut.sweep.trial as trial_mod  # the submodule, not a name read from the package deeptut.sweep
from deeptut.errors import DeeptutError

RAY_TASK_RETRIES = 5  # re-executions of a task whose worker died; run_trial's max_attempts bounds the rest


def _failed(task_id: str | None, error: str, status: str = trial_mod.FAILED) -> dict:
    return {"id": task_id, "status": status, "summary": None, "attempts": 0, "wall_s": None, "error": error}


class LocalBackend:
    def __init__(self, workers: int | None = None) -> None:
        self.slots = max(1, workers or os.cpu_count() or 1)
        self.pool = cf.ThreadPoolExecutor(self.slots, thread_name_prefix="deeptut-trial")
        self.ids: dict[cf.Future, str] = {}

    def __enter__(self) -> "LocalBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        trial_mod.interrupt_running()  # nothing runs past the sweep (after a second Ctrl-C, say)
        self.pool.shutdown(wait=True)

    def submit(self, task: dict) -> cf.Future:
        f = self.pool.submit(trial_mod.run_trial, task)
        self.ids[f] = task["id"]
        return f

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, dict]]:
        if not handles:
            return []
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out = []
        for f in done:
            tid = self.ids.pop(f)
            try:
                out.append((f, f.result()))
            except Exception as e:  # a bug in the supervisor: report it as the trial's failure
                out.append((f, _failed(tid, f"{type(e).__name__}: {e}")))
        return out

    def interrupt(self, handles: list) -> None:
        trial_mod.interrupt_running()


class RayBackend:
    """address None: start a local Ray runtime with `workers` CPUs; otherwise join that cluster."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise DeeptutError("--backend ray needs Ray: pip install 'deeptut[ray]'") from None
        self.ray = ray

        kw: dict[str, Any] = dict(runtime_env={"env_vars": trial_mod.child_env()}, log_to_driver=False,
                                  configure_logging=False)
        if address and "RAY_AUTH_MODE" not in os.environ and _have_ray_token():
            # `ray start` turns token authentication on where a token exists (Ray >= 2.5x); a driver joining
            # such a cluster must say so itself, or the cluster refuses it ("InvalidAuthToken")
            os.environ["RAY_AUTH_MODE"] = "token"
        try:
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **kw)
        except Exception as e:  # ConnectionError, RuntimeError: name the address
            raise DeeptutError(f"cannot start or join Ray{' at ' + address if address else ''}: {e}") from None
        self.remote = ray.remote(num_cpus=1, max_retries=RAY_TASK_RETRIES)(trial_mod.run_trial)
        self.slots = max(1, workers or int(ray.cluster_resources().get("CPU", 1)))
        self.ids: dict[Any, str] = {}

    def __enter__(self) -> "RayBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ray.shutdown()

    def submit(self, task: dict) -> Any:
        ref = self.remote.remote(task)
        self.ids[ref] = task["id"]
        return ref

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, dict]]:
        if not handles:
            return []
        ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=timeout)
        out = []
        for ref in ready:
            tid = self.ids.pop(ref)
            try:
                out.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.TaskCancelledError:
                out.append((ref, _failed(tid, "interrupted", trial_mod.INTERRUPTED)))
            except Exception as e:  # the worker died more often than RAY_TASK_RETRIES, or a bug
                out.append((ref, _failed(tid, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")))
        return out

    def interrupt(self, handles: list) -> None:
        # a KeyboardInterrupt inside each running task: run_trial passes SIGINT on and waits for the checkpoint
        for ref in handles:
            self.ray.cancel(ref, force=False)


def _have_ray_token() -> bool:
    from pathlib import Path

    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def make_backend(name: str, workers: int | None = None, address: str | None = None):
    if name == "local":
        if address:
            raise DeeptutError("--address is for --backend ray")
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(workers, address)
    raise DeeptutError(f"unknown backend {name!r} (local or ray)")
