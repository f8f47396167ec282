"""Files that last: parameters in safetensors (never pickled code), metadata in JSON, every file written
atomically (temporary file in the same directory, fsync, rename, fsync of the directory) so a crash leaves
either the old file or the new one, never a torn one.

Reading is defensive: a file is size-checked before it is read, a safetensors header is parsed and checked
against the file's length before any tensor is allocated, and every failure is a `CheckpointError` that
names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from deeptut import files
from deeptut.errors import CheckpointError

MAX_JSON_BYTES = 16 * 2**20  # manifests, configs and summaries are a few KB
MAX_TENSOR_FILE_BYTES = 4 * 2**30  # default cap on a safetensors file read into memory
MAX_HEADER_BYTES = 16 * 2**20  # a safetensors header; ours are a few KB (the format's own limit is 100 MB)
TMP_SUFFIX = ".tmp"

# safetensors dtype -> bytes per element, for the dtypes torch can hold
ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename itself is atomic
    finally:
        os.close(fd)


def _write_error(path: Path, e: OSError) -> CheckpointError:
    why = e.strerror or str(e)
    return CheckpointError(f"{path}: cannot write: {why}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash at any point leaves the old file or the new one, whole."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:  # OSError, or KeyboardInterrupt from a default signal handler
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the temporary files of writes that a crash interrupted (`.NAME.XXXX.tmp`)."""
    try:
        for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
    except OSError:
        pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serialize_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors bytes of `tensors` (a copy: later changes to the tensors do not affect it).

    Byte-for-byte deterministic: safetensors writes metadata in hash-map order, which varies from run to
    run, so the header is rewritten with the metadata keys sorted."""
    plain, storages = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in storages:  # safetensors refuses tensors that share memory (e.g. best = model at start)
            v = v.clone()
        storages.add(ptr)
        plain[k] = v
    data = st_save(plain, metadata=metadata)
    if metadata and len(metadata) > 1:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)
        data = struct.pack("<Q", len(text)) + text + data[8 + n:]
    return data


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> str:
    """Atomically write a safetensors file; returns its SHA-256."""
    data = serialize_tensors(tensors, metadata)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def read_bounded(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of `path`, refusing (before reading) a file larger than `max_bytes`."""
    return files.read_bounded(path, max_bytes, CheckpointError, "a file of this kind (not a deeptut file?)")


def parse_json(data: bytes, source: str | Path) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise CheckpointError(f"{source}: not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    return parse_json(read_bounded(path, max_bytes), path)


def check_safetensors(data: bytes, source: str | Path) -> dict[str, Any]:
    """Parse and check a safetensors header against the length of `data`; returns the header.

    Every tensor must be a known dtype, its byte size must equal its shape times its element size, and
    the tensors must tile the data section exactly (no gaps, no overlaps), so loading allocates no more
    than the file's length, whatever the header claims."""
    if len(data) < 8:
        raise CheckpointError(f"{source}: not a safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, MAX_HEADER_BYTES):
        raise CheckpointError(f"{source}: not a safetensors file (header of {n} bytes in a file of "
                              f"{len(data)})")
    header = parse_json(data[8:8 + n], f"{source} (safetensors header)")
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: safetensors header is not a JSON object")
    data_len = len(data) - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in info.items()):
                raise CheckpointError(f"{source}: safetensors metadata must map strings to strings")
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{source}: tensor {name[:100]!r}: malformed header entry")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in ST_DTYPES:
            raise CheckpointError(f"{source}: tensor {name[:100]!r}: unsupported dtype {str(dtype)[:20]!r}")
        if (not isinstance(shape, list) or len(shape) > 16
                or not all(type(d) is int and 0 <= d <= data_len for d in shape)):
            raise CheckpointError(f"{source}: tensor {name[:100]!r}: bad shape {str(shape)[:60]} (dimensions "
                                  f"must be integers from 0 to the file's length)")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_len):
            raise CheckpointError(f"{source}: tensor {name[:100]!r}: data offsets outside the file "
                                  f"(truncated or corrupted)")
        size = math.prod(shape) * ST_DTYPES[dtype]
        if size != offsets[1] - offsets[0]:
            raise CheckpointError(f"{source}: tensor {name[:100]!r}: shape {shape} {dtype} needs {size} bytes, "
                                  f"the header gives it {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1]))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise CheckpointError(f"{source}: tensors overlap or leave gaps in the data section")
        end = stop
    if end != data_len:
        raise CheckpointError(f"{source}: the data section is {data_len} bytes, the tensors cover {end} "
                              f"(truncated or extended)")
    return header


def load_tensors_bytes(data: bytes, source: str | Path) -> dict[str, torch.Tensor]:
    check_safetensors(data, source)
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError) as e:
        raise CheckpointError(f"{source}: not a valid safetensors file: {str(e)[:200]}") from None


def load_tensors(path: str | Path, expected_sha256: str | None = None,
                 max_bytes: int = MAX_TENSOR_FILE_BYTES) -> dict[str, torch.Tensor]:
    data = read_bounded(path, max_bytes)
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise CheckpointError(f"{path}: SHA-256 does not match the manifest (file corrupted or replaced)")
    return load_tensors_bytes(data, path)


def tensor_metadata(path: str | Path, max_bytes: int = MAX_TENSOR_FILE_BYTES) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file (checked, tensors not loaded)."""
    return check_safetensors(read_bounded(path, max_bytes), path).get("__metadata__", {})


class BackgroundWriter:
    """Runs file-writing tasks in submission order on one thread, so fsync waits stay off the training path.

    Order is what makes this safe: a manifest is only written after the files it lists. A task that fails
    makes every later task a no-op (nothing is written on top of a failed write), and the error is raised
    by the next `submit` or `flush`. A crash loses at most the queued tasks, never the files already
    renamed into place, so what is on disk is always a consistent, possibly older, state.
    """

    def __init__(self, max_pending: int = 4) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="deeptut-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            try:
                if task is None:
                    return
                if self._error is None:
                    task()
            except BaseException as e:  # reported to the training thread, never lost
                self._error = e
            finally:
                self._queue.task_done()

    def check(self) -> None:
        e = self._error
        if e is None:
            return
        if isinstance(e, CheckpointError):
            raise CheckpointError(str(e))
        if isinstance(e, OSError):
            raise CheckpointError(f"{e.filename or 'run directory'}: cannot write: {e.strerror or e}")
        raise CheckpointError(f"writing the run's files failed: {type(e).__name__}: {e}")

    @property
    def failed(self) -> bool:
        return self._error is not None

    def submit(self, task: Callable[[], None]) -> None:
        self.check()
        self._queue.put(task)

    def flush(self) -> None:
        """Wait for every submitted task; raise the first failure."""
        self._queue.join()
        self.check()

    def close(self) -> None:
        """Finish the submitted tasks and stop the thread (never raises)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
