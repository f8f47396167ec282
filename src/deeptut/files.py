"""Reading a file whose size is bounded before anything is read: a hostile or mistaken file must not make
deeptut allocate gigabytes."""

from __future__ import annotations

import os
from pathlib import Path

from deeptut.errors import DeeptutError


def read_bounded(path: str | Path, limit: int, error: type[DeeptutError], kind: str) -> bytes:
    """The bytes of `path`; `error` if it cannot be read or holds more than `limit` bytes (checked with
    fstat first, then by reading at most limit + 1 bytes, for files that grow or lie about their size)."""
    too_big = f"{path}: more than the {limit}-byte limit for {kind}"
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > limit:
                raise error(too_big)
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(too_big)
    return data
