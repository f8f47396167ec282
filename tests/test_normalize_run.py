"""Input normalisation wired through training and every path that feeds a saved model (issue 15 item 2):
statistics of the training split only, saved in model.json, applied by eval, predict and viz (report) as
in training; the tutorial presets keep `none`. (The legacy pickle holds the raw pixels, its format's [0, 1)
contract; data read from it is normalised by the same code as data read from IDX files.)"""

import dataclasses
import json

import numpy as np
import pytest
import torch

from deeptut import cli, config
from deeptut.config import TrainConfig
from deeptut.data.device import DeviceSplit
from deeptut.data.normalize import Normalizer, fit_normalizer, normalized_splits
from deeptut.store import rundir
from deeptut.train.loop import epoch_split, fit
from synthetic import tiny_splits, write_tiny_idx


def tiny_cfg(**kw):
    return TrainConfig(model="logistic", preset="tiny-norm", batch_size=20, n_epochs=2, learning_rate=0.05,
                       threads=1, device="cpu", normalize="standard", **kw)


@pytest.mark.parametrize("per_pixel", [False, True])
def test_statistics_come_from_the_training_split_only(tmp_path, per_pixel):
    data = tiny_splits()
    other_test = tiny_splits(seed=5).test  # another test split: nothing may change
    saved = []
    for i, d in enumerate((data, dataclasses.replace(data, test=other_test))):
        run = tmp_path / str(i)
        run.mkdir()
        fit(tiny_cfg(normalize_per_pixel=per_pixel), d, run, quiet=True)
        saved.append(json.loads((run / "model.json").read_text())["normalize"])
    assert saved[0] == saved[1]
    assert saved[0]["mode"] == "standard" and saved[0]["per_pixel"] == per_pixel
    x = data.train.x.astype(np.float64)
    mean = x.mean(axis=0) if per_pixel else x.mean()
    np.testing.assert_array_equal(np.asarray(saved[0]["mean"]), mean)
    both = np.concatenate([data.train.x, data.valid.x]).astype(np.float64)  # the validation split is left out
    assert not np.array_equal(np.asarray(saved[0]["mean"]), both.mean(axis=0) if per_pixel else both.mean())
    # round trip: the normaliser read back from model.json is the one training used, to the bit
    loaded = Normalizer.from_saved(*rundir.saved_normalization(tmp_path / "0"))
    fitted = fit_normalizer(data, "standard", per_pixel)
    np.testing.assert_array_equal(loaded.apply(data.test.x), fitted.apply(data.test.x))


def test_without_normalize_model_json_is_as_before(tmp_path):
    fit(tiny_cfg().replace(normalize="none"), tiny_splits(), tmp_path, quiet=True)
    assert "normalize" not in json.loads((tmp_path / "model.json").read_text())
    n = Normalizer.from_saved(*rundir.saved_normalization(tmp_path))
    x = tiny_splits().test.x
    assert n.mode == "none" and n.apply(x) is x


def test_a_normalized_run_trains_on_normalized_inputs(tmp_path):
    """The run on raw data with normalize = standard is the run on pre-normalised data without it."""
    data = tiny_splits()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    sa = fit(tiny_cfg(), data, a, quiet=True)
    pre = normalized_splits(data, fit_normalizer(data, "standard"))
    sb = fit(tiny_cfg().replace(normalize="none"), pre, b, quiet=True)
    for k in ("best_validation_error", "test_error", "best_iteration"):
        assert sa[k] == sb[k]
    assert (a / "best.safetensors").read_bytes() == (b / "best.safetensors").read_bytes()


def test_moved_images_are_normalized_after_the_move():
    cfg = tiny_cfg(augment_shift=2)
    data = tiny_splits(n_train=40)
    n = fit_normalizer(data, "standard")
    raw = DeviceSplit(data.train.x, data.train.y)
    moved = epoch_split(cfg, raw, 1, n)
    expected = n.apply(epoch_split(cfg, raw, 1).x)  # moved first (zero padding), then normalised
    assert torch.equal(moved.x, expected)
    background = float(n.apply(np.zeros((1, 1), np.float32))[0, 0])
    assert background < 0 and bool((moved.x == background).any())  # padding is the normalised background


def test_tutorial_presets_keep_raw_inputs():
    for name in ("logistic", "mlp", "lenet"):
        assert config.resolve(name).normalize == "none", name
    with pytest.raises(config.ConfigError, match="normalize must be one of"):
        TrainConfig(normalize="minmax")


def test_predict_eval_viz_and_export_agree_on_a_normalized_run(tmp_path, capsys):
    from PIL import Image

    from deeptut.data.datasets import load_dataset
    from deeptut.viz.predict import predict

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_tiny_idx(data_dir, n_train=500, n_valid=100, n_test=100)
    runs = tmp_path / "runs"
    assert cli.main(["train", "logistic", "-q", "--data-dir", str(data_dir), "--runs-dir", str(runs),
                     "--dataset", "idx", "--batch_size", "20", "--n_epochs", "2", "--learning_rate", "0.05",
                     "--normalize", "standard", "--normalize_per_pixel", "true"]) == 0
    (run,) = runs.iterdir()
    capsys.readouterr()
    # eval's per-example predictions: the saved model on the test split as eval feeds it
    model, _ = rundir.load_model(run)
    raw = load_dataset("idx", data_dir)
    fed = normalized_splits(raw, Normalizer.from_saved(*rundir.saved_normalization(run))).test.x
    with torch.no_grad():
        p_fed = torch.softmax(model(torch.from_numpy(fed)), dim=1)
        p_raw = torch.softmax(model(torch.from_numpy(raw.test.x)), dim=1)
    eval_pred = p_fed.argmax(dim=1).numpy()
    pngs = []
    for i in range(12):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.rint(raw.test.x[i] * 256).astype(np.uint8).reshape(28, 28), mode="L").save(p)
        pngs.append(str(p))
    assert cli.main(["predict", str(run), *pngs]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [int(c) for _, c, _ in lines] == eval_pred[:12].tolist()
    printed = [p for _, _, p in lines]
    assert printed == [f"(p={float(p_fed[i].max()):.4f})" for i in range(12)]
    # the raw pixels would have given other probabilities: a path that forgot the normalisation shows here
    assert printed != [f"(p={float(p_raw[i, eval_pred[i]]):.4f})" for i in range(12)]
    assert cli.main(["eval", str(run), "--data-dir", str(data_dir), "--evaluation", "full"]) == 0
    test_line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("test")][0]
    wrong = (eval_pred != raw.test.y).mean() * 100
    assert test_line.startswith(f"test error {wrong:f} %")
    # viz (and report, which renders through it) predicts as eval does
    assert predict(rundir.Run.open(run), raw.test.x).tolist() == eval_pred.tolist()
