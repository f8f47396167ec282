"""The command line end to end on a tiny IDX dataset, and its error messages."""

import json

import pytest

from deeptut.cli import main
from synthetic import write_tiny_idx

TRAIN = ["--dataset", "idx", "--batch_size", "20", "--n_epochs", "3", "--learning-rate", "0.1"]


@pytest.fixture()
def tiny(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return write_tiny_idx(d, n_train=500, n_valid=100, n_test=100)


def test_train_eval_predict(tiny, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "logistic", "--data-dir", str(tiny), "--runs-dir", str(runs), *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "epoch 1, minibatch 25/25, validation error" in out  # the tutorial's log lines
    assert "test error of best model" in out and "Optimization complete with best validation score of" in out
    (run,) = runs.iterdir()
    assert run.name.startswith("logistic-")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["batch_size"] == 20 and cfg["learning_rate"] == 0.1 and cfg["dataset"] == "idx"

    assert main(["eval", str(run), "--data-dir", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert f"test error {summary['test_error']:f} %" in out

    assert main(["predict", str(run), str(tiny / "t10k-images-idx3-ubyte")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 100 and lines[0].startswith(str(tiny / "t10k-images-idx3-ubyte") + "[0]\t")


def test_quiet_prints_one_line(tiny, tmp_path, capsys):
    assert main(["train", "logistic", "-q", "--data-dir", str(tiny), "--runs-dir", str(tmp_path), *TRAIN]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("best validation score of")


@pytest.mark.parametrize("args,message", [
    (["train", "logistic", "--learning_rat", "0.1"], "unknown config key 'learning_rat'"),
    (["train", "logistic", "--n_epochs", "many"], "n_epochs expects int"),
    (["train", "nosuch"], "unknown preset 'nosuch'"),
    (["train"], "name a preset"),
    (["eval", "/nonexistent/run"], "/nonexistent/run: no such run directory"),
])
def test_errors_are_one_clear_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_data_names_the_file(tiny, tmp_path, capsys):
    f = tiny / "train-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:-7])  # truncated
    assert main(["train", "logistic", "--data-dir", str(tiny), "--runs-dir", str(tmp_path), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "train-labels-idx1-ubyte" in err and "truncated" in err


def test_missing_data_dir_says_what_to_put_where(tmp_path, capsys):
    assert main(["train", "logistic", "--data-dir", str(tmp_path / "empty"), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "train-images-idx3-ubyte" in err


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "deeptut", "presets"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("preset ") and "\nlogistic " in r.stdout
