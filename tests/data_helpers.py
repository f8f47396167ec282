"""Builders for the data-reader tests: small IDX sets, hand-made pickles, a local HTTP server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np

from deeptut.data.datasets import IDX_FILES, REPO_DATA, Split, Splits
from deeptut.data.idx import write_idx

BUNDLED = REPO_DATA / "mnist"


def small_idx_set(folder: Path, n_train: int = 60, n_test: int = 20, *, gz: bool = True, seed: int = 0) -> dict:
    """Four MNIST-shaped IDX files with random content; returns {file name: array}."""
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        IDX_FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr, gzip=gz)
    return arrays


def link_bundled(folder: Path) -> Path:
    """The real MNIST files in `folder` (symlinks: no copy of the 11 MB)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:
        (folder / f"{f}.gz").symlink_to(BUNDLED / f"{f}.gz")
    return folder


def small_splits(n: int = 4, width: int = 784, seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)

    def split(k: int) -> Split:
        return Split((rng.integers(0, 256, (k, width)) / 256).astype(np.float32), rng.integers(0, 10, k))
    return Splits(split(n), split(n // 2), split(n // 2), "test", "mnist")


# --- Python 2 pickles, byte by byte (what cPickle.dump(obj, f, 2) wrote under numpy 1.x) -------------


def _py2_str(b: bytes) -> bytes:
    # a Python 2 str: SHORT_BINSTRING / BINSTRING, which Python 3 decodes with `encoding`
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def py2_array(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    shape = b"".join(b"J" + struct.pack("<i", d) for d in a.shape) + {1: b"\x85", 2: b"\x86"}[a.ndim]
    dtype = (b"cnumpy\ndtype\n" + _py2_str(a.dtype.str[1:].encode()) + b"K\x00K\x01\x87R"
             b"(K\x03" + _py2_str(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
            b"(K\x01" + shape + dtype + b"\x89" + _py2_str(a.tobytes()) + b"tb")


def py2_pickle(splits: Splits) -> bytes:
    pairs = [py2_array(s.x) + py2_array(s.y) + b"\x86" for s in (splits.train, splits.valid, splits.test)]
    return b"\x80\x02" + b"".join(pairs) + b"\x87."


# --- a local HTTP server (the download tests never touch the network) ------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path):
    """Serve `folder` on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def copy_gz(src_folder: Path, dst_folder: Path) -> None:
    dst_folder.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:
        shutil.copyfile(src_folder / f"{f}.gz", dst_folder / f"{f}.gz")
