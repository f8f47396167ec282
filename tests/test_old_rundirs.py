"""Run directories written by deeptut 0.1 (tests/fixtures/rundir-v0.1, made before the restructuring of
issue 12) still load: `deeptut eval` prints the errors their summary.json recorded, `deeptut viz` draws their
pictures, `deeptut train --resume` finishes an interrupted one as the uninterrupted run ended, and resumes a
finished one to nothing. The fixtures are copied to a temporary folder before anything writes into them.

They use the bundled MNIST (what the runs were trained on; a resumed run checks the data's fingerprint)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from deeptut import cli

FIXTURES = Path(__file__).parent / "fixtures" / "rundir-v0.1"
TIMINGS = ("train_seconds", "epochs_per_second")  # what differs between two runs of the same config


@pytest.fixture(autouse=True)
def keep_threads():
    """fit sets torch's thread count from the saved config: put it back afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def files(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def eval_errors(run: Path, capsys, *extra: str) -> dict[str, str]:
    """`deeptut eval RUN`'s errors as printed: {"valid": "11.010417", "test": ...} (percent, %f)."""
    assert cli.main(["eval", str(run), *extra]) == 0
    out = capsys.readouterr().out
    found = dict(re.findall(r"^(valid|test) error (\S+) %", out, re.M))
    assert set(found) == {"valid", "test"}, out
    return found


@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_eval_prints_the_recorded_errors(name, tmp_path, capsys):
    run = copy(name, tmp_path)
    before = files(run)
    summary = json.loads((run / "summary.json").read_text())
    assert eval_errors(run, capsys) == {"valid": f"{summary['best_validation_error']:f}",
                                        "test": f"{summary['test_error']:f}"}
    assert files(run) == before  # eval only reads


@pytest.mark.slow  # ~5 s each: matplotlib and the GIF
@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_viz_draws_the_pictures(name, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = copy(name, tmp_path)
    full = eval_errors(run, capsys, "--evaluation", "full")  # the whole test set, as the confusion matrix
    assert cli.main(["viz", str(run)]) == 0
    written = {Path(line).name for line in capsys.readouterr().out.split()}
    expected = {"learning_curves.png", "filters.png", "confusion.png", "errors.png"}
    if name == "logistic":  # the run kept a model at iteration 166
        expected |= {"filters_evolution.png", "filters_evolution.gif"}
    assert expected <= written
    assert all((run / "plots" / f).stat().st_size > 1000 for f in expected)
    confusion = json.loads((run / "plots" / "confusion.json").read_text())
    assert confusion["n"] == 10_000 and f"{confusion['error_percent']:f}" == full["test"]


def test_resume_finishes_an_interrupted_run_as_the_whole_run_ended(tmp_path, capsys, monkeypatch):
    # The runs were made on the CPU with device = "auto": on a GPU machine "auto" would continue on the GPU,
    # which is not bit-identical (README, Reliability). Here "auto" means the CPU, as it did then.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = copy("logistic-interrupted", tmp_path)
    old_metrics = (run / "metrics.jsonl").read_text()
    assert not (run / "summary.json").exists()
    assert cli.main(["train", "--resume", str(run), "-q"]) == 0
    capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    for k in TIMINGS:
        summary.pop(k)
    whole = json.loads((FIXTURES / "logistic-whole.summary.json").read_text())
    assert summary == whole
    metrics = (run / "metrics.jsonl").read_text()
    assert metrics.startswith(old_metrics)  # the two validations before the interrupt, as written then
    assert [json.loads(line)["epoch"] for line in metrics.splitlines()] == [1, 2, 3, 4]


def test_resuming_a_finished_run_does_nothing(tmp_path, capsys):
    run = copy("logistic", tmp_path)
    before = files(run)
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert files(run) == before
