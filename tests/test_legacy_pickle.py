"""The tutorial's mnist.pkl.gz: restricted unpickling, Python 2 files, structure checks, the writer."""

from __future__ import annotations

import builtins
import gzip
import os
import pickle
import re
import struct
import subprocess
import tracemalloc
import warnings

import numpy as np
import pytest

from data_helpers import py2_pickle, small_splits
from deeptut.data.legacy_pickle import parse_pkl, read_pkl_gz, write_pkl_gz
from deeptut.errors import DataError


def as_tuple(s):
    return tuple((sp.x, sp.y) for sp in (s.train, s.valid, s.test))


def assert_same(loaded: dict, splits) -> None:
    for name in ("train", "valid", "test"):
        x, y = loaded[name]
        ref = getattr(splits, name)
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.flags.writeable
        np.testing.assert_array_equal(x, ref.x)
        np.testing.assert_array_equal(y, ref.y)


# --- hostile pickles ---------------------------------------------------------------------------------


class Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("fn,arg,global_name", [
    (os.system, "touch {marker}", "posix.system"),
    (builtins.eval, "open({marker!r}, 'w')", "builtins.eval"),  # __builtin__.eval under protocols < 3
    (builtins.exec, "open({marker!r}, 'w')", "builtins.exec"),
    (subprocess.call, ["touch", "{marker}"], "subprocess.call"),
])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, protocol, fn, arg, global_name):
    marker = str(tmp_path / "MARKER")
    arg = [a.format(marker=marker) for a in arg] if isinstance(arg, list) else arg.format(marker=marker)
    good = as_tuple(small_splits())
    # the payload hides after two valid splits, so a reader that only checks the outer type is not enough
    payload = (good[0], good[1], (good[2][0], Reduce(fn, arg)))
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(payload, protocol=protocol)))
    with pytest.raises(DataError) as e:
        read_pkl_gz(path)
    # protocols < 3 name Python 2's modules (__builtin__.eval, commands.call): match the function name
    func = global_name.split(".")[1]
    assert re.fullmatch(rf"refusing to load {re.escape(str(path))}: it names \S+\.{func}, "
                        "which a data file has no reason to use", str(e.value)), str(e.value)
    assert not os.path.exists(marker)


def test_other_numpy_names_are_refused(tmp_path):
    bad = pickle.dumps(np.load, protocol=2)  # a numpy function, not one an array needs
    with pytest.raises(DataError, match="it names numpy.*load"):
        parse_pkl(bad, "x.pkl")


def test_guards_refuse_misuse_of_allowed_names():
    # object arrays could carry anything: their dtype is refused before any element is built
    obj = pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)
    with pytest.raises(DataError, match="x.pkl: .*dtype"):
        parse_pkl(obj, "x.pkl")
    # numpy.ndarray is only a marker for _reconstruct: calling it (an unbacked 2^40-element array) fails
    direct = b"\x80\x02cnumpy\nndarray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85\x85R."
    with pytest.raises(DataError, match="x.pkl: numpy.ndarray called directly"):
        parse_pkl(direct, "x.pkl")
    # _codecs.encode is only for latin1 text -> bytes
    rot = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(DataError, match="x.pkl: _codecs.encode used for something other than bytes"):
        parse_pkl(rot, "x.pkl")


# --- the tutorial format -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(6))
def test_any_python3_protocol_loads(tmp_path, protocol):
    s = small_splits()
    assert_same(parse_pkl(gzip.compress(pickle.dumps(as_tuple(s), protocol=protocol))), s)
    assert_same(parse_pkl(pickle.dumps(as_tuple(s), protocol=protocol)), s)  # a bare pickle too


def test_python2_pickle_needs_latin1():
    s = small_splits(n=6)
    data = py2_pickle(s)
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and b"_codecs" not in data
    with pytest.raises(UnicodeDecodeError):  # the array bytes are Python 2 str: not ASCII
        pickle.loads(data)
    assert_same(parse_pkl(data, "py2.pkl"), s)
    assert_same(parse_pkl(gzip.compress(data), "py2.pkl.gz"), s)


def test_python2_pickle_with_long_strings():
    s = small_splits(n=200)  # 200 x 784 float32: BINSTRING (4-byte length), not SHORT_BINSTRING
    data = py2_pickle(s)
    assert b"T" + (200 * 784 * 4).to_bytes(4, "little") in data
    assert_same(parse_pkl(data), s)


def test_write_round_trip(tmp_path):
    s = small_splits(n=10)
    path = tmp_path / "out.pkl.gz"
    write_pkl_gz(path, s)
    assert_same(read_pkl_gz(path), s)
    raw = gzip.decompress(path.read_bytes())
    # as Python 2's cPickle wrote it: protocol 2, numpy 1.x names, array bytes as str (BINSTRING)
    assert raw[:2] == b"\x80\x02" and b"numpy._core" not in raw and b"_codecs" not in raw
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"T" + (10 * 784 * 4).to_bytes(4, "little") in raw
    with pytest.raises(UnicodeDecodeError):  # like the original, Python 3 needs encoding='latin1'
        pickle.loads(raw)
    with warnings.catch_warnings():  # some numpy 2 releases warn that numpy.core moved to numpy._core
        warnings.simplefilter("ignore", DeprecationWarning)
        plain = pickle.loads(raw, encoding="latin1")  # the stock unpickler and numpy's own code agree
    for (x, y), ref in zip(plain, (s.train, s.valid, s.test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(x, ref.x)
        np.testing.assert_array_equal(y, ref.y)
    assert [p.name for p in tmp_path.iterdir()] == ["out.pkl.gz"]  # no temp file left


def test_write_failure_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match="cannot write"):
        write_pkl_gz(tmp_path / "missing-dir" / "out.pkl.gz", small_splits())
    (tmp_path / "dir.pkl.gz").mkdir()
    with pytest.raises(DataError, match="dir.pkl.gz: cannot write"):
        write_pkl_gz(tmp_path / "dir.pkl.gz", small_splits())
    assert [p.name for p in tmp_path.iterdir()] == ["dir.pkl.gz"]


def test_write_is_reproducible(tmp_path):
    write_pkl_gz(tmp_path / "a", small_splits())
    write_pkl_gz(tmp_path / "b", small_splits())
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


# --- structure checks -------------------------------------------------------------------------------------

X = np.full((3, 784), 0.5, np.float32)
Y = np.array([1, 2, 3])


@pytest.mark.parametrize("obj,words", [
    ([1, 2], "expected a tuple (train, valid, test), got a list of 2"),
    ([1, 2, 3], "train should be a pair (X, y), got int"),
    ({"train": 1}, "expected a tuple (train, valid, test), got dict"),
    (((X, Y), (X, Y)), "got a tuple of 2"),
    (((X, Y), (X, Y), (X, Y, Y)), "test should be a pair (X, y), got a tuple of 3"),
    (((X, Y), (X[0], Y), (X, Y)), "valid X should be a 2-d float32 array, got a 784 float32 array"),
    (((X.astype(np.int64), Y), (X, Y), (X, Y)), "train X should be a 2-d float32 array, got a 3x784 int64"),
    (((X, Y.astype(float)), (X, Y), (X, Y)), "train y should be a 1-d integer array"),
    (((X, Y[:2]), (X, Y), (X, Y)), "train has 3 images but 2 labels"),
    (((X[:0], Y[:0]), (X, Y), (X, Y)), "train has 0 images"),
    (((X, Y), (X, Y), (X[:, :10], Y)), "test images have 10 pixels, train has 784"),
    (((X, Y), (X, Y), (X, Y + 8)), "test: 2 label(s) outside 0..9 (first: 10)"),
    (((X, Y), (X, -Y), (X, Y)), "valid: 3 label(s) outside 0..9"),
    (((X * np.nan, Y), (X, Y), (X, Y)), "train X has values outside [0, 1] (or NaN)"),
    (((X * 3, Y), (X, Y), (X, Y)), "outside [0, 1]"),
    ((("x", Y), (X, Y), (X, Y)), "got str"),
])
def test_structure_is_checked(obj, words):
    with pytest.raises(DataError) as e:
        parse_pkl(pickle.dumps(obj, protocol=2), "bad.pkl.gz")
    assert str(e.value).startswith("bad.pkl.gz: ") and words in str(e.value), str(e.value)


def test_float64_images_and_int32_labels_are_converted():
    out = parse_pkl(pickle.dumps(((X.astype(np.float64), Y.astype(np.int32)),) * 3, protocol=2))
    assert out["train"][0].dtype == np.float32 and out["train"][1].dtype == np.int64


@pytest.mark.parametrize("mangle,words", [
    (lambda gz, raw: gz + gzip.compress(b"more"), "a second gzip member follows the first"),
    (lambda gz, raw: gz + b"junk", "4 stray bytes"),
    (lambda gz, raw: gz[:-20], "corrupt gzip"),
    (lambda gz, raw: gzip.compress(raw + b"\x00"), "trailing data after the end of the pickle"),
    (lambda gz, raw: gzip.compress(raw[:-1]), "not a valid tutorial pickle"),
    (lambda gz, raw: gzip.compress(raw[: len(raw) // 2]), "not a valid tutorial pickle"),
    (lambda gz, raw: b"", "not a valid tutorial pickle"),
])
def test_damaged_files(tmp_path, mangle, words):
    raw = pickle.dumps(as_tuple(small_splits()), protocol=2)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(mangle(gzip.compress(raw), raw))
    with pytest.raises(DataError) as e:
        read_pkl_gz(path)
    assert str(path) in str(e.value) and words in str(e.value), str(e.value)


def test_decompression_is_bounded():
    bomb = gzip.compress(bytes(50 << 20), 1)  # 50 MiB of zeros in ~50 KB
    with pytest.raises(DataError, match="z.pkl.gz: decompresses to more than the 1048576-byte limit"):
        parse_pkl(bomb, "z.pkl.gz", max_decompressed=1 << 20)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="mnist.pkl.gz: cannot read"):
        read_pkl_gz(tmp_path / "mnist.pkl.gz")


# --- resource attacks the stock unpickler (or numpy) would fall for --------------------------------------------


def test_huge_memo_index_costs_nothing():
    # LONG_BINPUT at index 2^32-16: the C unpickler sizes its memo array to the index (32 GiB)
    data = b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b"."
    tracemalloc.start()
    with pytest.raises(DataError, match="m.pkl: expected a tuple"):
        parse_pkl(data, "m.pkl")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_bytearray_length_is_not_trusted():
    # BYTEARRAY8 declaring 1 TiB: Python's own handler allocates it before reading
    data = b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b"abc."
    with pytest.raises(DataError, match=r"b.pkl: truncated: a byte array declares 1099511627776 bytes, 4 follow"):
        parse_pkl(data, "b.pkl")


def test_dtype_state_flags_are_checked():
    # numpy's own dtype.__setstate__ accepts these flags (63: "holds object references") on int64,
    # which would make numpy treat the raw bytes as pointers
    data = py2_pickle(small_splits())
    flags = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    assert flags in data
    with pytest.raises(DataError, match=r"f.pkl: dtype f4 has an unexpected state \(3, '<', .*, 63\)"):
        parse_pkl(data.replace(flags, flags.replace(b"K\x00", b"K\x3f"), 1), "f.pkl")


def test_array_state_is_checked():
    data = py2_pickle(small_splits())
    shape = b"J" + struct.pack("<i", 4) + b"J" + struct.pack("<i", 784) + b"\x86"
    assert shape in data
    bigger = b"J" + struct.pack("<i", 4) + b"J" + struct.pack("<i", 785) + b"\x86"
    with pytest.raises(DataError, match=r"s.pkl: array of shape \(4, 785\) float32 needs 12560 bytes, has 12544"):
        parse_pkl(data.replace(shape, bigger, 1), "s.pkl")
