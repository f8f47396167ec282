"""The reading side of the unsupervised chapters, on run directories of the real families written without
training (unsup_run.py), checked pixel by pixel: `deeptut sample` (rbm.py's samples.png), `deeptut eval
--log-likelihood` (AIS), `viz` and `report`. Trained runs: test_unsup_end_to_end.py."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

from deeptut import cli  # noqa: E402
from deeptut.models.rbm import sample_chains, tutorial_test_idx  # noqa: E402
from deeptut.store.rundir import WrongModelError, load_module, read_metrics  # noqa: E402
from deeptut.train import ais  # noqa: E402
from deeptut.train.loglik import estimate_log_likelihood, paper_shaped_betas, write_log_likelihood  # noqa: E402
from deeptut.viz import render_all, write_report  # noqa: E402
from deeptut.viz.pretrain_plots import PUBLISHED_RBM_PL_COST, pl_table  # noqa: E402
from deeptut.viz.render import planned_pictures  # noqa: E402
from deeptut.viz.samples import samples_picture, write_samples  # noqa: E402
from deeptut.viz.tiles import tile_raster_images  # noqa: E402
from deeptut.store import tensors  # noqa: E402
from deeptut.store.rundir import Run  # noqa: E402
from unsup_run import make_unsup_run, tiny_splits  # noqa: E402


def png(path):
    """The tile grid of a picture (framed pictures: without their title and axes; viz/plots.py read_tiles)."""
    from deeptut.viz.plots import read_tiles

    return read_tiles(path)


# --- sample -------------------------------------------------------------------------------------------------

def test_sample_shape_picture_and_tutorial_index(tmp_path):
    run = make_unsup_run(tmp_path / "rbm", "rbm")
    data = tiny_splits()
    written = write_samples(run, data, n_chains=4, n_samples=3, plot_every=5)
    assert [p.name for p in written] == ["samples.png", "samples.npy", "samples.json"]
    s = np.load(run / "plots" / "samples.npy")
    assert s.shape == (3, 4, 784) and s.dtype == np.float32
    assert (s > 0).all() and (s < 1).all()  # mean-field activations, not binary samples
    img = png(run / "plots" / "samples.png")
    assert img.shape == (29 * 3 + 1, 29 * 4 - 1)  # rbm.py's image_data
    for idx in range(3):  # row idx is tile_raster_images of sample step idx, 1 pixel apart
        np.testing.assert_array_equal(img[29 * idx:29 * idx + 28], tile_raster_images(
            s[idx], (28, 28), (1, 4), (1, 1)))
        assert (img[29 * idx + 28] == 0).all()
    info = json.loads((run / "plots" / "samples.json").read_text())
    assert info["test_idx"] == tutorial_test_idx(784, 12, 40, 4)  # as test_rbm draws it
    assert info["seed_from"] == "sample_seed"


def test_sample_matches_sample_chains_and_is_seedable(tmp_path):
    run = make_unsup_run(tmp_path / "rbm", "rbm")
    data = tiny_splits()
    kw = dict(n_chains=3, n_samples=2, plot_every=4)
    write_samples(run, data, seed=7, **kw)
    a = np.load(run / "plots" / "samples.npy")
    write_samples(run, data, seed=7, **kw)
    np.testing.assert_array_equal(a, np.load(run / "plots" / "samples.npy"))
    write_samples(run, data, seed=8, **kw)
    assert not np.array_equal(a, np.load(run / "plots" / "samples.npy"))
    # the same chains as rbm.sample_chains from the saved model, started at the tutorial's index
    rbm = load_module(run)
    g = torch.Generator().manual_seed(7)
    idx = tutorial_test_idx(784, 12, 40, 3)
    expected = sample_chains(rbm, torch.from_numpy(data.test.x), 3, 2, 4, idx, g)
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(samples_picture(a)[:28], tile_raster_images(a[0], (28, 28), (1, 3), (1, 1)))


@pytest.mark.parametrize("model", ["da", "sda", "dbn"])
def test_sample_refuses_other_models(tmp_path, model, capsys):
    run = make_unsup_run(tmp_path / f"{model}-run", model, epochs=1, n_finetune=1)
    with pytest.raises(WrongModelError, match=f"{model}-run.*needs an rbm run; this is a {model} run"):
        write_samples(run, tiny_splits())
    assert cli.main(["sample", str(run)]) == 2
    assert f"this is a {model} run" in capsys.readouterr().err
    assert not (run / "plots" / "samples.png").exists()


def test_sample_bad_sizes(tmp_path):
    run = make_unsup_run(tmp_path / "rbm", "rbm", epochs=1)
    with pytest.raises(ValueError, match="n_chains must be an integer >= 1"):
        write_samples(run, tiny_splits(), n_chains=0)
    with pytest.raises(ValueError, match="needs more test images"):
        write_samples(run, tiny_splits(n_test=10), n_chains=20)
    with pytest.raises(ValueError, match="device 'gpu0'"):
        write_samples(run, tiny_splits(), device="gpu0")


# --- eval --log-likelihood ------------------------------------------------------------------------------------

def test_paper_shaped_ladder():
    np.testing.assert_array_equal(paper_shaped_betas(14_500), ais.salakhutdinov_betas())
    b = paper_shaped_betas(290)
    assert len(b) == 291 and b[0] == 0 and b[-1] == 1 and (np.diff(b) > 0).all()
    assert np.isclose(b[10], 0.5) and np.isclose(b[90], 0.9)  # 10 : 80 : 200 steps


def test_log_likelihood_interval_contains_the_exact_value(tmp_path):
    """A tiny RBM (784 visible, 12 hidden: log Z by enumeration over 4,096 hidden states) with random weights
    (the init draw), hidden biases, and visible biases near the data's base rate (where a short ladder is
    enough: AIS itself is tested in test_ais.py)."""
    run = make_unsup_run(tmp_path / "rbm", "rbm", epochs=1)
    data = tiny_splits()
    rbm = load_module(run, "init.safetensors")
    g = torch.Generator().manual_seed(0)
    base = ais.base_rate_vbias(torch.from_numpy((data.train.x >= 0.5).astype(np.float64))).float()
    with torch.no_grad():
        rbm.hbias.copy_(0.5 * torch.randn(12, generator=g))
        rbm.vbias.copy_(base + 0.3 * torch.randn(784, generator=g))
    tensors.save_tensors(run / "best.safetensors", dict(rbm.state_dict()), {"model": "rbm", "format": "1"})
    path, r = write_log_likelihood(run, data, n_runs=100, ais_steps=200, seed=3)
    exact = ais.exact_log_partition(rbm)
    assert r["log_z_low"] <= exact <= r["log_z_high"]
    assert abs(r["log_z"] - exact) < 1.0
    x_test = torch.from_numpy((data.test.x >= 0.5).astype(np.float64))
    exact_lp = ais.mean_log_probability(rbm, x_test, exact)
    assert r["test_log_probability_low"] <= exact_lp <= r["test_log_probability_high"]
    assert r["test_log_probability"] == pytest.approx(ais.mean_log_probability(rbm, x_test, r["log_z"]))
    assert r["test_log_probability"] < 0 and r["n_test"] == 40
    saved = json.loads(path.read_text())
    assert path == run / "log_likelihood.json"
    assert saved["log_z"] == r["log_z"] and saved["ais_runs"] == 100 and saved["ais_steps"] == 200
    # seeded: the same seed gives the same estimate, another seed another one
    a, b, c = (estimate_log_likelihood(run, data, n_runs=10, ais_steps=20, seed=s)["log_z"] for s in (1, 1, 2))
    assert a == b != c


def test_log_likelihood_refuses_other_models_and_cli(tmp_path, capsys):
    da = make_unsup_run(tmp_path / "da-run", "da", epochs=1)
    with pytest.raises(WrongModelError, match="da-run.*this is a da run"):
        estimate_log_likelihood(da, tiny_splits())
    assert cli.main(["eval", str(da), "--log-likelihood"]) == 2
    assert "this is a da run" in capsys.readouterr().err
    assert cli.main(["eval", str(da)]) == 2  # no classifier: a clear error, not a traceback
    assert "has no classifier" in capsys.readouterr().err


@pytest.mark.slow  # real MNIST: 50,000 training images for the base rate, 10,000 test images
def test_eval_log_likelihood_cli_on_mnist(tmp_path, capsys):
    from data_helpers import BUNDLED

    run = make_unsup_run(tmp_path / "rbm", "rbm", epochs=1)
    assert cli.main(["eval", str(run), "--log-likelihood", "--ais-runs", "10", "--ais-steps", "50",
                     "--data-dir", str(BUNDLED)]) == 0
    out = capsys.readouterr().out
    assert "AIS log Z = " in out and "mean test log-probability = " in out and "10,000 test images" in out
    assert json.loads((run / "log_likelihood.json").read_text())["n_test"] == 10_000


# --- viz and report -------------------------------------------------------------------------------------------

def tile(img, k, rows=10, side=28):
    r, c = divmod(k, rows)
    return img[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side]


def assert_one_hot_tiles(img, n_hidden, shift):
    assert img.shape == (289, 289)  # 10 x 10 tiles of 28 x 28, 1 pixel apart, as the chapters
    for k in range(100):
        t = tile(img, k)
        if k < n_hidden:
            p = (k * 29 + shift) % 784
            expected = np.zeros(784, np.uint8)
            expected[p] = 255
            np.testing.assert_array_equal(t.ravel(), expected)
        else:
            assert (t == 0).all()  # fewer units than tiles: black, as tile_raster_images leaves them


@pytest.mark.parametrize("model", ["da", "ca", "rbm", "sda", "dbn"])
def test_viz_pictures_of_each_family(tmp_path, model):
    run = make_unsup_run(tmp_path / model, model, epochs=3)
    written = render_all(run, data=tiny_splits())
    names = sorted(p.name for p in written)
    expected = {"pretrain_costs.png", "filters.png", "pretrain_filters_evolution.png",
                "pretrain_filters_evolution.gif"}
    if model == "rbm":
        expected |= {f"filters_at_epoch_{e}.png" for e in range(3)}
    if model in ("sda", "dbn"):
        expected |= {"filters_pretrained.png", "learning_curves.png", "confusion.png", "errors.png"}
    assert set(names) == expected
    assert set(planned_pictures(Run.open(run))) - {"confusion.json"} == expected
    assert_one_hot_tiles(png(run / "plots" / "filters.png"), 12, 100)  # best.safetensors
    if model in ("sda", "dbn"):
        assert_one_hot_tiles(png(run / "plots" / "filters_pretrained.png"), 12, 50)
    if model == "rbm":
        for e in range(3):
            assert_one_hot_tiles(png(run / "plots" / f"filters_at_epoch_{e}.png"), 12, e)
    with PIL.open(run / "plots" / "pretrain_filters_evolution.gif") as im:
        assert im.n_frames == 3
    with PIL.open(run / "plots" / "pretrain_costs.png") as im:
        assert len(im.getcolors(1 << 16)) > 20


def test_supervised_lines_skip_pretraining(tmp_path):
    run = make_unsup_run(tmp_path / "sda", "sda", epochs=2, n_finetune=4)
    m = read_metrics(run / "metrics.jsonl")
    assert [(r["layer"], r["epoch"]) for r in m.pretrain] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["iteration"] for r in m.supervised] == [50, 100, 150, 200]
    # a line of the old form (no phase) is supervised
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"iteration": 250, "valid_error": 3.0}) + "\n")
    assert len(read_metrics(run / "metrics.jsonl").supervised) == 5
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"phase": "pretrain", "layer": 0, "epoch": "x", "cost": 1.0}) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:\d+: 'epoch' must be a number"):
        read_metrics(run / "metrics.jsonl")


def test_metrics_lines_of_another_phase_or_a_bad_cost_kind_are_errors(tmp_path):
    run = make_unsup_run(tmp_path / "rbm", "rbm", epochs=1)
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(good + json.dumps({"phase": "warmup", "iteration": 1}) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: unknown phase 'warmup'"):
        read_metrics(run / "metrics.jsonl")
    (run / "metrics.jsonl").write_text(good.replace('"pseudo-likelihood"', "3"))
    with pytest.raises(ValueError, match=r"metrics.jsonl:1: 'cost_kind' must be a string"):
        read_metrics(run / "metrics.jsonl")


def test_every_family_is_known_to_the_reader(tmp_path):
    from deeptut.models import FAMILIES
    from deeptut.store import rundir

    from deeptut.models.families import with_trait

    assert {"da", "ca", "rbm"} <= {n for n, c in FAMILIES.items() if not c.classifier}
    assert set(with_trait("pretrains")) == {"sda", "dbn"} and set(with_trait("samples")) == {"rbm"}
    for model in ("da", "ca", "rbm", "sda", "dbn"):
        run = make_unsup_run(tmp_path / model, model, epochs=1, n_finetune=1)
        loaded, saved_cfg = rundir.load_model(run)  # with the parsed config (eval, predict, --resume)
        assert saved_cfg.model == model and type(loaded) is type(Run.open(run).load_module())
        cfg = json.loads((run / "config.json").read_text())
        del cfg["config"]["model"]  # the family then comes from model.json
        (run / "config.json").write_text(json.dumps(cfg))
        assert Run.open(run).model == model
        assert type(Run.open(run).load_module()).__name__ == {"da": "dA", "ca": "cA", "rbm": "RBM", "sda": "SdA",
                                                               "dbn": "DBN"}[model]
    mj = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**mj, "model": "foo"}))
    with pytest.raises(ValueError, match="model.json: unknown model 'foo'"):
        Run.open(run).model


def test_pl_table_against_published(tmp_path):
    run = make_unsup_run(tmp_path / "rbm", "rbm", epochs=3)
    table = pl_table(read_metrics(run / "metrics.jsonl").pretrain)
    assert [(e, c) for e, c, _p, _d in table] == [(0, -90.0), (1, -80.0), (2, -70.0)]
    assert [p for _e, _c, p, _d in table] == list(PUBLISHED_RBM_PL_COST[:3])
    assert table[0][3] == pytest.approx(-90.0 - PUBLISHED_RBM_PL_COST[0])
    cd = make_unsup_run(tmp_path / "rbm-cd", "rbm", epochs=2, cost_kind="reconstruction")
    assert pl_table(read_metrics(cd / "metrics.jsonl").pretrain) == []


@pytest.mark.parametrize("model", ["rbm", "dbn"])
def test_report_shows_everything(tmp_path, model):
    run = make_unsup_run(tmp_path / model, model, epochs=2)
    data = tiny_splits()
    if model == "rbm":
        write_samples(run, data, n_chains=3, n_samples=2, plot_every=2)
        write_log_likelihood(run, data, n_runs=10, ais_steps=30)
    text = write_report(run, data=data).read_text(encoding="utf-8")
    for alt in ("pre-training cost per epoch", "first-layer filters", "layer 0 filters over pre-training"):
        assert f'alt="{alt}' in text
    if model == "rbm":
        assert 'alt="samples from the RBM"' in text and "Test log-likelihood (AIS)" in text
        assert 'alt="filters at epoch 1"' in text
        assert "published (rbm.py)" in text  # the PL table
        assert "Test set" not in text  # no classifier
    else:
        assert 'alt="first-layer filters after pre-training"' in text
        assert 'alt="learning curves"' in text and "Test set" in text
        assert "<th>pre-training time</th>" in text
    n_img = text.count("<img")
    expected = {"rbm": 1 + 1 + 2 + 2 + 1, "dbn": 1 + 1 + 1 + 1 + 2 + 2}[model]
    # rbm: costs, filters, evolution png+gif, 2 epochs, samples; dbn: costs, curves, filters, pretrained,
    # evolution png+gif, confusion + errors
    assert n_img == expected
