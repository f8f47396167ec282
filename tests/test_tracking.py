"""--logger tensorboard (deeptut/viz/tracking.py): the event file read back holds metrics.jsonl's scalars at
its iterations and the filters as an image."""

import json

import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

from deeptut.cli import main  # noqa: E402
from synthetic import write_tiny_idx  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tensorboard_event_file_holds_the_metrics(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "data").mkdir()
    data = write_tiny_idx(tmp_path / "data", n_train=500, n_valid=100, n_test=100)
    runs = tmp_path / "runs"
    assert main(["train", "logistic", "--data-dir", str(data), "--runs-dir", str(runs), "--dataset", "idx",
                 "--batch_size", "20", "--n_epochs", "3", "--learning-rate", "0.1", "--threads", "1",
                 "--logger", "tensorboard"]) == 0
    (run,) = runs.iterdir()
    assert f"tensorboard: {run / 'tensorboard'}" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train_cost", "valid_error", "test_error", "learning_rate"} <= set(tags["scalars"])
    valid = acc.Scalars("valid_error")
    assert [e.step for e in valid] == [r["iteration"] for r in rows]
    assert [e.value for e in valid] == pytest.approx([r["valid_error"] for r in rows], rel=1e-6)
    tested = [r for r in rows if r["test_error"] is not None]
    assert [e.step for e in acc.Scalars("test_error")] == [r["iteration"] for r in tested]
    (image,) = acc.Images("filters")
    assert image.width > 28 and image.height > 28 and image.encoded_image_string[:4] == b"\x89PNG"


def test_unknown_logger_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "logistic", "--logger", "wandb"])
    assert "invalid choice: 'wandb'" in capsys.readouterr().err
