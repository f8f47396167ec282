"""The unsupervised families end to end through the command line, as a user runs them: `deeptut train PRESET`
with tiny overrides on tiny MNIST-shaped IDX files (tests/synthetic.py), then `viz`, `report`, `eval`, and
for the rbm `sample` and `eval --log-likelihood`. Each run is trained for real (train/pretrain.py) and read
back through store/rundir.py only; test_unsup_viz.py checks the pictures pixel by pixel on hand-made runs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

import synthetic  # noqa: E402
import tiny  # noqa: E402
from deeptut import cli  # noqa: E402
from deeptut.data.datasets import load_dataset  # noqa: E402
from deeptut.store import rundir  # noqa: E402
from deeptut.store.rundir import Run  # noqa: E402
from deeptut.train import pretrain  # noqa: E402
from deeptut.models.families import FAMILIES  # noqa: E402
from deeptut.viz.render import planned_pictures  # noqa: E402
from deeptut.viz.tiles import tile_raster_images  # noqa: E402

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)

N_TRAIN_BATCHES = 15  # 300 training images (the idx dataset keeps the last sixth of 360 for validation) / 20
COMMON = ["--dataset", "idx", "--device", "cpu", "--threads", "1", "--batch_size", "20"]
# each preset at a tiny size: 8 hidden units (sda / dbn: 8 then 6), 2 epochs (sda / dbn: 3 pre-training
# epochs a layer, of which sda keeps only each layer's last model file, dbn also every second epoch)
OVERRIDES = {
    "da": ["--n_hidden", "8", "--n_epochs", "2", "--corruption_level", "0.3"],
    "ca": ["--n_hidden", "8", "--n_epochs", "2"],
    "rbm": ["--n_hidden", "8", "--n_epochs", "2", "--k", "1"],
    "sda": ["--hidden_layers_sizes", "8,6", "--corruption_levels", "0.1,0.2", "--pretraining_epochs", "3",
            "--pretrain_lr", "0.05", "--n_epochs", "2"],
    "dbn": ["--hidden_layers_sizes", "8,6", "--pretraining_epochs", "3", "--pretrain_lr", "0.05",
            "--n_epochs", "2", "--save_every", "2"],
}
LAYERS = {"da": 1, "ca": 1, "rbm": 1, "sda": 2, "dbn": 2}
EPOCHS = {"da": 2, "ca": 2, "rbm": 2, "sda": 3, "dbn": 3}
# models/pretrain-layer{L}-epoch{E}: every epoch of a single layer; sda / dbn: each layer's last epoch and,
# with save_every 2, the epochs whose global index (over both layers, from 1) is even
KEPT = {m: [(0, e) for e in range(EPOCHS[m])] for m in ("da", "ca", "rbm")}
KEPT["sda"] = [(0, 2), (1, 2)]
KEPT["dbn"] = [(0, 1), (0, 2), (1, 0), (1, 2)]  # global epochs 2, 3 (last), 4, 6 (last)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic.write_tiny_idx(tmp_path_factory.mktemp("idx"), n_train=300, n_valid=60, n_test=60)


def train(model: str, data_dir, runs_dir, *extra: str, capsys=None) -> tuple[Run, str]:
    argv = ["train", model, "--data-dir", str(data_dir), "--runs-dir", str(runs_dir), *COMMON, *OVERRIDES[model],
            *extra]
    assert cli.main(argv) == 0
    (run_dir,) = runs_dir.iterdir()
    return Run.open(run_dir), capsys.readouterr().out if capsys is not None else ""


def png(path):
    """The tile grid of a picture (framed pictures: without their title and axes; viz/plots.py read_tiles)."""
    from deeptut.viz.plots import read_tiles

    return read_tiles(path)


@pytest.mark.parametrize("model", ["da", "ca", "rbm", "sda", "dbn"])
def test_train_viz_report_eval(tmp_path, data_dir, capsys, model):
    run, out = train(model, data_dir, tmp_path / "runs", capsys=capsys)
    # printed as the tutorials print them (0-based epochs)
    first = {"da": "Training epoch 0, cost  ", "ca": "Training epoch 0, reconstruction cost  ",
             "rbm": "Training epoch 0, cost is  ", "sda": "Pre-training layer 1, epoch 2, cost  ",
             "dbn": "Pre-training layer 1, epoch 2, cost  "}[model]
    assert first in out

    # the run directory, read back through store/rundir.py
    assert run.model == model and model in FAMILIES
    m = run.metrics()
    assert [(r["layer"], r["epoch"]) for r in m.pretrain] == [
        (layer, e) for layer in range(LAYERS[model]) for e in range(EPOCHS[model])]
    assert all(np.isfinite(r["cost"]) and r["elapsed_s"] >= 0 for r in m.pretrain)
    if model in ("rbm", "dbn"):
        assert {r["cost_kind"] for r in m.pretrain} == {"pseudo-likelihood" if model == "rbm" else "reconstruction"}
    if model == "ca":
        assert all(r["jacobian_norm"] > 0 for r in m.pretrain)
    summary = run.summary()
    if not FAMILIES[model].classifier:
        assert m.supervised == []
        assert summary["phase"] == "pretrain" and summary["epochs"] == EPOCHS[model]
        assert summary["final_cost"] == m.pretrain[-1]["cost"]
    else:
        assert len(m.supervised) >= 2 and all(r["phase"] == "finetune" for r in m.supervised)
        # the summary's test error is the one measured at the best validation (the last new best's line),
        # and the best validation is the lowest the metrics recorded
        best = [r for r in m.supervised if r.get("best")]
        assert best and summary["best_validation_error"] == min(r["valid_error"] for r in m.supervised)
        assert summary["test_error"] == pytest.approx(best[-1]["test_error"], abs=1e-9)
        assert best[-1]["valid_error"] == pytest.approx(summary["best_validation_error"], abs=1e-9)
        assert summary["pretrain_seconds"] > 0
        assert (run.path / rundir.PRETRAINED).is_file()
    assert [(layer, e) for layer, e, _p in run.pretrain_models()] == KEPT[model]

    # every saved model loads through the one loader, as the family's module
    best = run.load_module()
    loaded, cfg = rundir.load_model(run.path)
    assert type(loaded) is type(best) and cfg.model == model
    for _l, _e, p in run.pretrain_models():
        assert type(run.load_module(str(p.relative_to(run.path)))) is type(best)
    if FAMILIES[model].pretrains:  # fine-tuning moved the first layer away from pre-training's
        pre = run.load_module(rundir.PRETRAINED).state_dict()[FAMILIES[model].first_layer[1]]
        assert not np.array_equal(pre.numpy(), best.state_dict()[FAMILIES[model].first_layer[1]].numpy())

    # viz: every planned picture, the filters drawn from best.safetensors as the chapters draw them
    assert cli.main(["viz", str(run.path), "--data-dir", str(data_dir)]) == 0
    written = {p.split("/")[-1] for p in capsys.readouterr().out.split()}
    assert written >= set(planned_pictures(run)) - {"confusion.json"}
    W = best.state_dict()[FAMILIES[model].first_layer[1]].numpy()
    expected = tile_raster_images(W.T, (28, 28), (10, 10), (1, 1))  # 8 units: the other 92 tiles black
    assert expected.shape == (289, 289) and expected[:28, :28].any() and not expected[-28:, -28:].any()
    np.testing.assert_array_equal(png(run.path / "plots" / "filters.png"), expected)
    with PIL.open(run.path / "plots" / "pretrain_filters_evolution.gif") as im:
        assert im.n_frames == sum(1 for layer, _e in KEPT[model] if layer == 0)
    if model == "rbm":
        assert {f"filters_at_epoch_{e}.png" for e in range(EPOCHS[model])} <= written
    if FAMILIES[model].pretrains:
        assert {"filters_pretrained.png", "learning_curves.png", "confusion.png", "errors.png"} <= written

    # report: one page with the pictures and the summary
    assert cli.main(["report", str(run.path), "--data-dir", str(data_dir)]) == 0
    text = (run.path / "report.html").read_text(encoding="utf-8")
    assert 'alt="pre-training cost per epoch"' in text and 'alt="first-layer filters' in text
    assert ("Test set" in text) == (FAMILIES[model].pretrains)
    capsys.readouterr()

    # eval: no classifier in a da / ca / rbm run; the fine-tuned model of an sda / dbn
    rc = cli.main(["eval", str(run.path), "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    if not FAMILIES[model].classifier:
        assert rc == 2 and f"a {model} run has no classifier to evaluate" in err
        assert ("--log-likelihood" in err) == (model == "rbm")
        assert cli.main(["predict", str(run.path), str(tmp_path / "digit.png")]) == 2
        assert f"a {model} run has no classifier to predict with" in capsys.readouterr().err
        assert cli.main(["compare", str(run.path)]) == 2
        assert f"a {model} run has no validation error to compare" in capsys.readouterr().err
    else:
        assert rc == 0
        test_error = float(re.search(r"^test error ([\d.]+) %", out, re.M).group(1))
        assert test_error == pytest.approx(summary["test_error"], abs=1e-4)  # best.safetensors, as fit chose
        splits = load_dataset("idx", data_dir)
        import torch

        with torch.no_grad():  # the tutorial evaluation: whole minibatches of 20 of the 60 test images
            wrong = (best(torch.from_numpy(splits.test.x)).argmax(1).numpy() != splits.test.y).mean()
        assert test_error == pytest.approx(100 * wrong, abs=1e-4)
        assert cli.main(["compare", str(run.path), "--out-dir", str(tmp_path)]) == 0  # the fine-tuning curve
        assert "selected on validation" in capsys.readouterr().out


@pytest.mark.slow  # ~5 s: three times rbm.py's 10,000 Gibbs steps of 20 chains
def test_rbm_sample_and_log_likelihood(tmp_path, data_dir, capsys):
    run, out = train("rbm", data_dir, tmp_path / "runs", capsys=capsys)
    # the run ended by drawing rbm.py's samples.png: 10 rows of 20 chains, 1,000 Gibbs steps apart
    assert f"samples: {run.path / 'plots' / 'samples.png'}" in out
    img = png(run.path / "plots" / "samples.png")
    assert img.shape == (29 * 10 + 1, 29 * 20 - 1)
    info = json.loads((run.path / "plots" / "samples.json").read_text())
    assert info["n_chains"] == 20 and info["gibbs_steps"] == 10_000 and info["seed_from"] == "sample_seed"
    s = np.load(run.path / "plots" / "samples.npy")
    assert s.shape == (10, 20, 784) and ((s > 0) & (s < 1)).all()
    # `deeptut sample` from the saved files draws the same picture
    first = (run.path / "plots" / "samples.npy").read_bytes()
    assert cli.main(["sample", str(run.path), "--data-dir", str(data_dir)]) == 0
    assert (run.path / "plots" / "samples.npy").read_bytes() == first
    assert cli.main(["sample", str(run.path), "--data-dir", str(data_dir), "--n-chains", "4", "--n-samples", "2",
                     "--plot-every", "3", "--seed", "5"]) == 0
    assert png(run.path / "plots" / "samples.png").shape == (29 * 2 + 1, 29 * 4 - 1)
    capsys.readouterr()

    assert cli.main(["eval", str(run.path), "--log-likelihood", "--ais-runs", "20", "--ais-steps", "60",
                     "--data-dir", str(data_dir)]) == 0
    assert "mean test log-probability = " in capsys.readouterr().out
    r = json.loads((run.path / "log_likelihood.json").read_text())
    assert r["n_test"] == 60 and r["ais_steps"] == 60 and r["ais_runs"] == 20
    assert np.isfinite(r["log_z"]) and r["log_z_low"] <= r["log_z"] <= r["log_z_high"]
    # log p(v) <= 0 for binary v, and a trained 8-unit RBM is worse than uniform (784 log 2 = 543 nats) by far less
    assert -543.5 < r["test_log_probability"] < 0
    assert r["test_log_probability_low"] <= r["test_log_probability"] <= r["test_log_probability_high"]

    assert cli.main(["report", str(run.path), "--data-dir", str(data_dir)]) == 0
    text = (run.path / "report.html").read_text(encoding="utf-8")
    assert 'alt="samples from the RBM"' in text and "Test log-likelihood (AIS)" in text


def test_sample_false_skips_and_a_missing_extra_is_one_note(tmp_path, data_dir, capsys, monkeypatch):
    run, out = train("rbm", data_dir, tmp_path / "a", "--sample", "false", capsys=capsys)
    assert "samples:" not in out and not (run.path / "plots").exists()

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    run, _ = train("rbm", data_dir, tmp_path / "b")
    err = capsys.readouterr().err
    assert f"samples.png not drawn: matplotlib missing (pip install 'deeptut[viz]', then deeptut sample {run.path})" \
        in err
    assert not (run.path / "plots").exists()


class Killed(BaseException):
    """Raised from inside a training step: the process dies there, as under SIGKILL (no checkpoint then)."""


@pytest.mark.slow  # ~6 s: two rbm runs, each ending with rbm.py's samples
def test_killed_and_resumed_rbm_draws_the_same_pictures(tmp_path, data_dir, capsys, monkeypatch):
    ref, _ = train("rbm", data_dir, tmp_path / "ref")
    real = pretrain.make_update  # the loop's one way to get a layer's update (fused or the models' own)
    count = [0]

    def make_update(*a):
        update = real(*a)

        def dying(*b):
            count[0] += 1
            if count[0] == N_TRAIN_BATCHES + 7:  # epoch 1, minibatch 7: the last checkpoint is epoch 0's end
                raise Killed
            return update(*b)
        return dying

    monkeypatch.setattr(pretrain, "make_update", make_update)
    with pytest.raises(Killed):
        train("rbm", data_dir, tmp_path / "run")
    monkeypatch.setattr(pretrain, "make_update", real)
    (run_dir,) = (tmp_path / "run").iterdir()
    assert not (run_dir / "plots").exists() and not (run_dir / rundir.SUMMARY).exists()
    assert len(Run.open(run_dir).metrics().pretrain) == 1
    assert cli.main(["train", "--resume", str(run_dir), "--data-dir", str(data_dir)]) == 0
    for d in (ref.path, run_dir):
        assert cli.main(["viz", str(d), "--data-dir", str(data_dir)]) == 0
    names = sorted(p.name for p in (ref.path / "plots").iterdir())
    assert "samples.png" in names and "filters_at_epoch_1.png" in names
    assert names == sorted(p.name for p in (run_dir / "plots").iterdir())
    for name in names:
        if name.endswith(".png"):
            np.testing.assert_array_equal(png(run_dir / "plots" / name), png(ref.path / "plots" / name), err_msg=name)
    np.testing.assert_array_equal(np.load(run_dir / "plots" / "samples.npy"), np.load(ref.path / "plots" / "samples.npy"))
    assert [r["cost"] for r in Run.open(run_dir).metrics().pretrain] == [r["cost"] for r in ref.metrics().pretrain]
