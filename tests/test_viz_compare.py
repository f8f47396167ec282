"""compare: the model-selection table and the overlaid validation curves."""

import json

import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

from deeptut.errors import DataError  # noqa: E402
from deeptut.viz import compare  # noqa: E402
from synthetic_run import make_synthetic_run  # noqa: E402


# The keys fit writes in summary.json (train/loop.py), with typical values; nothing else.
LOOP_SUMMARY = {"best_validation_error": 6.0, "test_error": 6.5, "best_iteration": 30, "epochs": 6,
                "iterations": 36, "stopped": "n_epochs", "evaluation": "tutorial",
                "evaluated_examples": {"valid": 10000, "test": 10000}, "train_seconds": 0.3,
                "epochs_per_second": 20.0, "device": "cpu", "fault": None}


def _runs(tmp_path):
    a = make_synthetic_run(tmp_path / "runs" / "logistic-a", "logistic", n_checkpoints=0)
    b = make_synthetic_run(tmp_path / "runs" / "mlp-b", "mlp", n_checkpoints=0, n_validations=9,
                           n_train_batches=2500, seed=7)
    # summary.json as the loop writes it (the synthetic run's has keys of its own, such as elapsed_s)
    (a / "summary.json").write_text(json.dumps(LOOP_SUMMARY))
    (b / "summary.json").write_text(json.dumps(LOOP_SUMMARY | dict(
        best_validation_error=1.69, test_error=1.65, train_seconds=1234.56, epochs=828)))
    return a, b


def test_table_and_png(tmp_path):
    a, b = _runs(tmp_path)
    table, png = compare([a, b])
    lines = table.splitlines()
    assert lines[0].split() == ["run", "model", "preset", "seed", "best", "valid", "%", "test", "%", "time", "s",
                                "epochs"]
    assert lines[2].split() == ["logistic-a", "logistic", "logistic", "1234", "6.000000", "6.500000", "0.3", "6"]
    assert lines[3].split() == ["mlp-b", "mlp", "mlp", "7", "1.690000", "1.650000", "1234.6", "828"]
    assert lines[-1] == "selected on validation: mlp-b (1.690000 % validation error, 1.650000 % test error)"
    # beside the runs' folder, never among the runs (issue 24): a sibling comparisons/ folder
    assert png.parent == tmp_path / "comparisons" and png.name.startswith("compare-")
    with PIL.open(png) as im:
        assert im.size == (750, 450)
        assert len(im.getcolors(1 << 16)) > 20


def test_out_dir(tmp_path):
    a, b = _runs(tmp_path)
    _, png = compare([a, b], out_dir=tmp_path / "cmp")
    assert png == tmp_path / "cmp" / "compare.png" and png.is_file()


def test_missing_summary_named(tmp_path):
    a, b = _runs(tmp_path)
    (b / "summary.json").unlink()
    with pytest.raises(DataError, match=r"mlp-b/summary.json: missing"):
        compare([a, b])


def test_corrupt_files_named(tmp_path):
    a, b = _runs(tmp_path)
    (a / "summary.json").write_text('{"best_validation_error": "low"}')
    with pytest.raises(DataError, match="summary.json: 'best_validation_error' must be a number"):
        compare([a, b])
    (a / "summary.json").write_text("[]")
    with pytest.raises(DataError, match="summary.json: expected a JSON object"):
        compare([a, b])
    (a / "summary.json").write_text("{}")
    with pytest.raises(DataError, match="no 'best_validation_error'"):
        compare([a, b])
    make_synthetic_run(a, n_checkpoints=0)
    (a / "config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="config.json: cannot read"):
        compare([a, b])


def test_no_runs():
    with pytest.raises(DataError, match="at least one"):
        compare([])


def test_callable_again_after_first_use(tmp_path):
    import deeptut.viz as viz

    a, b = _runs(tmp_path)
    viz.compare([a])
    assert callable(viz.compare) and callable(viz.render_all) and callable(viz.write_report)
    viz.compare([a, b])


def test_a_run_written_by_fit(tmp_path):
    """What fit writes is what compare reads: the summary's keys are LOOP_SUMMARY's, and the row shows its
    numbers (the time is train_seconds)."""
    import torch

    import tiny
    from deeptut.train.loop import fit

    n = torch.get_num_threads()
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    try:
        fit(tiny.tiny_config(n_epochs=2), tiny.tiny_splits(), run, quiet=True)
    finally:
        torch.set_num_threads(n)
    s = json.loads((run / "summary.json").read_text())
    assert set(s) == set(LOOP_SUMMARY)
    table, png = compare([run])
    assert table.splitlines()[2].split()[-4:] == [
        f"{s['best_validation_error']:.6f}", f"{s['test_error']:.6f}", f"{s['train_seconds']:.1f}", "2"]
    assert png.is_file()
