"""render_all on tiny synthetic run directories: every picture, its size, and pixels of known content."""

import json
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

from deeptut.errors import CheckpointError, DataError  # noqa: E402
from deeptut.viz import render_all  # noqa: E402
from deeptut.viz import plots  # noqa: E402
from deeptut.store.tensors import load_arrays  # noqa: E402
from synthetic_run import make_synthetic_run, synthetic_test_data  # noqa: E402
from deeptut.viz.tiles import tile_raster_images  # noqa: E402


def png(path):
    """The tile grid of a picture (framed pictures: without their title and axes, plots.read_tiles)."""
    return plots.read_tiles(path)


@pytest.fixture(scope="module")
def logistic_run(tmp_path_factory):
    run = make_synthetic_run(tmp_path_factory.mktemp("runs") / "logistic-x", "logistic")
    written = render_all(run, data=synthetic_test_data())
    return run, written


def test_logistic_writes_every_picture(logistic_run):
    run, written = logistic_run
    names = sorted(p.name for p in written)
    assert names == sorted(["learning_curves.png", "filters.png", "confusion.png", "errors.png",
                            "filters_evolution.png", "filters_evolution.gif"])
    assert all(p.parent == run / "plots" and p.stat().st_size > 0 for p in written)
    with PIL.open(run / "plots" / "learning_curves.png") as im:
        assert im.size == (700, 500)
        assert len(im.getcolors(1 << 16)) > 20  # drawn, not blank
    with PIL.open(run / "plots" / "confusion.png") as im:
        assert im.size == (600, 540)
    with PIL.open(run / "plots" / "errors.png") as im:
        assert im.size == (900, math.ceil(1 * 1.05 * 100 + 50))  # 10 errors -> one row of 10


def test_logistic_class_templates_pixels(logistic_run):
    run, _ = logistic_run
    a = png(run / "plots" / "filters.png")
    # 10 templates of 28x28 on a 2x5 grid, 1 pixel apart: 57 x 144, drawn at scale 3
    assert a.shape == (171, 432)
    s = 3
    for k in range(10):
        r, c = divmod(k, 5)
        tile = a[r * 29 * s:(r * 29 + 28) * s:s, c * 29 * s:(c * 29 + 28) * s:s]
        expected = np.zeros((28, 28), np.uint8)
        expected[:, k] = 255  # synthetic W[:, k] is 1 on pixel column k (float32: max -> 255)
        np.testing.assert_array_equal(tile, expected)
    assert (a[28 * s:29 * s, :] == 0).all()  # spacing row between the two tile rows


def test_confusion_and_errors_from_known_predictions(logistic_run):
    run, _ = logistic_run
    conf = json.loads((run / "plots" / "confusion.json").read_text())
    x, y = synthetic_test_data()
    pred = np.arange(30) % 10  # the synthetic model predicts the column of the bright pixel
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (y, pred), 1)
    assert conf["confusion"] == expected.tolist()
    assert conf["n"] == 30 and conf["errors"] == 10
    assert conf["shown_misclassified"] == list(range(0, 30, 3))


def test_filters_evolution_strip_and_gif(logistic_run):
    run, _ = logistic_run
    a = png(run / "plots" / "filters_evolution.png")
    s, h, w = 2, 28, 10 * 29 - 1
    assert a.shape == (3 * h * s + 2 * 2, plots.STRIP_LABEL_W + w * s)
    for i, path in enumerate(sorted((run / "models").iterdir())):
        W = load_arrays(path)["W"]
        expected = tile_raster_images(W.T, (28, 28), (1, 10), (1, 1))
        top = i * (h * s + 2)
        np.testing.assert_array_equal(a[top:top + h * s:s, plots.STRIP_LABEL_W::s], expected)
        # checkpoint i moves template k to pixel column k + i
        assert a[top, plots.STRIP_LABEL_W + (3 * 29 + 3 + i) * s] == 255
    assert (a[:, :plots.STRIP_LABEL_W] < 255).any()  # the iteration labels
    with PIL.open(run / "plots" / "filters_evolution.gif") as im:
        assert im.n_frames == 3
        assert im.size == (432, 171 + 18)


def test_no_checkpoints_no_evolution(tmp_path):
    run = make_synthetic_run(tmp_path / "r", "logistic", n_checkpoints=0)
    names = {p.name for p in render_all(run, data=synthetic_test_data(10))}
    assert "filters_evolution.png" not in names and "learning_curves.png" in names


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_filter_pictures_of_mlp_and_lenet(tmp_path, model):
    run = make_synthetic_run(tmp_path / model, model, n_checkpoints=2)
    from deeptut.store.rundir import Run

    r = Run.open(run)
    written = plots.plot_filters(r, run / "plots")
    params = load_arrays(run / "best.safetensors")
    if model == "mlp":
        assert [p.name for p in written] == ["filters.png"]
        a = png(written[0])
        W = params["hiddenLayer.W"]  # 20 hidden units -> a 4x5 grid of 28x28 tiles at scale 3
        assert a.shape == ((29 * 4 - 1) * 3, (29 * 5 - 1) * 3)
        j = 7
        r0, c0 = divmod(j, 5)
        tile = a[r0 * 87:(r0 * 29 + 28) * 3:3, c0 * 87:(c0 * 29 + 28) * 3:3]
        col = W[:, j] - W[:, j].min()
        col = col * (np.float32(1) / (col.max() + np.float32(1e-8)))
        np.testing.assert_array_equal(tile, np.clip(col * 255, 0, 255).astype(np.uint8).reshape(28, 28))
    else:
        assert [p.name for p in written] == ["filters_layer0.png", "filters_layer1.png"]
        a0, a1 = png(written[0]), png(written[1])
        assert a0.shape == ((6 * 4 - 1) * 8, (6 * 5 - 1) * 8)  # 20 kernels on 4x5, 5x5 each, scale 8
        # 20 input maps (rows) x 50 output maps (columns), each 5x5 kernel drawn 25x25 (scale 5; issue 24:
        # it was 5x5 pixels, unreadable)
        assert a1.shape == ((6 * 20 - 1) * 5, (6 * 50 - 1) * 5)
        W0, W1 = params["layer0.W"], params["layer1.W"]
        np.testing.assert_array_equal(a0[::8, ::8], tile_raster_images(W0.reshape(20, 25), (5, 5), (4, 5), (1, 1)))
        np.testing.assert_array_equal(a1[6 * 5 * 7:(6 * 7 + 5) * 5:5, 6 * 5 * 3:(6 * 3 + 5) * 5:5],
                                      tile_raster_images(W1[3, 7].reshape(1, 25), (5, 5), (1, 1)))  # out 3, in 7
    strip = plots.plot_evolution(r, run / "plots")
    assert [p.name for p in strip] == ["filters_evolution.png", "filters_evolution.gif"]


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_render_all_mlp_lenet(tmp_path, model):
    run = make_synthetic_run(tmp_path / model, model, n_checkpoints=2)
    written = render_all(run, data=synthetic_test_data(20))
    assert len(written) == (6 if model == "mlp" else 7)
    conf = json.loads((run / "plots" / "confusion.json").read_text())
    assert conf["n"] == 20 and sum(map(sum, conf["confusion"])) == 20


def test_diverged_run_and_mathtext_in_names(tmp_path):
    """NaN/Infinity in the records and parameters, and a '$' in the preset, still draw."""
    from safetensors.numpy import save_file

    from synthetic_run import synthetic_params

    run = make_synthetic_run(tmp_path / "r$x^$", n_checkpoints=0, preset="odd $x^$ preset")
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    recs[-1].update(train_cost=float("inf"), valid_error=float("nan"), best=False)
    recs[-2]["train_cost"] = float("nan")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    p = synthetic_params("logistic")
    p["W"][0, 0] = np.nan
    save_file(p, str(run / "best.safetensors"))
    from deeptut.store.rundir import Run

    r = Run.open(run)
    assert plots.plot_learning_curves(r, run / "plots").is_file()
    a = png(plots.plot_filters(r, run / "plots")[0])
    assert a.shape == (171, 432)
    from deeptut.viz import compare

    _, cmp = compare([run], tmp_path)
    assert cmp.is_file()


# --- what a broken run directory gives ----------------------------------------------------------------

def test_missing_config(tmp_path):
    run = make_synthetic_run(tmp_path / "r")
    (run / "config.json").unlink()
    with pytest.raises(DataError, match="config.json: missing"):
        render_all(run, data=synthetic_test_data(5))


def test_not_a_directory(tmp_path):
    with pytest.raises(DataError, match="not a run directory"):
        render_all(tmp_path / "nope")


def test_corrupt_metrics_line(tmp_path):
    run = make_synthetic_run(tmp_path / "r")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:2: not valid JSON"):
        render_all(run, data=synthetic_test_data(5))


def test_truncated_last_metrics_line_is_ignored(tmp_path):
    from deeptut.store.rundir import read_metrics

    run = make_synthetic_run(tmp_path / "r")
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + '{"iteration": 9')
    assert len(read_metrics(run / "metrics.jsonl").supervised) == 6


def test_metrics_wrong_type_and_empty(tmp_path):
    run = make_synthetic_run(tmp_path / "r")
    (run / "metrics.jsonl").write_text('{"iteration": 1, "valid_error": "high"}\n')
    with pytest.raises(DataError, match="valid_error"):
        render_all(run, data=synthetic_test_data(5))
    (run / "metrics.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no validation records"):
        render_all(run, data=synthetic_test_data(5))


def test_corrupt_best_model(tmp_path):
    run = make_synthetic_run(tmp_path / "r")
    (run / "best.safetensors").write_bytes(b"\xff" * 40)
    with pytest.raises(CheckpointError, match="best.safetensors"):
        render_all(run, data=synthetic_test_data(5))


def test_best_model_missing_a_parameter(tmp_path):
    from safetensors.numpy import save_file

    run = make_synthetic_run(tmp_path / "r")
    save_file({"b": np.zeros(10, np.float32)}, str(run / "best.safetensors"))
    with pytest.raises(CheckpointError, match="no parameter 'W'"):
        render_all(run, data=synthetic_test_data(5))


def test_corrupt_checkpoint_named(tmp_path):
    run = make_synthetic_run(tmp_path / "r")
    bad = sorted((run / "models").iterdir())[1]
    bad.write_bytes(b"")
    with pytest.raises(CheckpointError, match=bad.name):
        render_all(run, data=synthetic_test_data(5))
