"""`deeptut lr-find PRESET` end to end on tiny data: the run-like folder, the picture, the suggestion."""

import json

from deeptut import cli, config
from synthetic import write_tiny_idx


def test_lr_find_cli_writes_the_picture_and_prints_the_suggestion(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_tiny_idx(data, n_train=500, n_valid=100, n_test=100)
    found = tmp_path / "lr-find"
    assert cli.main(["lr-find", "logistic", "--data-dir", str(data), "--out-dir", str(found), "--dataset", "idx",
                     "--batch_size", "20", "--threads", "1", "--steps", "80"]) == 0
    out = capsys.readouterr().out
    (folder,) = found.iterdir()
    assert folder.name.startswith("logistic-")
    assert (folder / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((folder / "lr_find.json").read_text())
    saved = json.loads((folder / "config.json").read_text())["config"]
    assert saved["batch_size"] == 20 and saved["dataset"] == "idx" and result["batch_size"] == 20
    assert len(result["learning_rates"]) <= 80 and result["n_steps"] == 80
    # the suggestion is a tenth of the rate at the smoothed minimum, and it is what the console says
    i = min(range(len(result["smoothed"])), key=lambda k: result["smoothed"][k] if result["smoothed"][k]
            is not None else float("inf"))
    assert result["min_rate"] == result["learning_rates"][i] and result["suggestion"] == result["min_rate"] / 10
    assert f"suggested learning rate: {result['suggestion']:.3g}" in out
    assert f"--learning_rate {result['suggestion']:.3g}" in out and str(folder / "lr_find.png") in out


def test_lr_find_cli_errors(tmp_path, capsys):
    assert cli.main(["lr-find", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert cli.main(["lr-find", "logistic", "--no_such_key", "1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert set(config.preset_names()) >= {"logistic", "lenet-fast"}
