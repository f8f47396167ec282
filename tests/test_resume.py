"""`deeptut train --resume RUN_DIR`: through the CLI, after a finished run, before the first checkpoint,
and refusing what cannot be resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tiny
from deeptut import cli
from deeptut.errors import CheckpointError
from deeptut.train import loop
from deeptut.train.loop import fit

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)
REPO = Path(__file__).resolve().parents[1]


def write_toml(path: Path, cfg) -> Path:
    d = cfg.to_dict()
    lines = []
    for k in tiny.CONFIGS["momentum"].keys() | {"n_in", "n_out", "device", "threads", "seed", "preset"}:
        v = d[k]
        lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_interrupt_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("deeptut.data.datasets.load_dataset", lambda *a, **k: tiny.tiny_splits())
    cfg = tiny.tiny_config("momentum")
    toml = write_toml(tmp_path / "tiny.toml", cfg)
    assert cli.main(["train", "--config", str(toml), "--runs-dir", str(tmp_path / "ref"), "-q"]) == 0
    ref_dir, = (tmp_path / "ref").iterdir()
    ref = tiny.run_record(ref_dir)

    tiny.at_step(monkeypatch, 200, lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert cli.main(["train", "--config", str(toml), "--runs-dir", str(tmp_path / "runs")]) == 128 + signal.SIGTERM
    run_dir, = (tmp_path / "runs").iterdir()
    err = capsys.readouterr().err
    assert f"checkpoint written; resume with: deeptut train --resume {run_dir}" in err
    monkeypatch.undo()
    monkeypatch.setattr("deeptut.data.datasets.load_dataset", lambda *a, **k: tiny.tiny_splits())
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert "resuming" in capsys.readouterr().out
    assert tiny.differences(tiny.run_record(run_dir), ref) == []

    # resuming a finished run changes nothing and trains nothing
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    count = tiny.at_step(monkeypatch, 10**9, lambda: None)
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert "already finished" in capsys.readouterr().out and count[0] == 0
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_resume_before_the_first_checkpoint_starts_over(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    fit(tiny.tiny_config("fused"), tiny.tiny_splits(), ref, quiet=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((ref / "config.json").read_bytes())  # killed right after this
    (run / ".init.safetensors.x1y2.tmp").write_bytes(b"torn")
    from deeptut.store import rundir

    fit(rundir.load_config(run), tiny.tiny_splits(), run, quiet=True, resume=True)
    assert tiny.differences(tiny.run_record(run), tiny.run_record(ref)) == []


def test_resume_refuses_other_data_and_edited_configs(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    tiny.at_step(monkeypatch, 9, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(loop.Interrupted):
        fit(tiny.tiny_config("fused"), tiny.tiny_splits(), run, quiet=True)
    monkeypatch.undo()
    from deeptut.store import rundir

    with pytest.raises(CheckpointError, match="the data differs"):
        fit(rundir.load_config(run), tiny.tiny_splits(seed=1), run, quiet=True, resume=True)
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["learning_rate"] = 0.5
    (run / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="another config .*learning_rate"):
        fit(rundir.load_config(run), tiny.tiny_splits(), run, quiet=True, resume=True)
    monkeypatch.setattr("deeptut.data.datasets.load_dataset", lambda *a, **k: tiny.tiny_splits())
    assert cli.main(["train", "--resume", str(run)]) == 2
    assert "another config" in capsys.readouterr().err


def test_a_run_from_before_a_config_key_existed_resumes(tmp_path, monkeypatch):
    """A run written before a key was added to TrainConfig (here augment_shift) resumes: the missing key
    means its default, the behaviour before the key existed."""
    from deeptut import config
    from deeptut.store import rundir

    ref = tmp_path / "ref"
    ref.mkdir()
    fit(tiny.tiny_config("fused"), tiny.tiny_splits(), ref, quiet=True)
    run = tmp_path / "run"
    run.mkdir()
    real = config.TrainConfig.to_dict
    monkeypatch.setattr(config.TrainConfig, "to_dict",
                        lambda self: {k: v for k, v in real(self).items() if k != "augment_shift"})
    tiny.at_step(monkeypatch, 9, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(loop.Interrupted):
        fit(tiny.tiny_config("fused"), tiny.tiny_splits(), run, quiet=True)
    monkeypatch.undo()
    assert "augment_shift" not in json.loads((run / "config.json").read_text())["config"]
    fit(rundir.load_config(run), tiny.tiny_splits(), run, quiet=True, resume=True)
    assert tiny.differences(tiny.run_record(run), tiny.run_record(ref)) == []


def test_resume_arguments(tmp_path, capsys):
    assert cli.main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory (no config.json)" in capsys.readouterr().err
    assert cli.main(["train", "logistic", "--resume", str(tmp_path)]) == 2
    assert "--resume takes the run directory only" in capsys.readouterr().err


@pytest.mark.slow
def test_real_mnist_cli_killed_and_resumed(tmp_path):
    """The real thing: `python -m deeptut train logistic` on MNIST, SIGKILLed after its first checkpoints,
    resumed with --resume, ends as the uninterrupted run."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    args = [sys.executable, "-m", "deeptut", "train", "logistic", "--n_epochs", "6", "--threads", "1", "-q"]
    subprocess.run(args + ["--runs-dir", str(tmp_path / "ref")], check=True, env=env, capture_output=True)
    p = subprocess.Popen(args + ["--runs-dir", str(tmp_path / "runs")], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "runs").glob("*/checkpoints/ckpt-0000000[2-9]*")):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.002)
    p.kill()
    p.wait()
    run_dir, = (tmp_path / "runs").iterdir()
    assert not (run_dir / "summary.json").exists()
    subprocess.run([sys.executable, "-m", "deeptut", "train", "--resume", str(run_dir), "-q"], check=True,
                   env=env, capture_output=True)
    ref_dir, = (tmp_path / "ref").iterdir()
    assert tiny.differences(tiny.run_record(run_dir), tiny.run_record(ref_dir)) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("graphs", ["off", "on"])
@pytest.mark.parametrize("name", ["fused", "momentum"])
def test_cuda_interrupt_and_resume(tmp_path, monkeypatch, name, graphs):
    """On a GPU (same card, same software): interrupted at two points and resumed, bit-identical again."""
    from deeptut.store import rundir

    cfg = tiny.tiny_config(name, device="cuda", graphs=graphs)
    ref = tmp_path / "ref"
    ref.mkdir()
    fit(cfg, tiny.tiny_splits(), ref, quiet=True)
    for k in (7, 19):  # calls of learning_rate_at: with CUDA graphs and a constant rate, one per validation
        run = tmp_path / f"run-{k}"
        run.mkdir()
        tiny.at_step(monkeypatch, k, lambda: os.kill(os.getpid(), signal.SIGINT))
        with pytest.raises(loop.Interrupted):
            fit(cfg, tiny.tiny_splits(), run, quiet=True)
        monkeypatch.undo()
        fit(rundir.load_config(run), tiny.tiny_splits(), run, quiet=True, resume=True)
        assert tiny.differences(tiny.run_record(run), tiny.run_record(ref)) == []
