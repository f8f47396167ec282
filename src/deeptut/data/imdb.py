"""The LSTM chapter's data: the tutorial's `imdb.pkl` (IMDB movie reviews as word indices, positive or
negative) and `imdb.dict.pkl` (word -> index), read as imdb.py's `load_data` reads them, through the
restricted unpickler (data/legacy_pickle.py: nothing in the file is ever executed).

imdb.pkl is two pickles one after the other: the training set, then the test set, each a pair
(list of reviews, list of labels), a review a list of word indices (imdb_preprocess.py numbers words from
2 by frequency; 1 is "unknown"; 0 never occurs and pads a minibatch). What load_data does, and so this:

1. training reviews of `maxlen` words or more are dropped (`len(x) < maxlen` is kept: imdb.py's test; the
   chapter says "longer than 100"); the test set is kept whole;
2. `valid_portion` (lstm.py: 0.05) of the rest, drawn by numpy's permutation, is the validation set;
3. words of index `n_words` (lstm.py: 10,000) or more become 1, unknown;
4. every split is sorted by length (stable), which makes evaluation minibatches nearly unpadded;
5. (lstm.py's `test_size`) a random `test_size` of the test reviews are kept, if > 0.

The permutation and the test subset are drawn by `numpy.random.RandomState(seed)` in that order, as lstm.py's
global `numpy.random.seed(123)` draws them (with the same seed, the same split as the tutorial's).

Where the files are looked for: --data-dir (a folder, or imdb.pkl[.gz] itself), $DEEPTUT_DATA/imdb/,
$DEEPTUT_DATA/, the repository's data/imdb/ and data/, the user cache ~/.cache/deeptut/imdb/; missing
everywhere, they are downloaded into the cache from the tutorial's server (download.sh's URLs;
$DEEPTUT_IMDB_MIRROR replaces it). No checksum of the files is published: a download is kept only if it
parses as the format above. imdb.dict.pkl is optional (it only names words); when present, every index
must lie inside it.
"""

from __future__ import annotations

import gzip
import http.client
import io
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deeptut.data.datasets import _fetch as fetch_bounded  # one bounded download for every dataset
from deeptut.data.idx import DATA_FILE, GZIP_MAGIC, gunzip_bounded
from deeptut.data.legacy_pickle import _RestrictedUnpickler
from deeptut.data.sequences import SequenceSets, SequenceSplit
from deeptut.errors import DataError
from deeptut.store import files

NAME = "imdb"
DATA_FILES = ("imdb.pkl", "imdb.dict.pkl")
MIRRORS = ("http://www.iro.umontreal.ca/~lisa/deep/data/",)  # data/download.sh (imdb.py: imdb.pkl, bare)
N_WORDS = 10_000  # lstm.py's n_words: vocabulary kept; index >= n_words -> 1 (unknown)
MAXLEN = 100  # lstm.py: training reviews of this many words or more are dropped
VALID_PORTION = 0.05  # lstm.py: fraction of the (filtered) training set held out for validation
SPLIT_SEED = 123  # lstm.py's SEED: numpy.random.seed(SEED) draws the split
UNKNOWN = 1  # imdb_preprocess.py: the index of a word outside the dictionary
MAX_BYTES = 512 * 2**20  # the tutorial's imdb.pkl is ~ 80 MB; uncompressed bytes accepted
TIMEOUT_S = 30.0

Opener = Callable[[str, float], Any]  # (url, timeout in s) -> response with .read(n) (urlopen-like)


# --- reading the files ---------------------------------------------------------------------------------


def _pickles(path: Path, count: int) -> list[Any]:
    """The first `count` pickles of the file (gzipped or not), by the restricted unpickler."""
    data = files.read_bounded(path, MAX_BYTES, DataError, DATA_FILE)
    if data[:2] == GZIP_MAGIC:
        data = gunzip_bounded(data, path, MAX_BYTES)
    stream = io.BytesIO(data)
    out = []
    for i in range(count):
        if stream.tell() == len(data):
            what = ("nothing" if i == 0 else "only the training set; the test set (a second pickle) is missing")
            raise DataError(f"{path}: {what}")
        try:
            out.append(_RestrictedUnpickler(stream, str(path)).load())
        except DataError:
            raise
        except Exception as e:  # whatever the pickle machinery raises on damaged bytes
            raise DataError(f"{path}: not a valid tutorial pickle: {type(e).__name__}: {e}") from None
    return out


def _describe(obj: Any) -> str:
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def _as_split(obj: Any, path: Path, name: str) -> tuple[list[list[int]], list[int]]:
    """(reviews, labels) of one pickle, every entry checked: a non-empty list of integer indices >= 1."""
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataError(f"{path}: the {name} set should be a pair (reviews, labels), got {_describe(obj)}")
    seqs, labels = obj
    if not isinstance(seqs, (list, tuple)) or not isinstance(labels, (list, tuple)):
        raise DataError(f"{path}: the {name} set should hold a list of reviews and a list of labels, got "
                        f"{_describe(seqs)} and {_describe(labels)}")
    if len(seqs) != len(labels):
        raise DataError(f"{path}: the {name} set has {len(seqs)} reviews but {len(labels)} labels")
    if not seqs:
        raise DataError(f"{path}: the {name} set is empty")
    for i, s in enumerate(seqs):
        if not isinstance(s, (list, tuple)):
            raise DataError(f"{path}: {name} entry {i} should be a list of word indices, got {_describe(s)}")
        if not s:
            raise DataError(f"{path}: {name} entry {i} is an empty review")
        for w in s:
            if type(w) is not int:
                raise DataError(f"{path}: {name} entry {i} holds {w!r}, not a word index")
            if w < 1:
                raise DataError(f"{path}: {name} entry {i} holds word index {w}, outside the vocabulary "
                                f"(indices start at 1; 0 pads minibatches)")
    for i, y in enumerate(labels):
        if type(y) is not int or y < 0:
            raise DataError(f"{path}: {name} label {i} is {y!r}, not a class number >= 0")
    return list(seqs), list(labels)


def read_imdb(path: str | Path) -> tuple[tuple[list, list], tuple[list, list]]:
    """((train reviews, labels), (test reviews, labels)) of an imdb.pkl[.gz], checked entry by entry."""
    path = Path(path)
    train, test = _pickles(path, 2)
    return _as_split(train, path, "training"), _as_split(test, path, "test")


def read_dictionary(path: str | Path) -> dict[str, int]:
    """imdb.dict.pkl[.gz]: word -> index (>= 2 in the tutorial's file)."""
    path = Path(path)
    (d,) = _pickles(path, 1)
    if not isinstance(d, dict) or not d:
        raise DataError(f"{path}: should be a dictionary word -> index, got {_describe(d)}")
    for k, v in d.items():
        if not isinstance(k, (str, bytes)) or type(v) is not int or v < 1:
            raise DataError(f"{path}: entry {k!r} -> {v!r} is not word -> index >= 1")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def load_imdb(path: str | Path, *, n_words: int = N_WORDS, maxlen: int = MAXLEN,
              valid_portion: float = VALID_PORTION, test_size: int = -1, seed: int = SPLIT_SEED,
              dictionary: str | Path | None = None) -> SequenceSets:
    """imdb.py's load_data (and lstm.py's test_size) as SequenceSets; see the module docstring."""
    path = Path(path)
    (train_x, train_y), (test_x, test_y) = read_imdb(path)
    if dictionary is not None:
        top = max(read_dictionary(dictionary).values())
        for name, seqs in (("training", train_x), ("test", test_x)):
            for i, s in enumerate(seqs):
                w = max(s)
                if w > top:
                    raise DataError(f"{path}: {name} entry {i} holds word index {w}, outside the vocabulary "
                                    f"of {dictionary} (largest index {top})")
    if maxlen:
        kept = [i for i, s in enumerate(train_x) if len(s) < maxlen]
        if not kept:
            raise DataError(f"{path}: no training review is shorter than maxlen {maxlen} words")
        train_x, train_y = [train_x[i] for i in kept], [train_y[i] for i in kept]
    rng = np.random.RandomState(seed)
    sidx = rng.permutation(len(train_x))
    n_train = int(np.round(len(train_x) * (1.0 - valid_portion)))
    if n_train < 1 or n_train >= len(train_x):
        raise DataError(f"{path}: {len(train_x)} training reviews (of fewer than {maxlen} words) cannot be split "
                        f"into training and validation sets with valid_portion {valid_portion}")
    parts = {"train": ([train_x[i] for i in sidx[:n_train]], [train_y[i] for i in sidx[:n_train]]),
             "valid": ([train_x[i] for i in sidx[n_train:]], [train_y[i] for i in sidx[n_train:]]),
             "test": (test_x, test_y)}
    splits = {}
    for name, (seqs, labels) in parts.items():
        seqs = [[UNKNOWN if w >= n_words else w for w in s] for s in seqs]  # imdb.py's remove_unk
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # imdb.py's len_argsort (stable)
        splits[name] = SequenceSplit.from_lists([seqs[i] for i in order], [labels[i] for i in order],
                                                f"{path}: {name}")
    if test_size > 0:  # lstm.py: a random selection, since the test set is sorted by length
        idx = np.arange(len(splits["test"]))
        rng.shuffle(idx)
        splits["test"] = splits["test"].subset(idx[:test_size])
    n_classes = max(2, int(max(splits["train"].y.max(), splits["valid"].y.max(), splits["test"].y.max())) + 1)
    sets = SequenceSets(splits["train"], splits["valid"], splits["test"], source=str(path), name=NAME,
                        n_classes=n_classes, vocabulary=n_words)
    sets.check()
    return sets


# --- where the files are ------------------------------------------------------------------------------


def cache_dir() -> Path:
    from deeptut.data.datasets import cache_dir as dataset_cache_dir

    return dataset_cache_dir(NAME)


def search_path() -> list[Path]:
    """The folders searched when no data_dir is given: MNIST's search path for NAME (data/datasets.py)."""
    from deeptut.data.datasets import search_path as dataset_search_path

    return [folder for folder, _why in dataset_search_path(NAME)]


def _in(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def find_imdb(data_dir: str | Path | None = None) -> tuple[Path, Path | None] | None:
    """(imdb.pkl[.gz], imdb.dict.pkl[.gz] or None) where they are first found; None if nowhere (a
    `data_dir` without them is a DataError)."""
    if data_dir is not None:
        d = Path(data_dir)
        if d.is_file():
            return d, _in(d.parent, DATA_FILES[1])
        for folder in (d, d / NAME):
            found = _in(folder, DATA_FILES[0]) if folder.is_dir() else None
            if found:
                return found, _in(folder, DATA_FILES[1])
        raise DataError(f"{d}: no imdb.pkl or imdb.pkl.gz here (nor in {d / NAME})")
    for folder in search_path():
        found = _in(folder, DATA_FILES[0]) if folder.is_dir() else None
        if found:
            return found, _in(folder, DATA_FILES[1])
    return None


def load_for_config(cfg: Any, data_dir: str | Path | None = None) -> SequenceSets:
    """The registry's loader of "imdb": the files found (or downloaded), cut as cfg's lstm section says."""
    found = find_imdb(data_dir)
    if found is None:
        dest = cache_dir()
        try:
            download_imdb(dest)
        except DataError as e:
            where = "\n".join(f"  {d}" for d in search_path())
            raise DataError(f"{e}\n\nno IMDB data found. Looked in:\n{where}\nPut the tutorial's imdb.pkl "
                            f"(and imdb.dict.pkl), gzipped or not, into one of those folders, or point "
                            f"--data-dir or $DEEPTUT_DATA at them.") from None
        found = find_imdb(dest)
    pkl, dictionary = found
    return load_imdb(pkl, n_words=cfg.n_words, maxlen=cfg.maxlen, valid_portion=cfg.valid_portion,
                     test_size=cfg.test_size, dictionary=dictionary)


# --- downloading -----------------------------------------------------------------------------------


def mirror_list(mirrors: list[str] | tuple[str, ...] | None = None) -> list[str]:
    if mirrors is None:
        mirrors = os.environ.get("DEEPTUT_IMDB_MIRROR", "").replace(",", " ").split() or MIRRORS
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def download_imdb(dest: str | Path, *, mirrors: list[str] | tuple[str, ...] | None = None,
                  opener: Opener | None = None, max_bytes: int = MAX_BYTES) -> list[Path]:
    """Fetch imdb.pkl.gz and imdb.dict.pkl.gz (download.sh's files) into `dest`, trying the mirrors in
    order. A file appears (temp file + rename) only after it parses as the tutorial's format. Returns the
    files written."""
    dest = Path(dest)
    opener = opener or (lambda url, timeout: urllib.request.urlopen(url, timeout=timeout))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest}: cannot create the download folder: {e.strerror or e}") from None
    written = []
    for name, check in ((DATA_FILES[0], read_imdb), (DATA_FILES[1], read_dictionary)):
        if _in(dest, name):
            continue
        failures = []
        for base in mirror_list(mirrors):
            url = f"{base}{name}.gz"
            tmp = dest / f".{name}.gz.{os.getpid()}.part"
            try:
                _fetch(url, tmp, opener, max_bytes)
                check(tmp)
                os.replace(tmp, dest / f"{name}.gz")
                written.append(dest / f"{name}.gz")
                break
            except (OSError, ValueError, http.client.HTTPException) as e:  # DataError is a ValueError
                why = str(e).replace(str(tmp), "download")
                failures.append(f"  {url}: {why}")
                print(f"deeptut: {url} failed: {why}", file=sys.stderr)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            raise DataError(f"could not download {name}.gz from any mirror:\n" + "\n".join(failures))
    return written


def _fetch(url: str, tmp: Path, opener: Opener, max_bytes: int) -> None:
    """MNIST's bounded download (data/datasets.py), then the pickle gzipped if the server sent it bare."""
    fetch_bounded(url, tmp, opener, max_bytes)
    with open(tmp, "rb") as f:  # the server's .gz: a gzip file, or (a mirror of imdb.py's URL) a bare pickle
        head = f.read(2)
    if head != GZIP_MAGIC:
        raw = tmp.read_bytes()
        with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
            g.write(raw)
