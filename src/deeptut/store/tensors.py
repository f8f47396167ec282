"""Parameters and other tensors in safetensors files (never pickled code).

Writing is byte-for-byte deterministic and atomic (store/files.py). Reading is defensive: the file is
size-checked before it is read, its header is parsed and checked against the file's length before any
tensor is allocated, and every failure is a `CheckpointError` that names the file.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError

from deeptut.errors import CheckpointError
from deeptut.store import files

if TYPE_CHECKING:  # imported where needed: a torch-free run writes its files without it
    import torch

MAX_TENSOR_FILE_BYTES = 4 * 2**30  # default cap on a safetensors file read into memory
MAX_HEADER_BYTES = 16 * 2**20  # a safetensors header; ours are a few KB (the format's own limit is 100 MB)

# safetensors dtype -> bytes per element, for the dtypes torch can hold
ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1}


def serialize_tensors(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors bytes of `tensors` (a copy: later changes to the tensors do not affect it): torch
    tensors, or numpy arrays (the torch-free runs, train/torchless.py: the same bytes for the same values,
    tests/test_torchless.py checks it, and no torch is imported).

    Byte-for-byte deterministic: safetensors writes metadata in hash-map order, which varies from run to
    run, so the header is rewritten with the metadata keys sorted."""
    if tensors and all(isinstance(v, np.ndarray) for v in tensors.values()):
        from safetensors.numpy import save as np_save

        data = np_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)
    else:
        from safetensors.torch import save as st_save

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


def save_tensors(path: str | Path, tensors: dict[str, Any],
                 metadata: dict[str, str] | None = None) -> str:
    """Atomically write a safetensors file; returns its SHA-256."""
    data = serialize_tensors(tensors, metadata)
    files.atomic_write_bytes(path, data)
    return files.sha256_bytes(data)


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
    header = files.parse_json(data[8:8 + n], f"{source} (safetensors header)")
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


def st_load(data: bytes) -> dict[str, "torch.Tensor"]:
    """safetensors.torch.load, imported (with torch) when first needed."""
    from safetensors.torch import load

    return load(data)


def load_tensors_bytes(data: bytes, source: str | Path) -> dict[str, "torch.Tensor"]:
    check_safetensors(data, source)
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError) as e:
        raise CheckpointError(f"{source}: not a valid safetensors file: {str(e)[:200]}") from None


def load_tensors(path: str | Path, expected_sha256: str | None = None,
                 max_bytes: int = MAX_TENSOR_FILE_BYTES) -> dict[str, "torch.Tensor"]:
    data = files.read_bounded(path, max_bytes)
    if expected_sha256 is not None and files.sha256_bytes(data) != expected_sha256:
        raise CheckpointError(f"{path}: SHA-256 does not match the manifest (file corrupted or replaced)")
    return load_tensors_bytes(data, path)


def load_arrays(path: str | Path, max_bytes: int = MAX_TENSOR_FILE_BYTES) -> dict[str, np.ndarray]:
    """A safetensors file as float32 numpy arrays (for pictures); missing or corrupt -> CheckpointError."""
    import torch

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: missing")
    return {k: v.to(torch.float32).numpy() for k, v in load_tensors(path, max_bytes=max_bytes).items()}


def tensor_metadata(path: str | Path, max_bytes: int = MAX_TENSOR_FILE_BYTES) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file (checked, tensors not loaded)."""
    return check_safetensors(files.read_bounded(path, max_bytes), path).get("__metadata__", {})
