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
    assert all(r["seconds_per_epoch"]["deeptut"] > 0 and r["ratio"]["plain"] > 0 for r in rows)


@pytest.mark.slow  # ~15 s
def test_gpu_bench_sda_dbn_rows_dry_run(tmp_path):
    assert load("gpu").main(["--device", "cpu", "--quick", "--rows", "sda,dbn", "--out", str(tmp_path)]) == 0
    rows = {r["row"]: r for r in json.loads((tmp_path / "gpu_bench.json").read_text())["rows"]}
    for name in ("sda", "dbn"):
        r = rows[name]
        assert r["status"] == "ok" and r["finished"] is True, r
        assert r["pretrain_epochs_done"] == "3/3" and r["finetune_validations"] >= 1
        assert 0 <= r["test_error"] <= 100
