"""One trial: an ordinary `deeptut train` run in its own OS process, supervised by a worker (a thread of the
local backend or a Ray task). This module is what a Ray worker imports: no torch, no deeptut internals.

A trial whose process dies (SIGKILL, out of memory, a crash) is started again with `deeptut train --resume`,
which continues from the run's last checkpoint; a trial whose *worker* dies is re-executed by its backend
(Ray's task retries) and does the same, since everything it needs is in the run directory. Attempts are
counted in logs/<id>.attempts.jsonl across workers, so `max_attempts` bounds them all.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

_RUNNING: dict[str, subprocess.Popen] = {}  # trial id -> its training process, in this worker process
_LOCK = threading.Lock()
FINISHED, FAILED, INTERRUPTED = "finished", "failed", "interrupted"


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the thread that started it dies (Linux prctl
    PR_SET_PDEATHSIG), so a killed worker leaves no orphan still writing the run directory."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read_attempts(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            pass
    return out


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _wait_for_previous(attempts: list[dict], run_dir: str, seconds: float = 10.0) -> None:
    """A previous attempt's process on this host that still runs (its worker died a moment ago) is killed
    and waited for: never two processes writing one run directory."""
    if not attempts or attempts[-1].get("host") != socket.gethostname():
        return
    pid = attempts[-1].get("child_pid")
    if not pid:
        return
    try:
        if run_dir not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return  # the pid is gone or was reused
        os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        return
    end = time.monotonic() + seconds
    while time.monotonic() < end and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def interrupt_running() -> None:
    """SIGINT every training process this worker runs: each writes a checkpoint and exits (130)."""
    with _LOCK:
        procs = list(_RUNNING.values())
    for p in procs:
        try:
            p.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass


def _summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_trial(task: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one trial; returns {"id", "status", "summary", "attempts",
    "wall_s", "error"}. `task` holds absolute paths and the two command lines (see run.make_task)."""
    run_dir, log_path = Path(task["run_dir"]), Path(task["log"])
    attempts_path = Path(task["attempts"])
    env = {**os.environ, **task.get("env", {})}
    t0 = time.perf_counter()
    result = {"id": task["id"], "status": FAILED, "summary": None, "attempts": 0, "wall_s": 0.0, "error": None}
    while True:
        previous = _read_attempts(attempts_path)
        result["attempts"] = len(previous)
        summary = _summary(run_dir)
        if summary is not None:
            result.update(status=FINISHED, summary=summary)
            break
        if len(previous) >= task["max_attempts"]:
            result["error"] = f"gave up after {len(previous)} attempts (see {log_path})"
            break
        _wait_for_previous(previous, str(run_dir))
        resume = (run_dir / "config.json").exists()
        cmd = task["cmd_resume"] if resume else task["cmd_start"]
        with open(log_path, "ab") as log:
            log.write(f"\n=== attempt {len(previous) + 1} ({'resume' if resume else 'start'}) on "
                      f"{socket.gethostname()} pid {os.getpid()}: {' '.join(cmd)}\n".encode())
            log.flush()
            # its own session: a terminal's Ctrl-C reaches the driver only, which marks the sweep as stopping
            # before passing SIGINT on (a trial stopped by anything else is retried)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent, cwd=task.get("cwd"))
        record = {"attempt": len(previous) + 1, "mode": "resume" if resume else "start",
                  "host": socket.gethostname(), "worker_pid": os.getpid(), "child_pid": proc.pid,
                  "started": time.time()}
        _append(attempts_path, record)
        with _LOCK:
            _RUNNING[task["id"]] = proc
        try:
            try:
                rc = proc.wait()
            except KeyboardInterrupt:  # Ctrl-C in a local driver, or ray.cancel: stop the run cleanly
                proc.send_signal(signal.SIGINT)
                proc.wait()
                result.update(status=INTERRUPTED, error="interrupted")
                break
        finally:
            with _LOCK:
                _RUNNING.pop(task["id"], None)
        result["attempts"] = len(previous) + 1
        if rc == 0 or _summary(run_dir) is not None:  # a diverged run (exit 2) still writes its summary
            continue  # the top of the loop reads the summary
        if rc in (130, 143) and task.get("stop_flag") and Path(task["stop_flag"]).exists():
            result.update(status=INTERRUPTED, error="interrupted")
            break
        if rc == 2:  # deeptut's own error (config, data): another attempt would fail the same way
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            result["error"] = f"exit 2: {tail[0] if tail else ''}"
            break
        with open(log_path, "ab") as log:  # killed or crashed: the next attempt resumes the checkpoint
            log.write(f"=== attempt {record['attempt']} ended with exit status {rc}; retrying\n".encode())
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    return result


def child_env() -> dict[str, str]:
    """Environment additions for trial processes and Ray workers: this deeptut's source first on the path (the
    trials run the code the driver runs, not whatever else is installed), and $DEEPTUT_DATA if set."""
    import deeptut

    src = str(Path(deeptut.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": src + (os.pathsep + path if path else "")}
    if "DEEPTUT_DATA" in os.environ:
        env["DEEPTUT_DATA"] = os.environ["DEEPTUT_DATA"]
    return env
