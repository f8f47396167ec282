"""bench/pretrain_epoch.py: a pre-training epoch from the printed timers, on hand-written logs (no process is
started, no torch is imported)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_pretrain_epoch", ROOT / "bench" / "pretrain_epoch.py")
pe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pe)

PEER = ('$ /py -c "import SdA; SdA.test_SdA(pretraining_epochs=2, training_epochs=1)"\n... pre-training the model\n'
        "The pretraining code for file SdA.py ran for 20.00m\nThe training code for file SdA.py ran for 6.95m\n")
OURS = ("$ .venv/bin/python -m deeptut train sda --pretraining_epochs 1 --n_epochs 1 --threads 1\n"
        "The pretraining code ran for 5.00m\n")


def test_printed_minutes_over_the_commands_epochs(tmp_path):
    (tmp_path / "SdA-peer-e2-1.log").write_text(PEER)
    (tmp_path / "SdA-deeptut-e1-1.log").write_text(OURS)
    assert pe.read_log(tmp_path / "SdA-peer-e2-1.log") == {
        "log": "SdA-peer-e2-1.log", "epochs": 2, "pretraining_s": 1200.0, "per_epoch_s": 600.0}
    assert pe.read_log(tmp_path / "SdA-deeptut-e1-1.log")["per_epoch_s"] == 300.0


def test_a_log_without_its_timer_names_the_file(tmp_path):
    p = tmp_path / "SdA-peer-e1-1.log"
    p.write_text(PEER.replace("The pretraining code", "The code"))
    with pytest.raises(ValueError, match=r"SdA-peer-e1-1.log: 0 printed pre-training times"):
        pe.read_log(p)
    p.write_text("no command\n" + PEER)
    with pytest.raises(ValueError, match="first line"):
        pe.read_log(p)


def test_peak_is_the_best_gemm_line():
    out = "gemm 256x256 @ 256x256: 36.3 GFLOP/s\ngemm 512x512 @ 512x512: 37.0 GFLOP/s\ngemm 1x784 @ 784x1000: 17.6 GFLOP/s\n"
    assert pe.peak_of(out) == {"gflops": 37.0, "shape": [512, 512, 512]}


def test_full_run_ratio_and_fraction_of_peak(tmp_path):
    (tmp_path / "SdA-peer-e2-1.log").write_text(PEER)
    (tmp_path / "SdA-peer-e1-1.log").write_text(PEER.replace("=2", "=1").replace("20.00m", "11.00m"))  # 660 s
    (tmp_path / "SdA-deeptut-e1-1.log").write_text(OURS)
    (tmp_path / "gemm.txt").write_text("gemm 512x512 @ 512x512: 40.0 GFLOP/s\n")
    subprocess.run([sys.executable, str(ROOT / "bench" / "pretrain_epoch.py"), str(tmp_path), "--workload", "SdA",
                    "--gemm-stdout", str(tmp_path / "gemm.txt")], check=True, capture_output=True)
    out = json.loads((tmp_path / "pretrain_epoch.json").read_text())
    fr = pe.cpu_roofline.FULL_RUNS["SdA"]
    assert out["peer_per_epoch_s"] == 600.0 and out["deeptut_per_epoch_s"] == 300.0  # the best log of each side
    assert out["peer_full_s"] == 15 * 600.0 and out["ratio"] == 2.0
    assert out["t_peak_s"] == pytest.approx(15 * fr.epoch_flops() / 40e9)
    assert out["deeptut_frac"] == pytest.approx(out["t_peak_s"] / 4500.0)
