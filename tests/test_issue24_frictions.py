"""Frictions of a first hour with deeptut (issue 24), each as a regression test: `lr-find` and `compare` write
beside runs/, never among the runs; the data search path names no folder inside an installed package as "the
repository's data/"; `deeptut presets` fits 100 columns and names its evidence without the repository."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deeptut import config, presets
from deeptut.cli import main
from synthetic import write_tiny_idx

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CLI_TINY = ["--dataset", "idx", "--batch_size", "20", "--n_epochs", "1", "--learning-rate", "0.1", "--threads", "1"]


def test_lr_find_and_compare_leave_runs_holding_only_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    data = tmp_path / "data"
    data.mkdir()
    write_tiny_idx(data, n_train=300, n_valid=60, n_test=60)
    monkeypatch.chdir(tmp_path)  # a user in their project folder: runs/ is made here
    for seed in ("1", "2"):
        assert main(["train", "logistic", "-q", "--data-dir", str(data), *CLI_TINY, "--seed", seed]) == 0
    assert main(["lr-find", "logistic", "--data-dir", str(data), *CLI_TINY, "--steps", "20"]) == 0
    assert main(["compare", *sorted(map(str, Path("runs").iterdir())), "--no-mcnemar"]) == 0
    out, err = capsys.readouterr()
    runs = sorted(Path("runs").iterdir())
    assert len(runs) == 2 and all((r / "metrics.jsonl").is_file() for r in runs)  # nothing else in runs/
    (found,) = Path("lr-find").iterdir()  # beside runs/
    assert found.name.startswith("logistic-") and (found / "lr_find.png").is_file()
    (png,) = Path("comparisons").iterdir()
    assert png.name.startswith("compare-") and png.suffix == ".png" and str(png) in out
    assert "note: skipping" not in err
    # the README's `deeptut compare runs/*` again: the runs compared, what is not a run skipped with a note
    (Path("runs") / "notes.txt").write_text("mine")
    assert main(["compare", *map(str, sorted(Path("runs").iterdir())), "--no-mcnemar"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: skipping") == 1 and "skipping runs/notes.txt: not a run directory (not a folder)" in err
    assert len(list(Path("comparisons").iterdir())) == 2  # a new picture; the first one kept


def test_search_path_names_no_repository_folder_when_installed(tmp_path):
    """deeptut copied into a venv-like site-packages (as `pip install .` lays it out): the "not found" error
    lists only $DEEPTUT_DATA and the user cache, never .../lib/data as "repository data/"."""
    site = tmp_path / "venv" / "lib" / "python3" / "site-packages"
    shutil.copytree(ROOT / "src" / "deeptut", site / "deeptut", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "DEEPTUT_DATA"}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path))
    code = ("from deeptut.data import datasets\n"
            "from deeptut.errors import DataError\n"
            "print(datasets.in_checkout())\n"
            "try:\n    datasets.load_dataset('mnist', download=False)\n"
            "except DataError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    first, *message = out.stdout.splitlines()
    assert first == "False"
    assert message[0] == "no mnist data found (downloading is turned off). Looked in:"
    looked = [line for line in message if line.startswith("  /")]
    assert looked == [f"  {tmp_path / 'cache' / 'deeptut' / 'mnist'}  (user cache: no such folder)"]
    assert "repository" not in out.stdout and "venv" not in out.stdout
    # from the checkout, the repository's data/ is searched (and named so)
    from deeptut.data import datasets

    assert datasets.in_checkout() and any(why == "repository data/" for _d, why in datasets.search_path("mnist"))
    assert not datasets.in_checkout(site / "deeptut" / "data" / "datasets.py")


def test_presets_fit_100_columns_and_name_evidence_without_the_repository(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    assert "BENCHMARKS.md" not in out and "deeptut presets NAME" in out
    # what it is for carries no measured figure (those come from deeptut/claims.toml, with their raw result)
    for name, (_kind, purpose) in presets.ABOUT.items():
        assert not re.search(r"\d\s*(s|%|min)\b", purpose), (name, purpose)
    # presets NAME: each figure with the file it comes from
    assert main(["presets", "mlp-fast"]) == 0
    lines = capsys.readouterr().out.splitlines()
    figures = presets.measured()["mlp-fast"]["figures"]
    for key, fig in figures.items():
        line = next(ln for ln in lines if ln.strip().startswith(f"{key} {fig['value']}: "))
        assert (ROOT / line.split(": ", 1)[1].split(" (")[0]).is_file(), line
    assert set(presets.ABOUT) <= set(config.preset_names())
