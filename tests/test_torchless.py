"""The torch-free logistic run (train/torchless.py) against fit (train/loop.py): the same files, byte for byte
where they hold no time, the same printed lines; no torch imported; a run it started resumed by torch; the
cached decoded MNIST (data/datasets.py) checked against the published checksums."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deeptut import config
from deeptut.data import datasets, idx
from deeptut.data.datasets import Split, Splits
from deeptut.store import tensors
from deeptut.train import runner, state as train_state, torchless
from deeptut.train.session import Interrupted
from synthetic import tiny_splits

ROOT = Path(__file__).resolve().parents[1]
TIMES = {"elapsed_s", "train_seconds", "epochs_per_second", "created"}


def sparse_splits(seed=0):
    """tiny_splits with ~85 % of the pixels zero, as MNIST's: the kernels then pack the splits' nonzeros."""
    s = tiny_splits(seed=seed)
    rng = np.random.default_rng(seed + 1)

    def thin(p):
        x = p.x * (rng.random(p.x.shape) < 0.15)
        return Split(np.ascontiguousarray(x, dtype=np.float32), p.y)
    return Splits(thin(s.train), thin(s.valid), thin(s.test), source="synthetic", name="mnist")


def _cfg(**kw):
    base = dict(batch_size=20, n_epochs=4, patience=1000, learning_rate=0.1, seed=3, threads=2)
    return config.resolve("logistic", overrides={**base, **kw})


def _run(monkeypatch, cfg, data, run_dir, free: bool, **kw):
    monkeypatch.setenv("DEEPTUT_TORCHLESS", "1" if free else "0")
    return runner.train(cfg, data, run_dir, quiet=True, **kw)


def _json(path):
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMES}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _same_run_dirs(a: Path, b: Path) -> None:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for name in names:
        if name.endswith(".safetensors"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
        else:
            assert _untimed(_json(a / name)) == _untimed(_json(b / name)), name


def test_torch_seeded_rng_state_is_torchs():
    for seed in (0, 1, 3, 1234, 2**32 + 7, 2**64 - 1, -1):
        torch.manual_seed(seed)
        assert np.array_equal(train_state.torch_seeded_rng_state(seed), torch.get_rng_state().numpy()), seed
    torch.manual_seed(5)
    torch.rand(3)  # a draw moves the state: the closed form is the seeded state only
    assert not np.array_equal(train_state.torch_seeded_rng_state(5), torch.get_rng_state().numpy())


def test_numpy_and_torch_tensors_serialise_to_the_same_bytes():
    rng = np.random.default_rng(0)
    arrays = {"W": rng.random((7, 3), dtype=np.float32), "b": np.zeros(3, np.float32),
              "rng/python": np.arange(5, dtype=np.int64), "rng/torch": np.arange(9, dtype=np.uint8)}
    meta = {"model": "logistic", "format": "1"}
    as_torch = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    assert tensors.serialize_tensors(arrays, meta) == tensors.serialize_tensors(as_torch, meta)
    other = {**arrays, "b": np.ones(3, np.float32)}
    assert tensors.serialize_tensors(arrays, meta) != tensors.serialize_tensors(other, meta)


@pytest.mark.parametrize("case", [
    dict(),  # 4 epochs: the training split packed from epoch 2
    dict(L1_reg=1e-4, L2_reg=1e-3, evaluation="full", checkpoint_every=2),
    dict(patience=40, n_epochs=50, lr_schedule="cosine"),  # a patience stop, a schedule
    dict(threads=1, save_every=2, validation_frequency=7),
])
def test_the_same_run_directory_as_fit(monkeypatch, tmp_path, case):
    data, cfg = sparse_splits(), _cfg(**case)
    free = _run(monkeypatch, cfg, data, tmp_path / "free", True)
    ref = _run(monkeypatch, cfg, data, tmp_path / "fit", False)
    assert _untimed(free) == _untimed(ref)
    _same_run_dirs(tmp_path / "free", tmp_path / "fit")
    assert free["test_error"] < 30  # it learned (chance is 90 %)


def test_dense_pixels_and_the_printed_lines(monkeypatch, tmp_path, capsys):
    data, cfg = tiny_splits(), _cfg(n_epochs=2)  # dense rows: never packed
    monkeypatch.setenv("DEEPTUT_TORCHLESS", "1")
    runner.train(cfg, data, tmp_path / "free")
    free = capsys.readouterr().out
    monkeypatch.setenv("DEEPTUT_TORCHLESS", "0")
    runner.train(cfg, data, tmp_path / "fit")
    ref = capsys.readouterr().out
    drop = lambda text: [ln for ln in text.splitlines() if not ln.startswith("The code run for")]  # noqa: E731
    assert drop(free) == drop(ref) and "Optimization complete" in free
    _same_run_dirs(tmp_path / "free", tmp_path / "fit")


@pytest.mark.parametrize("override", [dict(shuffle=True), dict(momentum=0.5), dict(normalize="standard"),
                                      dict(improvement="mcnemar"), dict(sparse=False), dict(device="cuda")])
def test_cases_it_does_not_cover_go_to_fit(override):
    assert torchless.unsupported(_cfg(**override), sparse_splits(), False) is not None
    assert torchless.fit_logistic(_cfg(**override), sparse_splits(), None, quiet=True) is None


def test_a_resume_is_fits(monkeypatch):
    assert torchless.unsupported(_cfg(), sparse_splits(), True) is not None
    monkeypatch.setenv("DEEPTUT_TORCHLESS", "0")
    assert torchless.unsupported(_cfg(), sparse_splits(), False) == "DEEPTUT_TORCHLESS=0"


def test_interrupted_then_resumed_by_torch_ends_as_an_uninterrupted_run(monkeypatch, tmp_path):
    data, cfg = sparse_splits(), _cfg(n_epochs=5)
    calls = [0]
    real = torchless.learning_rate_at

    def lr(*a):  # SIGINT in the middle of epoch 3: the loop checkpoints and raises Interrupted
        calls[0] += 1
        if calls[0] == 75:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a)
    monkeypatch.setattr(torchless, "learning_rate_at", lr)
    with pytest.raises(Interrupted):
        _run(monkeypatch, cfg, data, tmp_path / "a", True)
    assert not (tmp_path / "a" / "summary.json").exists()
    monkeypatch.setattr(torchless, "learning_rate_at", real)
    resumed = _run(monkeypatch, cfg, data, tmp_path / "a", True, resume=True)  # resumes with torch: fit
    whole = _run(monkeypatch, cfg, data, tmp_path / "b", False)
    assert _untimed(resumed) == _untimed(whole)
    _same_run_dirs(tmp_path / "a", tmp_path / "b")  # its last checkpoint too: torch's state as fit's


@pytest.mark.slow
def test_torch_default_threads_is_torchs(tmp_path):
    code = ("import json, torch; from deeptut.train.torchless import torch_default_threads as t; "
            "print(json.dumps([t(), torch.get_num_threads()]))")
    # the default, a count above the cores (capped), MKL's variable over OpenMP's
    envs = ({}, {"OMP_NUM_THREADS": "3"}, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "2"})
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DYNAMIC")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**base, **env})
             for env in envs]  # at once: each is mostly torch's import
    for env, proc in zip(envs, procs):
        ours, torchs = json.loads(proc.communicate(timeout=120)[0])
        assert ours == torchs, env


def test_a_cli_logistic_run_imports_no_torch(tmp_path):
    """The whole `deeptut train logistic` command in a fresh process, on IDX files: torch never loaded."""
    from synthetic import write_tiny_idx

    data = tmp_path / "data"
    data.mkdir()
    write_tiny_idx(data)
    code = ("import sys; from deeptut.cli import main; "
            f"rc = main(['train', 'logistic', '--dataset', 'idx', '--data-dir', {str(data)!r}, '--n_epochs', '2', "
            f"'--batch_size', '20', '--run-dir', {str(tmp_path / 'run')!r}, '--quiet']); "
            "print('torch loaded' if 'torch' in sys.modules else 'no torch', rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().endswith("no torch 0"), out.stdout + out.stderr
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "checkpoints" / "last.json").is_file()


def _gz_set(folder: Path) -> dict[str, str]:
    """The tiny IDX set gzipped in `folder`, and the SHA-256 of each uncompressed file (its "published" one)."""
    from synthetic import write_tiny_idx
    import gzip
    import hashlib

    raw = folder / "raw"
    raw.mkdir()
    write_tiny_idx(raw, n_train=1200)
    sums = {}
    for f in datasets.IDX_FILES:
        data = (raw / f).read_bytes()
        sums[f] = hashlib.sha256(data).hexdigest()
        (folder / f"{f}.gz").write_bytes(gzip.compress(data, mtime=0))
    return sums


def test_decoded_copies_are_kept_checked_and_replaced_when_damaged(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sums = _gz_set(tmp_path)
    monkeypatch.setitem(datasets.KNOWN_SHA256, "mnist", sums)
    monkeypatch.setattr(datasets, "N_TRAIN", 1000)
    first = datasets.load_dataset("mnist", tmp_path, download=False)
    copies = datasets.decoded_dir("mnist")
    assert not copies.is_relative_to(datasets.cache_dir("mnist"))  # not where data is looked for
    assert sorted(p.name.split(".")[0] for p in copies.iterdir()) == sorted(datasets.IDX_FILES)
    read, parsed = [], []
    real_read, real_parse = idx.read_idx, idx.parse_idx
    monkeypatch.setattr(idx, "read_idx", lambda p, **kw: read.append(Path(p)) or real_read(p, **kw))
    monkeypatch.setattr(idx, "parse_idx", lambda d, src="", **kw: parsed.append(src) or real_parse(d, src, **kw))
    second = datasets.load_dataset("mnist", tmp_path, download=False)
    assert all(p.parent == copies for p in read) and len(read) == 4  # the copies, checked
    assert not any(src.endswith(".gz") for src in parsed)  # no .gz decompressed
    for a, b in zip((first.train, first.valid, first.test), (second.train, second.valid, second.test)):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.y.dtype == b.y.dtype == np.int64
    # a damaged copy: its checksum fails, the .gz is decoded again and the copy replaced
    (damaged,) = copies.glob("train-images-idx3-ubyte.*")
    blob = bytearray(damaged.read_bytes())
    blob[-1] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    parsed.clear()
    third = datasets.load_dataset("mnist", tmp_path, download=False)
    assert [src for src in parsed if src.endswith(".gz")] == [str(tmp_path / "train-images-idx3-ubyte.gz")]
    assert np.array_equal(third.train.x, first.train.x)
    assert real_read(damaged, expected_sha256=sums["train-images-idx3-ubyte"]).shape[0] == 1400  # 1200 + 200


def test_a_copy_never_stands_in_for_another_gz(monkeypatch, tmp_path):
    """Another .gz in the same role (here: a damaged one) is decoded and checked itself: the error is
    raised, whatever copy of the published file the cache holds."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sums = _gz_set(tmp_path)
    monkeypatch.setitem(datasets.KNOWN_SHA256, "mnist", sums)
    monkeypatch.setattr(datasets, "N_TRAIN", 1000)
    datasets.load_dataset("mnist", tmp_path, download=False)
    other = tmp_path / "other"
    other.mkdir()
    import gzip

    for f in datasets.IDX_FILES:
        raw = (tmp_path / "raw" / f).read_bytes()
        if f == "t10k-labels-idx1-ubyte":
            raw = raw[:-1] + bytes([(raw[-1] + 1) % 10])  # one label changed
        (other / f"{f}.gz").write_bytes(gzip.compress(raw, mtime=0))
    with pytest.raises(datasets.DataError, match="checksum mismatch"):
        datasets.load_dataset("mnist", other, download=False)
