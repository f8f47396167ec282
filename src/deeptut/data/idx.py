"""IDX files (the format MNIST and Fashion-MNIST ship in), read strictly.

Layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number of dimensions,
then one big-endian uint32 per dimension, then the data, big-endian, C order. Files may be gzipped
(recognised by the magic bytes 1f 8b, not by name). Every defect becomes a DataError naming the file;
a file is never returned truncated, padded, or decompressed without a bound.
"""

from __future__ import annotations

import gzip as _gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from deeptut.store import files
from deeptut.errors import DataError

# type code -> dtype of the stored data (big-endian where it has more than one byte)
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# SHA-256 of the *uncompressed* MNIST files; see data/mnist/README.md. Keyed by the name without .gz.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# The largest uncompressed file accepted (MNIST's largest is 47 MB); callers may lower it.
MAX_DECOMPRESSED = 256 * 2**20
GZIP_MAGIC = b"\x1f\x8b"
DATA_FILE = "a data file"  # names the kind of file in read_bounded's size message


def read_idx(path: str | Path, *, expected_sha256: str | None = None,
             max_decompressed: int = MAX_DECOMPRESSED) -> np.ndarray:
    """The array stored in an IDX file (gzipped or raw), in native byte order, writable.

    expected_sha256: hex digest of the uncompressed bytes; a mismatch raises DataError.
    max_decompressed: refuse files whose uncompressed size (header + data) would exceed this many bytes.
    """
    data = files.read_bounded(path, max_decompressed, DataError, DATA_FILE)
    return parse_idx(data, str(path), expected_sha256=expected_sha256, max_decompressed=max_decompressed)


def parse_idx(data: bytes, source: str = "<bytes>", *, expected_sha256: str | None = None,
              max_decompressed: int = MAX_DECOMPRESSED) -> np.ndarray:
    """read_idx on the file's bytes; `source` names the file in error messages."""
    if data[:2] == GZIP_MAGIC:
        header, body, dtype, shape = _gunzip_idx(data, source, max_decompressed)
    else:
        header = data[:4 + 4 * data[3]] if len(data) >= 4 else data
        dtype, shape, nbytes = _parse_header(header, source, max_decompressed)
        body = memoryview(data)[len(header):]
        if len(body) != nbytes:
            raise DataError(_size_msg(source, shape, dtype, nbytes, len(body)))
    if expected_sha256 is not None:
        digest = hashlib.sha256(header)
        digest.update(body)
        if digest.hexdigest() != expected_sha256.lower():
            raise DataError(f"{source}: checksum mismatch: SHA-256 of the uncompressed bytes is "
                            f"{digest.hexdigest()}, expected {expected_sha256} (corrupted or a different file)")
    arr = np.frombuffer(body, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_labels(path: str | Path, n_classes: int = 10, **kwargs) -> np.ndarray:
    """A 1-d IDX label file as int64, every label checked to lie in 0..n_classes-1."""
    return as_labels(read_idx(path, **kwargs), str(path), n_classes)


def as_labels(arr: np.ndarray, source: str, n_classes: int = 10) -> np.ndarray:
    """`arr` (from an IDX label file) as int64 labels, or DataError if it is not a label vector."""
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"{source}: not a label file: expected a 1-d integer array, got "
                        f"{_dims(arr.shape)} {arr.dtype}")
    labels = arr.astype(np.int64)
    check_labels(labels, n_classes, source)
    return labels


def check_labels(labels: np.ndarray, n_classes: int, source: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise DataError(f"{source}: {bad.size} label(s) outside 0..{n_classes - 1} "
                        f"(first: {int(bad[0])})")


def write_idx(path: str | Path, array: np.ndarray, *, gzip: bool = False) -> None:
    """Write `array` as IDX (gzipped when gzip=True, reproducibly: no name or time in the header)."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    if native not in codes or array.ndim < 1 or array.ndim > 255:
        raise DataError(f"{path}: cannot write a {array.ndim}-d {array.dtype} array as IDX")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    if gzip:
        raw = _gzip.compress(raw, compresslevel=6, mtime=0)
    Path(path).write_bytes(raw)


# --- internals ----------------------------------------------------------------------------------


def _parse_header(header: bytes, path: str, limit: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, number of data bytes) from a complete header; every field checked."""
    if not header or header[:2] != b"\0\0"[:len(header)]:
        raise DataError(f"{path}: not an IDX file: magic number starts {header[:4].hex(' ') or 'empty'}, "
                        "expected 00 00 <type> <ndim>")
    if len(header) < 4:
        raise DataError(f"{path}: truncated: {len(header)} bytes, shorter than an IDX header")
    code, ndim = header[2], header[3]
    if code not in IDX_TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x} "
                        f"(known: {', '.join(f'0x{c:02x}' for c in IDX_TYPES)})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated: header declares {ndim} dimensions, "
                        f"file ends after {len(header)} header bytes")
    shape = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if 0 in shape:
        raise DataError(f"{path}: IDX header declares a zero dimension ({_dims(shape)})")
    dtype = IDX_TYPES[code]
    nbytes = dtype.itemsize
    for d in shape:  # Python ints: no overflow, but stop early on absurd products
        nbytes *= d
        if nbytes + len(header) > limit:
            raise DataError(f"{path}: IDX header declares {_dims(shape)} {dtype.name} values, more than "
                            f"the {limit}-byte limit for a data file")
    return dtype, shape, nbytes


def _gunzip_idx(data: bytes, path: str, limit: int) -> tuple[bytes, bytes, np.dtype, tuple[int, ...]]:
    """Decompress one gzip member holding an IDX file, never producing more than the header declares."""
    d = zlib.decompressobj(wbits=31)
    try:
        header = d.decompress(data, 4)
        if len(header) == 4 and header[3]:  # max_length 0 would mean "no limit"
            header += d.decompress(d.unconsumed_tail, 4 * header[3])
        header = bytes(header)
        dtype, shape, nbytes = _parse_header(header, path, limit)
        body = d.decompress(d.unconsumed_tail, nbytes)
        if len(body) < nbytes:
            raise DataError(_size_msg(path, shape, dtype, nbytes, len(body), " (decompressed)"))
        if not d.eof and d.decompress(d.unconsumed_tail, 1):  # (after eof it would re-add unused_data)
            raise DataError(f"{path}: trailing data: decompressed file is longer than the "
                            f"{_dims(shape)} {dtype.name} array its header declares")
        if not d.eof:
            raise DataError(f"{path}: corrupt gzip: the stream ends before its end marker (truncated download?)")
    except zlib.error as e:
        raise DataError(f"{path}: corrupt gzip: {e}") from None
    _check_gzip_tail(d, path)
    return header, body, dtype, shape


def _check_gzip_tail(d, path: str) -> None:
    if d.unused_data[:2] == GZIP_MAGIC:
        raise DataError(f"{path}: a second gzip member follows the first; a data file has exactly one")
    if d.unused_data:
        raise DataError(f"{path}: {len(d.unused_data)} stray bytes after the end of the gzip stream")


def gunzip_bounded(data: bytes, source: str | os.PathLike, limit: int) -> bytes:
    """Decompress exactly one gzip member of at most `limit` bytes (a bomb is stopped at the limit)."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, max(limit, 1))
        if not d.eof and d.decompress(d.unconsumed_tail, 1):
            raise DataError(f"{source}: decompresses to more than the {limit}-byte limit for a data file")
    except zlib.error as e:
        raise DataError(f"{source}: corrupt gzip: {e}") from None
    if not d.eof:
        raise DataError(f"{source}: corrupt gzip: the stream ends before its end marker (truncated download?)")
    _check_gzip_tail(d, str(source))
    return out


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _size_msg(path: str, shape, dtype, expected: int, got: int, what: str = "") -> str:
    kind = "truncated" if got < expected else "trailing data"
    return (f"{path}: {kind}: header declares {_dims(shape)} {dtype.name} = {expected} bytes of data, "
            f"file{what} has {got}")
