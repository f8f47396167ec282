"""data/imdb.py: the tutorial's imdb.pkl and imdb.dict.pkl (pickles made here, as Python 2's cPickle wrote
them: protocol 2, lists of ints), load_data's cuts, every bad input named, and the download (a fake opener
and a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import gzip
import http.server
import io
import pickle
import threading

import numpy as np
import pytest

from deeptut.data import imdb
from deeptut.errors import DataError


def reviews(n: int, seed: int, lo: int = 3, hi: int = 140, top: int = 12_000) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    seqs = [[int(w) for w in rng.integers(2, top, int(rng.integers(lo, hi)))] for _ in range(n)]
    return seqs, [int(v) for v in rng.integers(0, 2, n)]


def write_pkl(path, train, test, gz: bool = False) -> None:
    raw = pickle.dumps(train, protocol=2) + pickle.dumps(test, protocol=2)  # two pickles, one file
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def files(tmp_path):
    train, test = reviews(200, 0), reviews(60, 1)
    write_pkl(tmp_path / "imdb.pkl", train, test)
    (tmp_path / "imdb.dict.pkl").write_bytes(pickle.dumps({f"w{i}": i for i in range(2, 12_000)}, protocol=2))
    return tmp_path, train, test


def test_load_data_as_imdb_py(files):
    folder, (tx, ty), (sx, sy) = files
    pkl, dictionary = imdb.find_imdb(folder)
    assert pkl.name == "imdb.pkl" and dictionary.name == "imdb.dict.pkl"
    d = imdb.load_imdb(pkl, dictionary=dictionary)
    kept = [i for i, s in enumerate(tx) if len(s) < 100]  # len < maxlen: imdb.py's test
    assert len(d.train) + len(d.valid) == len(kept)
    assert len(d.valid) == len(kept) - int(np.round(len(kept) * 0.95))
    assert len(d.test) == len(sx) and int(d.test.lengths.max()) == max(map(len, sx))  # the test set uncut
    for s in (d.train, d.valid, d.test):
        assert np.all(np.diff(s.lengths) >= 0)  # sorted by length
        assert s.steps.min() >= 1 and s.steps.max() < 10_000
    assert (d.train.steps == 1).any()  # indices >= n_words became 1
    # the same permutation as imdb.py's numpy.random.seed(123); numpy.random.permutation(n)
    sidx = np.random.RandomState(123).permutation(len(kept))
    first_valid = sorted((kept[i] for i in sidx[int(np.round(len(kept) * 0.95)):]), key=lambda i: len(tx[i]))
    assert d.valid.y.tolist() == [ty[i] for i in first_valid]
    again = imdb.load_imdb(pkl, test_size=25)
    assert len(again.test) == 25 and np.array_equal(again.train.steps, d.train.steps)
    assert d.n_classes == 2 and d.vocabulary == 10_000


def test_gzipped_and_a_file_path(tmp_path):
    write_pkl(tmp_path / "imdb.pkl.gz", reviews(50, 2), reviews(10, 3), gz=True)
    pkl, dictionary = imdb.find_imdb(tmp_path / "imdb.pkl.gz")
    assert dictionary is None
    assert len(imdb.load_imdb(pkl, maxlen=0).test) == 10


@pytest.mark.parametrize("train, test, message", [
    (([[5, 6], []], [0, 1]), None, "training entry 1 is an empty review"),
    (([[5, 6], [7, 0]], [0, 1]), None, "training entry 1 holds word index 0, outside the vocabulary"),
    (([[5, 6], [7, -3]], [0, 1]), None, "training entry 1 holds word index -3"),
    (([[5, 6], [7, "x"]], [0, 1]), None, "training entry 1 holds 'x', not a word index"),
    (([[5, 6], 7], [0, 1]), None, "training entry 1 should be a list of word indices, got int"),
    (([[5, 6], [7]], [0]), None, "training set has 2 reviews but 1 labels"),
    (([[5, 6], [7]], [0, -1]), None, "training label 1 is -1"),
    (([[5, 6]], [0], [1]), None, "training set should be a pair .reviews, labels., got a tuple of 3"),
    (([[5, 6], [7]], [0, 1]), {"a": 1}, "test set should be a pair"),
])
def test_bad_files_are_named_with_the_entry(tmp_path, train, test, message):
    path = tmp_path / "imdb.pkl"
    write_pkl(path, train, test if test is not None else ([[4]], [0]))
    with pytest.raises(DataError, match=message) as e:
        imdb.read_imdb(path)
    assert str(path) in str(e.value)


def test_missing_test_set_an_index_outside_the_dictionary_and_code(tmp_path):
    path = tmp_path / "imdb.pkl"
    path.write_bytes(pickle.dumps(([[4, 5]], [0]), protocol=2))
    with pytest.raises(DataError, match="the test set .a second pickle. is missing"):
        imdb.read_imdb(path)
    write_pkl(path, ([[4, 5], [9, 3]], [0, 1]), ([[4]], [1]))
    d = tmp_path / "imdb.dict.pkl"
    d.write_bytes(pickle.dumps({"a": 2, "b": 3, "c": 4, "d": 5}, protocol=2))
    with pytest.raises(DataError, match=r"training entry 1 holds word index 9, outside the vocabulary of .*"
                                        r"imdb.dict.pkl \(largest index 5\)"):
        imdb.load_imdb(path, dictionary=d, maxlen=0, valid_portion=0.5)

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))
    path.write_bytes(pickle.dumps(([[4]], [Evil()]), protocol=2) + pickle.dumps(([[4]], [0]), protocol=2))
    with pytest.raises(DataError, match="refusing to load .*posix.system|refusing to load .*os.system"):
        imdb.read_imdb(path)
    d.write_bytes(pickle.dumps(["not", "a", "dict"], protocol=2))
    with pytest.raises(DataError, match="should be a dictionary word -> index, got a list of 3"):
        imdb.read_dictionary(d)


def served_files() -> dict[str, bytes]:
    raw = pickle.dumps(reviews(30, 4), protocol=2) + pickle.dumps(reviews(8, 5), protocol=2)
    return {"/data/imdb.pkl.gz": gzip.compress(raw),
            "/data/imdb.dict.pkl.gz": gzip.compress(pickle.dumps({f"w{i}": i for i in range(2, 12_000)},
                                                                  protocol=2))}


def test_download_with_a_fake_opener(tmp_path):
    content = served_files()
    asked = []

    def opener(url, timeout):
        asked.append(url)
        path = url.split("example.org", 1)[1]
        if url.startswith("http://bad.example.org"):
            raise OSError("connection refused")
        return io.BytesIO(content[path] if "dict" in path else content[path][:50] if "broken" in url else
                          content[path])

    written = imdb.download_imdb(tmp_path, mirrors=["http://bad.example.org/data", "http://ok.example.org/data/"],
                                 opener=opener)
    assert [p.name for p in written] == ["imdb.pkl.gz", "imdb.dict.pkl.gz"]
    assert asked[:2] == ["http://bad.example.org/data/imdb.pkl.gz", "http://ok.example.org/data/imdb.pkl.gz"]
    assert len(imdb.load_imdb(written[0], maxlen=0).test) == 8
    with pytest.raises(DataError, match="could not download imdb.pkl.gz from any mirror"):
        imdb.download_imdb(tmp_path / "other", mirrors=["http://broken.example.org/data/"], opener=opener)
    assert not list((tmp_path / "other").iterdir())  # nothing half-written left


def test_download_from_a_local_http_server(tmp_path, monkeypatch):
    content = served_files()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = content.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DEEPTUT_IMDB_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/data/")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        monkeypatch.delenv("DEEPTUT_DATA", raising=False)
        monkeypatch.setattr(imdb, "search_path", lambda: [imdb.cache_dir()])
        from deeptut.config import TrainConfig

        d = imdb.load_for_config(TrainConfig(model="lstm", dataset="imdb", maxlen=0, test_size=5))
        assert (tmp_path / "deeptut" / "imdb" / "imdb.pkl.gz").is_file() and len(d.test) == 5
        monkeypatch.setenv("DEEPTUT_IMDB_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/nothing/")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
        with pytest.raises(DataError, match="HTTP Error 404.*\n(.|\n)*no IMDB data found"):
            imdb.load_for_config(TrainConfig(model="lstm", dataset="imdb"))
    finally:
        server.shutdown()


def test_deeptut_train_lstm_on_an_imdb_pickle(tmp_path, capsys):
    from deeptut.cli import main
    from deeptut.store.rundir import Run

    data = tmp_path / "data"
    data.mkdir()
    write_pkl(data / "imdb.pkl", reviews(120, 6, hi=30, top=300), reviews(30, 7, hi=30, top=300))
    run = tmp_path / "run"
    code = main(["train", "lstm", "--data-dir", str(data), "--run-dir", str(run), "--quiet", "--n_epochs", "2",
                 "--dim_proj", "8", "--n_words", "200", "--batch_size", "32", "--test_size", "-1", "--threads", "1",
                 "--device", "cpu"])
    assert code == 0
    assert "valid" in capsys.readouterr().out
    recs = Run.open(run).metrics().supervised
    assert len(recs) == 2 and recs[0]["iteration"] == 4  # 108 training reviews / 32: 4 minibatches an epoch
