"""load_dataset: the tutorial split on the real MNIST, where data is looked for, and downloading
(from a local HTTP server only: these tests never touch the network)."""

from __future__ import annotations

import gzip
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from data_helpers import BUNDLED, copy_gz, link_bundled, serve, small_idx_set, small_splits
from deeptut.data import datasets
from deeptut.data.datasets import IDX_FILES, download_mnist, export_pkl, find_data, load_dataset
from deeptut.data.idx import MNIST_SHA256, read_idx, write_idx
from deeptut.data.legacy_pickle import write_pkl_gz
from deeptut.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def mnist():
    t = time.perf_counter()
    data = load_dataset("mnist")
    print(f"\nload_dataset('mnist') on the bundled files: {time.perf_counter() - t:.3f} s")
    return data


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No DEEPTUT_DATA, an empty repository data/ and user cache, no system folders, no mirror env."""
    for var in ("DEEPTUT_DATA", "DEEPTUT_MNIST_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "REPO_DATA", tmp_path / "repo" / "data")
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {"fashion-mnist": (tmp_path / "usr-share",)})
    return tmp_path


def no_network(url, timeout):
    raise AssertionError(f"tried to open {url}")


# --- the real data -----------------------------------------------------------------------------------


def test_tutorial_split_and_scaling(mnist):
    assert mnist.name == "mnist" and Path(mnist.source) == BUNDLED
    for split, n in ((mnist.train, 50000), (mnist.valid, 10000), (mnist.test, 10000)):
        assert split.x.shape == (n, 784) and split.x.dtype == np.float32 and split.x.flags.c_contiguous
        assert split.y.shape == (n,) and split.y.dtype == np.int64
        assert split.x.min() == 0 and split.x.max() == np.float32(0.99609375)
        assert np.array_equal(split.x * 256, np.round(split.x * 256))  # value / 256 exactly
    assert (mnist.train.y[0], mnist.valid.y[0], mnist.test.y[0]) == (5, 3, 7)
    # class counts from data/mnist/README.md
    train_counts = np.bincount(np.concatenate([mnist.train.y, mnist.valid.y]))
    assert train_counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_split_matches_the_idx_files(mnist):
    raw = read_idx(BUNDLED / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(mnist.valid.x[-1], raw[-1].reshape(-1) / np.float32(256))
    np.testing.assert_array_equal(mnist.train.x[123], raw[123].reshape(-1) / np.float32(256))


def test_bundled_files_are_verified(tmp_path, monkeypatch):
    folder = link_bundled(tmp_path / "d")
    monkeypatch.setitem(datasets.KNOWN_SHA256, "mnist", {**MNIST_SHA256, IDX_FILES[3]: "0" * 64})
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_dataset("mnist", folder)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.delenv("DEEPTUT_DATA", raising=False)
    data = load_dataset("fashion-mnist")
    assert data.name == "fashion-mnist" and Path(data.source) == FASHION
    assert (len(data.train.y), len(data.valid.y), len(data.test.y)) == (50000, 10000, 10000)
    assert data.train.x.dtype == np.float32 and data.train.x.max() <= 0.99609375
    assert np.bincount(data.test.y).tolist() == [1000] * 10


def test_mnist_files_are_not_fashion_mnist(tmp_path):
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("fashion-mnist", link_bundled(tmp_path / "d"))


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'; known: mnist, fashion-mnist"):
        load_dataset("cifar")


# --- where the data is looked for ----------------------------------------------------------------------


def test_search_order(isolated, monkeypatch):
    t = isolated
    cache, repo, env = t / "cache" / "deeptut" / "mnist", t / "repo" / "data" / "mnist", t / "env"
    for folder in (cache, repo, env / "mnist"):
        small_idx_set(folder)
    explicit = t / "explicit"
    small_idx_set(explicit)
    monkeypatch.setenv("DEEPTUT_DATA", str(env))
    assert find_data("mnist", explicit).folder == explicit
    assert find_data("mnist").folder == env / "mnist"
    monkeypatch.setenv("DEEPTUT_DATA", str(env / "mnist"))  # the folder itself works too
    assert find_data("mnist").folder == env / "mnist"
    monkeypatch.setenv("DEEPTUT_DATA", str(t / "empty"))  # an unusable $DEEPTUT_DATA falls through
    assert find_data("mnist").folder == repo
    monkeypatch.delenv("DEEPTUT_DATA")
    assert find_data("mnist").folder == repo
    for f in IDX_FILES[:2]:
        (repo / f"{f}.gz").unlink()  # an incomplete set is skipped
    assert find_data("mnist").folder == cache
    for f in IDX_FILES:
        (cache / f"{f}.gz").unlink()
    assert find_data("mnist") is None
    small_idx_set(t / "repo" / "data")  # files directly in data/
    assert find_data("mnist").folder == t / "repo" / "data"


def test_cache_honours_xdg_and_home(isolated, monkeypatch):
    assert datasets.cache_dir("mnist") == isolated / "cache" / "deeptut" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(isolated / "home"))
    assert datasets.cache_dir("fashion-mnist") == isolated / "home" / ".cache" / "deeptut" / "fashion-mnist"
    small_idx_set(isolated / "home" / ".cache" / "deeptut" / "mnist")
    assert find_data("mnist").folder == isolated / "home" / ".cache" / "deeptut" / "mnist"


def test_fashion_system_folder_comes_after_env(isolated, monkeypatch):
    system = isolated / "usr-share"
    small_idx_set(system)
    assert find_data("fashion-mnist").folder == system
    small_idx_set(isolated / "env" / "fashion-mnist")
    monkeypatch.setenv("DEEPTUT_DATA", str(isolated / "env"))
    assert find_data("fashion-mnist").folder == isolated / "env" / "fashion-mnist"


def test_explicit_folder_does_not_fall_through(isolated):
    small_idx_set(isolated / "repo" / "data" / "mnist")
    with pytest.raises(DataError, match="nowhere: no usable mnist data here: no such folder"):
        find_data("mnist", isolated / "nowhere")
    partial = isolated / "partial"
    small_idx_set(partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="partial: .*lacks t10k-labels-idx1-ubyte"):
        load_dataset("mnist", partial)


def test_explicit_subfolder_raw_files_and_pickle(isolated):
    small_idx_set(isolated / "d" / "mnist")
    assert find_data("mnist", isolated / "d").folder == isolated / "d" / "mnist"
    raw = isolated / "raw"
    small_idx_set(raw, gz=False)
    (raw / "t10k-images-idx3-ubyte").unlink()
    write_idx(raw / "t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 28), np.uint8), gzip=True)
    found = find_data("mnist", raw)
    assert found.idx_files[IDX_FILES[0]].name == "train-images-idx3-ubyte"  # uncompressed preferred
    assert found.idx_files[IDX_FILES[2]].name == "t10k-images-idx3-ubyte.gz"  # .gz when that is all
    (isolated / "p").mkdir()
    write_pkl_gz(isolated / "p" / "mnist.pkl.gz", small_splits())
    assert find_data("mnist", isolated / "p").pickle == isolated / "p" / "mnist.pkl.gz"
    assert find_data("mnist", isolated / "p" / "mnist.pkl.gz").pickle == isolated / "p" / "mnist.pkl.gz"


def test_nothing_found_offline_says_what_to_do(isolated, monkeypatch):
    monkeypatch.setenv("DEEPTUT_DATA", str(isolated / "mine"))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", download=False)
    msg = str(e.value)
    assert "no mnist data found (downloading is turned off)" in msg
    for where in (isolated / "mine", isolated / "repo/data/mnist", isolated / "cache/deeptut/mnist"):
        assert str(where) in msg
    for f in IDX_FILES:
        assert f"{f}.gz" in msg
    assert "$DEEPTUT_DATA" in msg and "--data-dir" in msg and "mnist.pkl.gz" in msg
    with pytest.raises(DataError, match=r"(?s)no fashion-mnist data found \(there is no download.*apt-get"):
        load_dataset("fashion-mnist", opener=no_network)


# --- checks across the four files (checksums off and a smaller split, to use small files) --------------------


@pytest.fixture
def unchecked(monkeypatch):
    monkeypatch.setitem(datasets.KNOWN_SHA256, "mnist", {})
    monkeypatch.setattr(datasets, "N_TRAIN", 50)


def test_small_set_split(isolated, unchecked):
    arrays = small_idx_set(isolated / "d", n_train=53, n_test=5)
    data = load_dataset("mnist", isolated / "d")
    assert (len(data.train.y), len(data.valid.y), len(data.test.y)) == (50, 3, 5)
    np.testing.assert_array_equal(data.valid.x * 256, arrays[IDX_FILES[0]][50:].reshape(3, -1))
    np.testing.assert_array_equal(data.train.y, arrays[IDX_FILES[1]][:50])


def test_images_and_labels_count_mismatch(isolated, unchecked):
    d = isolated / "d"
    small_idx_set(d, n_train=53, n_test=5)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), gzip=True)
    msg = "t10k-images-idx3-ubyte.gz: 5 images, but t10k-labels-idx1-ubyte.gz has 4"
    with pytest.raises(DataError, match=msg):
        load_dataset("mnist", d)


def test_too_few_training_images_and_wrong_shapes(isolated, unchecked):
    small_idx_set(isolated / "d", n_train=50)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: 50 training images"):
        load_dataset("mnist", isolated / "d")
    write_idx(isolated / "d" / "train-images-idx3-ubyte.gz", np.zeros((50, 784), np.uint8), gzip=True)
    with pytest.raises(DataError, match="expected n x 28 x 28 uint8 images, got 50x784 uint8"):
        load_dataset("mnist", isolated / "d")


# --- the tutorial pickle ----------------------------------------------------------------------------------


@pytest.mark.slow  # a few seconds: writes, gzips and re-reads all 70,000 images
def test_export_pkl_round_trip(tmp_path, mnist):
    (tmp_path / "p").mkdir()
    out = export_pkl(tmp_path / "p" / "mnist.pkl.gz", compresslevel=1)
    data = load_dataset("mnist", out.parent)  # found as <dir>/mnist.pkl.gz, checked against the IDX sums
    assert data.source == str(out)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(data, name).x, getattr(mnist, name).x)
        np.testing.assert_array_equal(getattr(data, name).y, getattr(mnist, name).y)


def test_pickle_that_is_not_mnist_is_refused(isolated):
    (isolated / "p").mkdir()
    write_pkl_gz(isolated / "p" / "mnist.pkl.gz", small_splits(n=6))
    with pytest.raises(DataError, match="mnist.pkl.gz: its train images differ from the published"):
        load_dataset("mnist", isolated / "p")


# --- downloading (127.0.0.1 only) ---------------------------------------------------------------------------


def test_download_into_cache(isolated, capsys, mnist):
    served = isolated / "www"
    copy_gz(BUNDLED, served)
    with serve(served) as url:
        data = load_dataset("mnist", mirrors=[url])
    cache = isolated / "cache" / "deeptut" / "mnist"
    assert Path(data.source) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{f}.gz" for f in IDX_FILES)
    np.testing.assert_array_equal(data.train.x[:100], mnist.train.x[:100])
    err = capsys.readouterr().err
    assert f"downloading {url}train-images-idx3-ubyte.gz\n  9.7 MB" in err
    assert find_data("mnist").folder == cache  # next time it is found without a download
    assert load_dataset("mnist", opener=no_network).source == str(cache)


def _small_served(folder: Path) -> dict[str, str]:
    """Four small IDX .gz files to serve, and their checksums."""
    arrays = small_idx_set(folder, n_train=8, n_test=4)
    sums = {}
    for f, arr in arrays.items():
        write_idx(folder / "raw", arr)
        sums[f] = hashlib.sha256((folder / "raw").read_bytes()).hexdigest()
    (folder / "raw").unlink()
    return sums


def test_corrupt_mirror_falls_back_to_the_next(isolated, capsys, monkeypatch):
    good, bad = isolated / "good", isolated / "bad"
    sums = _small_served(good)
    copy_gz(good, bad)
    broken = bytearray((bad / "train-labels-idx1-ubyte.gz").read_bytes())
    broken[-8] ^= 0x55  # the gzip CRC: the file still looks like gzip
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(bytes(broken))
    fixed = gzip.compress(b"\0\0\x08\x01\0\0\0\x08" + bytes(8))  # valid IDX, wrong content
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(fixed)
    dest = isolated / "dl"
    with serve(bad) as bad_url, serve(good) as good_url:
        monkeypatch.setenv("DEEPTUT_MNIST_MIRROR", f"{bad_url}, {good_url}")
        download_mnist(dest, checksums=sums)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{f}.gz" for f in IDX_FILES)
    for f in IDX_FILES:
        assert (dest / f"{f}.gz").read_bytes() == (good / f"{f}.gz").read_bytes()
    err = capsys.readouterr().err
    assert f"{bad_url}train-labels-idx1-ubyte.gz failed: download: corrupt gzip" in err
    assert f"{bad_url}t10k-labels-idx1-ubyte.gz failed: download: checksum mismatch" in err
    assert "trying the next mirror" in err


def test_all_mirrors_bad_leaves_no_partial_file(isolated):
    good, bad = isolated / "good", isolated / "bad"
    sums = _small_served(good)
    copy_gz(good, bad)
    data = (bad / "train-images-idx3-ubyte.gz").read_bytes()
    (bad / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])  # a cut-off download
    dest = isolated / "dl"
    (isolated / "empty-www").mkdir()
    with serve(bad) as url, serve(isolated / "empty-www") as url404:
        with pytest.raises(DataError) as e:
            download_mnist(dest, mirrors=[url, url404], checksums=sums)
    msg = str(e.value)
    assert "could not download train-images-idx3-ubyte.gz from any mirror" in msg
    assert f"{url}train-images-idx3-ubyte.gz: download: truncated" in msg
    assert f"{url404}train-images-idx3-ubyte.gz: HTTP Error 404" in msg
    assert list(dest.iterdir()) == []  # nothing half-written, no temp file


def test_checksum_mismatch_and_size_limit(isolated):
    www = isolated / "www"
    sums = _small_served(www)
    wrong = dict(sums, **{IDX_FILES[0]: "ab" * 32})
    with serve(www) as url:
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: download: checksum mismatch"):
            download_mnist(isolated / "a", mirrors=[url], checksums=wrong)
        with pytest.raises(DataError, match="more than the 100-byte limit"):
            download_mnist(isolated / "b", mirrors=[url], checksums=sums, max_bytes=100)
    assert [p.name for p in (isolated / "a").iterdir()] == []
    assert [p.name for p in (isolated / "b").iterdir()] == []


def test_default_mirrors_and_failed_download_message(isolated):
    seen = []

    def offline(url, timeout):
        seen.append(url)
        raise OSError("network is unreachable")

    with pytest.raises(DataError) as e:
        load_dataset("mnist", opener=offline)
    assert seen == [m + "train-images-idx3-ubyte.gz" for m in datasets.MNIST_MIRRORS]
    msg = str(e.value)
    assert "network is unreachable" in msg and "no mnist data found (the download failed)" in msg
    assert "$DEEPTUT_DATA" in msg


def test_mirror_list(monkeypatch):
    monkeypatch.delenv("DEEPTUT_MNIST_MIRROR", raising=False)
    assert datasets.mirror_list() == list(datasets.MNIST_MIRRORS)
    monkeypatch.setenv("DEEPTUT_MNIST_MIRROR", "http://a/x http://b/y/")
    assert datasets.mirror_list() == ["http://a/x/", "http://b/y/"]
    assert datasets.mirror_list(["http://c"]) == ["http://c/"]
