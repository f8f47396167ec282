"""The Deep Learning Tutorials' `mnist.pkl.gz`: a gzipped pickle of ((X, y), (X, y), (X, y)) for
train / valid / test, X float32 [n, 784] (pixel / 256), y int64 [n]. The original was written by
Python 2, so its byte strings arrive as str and need encoding='latin1'.

A pickle can run any code it names, so nothing here hands a pickle a real callable: the few names an
array needs resolve to guards that build the arrays themselves from checked type codes, shapes and
bytes (numpy's own __setstate__ accepts dtype flags that can corrupt memory), and everything else is
refused before it runs. The pure-Python unpickler is used because its memo is a dict: the C one
allocates an array as long as the largest memo index, so a 5-byte opcode could claim gigabytes.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deeptut.data.idx import DATA_FILE, GZIP_MAGIC, check_labels, gunzip_bounded
from deeptut.errors import DataError
from deeptut.store import files

# Uncompressed pickle bytes accepted; the tutorial's file and ours are both ~222 MB.
MAX_DECOMPRESSED = 512 * 2**20
N_CLASSES = 10
SPLIT_NAMES = ("train", "valid", "test")
TYPE_CODES = ("b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8")  # plain numbers only


class _Guard:
    """What find_class hands out: callable, and immune to BUILD (which would set attributes)."""
    __slots__ = ("fn", "name")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn, self.name = fn, name

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise DataError(f"the pickle tries to set the state of {self.name}")


class _Dtype:
    """numpy.dtype(code, align, copy) followed by BUILD(state), reduced to a checked (code, byte order)."""
    __slots__ = ("code", "order")

    def __init__(self, code: Any, align: Any = False, copy: Any = False) -> None:
        if code not in TYPE_CODES:
            raise DataError(f"dtype {code!r} is not plain numeric data")
        self.code, self.order = code, "="

    def __setstate__(self, state: Any) -> None:
        # (version 3, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] == 3 and state[1] in "<>|="
                and len(state[1]) == 1 and state[2:5] == (None, None, None) and state[5:8] == (-1, -1, 0)
                and (len(state) == 8 or not state[8])):
            raise DataError(f"dtype {self.code} has an unexpected state {_short(state)}")
        self.order = "=" if state[1] == "|" else state[1]

    def dtype(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order)


class _Array:
    """numpy's _reconstruct(ndarray, (0,), 'b') followed by BUILD(state): the array is made here."""
    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # (version 1, shape, dtype, is_fortran, raw bytes); numpy before 1.0 left out the version
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise DataError(f"array state {_short(state)} is not (shape, dtype, fortran, data)")
        shape, dtype, fortran, raw = state
        self.array = _make_array(raw, dtype, shape, "F" if fortran else "C")


def _make_array(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if isinstance(raw, str):  # Python 2 str, decoded as latin1 on the way in
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray)) or not isinstance(dtype, _Dtype) or order not in ("C", "F"):
        raise DataError("array data is not bytes with a plain numeric dtype")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise DataError(f"array shape {_short(shape)} is not a tuple of sizes")
    dt = dtype.dtype()
    if math.prod(shape) * dt.itemsize != len(raw):
        raise DataError(f"array of shape {shape} {dt} needs {math.prod(shape) * dt.itemsize} bytes, "
                        f"has {len(raw)}")
    arr = np.frombuffer(bytes(raw), dt).reshape(shape, order=order)
    return arr.astype(dt.newbyteorder("="), order="C")  # native, contiguous, owns its (writable) data


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _Array:
    if subtype is not _NDARRAY:
        raise DataError("_reconstruct called with something other than numpy.ndarray")
    return _Array()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _make_array(buf, dtype, shape, order)  # what numpy writes for arrays under protocol 5


def _scalar(dtype: Any, data: Any = None) -> int | float | bool:
    if not isinstance(dtype, _Dtype):
        raise DataError("scalar called without a plain numeric dtype")
    return _make_array(data, dtype, (), "C").item()  # a Python number: nothing for BUILD to touch


def _latin1_encode(text: Any, encoding: Any) -> bytes:
    # Python 3 writes bytes under protocol 2 as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DataError("_codecs.encode used for something other than bytes")
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    # Python 3 writes b"" under protocol 2 as bytes(): what an empty array's data looks like
    if args:
        raise DataError("bytes() called with arguments")
    return b""


def _not_callable(*args: Any) -> None:
    raise DataError("numpy.ndarray called directly")


_NDARRAY = _Guard(_not_callable, "numpy.ndarray")  # only ever an argument of _reconstruct
_ALLOWED = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Guard(_Dtype, "numpy.dtype"),
    **{(mod, name): _Guard(fn, f"{mod}.{name}")
       for core in ("numpy.core", "numpy._core")
       for mod, name, fn in ((f"{core}.multiarray", "_reconstruct", _reconstruct),
                             (f"{core}.multiarray", "scalar", _scalar),
                             (f"{core}.numeric", "_frombuffer", _frombuffer))},
    ("_codecs", "encode"): _Guard(_latin1_encode, "_codecs.encode"),
    ("__builtin__", "bytes"): _Guard(_empty_bytes, "bytes"),
    ("builtins", "bytes"): _Guard(_empty_bytes, "bytes"),
}


class _RestrictedUnpickler(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def _load_bytearray8(self) -> None:
        # the stock handler allocates (and zeroes) the declared length before reading: up to 2^63 bytes
        (n,) = struct.unpack("<Q", self.read(8))
        data = self.read(n)
        if len(data) != n:
            raise DataError(f"truncated: a byte array declares {n} bytes, {len(data)} follow")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):  # TypeError: unhashable names from a malformed pickle
            raise DataError(f"refusing to load {self.source}: it names {module}.{name}, "
                            "which a data file has no reason to use") from None

    def load(self) -> Any:
        try:
            return super().load()
        except DataError as e:  # raised by a guard: say which file
            msg = str(e)
            named = msg.startswith(("refusing", self.source))
            raise DataError(msg if named else f"{self.source}: {msg}") from None


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) < 80 else text[:77] + "..."


def read_pkl_gz(path: str | Path, *, n_classes: int = N_CLASSES,
                max_decompressed: int = MAX_DECOMPRESSED) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train'|'valid'|'test': (X float32 [n, d], y int64 [n])} from a tutorial-format pickle
    (gzipped, or a bare pickle), checked for structure, dtypes, lengths and label range."""
    return parse_pkl(files.read_bounded(path, max_decompressed, DataError, DATA_FILE), str(path), n_classes=n_classes,
                     max_decompressed=max_decompressed)


def parse_pkl(data: bytes, source: str = "<bytes>", *, n_classes: int = N_CLASSES,
              max_decompressed: int = MAX_DECOMPRESSED) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """read_pkl_gz on the file's bytes; `source` names the file in error messages."""
    gzipped = data[:2] == GZIP_MAGIC
    if gzipped:
        data = gunzip_bounded(data, source, max_decompressed)
    stream = io.BytesIO(data)
    try:
        obj = _RestrictedUnpickler(stream, source).load()
    except DataError:
        raise
    except Exception as e:  # anything the pickle machinery or numpy raises on hostile bytes
        if data[:1] != b"\x80":  # not the tutorial's protocol-2 pickle at all: say what the file is
            text = data[:16].isascii()
            head = data[:16].decode("ascii") if text else data[:8].hex(" ")
            raise DataError(f"{source}: not a valid tutorial pickle: {'its content is not' if gzipped else 'neither gzip nor'}"
                            f" a pickle (it starts with {'text ' if text else 'bytes '}{head!r}, {len(data)} "
                            f"bytes). Download it again, or use the four MNIST IDX files") from None
        raise DataError(f"{source}: not a valid tutorial pickle: {type(e).__name__}: {e}") from None
    if stream.read(1):
        raise DataError(f"{source}: trailing data after the end of the pickle")
    return _check_structure(obj, source, n_classes)


def _check_structure(obj: Any, path: str, n_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DataError(f"{path}: expected a tuple (train, valid, test), got {_describe(obj)}")
    out = {}
    width = None
    for name, pair in zip(SPLIT_NAMES, obj):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DataError(f"{path}: {name} should be a pair (X, y), got {_describe(pair)}")
        x, y = (a.array if isinstance(a, _Array) else a for a in pair)
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype not in (np.float32, np.float64):
            raise DataError(f"{path}: {name} X should be a 2-d float32 array, got {_describe(x)}")
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu":
            raise DataError(f"{path}: {name} y should be a 1-d integer array, got {_describe(y)}")
        if len(x) != len(y) or x.size == 0:
            raise DataError(f"{path}: {name} has {len(x)} images but {len(y)} labels")
        if width is not None and x.shape[1] != width:
            raise DataError(f"{path}: {name} images have {x.shape[1]} pixels, train has {width}")
        width = x.shape[1]
        if not (x.min() >= 0 and x.max() <= 1):  # also false for NaN
            raise DataError(f"{path}: {name} X has values outside [0, 1] (or NaN)")
        y = y.astype(np.int64)
        check_labels(y, n_classes, f"{path}: {name}")
        out[name] = (np.require(x, np.float32, "CW"), y)
    return out


def _describe(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return f"a {'x'.join(map(str, obj.shape))} {obj.dtype} array"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def write_pkl_gz(path: str | Path, splits: Any, *, compresslevel: int = 6) -> None:
    """Write the tutorial's format as Python 2's cPickle (protocol 2) wrote it, byte strings as
    BINSTRING and numpy under its 1.x module names: Python 2 with numpy 1.x reads it as the original,
    Python 3 with pickle.load(f, encoding='latin1'), as the tutorials' Python 3 ports do.
    (Python 3's own protocol 2 writes text where Python 2's numpy expects a byte: it cannot.)"""
    pairs = [(np.ascontiguousarray(s.x, "<f4"), np.ascontiguousarray(s.y, "<i8"))
             for s in (splits.train, splits.valid, splits.test)]
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=compresslevel,
                                                  mtime=0, filename="") as g:
            g.write(b"\x80\x02")  # PROTO 2
            for x, y in pairs:
                for arr in (x, y):
                    head, data = _py2_array(arr)
                    g.write(head)
                    g.write(data)
                    g.write(b"tb")  # TUPLE, BUILD: the array's __setstate__
                g.write(b"\x86")  # TUPLE2: (x, y)
            g.write(b"\x87.")  # TUPLE3, STOP
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write: {e.strerror or e}") from None


def _py2_array(arr: np.ndarray) -> tuple[bytes, memoryview]:
    """The opcodes of one array up to its data, and the data (written as one BINSTRING)."""
    def short(b: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b

    shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in arr.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + short(arr.dtype.str[1:].encode()) + b"K\x00K\x01\x87R"
             + b"(K\x03" + short(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    head = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short(b"b") + b"\x87R"
            + b"(K\x01" + shape + dtype + b"\x89T" + struct.pack("<I", arr.nbytes))
    return head, memoryview(arr).cast("B")


def unpickle_plain(data: bytes, source: str = "<bytes>", *,
                   max_decompressed: int = MAX_DECOMPRESSED) -> Any:
    """The object of a gzipped (or bare) pickle of plain data only: tuples, lists, dicts, strings, numbers
    and numpy arrays of plain numeric type (as the tutorials' other files hold them: rnnslu.py's
    atis.fold*.pkl.gz). The same restricted unpickler as `parse_pkl` (nothing named in the pickle is ever
    called; only the guards above resolve), with the arrays it built handed back as numpy arrays. The
    structure is the caller's to check."""
    if data[:2] == GZIP_MAGIC:
        data = gunzip_bounded(data, source, max_decompressed)
    stream = io.BytesIO(data)
    try:
        obj = _RestrictedUnpickler(stream, source).load()
    except DataError:
        raise
    except Exception as e:  # anything the pickle machinery or numpy raises on hostile bytes
        raise DataError(f"{source}: not a valid pickle of plain data: {type(e).__name__}: {e}") from None
    if stream.read(1):
        raise DataError(f"{source}: trailing data after the end of the pickle")
    try:
        return _plain(obj, source)
    except RecursionError:
        raise DataError(f"{source}: the pickle nests too deeply for a data file") from None


def _plain(obj: Any, source: str) -> Any:
    """`obj` with every _Array replaced by its array; anything but plain data is refused."""
    if isinstance(obj, _Array):
        if obj.array is None:
            raise DataError(f"{source}: an array without its data")
        return obj.array
    if isinstance(obj, (tuple, list)):
        return type(obj)(_plain(v, source) for v in obj)
    if isinstance(obj, dict):
        return {_plain(k, source): _plain(v, source) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, np.ndarray)):
        return obj
    raise DataError(f"{source}: holds a {type(obj).__name__}, which is not plain data")
