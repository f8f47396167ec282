"""Files that last, and files read with care.

Writing: every file is written atomically (temporary file in the same directory, fsync, rename, fsync of the
directory) so a crash leaves either the old file or the new one, never a torn one; `BackgroundWriter` does
such writes in order on one thread, off the training path.

Reading: a file's size is bounded before anything is read (a hostile or mistaken file must not make deeptut
allocate gigabytes), JSON is parsed with its failures turned into the caller's error type, and every message
names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from deeptut.errors import CheckpointError, DeeptutError

MAX_JSON_BYTES = 16 * 2**20  # manifests, configs and summaries are a few KB
TMP_SUFFIX = ".tmp"
UNKNOWN_KIND = "a file of this kind (not a deeptut file?)"


# --- writing ---------------------------------------------------------------------------------------------


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


def json_bytes(obj: Any) -> bytes:
    """The bytes deeptut writes for a JSON file: indented, NaN/Infinity allowed, a final newline."""
    return (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the temporary files of writes that a crash interrupted (`.NAME.XXXX.tmp`)."""
    try:
        for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
    except OSError:
        pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- reading ---------------------------------------------------------------------------------------------


def read_bounded(path: str | Path, limit: int, error: type[DeeptutError] = CheckpointError,
                 kind: str = UNKNOWN_KIND, *, missing: str | None = None) -> bytes:
    """The bytes of `path`; `error` if it cannot be read or holds more than `limit` bytes (checked with
    fstat first, then by reading at most limit + 1 bytes, for files that grow or lie about their size).
    `kind` names the file in the size message; `missing`, when given, is the message for a file that does
    not exist (by default it is "cannot read: No such file or directory", like any other failure)."""
    too_big = f"{path}: more than the {limit}-byte limit for {kind}"
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > limit:
                raise error(too_big)
            data = f.read(limit + 1)
    except FileNotFoundError as e:
        if missing is not None:
            raise error(f"{path}: {missing}") from None
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(too_big)
    return data


def read_text(path: str | Path, limit: int, error: type[DeeptutError] = CheckpointError,
              kind: str = UNKNOWN_KIND) -> str:
    """A bounded UTF-8 text file; a missing file is "{path}: missing", bad UTF-8 "cannot read as UTF-8"."""
    data = read_bounded(path, limit, error, kind, missing="missing")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: cannot read as UTF-8 text, so not valid JSON: {e}") from None


def parse_json(data: bytes | str, source: str | Path, error: type[DeeptutError] = CheckpointError) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise error(f"{source}: not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None


def read_json(path: str | Path, error: type[DeeptutError] = CheckpointError, *,
              max_bytes: int = MAX_JSON_BYTES, want_object: bool = False) -> Any:
    """The JSON value in `path` (at most `max_bytes`), every failure an `error` naming the file: missing,
    unreadable, too large, not UTF-8, not JSON, and with `want_object` not a JSON object."""
    obj = parse_json(read_text(path, max_bytes, error, "a JSON file"), path, error)
    if want_object and not isinstance(obj, dict):
        raise error(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


# --- writing in the background -----------------------------------------------------------------------------


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
