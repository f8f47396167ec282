"""Slot-filling corpora: sentences of word indices with one BIO slot tag per word, and the tutorial's ATIS
files (rnnslu.py's `atis.fold{0..4}.pkl.gz`).

An ATIS fold file is a gzipped Python 2 pickle of (train, valid, test, dicts): each set a triple
(words, named entities, labels) of equal-length lists, one int32 array per sentence; dicts =
{"words2idx": {word: index}, "labels2idx": {tag: index}, "tables2idx": {...}}. Its valid set is the
chapter's 80/20 split of the official training sentences (4,978 -> ~3,983 / ~995; test 893; 572 words,
127 tags). A file of three sets, (train, test, dicts) as the is13 repository's atis.pkl has them, is split
here the same way: the first 80 % of the training sentences train, the last 20 % validate. The named
entities are not used (the chapter does not use them either). Files are read through the restricted
unpickler (data/legacy_pickle.py): nothing in them is ever executed.

A split keeps its sentences end to end (`words`, `labels`: int64 [total words]) with each sentence's
length; `sentence(i)` gives one back. Every defect (an empty sentence, a label outside the tag set, a word
outside the vocabulary, tables of the wrong kind) is a DataError naming the file, the set and the entry.

Where fold k is looked for: --data-dir (a folder, or the file itself), $DEEPTUT_DATA/atis/, $DEEPTUT_DATA/,
the user cache (~/.cache/deeptut/atis/); then it is downloaded from the tutorial's address (ATIS_URL;
$DEEPTUT_ATIS_URL replaces it) into the cache.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deeptut.data.datasets import Opener, _fetch, cache_dir
from deeptut.data.idx import DATA_FILE
from deeptut.data.legacy_pickle import unpickle_plain
from deeptut.errors import DataError
from deeptut.store import files

ATIS_URL = "http://lisaweb.iro.umontreal.ca/transfert/lisa/users/mesnilgr/atis/"  # data/download.sh's
N_FOLDS = 5
MAX_FILE = 64 * 2**20  # bytes, compressed or not; a fold file is ~0.2 MB
SPLIT_NAMES = ("train", "valid", "test")
VALID_FRACTION = 0.2  # the chapter: 80 % of the official training sentences train, 20 % validate


def fold_file(fold: int) -> str:
    return f"atis.fold{fold}.pkl.gz"


@dataclass(frozen=True)
class TaggedSplit:
    """Sentences end to end: words[i] and labels[i] belong to the same word."""

    words: np.ndarray  # int64 [total] word indices
    labels: np.ndarray  # int64 [total] tag indices
    lengths: np.ndarray  # int64 [n] words of each sentence, each >= 1
    starts: np.ndarray = field(init=False, repr=False)  # int64 [n] offset of each sentence

    def __post_init__(self) -> None:
        if not (self.words.shape == self.labels.shape and self.words.ndim == 1 and self.lengths.ndim == 1):
            raise DataError(f"{len(self.words)} words but {len(self.labels)} labels")
        if int(self.lengths.sum()) != len(self.words):
            raise DataError(f"the lengths add up to {int(self.lengths.sum())} words, there are {len(self.words)}")
        object.__setattr__(self, "starts", np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.lengths)

    def sentence(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(words int64 [T], labels int64 [T]) of sentence i."""
        a = int(self.starts[i])
        b = a + int(self.lengths[i])
        return self.words[a:b], self.labels[a:b]

    # what train/state.data_fingerprint reads: a resumed run must see the same sentences
    @property
    def x(self) -> np.ndarray:
        return self.words

    @property
    def y(self) -> np.ndarray:
        return np.concatenate([self.lengths, self.labels])


@dataclass(frozen=True)
class SlotCorpus:
    """train / valid / test sentences, the vocabulary and the tag set (index -> string)."""

    train: TaggedSplit
    valid: TaggedSplit
    test: TaggedSplit
    words: tuple[str, ...]  # idx2word
    tags: tuple[str, ...]  # idx2label
    source: str  # where it came from (a file, or a generator and its seed)

    @property
    def n_words(self) -> int:
        return len(self.words)

    @property
    def n_classes(self) -> int:
        return len(self.tags)

    def tag_strings(self, labels: np.ndarray) -> list[str]:
        return [self.tags[int(i)] for i in labels]


def _describe(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return f"a {'x'.join(map(str, obj.shape))} {obj.dtype} array"
    if isinstance(obj, (tuple, list, dict)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def _index(table: Any, name: str, source: str) -> tuple[str, ...]:
    """index -> string from a {string: index} table: every index 0..n-1 exactly once."""
    if not isinstance(table, dict) or not table:
        raise DataError(f"{source}: dicts[{name!r}] should be a non-empty {{string: index}} table, got "
                        f"{_describe(table)}")
    out: list[str | None] = [None] * len(table)
    for key, i in table.items():
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if not isinstance(key, str) or isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise DataError(f"{source}: dicts[{name!r}] entry {str(key)[:40]!r}: {i!r} is not a string -> index")
        if not 0 <= int(i) < len(table):
            raise DataError(f"{source}: dicts[{name!r}][{key[:40]!r}] = {int(i)} is outside 0..{len(table) - 1}")
        if out[int(i)] is not None:
            raise DataError(f"{source}: dicts[{name!r}] gives index {int(i)} to both {out[int(i)]!r} and {key!r}")
        out[int(i)] = key
    return tuple(out)  # type: ignore[arg-type]


def _ints(seq: Any, where: str) -> np.ndarray:
    if isinstance(seq, np.ndarray):
        if seq.ndim != 1 or seq.dtype.kind not in "iu":
            raise DataError(f"{where} should be a 1-d integer array, got {_describe(seq)}")
        return seq.astype(np.int64)
    if isinstance(seq, (list, tuple)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                              for v in seq):
        return np.asarray(seq, np.int64).reshape(-1)
    raise DataError(f"{where} should be a list of integer indices, got {_describe(seq)}")


def tagged_split(words: Sequence[Any], labels: Sequence[Any], n_words: int, tags: Sequence[str],
                 where: str) -> TaggedSplit:
    """A split from one array (or list) of word indices and one of tag indices per sentence, checked:
    `where` ("atis.fold3.pkl.gz: train") names the set in every error."""
    if not isinstance(words, (list, tuple)) or not isinstance(labels, (list, tuple)):
        raise DataError(f"{where}: words and labels should be lists of sentences, got {_describe(words)} and "
                        f"{_describe(labels)}")
    if len(words) != len(labels):
        raise DataError(f"{where}: {len(words)} sentences of words but {len(labels)} of labels")
    if not words:
        raise DataError(f"{where}: no sentences")
    ws, ls = [], []
    for i, (w, t) in enumerate(zip(words, labels)):
        w, t = _ints(w, f"{where}: sentence {i} words"), _ints(t, f"{where}: sentence {i} labels")
        if len(w) == 0:
            raise DataError(f"{where}: sentence {i} is empty")
        if len(w) != len(t):
            raise DataError(f"{where}: sentence {i} has {len(w)} words but {len(t)} labels")
        bad = np.flatnonzero((w < 0) | (w >= n_words))
        if len(bad):
            raise DataError(f"{where}: sentence {i}, word {int(bad[0])}: index {int(w[bad[0]])} is outside the "
                            f"vocabulary (0..{n_words - 1})")
        bad = np.flatnonzero((t < 0) | (t >= len(tags)))
        if len(bad):
            raise DataError(f"{where}: sentence {i}, word {int(bad[0])}: label {int(t[bad[0]])} is outside the "
                            f"tag set (0..{len(tags) - 1}: {', '.join(list(tags)[:4])}, ...)")
        ws.append(w)
        ls.append(t)
    return TaggedSplit(np.concatenate(ws), np.concatenate(ls), np.fromiter(map(len, ws), np.int64, len(ws)))


def corpus_from_sets(sets: Sequence[Any], dicts: Any, source: str) -> SlotCorpus:
    """From the pickle's sets ((words, entities, labels) triples: three, or two whose first is split 80/20)
    and its dicts."""
    if not isinstance(dicts, dict):
        raise DataError(f"{source}: the last entry should be the dicts {{'words2idx', 'labels2idx', ...}}, got "
                        f"{_describe(dicts)}")
    for name in ("words2idx", "labels2idx"):
        if name not in dicts:
            raise DataError(f"{source}: dicts has no {name!r} table (it has {', '.join(map(str, dicts)) or 'none'})")
    words, tags = _index(dicts["words2idx"], "words2idx", source), _index(dicts["labels2idx"], "labels2idx", source)
    triples = []
    names = SPLIT_NAMES if len(sets) == 3 else ("train", "test")
    for name, s in zip(names, sets):
        if not isinstance(s, (tuple, list)) or len(s) != 3:
            raise DataError(f"{source}: {name} should be a triple (words, named entities, labels), got "
                            f"{_describe(s)}")
        triples.append((s[0], s[2]))
    if len(sets) == 2:  # (train, test, dicts): the chapter's 80/20 split of the training sentences
        (w, t), test = triples
        if not isinstance(w, (list, tuple)) or len(w) < 2:
            raise DataError(f"{source}: train needs at least 2 sentences to split into train and valid, got "
                            f"{_describe(w)}")
        cut = len(w) - max(1, int(round(len(w) * VALID_FRACTION)))
        triples = [(w[:cut], t[:cut]), (w[cut:], t[cut:]), test]
    splits = [tagged_split(w, t, len(words), tags, f"{source}: {name}") for name, (w, t) in zip(SPLIT_NAMES, triples)]
    return SlotCorpus(*splits, words=words, tags=tags, source=source)


def parse_atis(data: bytes, source: str = "<bytes>") -> SlotCorpus:
    """An ATIS fold file's bytes (gzipped or bare pickle); `source` names it in errors."""
    obj = unpickle_plain(data, source)
    if not isinstance(obj, (tuple, list)) or len(obj) not in (3, 4):
        raise DataError(f"{source}: expected (train, valid, test, dicts) or (train, test, dicts), got "
                        f"{_describe(obj)}")
    return corpus_from_sets(obj[:-1], obj[-1], source)


def read_atis(path: str | Path) -> SlotCorpus:
    return parse_atis(files.read_bounded(path, MAX_FILE, DataError, DATA_FILE), str(path))


# --- where the files are ------------------------------------------------------------------------------


def search_path() -> list[tuple[Path, str]]:
    dirs: list[tuple[Path, str]] = []
    env = os.environ.get("DEEPTUT_DATA")
    if env:
        dirs += [(Path(env) / "atis", "$DEEPTUT_DATA"), (Path(env), "$DEEPTUT_DATA")]
    dirs.append((cache_dir("atis"), "user cache"))
    return dirs


def find_fold(fold: int, data_dir: str | Path | None = None) -> Path | None:
    """The file of `fold`: in data_dir (a folder, or the file itself; nothing there is an error), else the
    first folder of `search_path` that has it; None when none has."""
    _check_fold(fold)
    name = fold_file(fold)
    if data_dir is not None:
        d = Path(data_dir)
        if d.is_file():
            return d
        for cand in (d / name, d / "atis" / name):
            if cand.is_file():
                return cand
        raise DataError(f"{d}: no {name} here ({'no such folder' if not d.exists() else 'not found'})")
    for d, _ in search_path():
        if (d / name).is_file():
            return d / name
    return None


def _check_fold(fold: Any) -> None:
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < N_FOLDS:
        raise DataError(f"fold must be one of 0..{N_FOLDS - 1}, got {fold!r}")


def download_atis(dest: str | Path, fold: int, *, base_url: str | None = None,
                  opener: Opener | None = None, max_bytes: int = MAX_FILE) -> Path:
    """Fetch `atis.fold<fold>.pkl.gz` from base_url (default $DEEPTUT_ATIS_URL or ATIS_URL) into dest; the
    file is kept only after it reads as a valid fold file, and appears atomically (temp file + rename)."""
    _check_fold(fold)
    dest = Path(dest)
    base = base_url or os.environ.get("DEEPTUT_ATIS_URL") or ATIS_URL
    url = (base if base.endswith("/") else base + "/") + fold_file(fold)
    opener = opener or (lambda u, timeout: urllib.request.urlopen(u, timeout=timeout))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest}: cannot create the download folder: {e.strerror or e}") from None
    tmp = dest / f".{fold_file(fold)}.{os.getpid()}.part"
    try:
        _fetch(url, tmp, opener, max_bytes)
        read_atis(tmp)
        os.replace(tmp, dest / fold_file(fold))
    except (OSError, ValueError, http.client.HTTPException) as e:  # DataError is a ValueError
        raise DataError(f"could not download {url}: {str(e).replace(str(tmp), 'the download')}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest / fold_file(fold)


def load_atis(fold: int = 3, data_dir: str | Path | None = None, *, download: bool = True,
              opener: Opener | None = None) -> SlotCorpus:
    path = find_fold(fold, data_dir)
    if path is None:
        if not download:
            looked = "\n".join(f"  {d}  ({why})" for d, why in search_path())
            raise DataError(f"no {fold_file(fold)} found (downloading is turned off). Looked in:\n{looked}\n"
                            f"Get it with the tutorial's data/download.sh ({ATIS_URL}) and point --data-dir "
                            f"or $DEEPTUT_DATA at its folder.")
        print(f"deeptut: {fold_file(fold)} not found; downloading it into {cache_dir('atis')}", file=sys.stderr)
        try:
            path = download_atis(cache_dir("atis"), fold, opener=opener)
        except DataError as e:
            raise DataError(f"{e}\nIf you have the file (the tutorial's data/download.sh fetches it), point "
                            f"--data-dir or $DEEPTUT_DATA at its folder, or set $DEEPTUT_ATIS_URL to a mirror; "
                            f"offline, train on the generated corpus: deeptut train rnnslu-slots") from None
    return read_atis(path)


def load_for_config(cfg: Any, data_dir: str | Path | None = None) -> SlotCorpus:
    """registry.DATASETS["atis"]: fold `cfg.fold` (the rnnslu family's field; the chapter's 3)."""
    return load_atis(getattr(cfg, "fold", 3), data_dir)
