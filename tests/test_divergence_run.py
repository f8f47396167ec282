"""The divergence rule wired into fit and the CLI (train/divergence.py; issue 15 item 1): a diverging run
stops with `stopped = "diverged"` and the rule's figures in summary.json, keeps the best parameters so far,
resumes bit for bit (the rule's state is in the checkpoint), and the CLI says what to try and exits 2."""

import json
import os
import signal

import pytest
import torch

import tiny
from deeptut import cli
from deeptut.errors import TrainingError
from deeptut.store import files, rundir, tensors
from deeptut.train import loop, state as train_state
from deeptut.train.loop import fit
from synthetic import write_tiny_idx

# logistic regression on tiny.py's data with a one-cycle warm-up to a rate of 50 over the whole budget:
# validations at iterations 10..50 pass (means 1.36 .. 3.69 nats, below the threshold 4 x log 4 = 5.55),
# the period ending at iteration 60 (rate ~3.75) averages ~6.2 nats and fires
DIVERGING = dict(learning_rate=50.0, lr_schedule="onecycle", warmup_fraction=1.0, shuffle=False, save_every=1)


@pytest.fixture(autouse=True)
def _threads():
    yield from tiny.keep_torch_threads()


def test_a_diverging_run_stops_keeps_the_best_and_records_the_figures(tmp_path):
    cfg = tiny.tiny_config("fused", **DIVERGING)
    with pytest.raises(TrainingError, match=r"training diverged: mean training cost .* at learning rate") as e:
        fit(cfg, tiny.tiny_splits(), tmp_path, quiet=True)
    assert "try --learning_rate 25" in str(e.value) and "best.safetensors" in str(e.value)
    summary = files.read_json(tmp_path / "summary.json")
    assert e.value.summary == summary
    assert summary["stopped"] == "diverged"
    fig = summary["divergence"]
    assert fig["reason"] == "cost-rise" and fig["mean_cost"] > fig["threshold"] > fig["reference"] > 0
    assert fig["iteration"] + 1 == summary["iterations"]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(m["train_cost"] <= fig["threshold"] for m in metrics)  # the periods before passed
    assert summary["best_iteration"] == min(metrics, key=lambda m: m["valid_error"])["iteration"] > 0
    # the kept model is the one of the best validation, not the diverged one
    model, _ = rundir.load_model(tmp_path)
    at_best = tensors.load_tensors(tmp_path / "models" / f"iter-{summary['best_iteration']:08d}.safetensors")
    assert all(torch.equal(v, at_best[k]) for k, v in model.state_dict().items())
    s = train_state.load_last(tmp_path, *tiny.fresh_parts(cfg), cfg)
    assert s.finished and s.stopped == "diverged" and s.divergence["fired"] == fig
    assert s.divergence["periods"] == len(metrics)
    assert fit(cfg, tiny.tiny_splits(), tmp_path, quiet=True, resume=True) == summary  # nothing retrained


def test_divergence_off_trains_on(tmp_path):
    cfg = tiny.tiny_config("fused", **{**DIVERGING, "n_epochs": 4}, divergence="off")
    summary = fit(cfg, tiny.tiny_splits(), tmp_path, quiet=True)
    assert summary["stopped"] != "diverged" and "divergence" not in summary


def _interrupted_then_resumed(tmp_path, monkeypatch, name, drop_rule_state=False):
    run = tmp_path / name
    run.mkdir()
    if drop_rule_state:  # a checkpoint written before the rule existed
        real = train_state.LoopState.scalars
        monkeypatch.setattr(train_state.LoopState, "scalars",
                            lambda self: {k: v for k, v in real(self).items() if k != "divergence"})
    tiny.at_step(monkeypatch, 35, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(loop.Interrupted):
        fit(tiny.tiny_config("fused", **DIVERGING), tiny.tiny_splits(), run, quiet=True)
    monkeypatch.undo()
    manifest = json.loads((run / "checkpoints" / "last.json").read_text())
    assert ("divergence" in manifest["loop"]) != drop_rule_state
    with pytest.raises(TrainingError, match="diverged"):
        fit(rundir.load_config(run), tiny.tiny_splits(), run, quiet=True, resume=True)
    return tiny.run_record(run)


def test_resume_is_bit_identical_and_old_checkpoints_resume(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    ref.mkdir()
    with pytest.raises(TrainingError):
        fit(tiny.tiny_config("fused", **DIVERGING), tiny.tiny_splits(), ref, quiet=True)
    ref_record = tiny.run_record(ref)
    assert tiny.differences(_interrupted_then_resumed(tmp_path, monkeypatch, "resumed"), ref_record) == []
    # without the rule's state (a checkpoint from before the rule) the rule goes on from the chance level,
    # having seen the run's periods: here the same run
    old = _interrupted_then_resumed(tmp_path, monkeypatch, "old", drop_rule_state=True)
    assert tiny.differences(old, ref_record) == []


def test_bad_rule_state_in_a_checkpoint_is_refused(tmp_path, monkeypatch):
    from deeptut.errors import CheckpointError

    cfg = tiny.tiny_config("fused")
    tiny.at_step(monkeypatch, 25, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(loop.Interrupted):
        fit(cfg, tiny.tiny_splits(), tmp_path, quiet=True)
    monkeypatch.undo()
    path = tmp_path / "checkpoints" / "last.json"
    manifest = json.loads(path.read_text())
    manifest["loop"]["divergence"] = {"factor": "x"}
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="divergence"):
        train_state.load_last(tmp_path, *tiny.fresh_parts(cfg), cfg)


def test_cli_huge_learning_rate_exits_2_with_the_hint(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    data = write_tiny_idx(tmp_path / "data", n_train=500, n_valid=100, n_test=100)
    runs = tmp_path / "runs"
    args = ["train", "logistic", "--data-dir", str(data), "--runs-dir", str(runs), "--dataset", "idx",
            "--batch_size", "20", "--n_epochs", "3", "--learning_rate", "10000"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "at learning rate 10000" in err and "try --learning_rate 5000" in err
    (run,) = runs.iterdir()
    summary = files.read_json(run / "summary.json")
    assert summary["stopped"] == "diverged" and summary["divergence"]["reason"] == "cost-rise"
    assert summary["best_iteration"] == 0  # fired at the first validation: the initial parameters are kept
    model, _ = rundir.load_model(run)
    init = tensors.load_tensors(run / "init.safetensors")
    assert all(torch.equal(v, init[k]) for k, v in model.state_dict().items())
    assert cli.main(["train", "--resume", str(run), "--data-dir", str(data)]) == 0  # the finished run's state loads: nothing to do
    assert "already finished" in capsys.readouterr().out
