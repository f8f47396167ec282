"""The unsupervised benchmark rows run end to end on the bundled MNIST: bench/unsup.py (a tiny scale) and
bench/gpu.py's sda / dbn rows in their --quick dry run on the CPU (the rows a GPU session runs unattended)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import tiny

ROOT = Path(__file__).resolve().parents[1]
keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~10 s on the 2-core machine
def test_unsup_bench_prints_a_row_per_model_with_ratios(tmp_path, capsys):
    assert load("unsup").main(["--rounds", "1", "--scale", "0.05", "--rows", "da,rbm,sda L1",
                               "--out-dir", str(tmp_path)]) == 0
    table = (tmp_path / "unsup.md").read_text()
    assert "Machine: " in table and "load average" in table
    for row in ("| da | 20 | 2500 |", "| rbm | 20 | 2500 |", "| sda L1 | 1 | 50000 |"):
        assert row in table
    (result,) = tmp_path.glob("unsup-*.json")
    rows = json.loads(result.read_text())["rows"]
    assert [r["row"] for r in rows] == ["da", "rbm", "sda L1"]
    for r in rows:  # the ratio is made of its parts: plain's and deeptut's seconds per epoch in this table
        sec = r["seconds_per_epoch"]
        assert r["updates_per_epoch"] == 50_000 // r["batch_size"]
        for way in ("plain", "plain-1t"):
            assert r["ratio"][way] == pytest.approx(sec[way] / sec["deeptut"], rel=0.02, abs=0.01), (r, way)
        assert 0 < r["cpu_seconds_per_epoch"]["deeptut"] and 0 < sec["deeptut"]


@pytest.mark.slow  # ~5 s quiet (the cases are built on real MNIST), 23 s at load 13
def test_unsup_bench_extrapolates_and_divides_what_it_timed(tmp_path, monkeypatch):
    """With the timing replaced by known per-minibatch seconds (deeptut 1 ms, plain 4 ms, plain-1t 2 ms; CPU
    half of each), each row's epoch is the median minibatch time x its updates, and the ratios are 4 and 2:
    a bench that extrapolated from the wrong count, took the wrong median or divided the wrong way fails."""
    unsup = load("unsup")
    per = {"deeptut": [0.001, 0.001, 0.009], "plain": [0.004, 0.004, 0.0001], "plain-1t": [0.002] * 3}
    calls = {}

    def fake_time(self, way, n, default_threads):
        k = calls.setdefault((self.row if hasattr(self, "row") else id(self), way), [0])
        k[0] += 1
        w = per[way][(k[0] - 2) % 3] if k[0] > 1 else 1.0  # the first call is the warm-up: not counted
        return w, w / 2

    monkeypatch.setattr(unsup.Case, "time", fake_time)
    assert unsup.main(["--rounds", "3", "--scale", "0.05", "--rows", "da,dbn L0", "--out-dir", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("unsup-*.json")
    rows = {r["row"]: r for r in json.loads(result.read_text())["rows"]}
    for name, updates in (("da", 2500), ("dbn L0", 5000)):
        r = rows[name]
        assert r["updates_per_epoch"] == updates
        assert r["seconds_per_epoch"] == pytest.approx(
            {"deeptut": 0.001 * updates, "plain": 0.004 * updates, "plain-1t": 0.002 * updates}, abs=0.006)
        assert r["cpu_seconds_per_epoch"]["plain"] == pytest.approx(0.002 * updates, abs=0.006)
        assert r["ratio"] == {"plain": 4.0, "plain-1t": 2.0}
    table = (tmp_path / "unsup.md").read_text()
    assert "| da | 20 | 2500 | 2.5 (1.2) | 10.0 (5.0) | 5.0 (2.5) | 4.00 | 2.00 |" in table


@pytest.mark.slow  # ~15 s
def test_gpu_bench_sda_dbn_rows_dry_run(tmp_path):
    assert load("gpu").main(["--device", "cpu", "--quick", "--rows", "sda,dbn", "--out", str(tmp_path)]) == 0
    rows = {r["row"]: r for r in json.loads((tmp_path / "gpu_bench.json").read_text())["rows"]}
    for name in ("sda", "dbn"):
        r = rows[name]
        assert r["status"] == "ok" and r["finished"] is True, r
        assert r["pretrain_epochs_done"] == "3/3" and r["finetune_validations"] >= 1
        # the row's figures are the run's own: the summary's best validation is the lowest validation the
        # metrics recorded, and its test error the one measured at the last new best
        assert r["best_validation_error"] == pytest.approx(r["best_valid_error"], abs=1e-9)
        assert r["test_error"] == pytest.approx(r["last_test_error"], abs=1e-9)
        assert r["pretrain_seconds"] > 0 and len(r["pretrain_costs_last"]) == 3
