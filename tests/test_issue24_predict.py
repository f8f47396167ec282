"""`deeptut predict` flags an input that looks nothing like the training data (issue 24: a noise image came back
`8 (p=1.0000)` with no warning; data/novelty.py), and one bad file is reported while the others are predicted.
Against the real MNIST training split (the bundled data/mnist/)."""

import numpy as np
import pytest

PIL = pytest.importorskip("PIL.Image")

from data_helpers import BUNDLED  # noqa: E402
from deeptut.cli import main  # noqa: E402
from deeptut.data import idx  # noqa: E402
from deeptut.data import novelty  # noqa: E402
from synthetic_run import make_synthetic_run  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (BUNDLED / "t10k-images-idx3-ubyte.gz").is_file(), reason="no bundled MNIST")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One user cache for the module: MNIST's reference is computed once (~2 s), then read back."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def reference(cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return novelty.reference_for("mnist", BUNDLED)


def test_no_mnist_digit_is_flagged_and_noise_is(reference, cache):
    from deeptut.data.datasets import load_dataset

    data = load_dataset("mnist", BUNDLED)
    assert reference.n == 50_000 and list((cache / "deeptut" / "novelty").glob("mnist-*.npz"))  # cached
    assert not any(reference.unlike(data.train.x[:20_000]))  # the training images: never, by construction
    flagged = sum(w is not None for w in reference.unlike(data.test.x))
    assert flagged <= 10  # of the 10,000 test digits (none on 2026-12-06)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (5, 784)) / 256
    assert all(reference.unlike(noise))  # uniform noise: every one
    box = np.zeros((1, 28, 28))
    box[0, 4:24, 4:24] = 0.5  # a grey square where a digit would be
    assert reference.unlike(box.reshape(1, 784))[0]
    checker = (np.indices((28, 28)).sum(0) // 3 % 2).astype(float).reshape(1, 784) * 0.99
    assert "shape" in reference.unlike(checker)[0]  # strokes, but no digit's shape


def test_predict_flags_noise_not_a_digit_and_goes_past_a_bad_file(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    run = make_synthetic_run(tmp_path / "runs" / "logistic-x", "logistic", dataset="mnist")
    digits = idx.read_idx(BUNDLED / "t10k-images-idx3-ubyte.gz")
    PIL.fromarray(digits[0]).save(tmp_path / "digit.png")  # MNIST's first test digit (a 7) as a PNG
    rng = np.random.default_rng(1)
    PIL.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "noise.png")
    PIL.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(tmp_path / "noise-rgb.png")
    (tmp_path / "bad.png").write_text("not an image")
    files = [tmp_path / n for n in ("digit.png", "noise.png", "bad.png", "noise-rgb.png")]
    rc = main(["predict", str(run), *map(str, files), "--data-dir", str(BUNDLED)])
    out, err = capsys.readouterr()
    assert rc == 2  # the bad file ...
    assert f"deeptut: error: {tmp_path / 'bad.png'}: not an image file" in err
    rows = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()}
    assert list(rows) == [str(files[0]), str(files[1]), str(files[3])]  # ... the others predicted
    assert len(rows[str(files[0])]) == 3  # the digit: not flagged
    for f in (files[1], files[3]):
        assert rows[str(f)][3] == "UNLIKE THE TRAINING DATA"
        assert f"note: {f}: looks nothing like the training images (" in err
    assert f"note: {files[0]}: looks nothing" not in err
    assert "the prediction is a guess" in err


def test_without_the_training_data_predict_says_it_did_not_compare(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty))
    monkeypatch.setenv("DEEPTUT_DATA", str(empty))
    run = make_synthetic_run(tmp_path / "runs" / "logistic-y", "logistic", dataset="idx")  # no idx data anywhere
    PIL.fromarray(np.zeros((28, 28), np.uint8) + 200).save(tmp_path / "grey.png")
    assert main(["predict", str(run), str(tmp_path / "grey.png")]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and "UNLIKE" not in out
    assert "note: the inputs were not compared with the training data (no idx data found" in err
