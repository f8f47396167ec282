"""The Python API (deeptut.train / deeptut.load, deeptut/api.py) on a tiny IDX dataset, and the frictions of a
first hour it came with (issue 24): a run that remembers its data, no run folder left by a failed start,
compare skipping non-runs, --version, "did you mean", train PRESET --help, predict of any image, a text file
posing as mnist.pkl.gz."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deeptut
from deeptut.cli import main
from deeptut.errors import ConfigError, DataError, DeeptutError
from synthetic import write_tiny_idx

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(dataset="idx", batch_size=20, n_epochs=2, learning_rate=0.1, threads=1)
CLI_TINY = ["--dataset", "idx", "--batch_size", "20", "--n_epochs", "2", "--learning-rate", "0.1", "--threads", "1"]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture()
def tiny(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return write_tiny_idx(d, n_train=500, n_valid=100, n_test=100)


@pytest.fixture()
def no_other_data(tmp_path, monkeypatch):
    """Nowhere else to find an "idx" dataset: only what a run remembers (or --data-dir) can serve."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DEEPTUT_DATA", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty))


@pytest.mark.slow  # ~6 s on the shared 2 cores: matplotlib's first figures
def test_train_returns_the_run(tiny, tmp_path, capsys):
    runs = tmp_path / "runs"
    run = deeptut.train("logistic", data_dir=tiny, runs_dir=runs, **TINY)
    assert run.run_dir.parent == runs and run.run_dir.name.startswith("logistic-")
    assert run.summary == json.loads((run.run_dir / "summary.json").read_text())
    assert run.config.n_epochs == 2 and run.config.dataset == "idx"
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(run.history) == len(lines) == 2  # one row per validation (25 minibatches, one per epoch)
    assert list(run.history["valid_error"]) == [json.loads(x)["valid_error"] for x in lines]
    assert not run.model.training and str(next(run.model.parameters()).device) == "cpu"
    # the model is the selected one: it gives the summary's test error on the test split
    assert run.summary["best_validation_error"] == min(run.history["valid_error"])
    assert "run directory:" in capsys.readouterr().out
    png = run.plot()._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert run.filters()._repr_png_()[:4] == b"\x89PNG"
    again = deeptut.load(run.run_dir)
    assert again.summary == run.summary and again.history.equals(run.history)
    for a, b in zip(again.model.state_dict().values(), run.model.state_dict().values()):
        assert (a == b).all()


def test_run_dir_made_then_refused(tiny, tmp_path):
    target = tmp_path / "nb-run" / "first"  # parents made too (the issue's `fit` said "cannot write")
    run = deeptut.train("logistic", data_dir=tiny, run_dir=target, quiet=True, **TINY)
    assert run.run_dir == target and (target / "best.safetensors").is_file()
    with pytest.raises(DeeptutError, match="already holds a run"):
        deeptut.train("logistic", data_dir=tiny, run_dir=target, quiet=True, **TINY)


def test_errors_from_python_name_the_key(tiny):
    with pytest.raises(ConfigError, match=r"deeptut\.train\(\.\.\.\): unknown config key 'n_epoch' "
                                          r"\(did you mean 'n_epochs'\?\)"):
        deeptut.train("logistic", n_epoch=1)
    with pytest.raises(ConfigError, match=r"deeptut\.train\(\.\.\.\): batch_size expects int, got 'x'"):
        deeptut.train("logistic", batch_size="x")
    with pytest.raises(ConfigError, match=r"unknown preset 'lenett' \(did you mean 'lenet'\?\)"):
        deeptut.train("lenett")
    with pytest.raises(ConfigError, match="nkerns is a field of model"):
        deeptut.train("logistic", nkerns=(4, 8))
    from deeptut import api

    cfg = api.make_config("mlp", {"n_hidden": 7})
    assert api.make_config(cfg, {"learning_rate": 0.5}).learning_rate == 0.5  # a TrainConfig + overrides
    assert api.make_config(cfg, {"learning_rate": 0.5}).n_hidden == 7


@pytest.mark.slow  # a fresh interpreter (torch's import): ~10 s on the shared 2 cores
def test_callable_package_before_and_after_importing_the_loop(tiny, tmp_path):
    """deeptut.train is the package of the training code and the API's function at once: it trains before
    and after `import deeptut.train.loop`, which must not rebind the name; `import deeptut` loads no torch."""
    code = f"""
import sys
import deeptut
assert "torch" not in sys.modules, "import deeptut loaded torch"
kw = dict(data_dir={str(tiny)!r}, runs_dir={str(tmp_path / 'runs')!r}, quiet=True, dataset="idx",
          batch_size=20, n_epochs=1, threads=1)
a = deeptut.train("logistic", **kw)
import deeptut.train.loop as loop
from deeptut.train import runner
b = deeptut.train("logistic", **kw)
assert deeptut.train.loop is loop and callable(loop.fit) and runner.train
assert a.summary["test_error"] == b.summary["test_error"], (a.summary, b.summary)
assert "deeptut.train" in (deeptut.__doc__ or "") and deeptut.load(a.run_dir).summary == a.summary
print("ok", a.run_dir != b.run_dir)
"""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{Path(__file__).parent}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok True"


def test_failed_start_leaves_no_run_folder(tiny, tmp_path, capsys):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="batch_size 60000 is larger"):
        deeptut.train("logistic", data_dir=tiny, runs_dir=runs, quiet=True, **{**TINY, "batch_size": 60000})
    assert list(runs.iterdir()) == []
    assert main(["train", "logistic", "--data-dir", str(tiny), "--runs-dir", str(runs), *CLI_TINY,
                 "--batch_size", "60000"]) == 2
    assert "batch_size 60000 is larger" in capsys.readouterr().err
    assert list(runs.iterdir()) == []
    # a folder given with --run-dir is kept, emptied of what the failed start wrote, and can be used again
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["train", "logistic", "--data-dir", str(tiny), "--run-dir", str(mine), *CLI_TINY,
                 "--batch_size", "60000"]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_run_remembers_its_data(tiny, tmp_path, capsys, no_other_data):
    runs = tmp_path / "runs"
    assert main(["train", "logistic", "-q", "--data-dir", str(tiny), "--runs-dir", str(runs), *CLI_TINY]) == 0
    (run,) = runs.iterdir()
    meta = json.loads((run / "config.json").read_text())
    assert meta["data"] == {"dataset": "idx", "source": str(tiny.resolve()), "folder": str(tiny.resolve())}
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0  # no --data-dir, no $DEEPTUT_DATA holding it
    assert "test error" in capsys.readouterr().out
    assert main(["compare", str(run), "--no-mcnemar", "--out-dir", str(tmp_path / "cmp")]) == 0
    # the folder gone: the usual search, and its error
    os.rename(tiny, tmp_path / "moved")
    assert main(["eval", str(run)]) == 2
    assert "no idx data found" in capsys.readouterr().err


def test_compare_skips_what_is_not_a_run(tiny, tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in ("1", "2"):
        assert main(["train", "logistic", "-q", "--data-dir", str(tiny), "--runs-dir", str(runs), *CLI_TINY,
                     "--seed", seed]) == 0
    (runs / "compare.png").write_bytes(b"png")
    (runs / "lr-find-logistic-x").mkdir()
    capsys.readouterr()
    paths = sorted(str(p) for p in runs.iterdir())
    assert main(["compare", *paths, "--no-mcnemar", "--out-dir", str(tmp_path / "cmp")]) == 0
    err = capsys.readouterr().err
    assert f"note: skipping {runs / 'compare.png'}: not a run directory (not a folder)" in err
    assert f"note: skipping {runs / 'lr-find-logistic-x'}: not a run directory" in err
    assert main(["compare", str(runs / "compare.png")]) == 2
    assert "none of the paths given is a run directory" in capsys.readouterr().err


def test_version_did_you_mean_and_train_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"deeptut {deeptut.__version__}"
    assert main(["train", "lenett"]) == 2
    assert "unknown preset 'lenett' (did you mean 'lenet'?)" in capsys.readouterr().err
    assert main(["train", "logistic", "--learning_rat", "0.1"]) == 2
    assert "unknown config key 'learning_rat' (did you mean 'learning_rate'?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "lenet-fast", "--help"])
    out = capsys.readouterr().out
    assert "config fields of lenet-fast (model lenet)" in out
    assert "  [lenet]\n    --nkerns 20,50\n        kernels in conv-pool layers 1 and 2" in out
    assert "--activation relu   (default tanh)" in out  # the preset's value, and the default it changes
    assert "--learning_rate 0.05   (default 0.13)\n        SGD step size" in out
    assert "--n_hidden" in out and "--corruption_level" not in out  # only the fields of lenet
    fields = out[out.index("config fields of lenet-fast"):]
    assert max(map(len, fields.splitlines())) <= 100


def test_mnist_like_images():
    from deeptut.data.images import mnist_like

    # a dark bar on white paper, 200 x 120 pixels, off centre
    paper = np.full((120, 200), 250, np.uint8)
    paper[10:90, 20:40] = 10
    img, notes = mnist_like(paper)
    assert img.shape == (28, 28) and img.dtype == np.uint8
    assert any("inverted" in n for n in notes) and any("20x20 box" in n for n in notes)
    ys, xs = np.nonzero(img > 64)
    assert ys.max() - ys.min() + 1 <= 20 and xs.max() - xs.min() + 1 <= 20  # fitted into the box
    assert ys.max() - ys.min() + 1 >= 18  # the long side (80 rows) fills it
    w = img.astype(float)
    cy, cx = (w.sum(1) @ np.arange(28)) / w.sum(), (w.sum(0) @ np.arange(28)) / w.sum()
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1  # centred by its centre of mass
    assert img[0].max() == 0 and img[:, 0].max() == 0  # a dark ground
    # an MNIST digit (28x28, light on dark) is taken as it is
    digit = np.zeros((28, 28), np.uint8)
    digit[5:20, 12:15] = 200
    same, notes = mnist_like(digit)
    assert (same == digit).all() and notes == []
    with pytest.raises(DataError, match="blank"):
        mnist_like(np.full((50, 50), 255, np.uint8))


def test_predict_any_image_and_a_bad_file(tiny, tmp_path, capsys):
    from PIL import Image

    runs = tmp_path / "runs"
    assert main(["train", "logistic", "-q", "--data-dir", str(tiny), "--runs-dir", str(runs), *CLI_TINY]) == 0
    (run,) = runs.iterdir()
    big = np.full((200, 200, 3), 255, np.uint8)
    big[40:160, 90:110] = (20, 30, 200)  # a blue stroke on white, RGB
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(big[:100, :100]).convert("RGBA").save(tmp_path / "small.png")
    (tmp_path / "bad.png").write_text("not an image")
    capsys.readouterr()
    rc = main(["predict", str(run), str(tmp_path / "big.png"), str(tmp_path / "bad.png"), str(tmp_path / "small.png")])
    out, err = capsys.readouterr()
    assert rc == 2  # one file failed ...
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert names == [str(tmp_path / "big.png"), str(tmp_path / "small.png")]  # ... the others predicted
    assert f"deeptut: error: {tmp_path / 'bad.png'}: not an image file" in err
    assert f"note: {tmp_path / 'big.png'}: a dark digit on a light background: inverted" in err
    assert f"note: {tmp_path / 'big.png'}: 200x200 pixels: the digit fitted into a 20x20 box" in err
    assert main(["predict", str(run), str(tmp_path / "bad.png")]) == 2
    assert "no image could be read" in capsys.readouterr().err


def test_a_text_file_posing_as_the_pickle(tmp_path, capsys):
    d = tmp_path / "fake"
    d.mkdir()
    (d / "mnist.pkl.gz").write_text("<html>404 not found</html>\n")
    assert main(["train", "logistic", "--data-dir", str(d), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "mnist.pkl.gz: not a valid tutorial pickle: neither gzip nor a pickle (it starts with text " \
           "'<html>404 not fo'" in err
    assert "Error" not in err and not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_resume_after_the_last_update_says_so(tmp_path, monkeypatch, capsys):
    """A 1-epoch run interrupted after its last update: --resume finishes it, and says that (it used to say
    "resuming ... at epoch 2")."""
    import os
    import signal

    from deeptut.config import TrainConfig
    from deeptut.train import loop
    from deeptut.train.runner import train
    from synthetic import tiny_splits

    cfg = TrainConfig(model="logistic", batch_size=20, n_epochs=1, learning_rate=0.1, threads=1)
    data = tiny_splits(n_train=200, n_valid=100, n_test=100)
    real, sent = loop.learning_rate_at, []

    def lr(c, it, total):
        if it == total - 1 and not sent:  # the last update of the last epoch
            sent.append(it)
            os.kill(os.getpid(), signal.SIGINT)
        return real(c, it, total)

    from deeptut.train import torchless

    monkeypatch.setattr(loop, "learning_rate_at", lr)
    monkeypatch.setattr(torchless, "learning_rate_at", lr)  # the same calls: the run without torch
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, run, quiet=True)
    monkeypatch.setattr(loop, "learning_rate_at", real)
    monkeypatch.setattr(torchless, "learning_rate_at", real)
    capsys.readouterr()
    summary = train(cfg, data, run, resume=True)
    out = capsys.readouterr().out
    assert f"resuming {run}: its last epoch (1 of 1) was trained to the end; finishing the run (nothing left to train)" in out
    assert "at epoch 2" not in out and summary["epochs"] == 1


def test_busy_machine_warning(monkeypatch):
    from deeptut import api
    from deeptut.config import TrainConfig

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 3.0))
    w = api.busy_warning(TrainConfig(threads=0, device="cpu"))
    assert w.startswith("warning: the machine is busy (load 3.5 on 2 cores)") and "--threads 1" in w
    assert api.busy_warning(TrainConfig(threads=1, device="cpu")) is None  # a chosen count: no warning
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.3, 0.3))
    assert api.busy_warning(TrainConfig(threads=0, device="cpu")) is None  # idle
