"""The Ray backend against a real Ray head on loopback (started here, stopped at the end): six tiny trials,
one Ray worker SIGKILLed mid-trial; every trial finishes exactly once and the killed one resumes from its
checkpoint. Skipped only where Ray cannot be imported."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install 'deeptut[ray]' (make install-test does)")

from sweep_helpers import (BASE, attempts, check_metrics_consistent, env, ledger_ids, only_sweep_dir,  # noqa: E402
                           running_with_checkpoint, start_driver, tiny_data, wait_for, write_spec)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(roots: set[int]) -> set[int]:
    parent = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, grew = set(roots), True
    while grew:
        new = {pid for pid, pp in parent.items() if pp in out and pid not in out}
        out |= new
        grew = bool(new)
    return out


def _stop_head(temp_dir: str, port: int) -> None:
    """Stop this test's Ray processes only (by id: those whose command line names our temp dir or our head's
    port, e.g. the client server `ray.util.client.server --address=HOST:PORT`, which names neither the temp
    dir nor a parent of ours; and their children), rather than `ray stop`, which would stop every Ray on the
    machine."""
    roots, ours = set(), re.compile(rf":{port}(?!\d)")
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                cmdline = (p / "cmdline").read_bytes().decode(errors="replace")
                if temp_dir in cmdline or ("ray" in cmdline and ours.search(cmdline)):
                    roots.add(int(p.name))
            except OSError:
                pass
    for pid in _descendants(roots):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def ray_head():
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="dtray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray_cli = Path(sys.executable).parent / "ray"
    # RAY_AUTH_MODE: disabled here, explicitly (this head listens on loopback only), so that the test does not
    # depend on whether an earlier Ray left a token in ~/.ray (Ray 2.5x turns token auth on when one exists)
    e = {**env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    try:
        subprocess.run([str(ray_cli), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats",
                        "--temp-dir", temp_dir], check=True, timeout=180, env=e, capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_head(temp_dir, port)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_sweep_survives_a_killed_worker(ray_head, tmp_path):
    data = tiny_data(tmp_path / "data")
    spec = write_spec(tmp_path / "s.toml", BASE + "n_epochs = 400\n[grid]\nlearning_rate = [0.01, 0.02, 0.03]\n",
                      name="ray", seeds="[1, 2]")
    sweeps = tmp_path / "sweeps"
    log = tmp_path / "driver.log"
    driver = start_driver([str(spec), "--data-dir", str(data), "--sweeps-dir", str(sweeps), "--backend", "ray",
                           "--address", ray_head], tmp_path, log, RAY_AUTH_MODE="disabled")
    try:
        d = wait_for(lambda: sweeps.exists() and any(sweeps.iterdir()) and only_sweep_dir(sweeps), 60, "sweep dir")
        tid = wait_for(lambda: running_with_checkpoint(d), 120, "a trial mid-run")
        first = attempts(d, tid)[-1]
        assert first["worker_pid"] not in (driver.pid, os.getpid())
        os.kill(first["worker_pid"], signal.SIGKILL)  # the Ray worker, not the training process
        assert driver.wait(240) == 0, log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    ids = ledger_ids(d)
    expected = [f"c00{c}-s{s}" for c in range(3) for s in (1, 2)]
    assert sorted(ids) == expected  # every trial recorded, none twice
    with open(d / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == expected and all(r["status"] == "finished" for r in rows)
    tries = attempts(d, tid)
    assert [a["mode"] for a in tries] == ["start", "resume"], tries
    assert tries[1]["worker_pid"] != first["worker_pid"]  # re-executed by Ray in another worker
    assert "resuming" in (d / "logs" / f"{tid}.log").read_text()  # from its checkpoint, not from scratch
    # the killed worker's training process died with it (no second writer of the run directory)
    assert not Path(f"/proc/{first['child_pid']}").exists() or \
        str(d) not in Path(f"/proc/{first['child_pid']}/cmdline").read_bytes().decode(errors="replace")
    for t in expected:
        check_metrics_consistent(d / "trials" / t)
        s = json.loads((d / "trials" / t / "summary.json").read_text())
        assert s["epochs"] == 400
    assert all(len(attempts(d, t)) == 1 for t in expected if t != tid)
