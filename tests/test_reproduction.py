"""The tutorial's published logistic regression result, bit for bit, through the CLI (seconds)."""

import json

import numpy as np
import pytest

from deeptut.cli import main
from deeptut.data.datasets import load_dataset


@pytest.fixture(scope="module")
def logistic_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    assert main(["train", "logistic", "--runs-dir", str(runs_dir), "--device", "cpu"]) == 0
    (run_dir,) = runs_dir.iterdir()
    return run_dir


@pytest.mark.slow
def test_published_result(logistic_run, capsys):
    summary = json.loads((logistic_run / "summary.json").read_text())
    assert f"{summary['best_validation_error']:f}" == "7.500000"
    assert f"{summary['test_error']:f}" == "7.489583"
    assert summary["epochs"] == 74 and summary["stopped"] == "patience"
    assert summary["evaluated_examples"] == {"valid": 9600, "test": 9600}
    lines = [json.loads(l) for l in (logistic_run / "metrics.jsonl").read_text().splitlines()]
    # patience ran out inside epoch 74, before its validation
    assert len(lines) == 73 and lines[-1]["epoch"] == 73 and lines[-1]["best"]


@pytest.mark.slow
def test_eval_and_predict_from_saved_files(logistic_run, capsys, tmp_path):
    capsys.readouterr()
    assert main(["eval", str(logistic_run)]) == 0
    out = capsys.readouterr().out
    assert "valid error 7.500000 %" in out and "test error 7.489583 %" in out
    from PIL import Image

    test = load_dataset().test
    pngs = []
    for i in range(3):
        pngs.append(tmp_path / f"digit{i}.png")
        Image.fromarray((test.x[i].reshape(28, 28) * 256).astype(np.uint8)).save(pngs[-1])
    assert main(["predict", str(logistic_run), *map(str, pngs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [int(line.split("\t")[1]) for line in out] == [7, 2, 1]  # the first three test digits
