"""Pictures and report.html for a person (issue 24): every picture `deeptut viz` writes has a title (and the
tiled ones numbered axes); LeNet's kernels are drawn large enough to read; report.html's summary is a table of
human labels and consistently formatted numbers (no raw JSON), and the page renders in headless Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

from deeptut.viz import plots, write_report  # noqa: E402
from synthetic_run import make_synthetic_run, synthetic_test_data  # noqa: E402

# summary.json as train/loop.py writes it (the figures of a real 1-epoch mlp run, 2026-12-06)
LOOP_SUMMARY = {"best_validation_error": 9.620000000000001, "test_error": 10.09, "best_iteration": 2500,
                "epochs": 1, "iterations": 2500, "stopped": "n_epochs", "evaluation": "tutorial",
                "evaluated_examples": {"valid": 10000, "test": 10000}, "train_seconds": 83.9067,
                "epochs_per_second": 0.011918001734622789, "device": "cpu", "fault": None}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_synthetic_run(tmp_path_factory.mktemp("runs") / "lenet-r", "lenet", n_checkpoints=2)
    (run / "summary.json").write_text(json.dumps(LOOP_SUMMARY))
    path = write_report(run, data=synthetic_test_data(20))
    return run, path, path.read_text(encoding="utf-8")


def test_summary_is_a_formatted_table(report):
    _, _, text = report
    table = text[text.index('<table class="summary">'):]
    table = table[:table.index("</table>")]
    rows = dict(re.findall(r"<tr><th>([^<]*)</th><td[^>]*>([^<]*)</td></tr>", table))
    assert rows == {
        "best validation error": "9.620 %", "test error of the selected model": "10.090 %",
        "best iteration (minibatch updates)": "2,500", "epochs": "1", "minibatch updates": "2,500",
        "stopped by": "the epoch limit (n_epochs)", "evaluation": "tutorial (the mean over whole minibatches)",
        "examples evaluated": "validation 10,000, test 10,000", "training time": "83.9 s (1 min 24 s)",
        "time per epoch": "83.9 s (1 min 24 s)", "device": "cpu", "fault": "none"}
    assert '<th>quantity</th><th>value</th>' in table
    assert '<td class="num">9.620 %</td>' in table  # numbers right-aligned
    for raw in ("evaluated_examples", "epochs_per_second", "{", "0.0119", "9.620000000000001"):
        assert raw not in table, raw


def test_every_picture_has_a_title_and_lenet_kernels_are_readable(report):
    run, _, _ = report
    pictures = sorted((run / "plots").glob("*.png"))
    assert {p.name for p in pictures} >= {"learning_curves.png", "filters_layer0.png", "filters_layer1.png",
                                          "confusion.png", "errors.png", "filters_evolution.png"}
    for p in pictures:
        with PIL.open(p) as im:
            a = np.asarray(im.convert("L"))
            box = im.info.get(plots.TILES_KEY)
        assert (a[:30] < 100).sum() > 30, f"{p.name}: no title at the top"  # dark text in the top band
        if p.name.startswith("filters"):  # tiled: framed, the tiles below the title
            assert box and int(box.split(",")[0]) >= plots.TITLE_H, p.name
    with PIL.open(run / "plots" / "filters_layer1.png") as im:
        box = tuple(map(int, im.info[plots.TILES_KEY].split(",")))
        left_band = np.asarray(im.convert("L"))[box[0]:box[0] + box[2], :box[1]]
    top, left, h, w = box
    assert (h, w) == ((6 * 20 - 1) * 5, (6 * 50 - 1) * 5)  # every 5x5 kernel 25x25 pixels (it was 5x5)
    assert left >= 30 and (left_band < 100).sum() > 50  # the input-map label and numbers at the left


def test_samples_picture_is_titled(tmp_path):
    from deeptut.viz.samples import write_samples
    from unsup_run import make_unsup_run, tiny_splits

    run = make_unsup_run(tmp_path / "rbm", "rbm")
    png = write_samples(run, tiny_splits(), n_chains=4, n_samples=3, plot_every=5)[0]
    with PIL.open(png) as im:
        top, left, h, w = map(int, im.info[plots.TILES_KEY].split(","))
        a = np.asarray(im.convert("L"))
    assert (h, w) == (29 * 3 + 1, 29 * 4 - 1) and top >= plots.TITLE_H and (a[:top] < 100).sum() > 30


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (make test-deps)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    _, path, _ = report
    shot = tmp_path / "report.png"
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400",
                          f"--screenshot={shot}", path.resolve().as_uri()],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    with PIL.open(shot) as im:
        assert im.format == "PNG" and im.size == (1000, 1400)
        a = np.asarray(im.convert("L"))
    assert len(np.unique(a)) > 50  # text and pictures, not a blank page
    assert (a < 80).mean() > 0.005 and (a > 240).mean() > 0.3  # dark text on a light page
