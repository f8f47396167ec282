"""Small C kernels compiled on first use with the system C compiler and loaded with ctypes.

`logistic_step()` returns the fused logistic-regression SGD step of csrc/logistic_step.c, or None when it
cannot be had (no compiler, a failed build, `DEEPTUT_NO_CKERNELS=1`); callers then keep their numpy path.
Nothing is compiled at `import deeptut`. The shared library is cached in `$XDG_CACHE_HOME/deeptut/kernels`
(default `~/.cache/deeptut/kernels`), or in a private folder under the temp dir when that is not writable,
named by a hash of the source, the compiler, its flags and the machine (the flags include -march=native).
Builds go to a temporary name and are renamed into place, so concurrent first uses do not clash.
IEEE arithmetic: no -ffast-math.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CSRC = Path(__file__).parent / "csrc"
COMPILER: str | None = None  # None: $CC, else the first of cc, gcc found on PATH
# Tried in order; the first that builds wins.
FLAG_SETS = (
    ("-O3", "-march=native"),
    ("-O3",),
)
BASE_FLAGS = ("-std=gnu11", "-shared", "-fPIC", "-pthread", "-fno-fast-math", "-Wno-psabi")

_cache: dict[str, object] = {}
last_error: str | None = None  # why the last load returned None, for diagnostics


def _compiler() -> str | None:
    names = [COMPILER] if COMPILER else ([os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc"])
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _machine_id() -> str:
    ident = [platform.machine(), platform.system(), sys.platform]
    try:  # -march=native: a cache shared between different CPUs must not mix their builds
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    ident.append(line.strip())
                    if len(ident) > 6:
                        break
    except OSError:
        pass
    return "\n".join(ident)


def _private_dir(path: Path) -> bool:
    """A folder we own and nobody else can write into (never load a library others could have planted)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = path.stat()
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
            return False
        return os.access(path, os.W_OK | os.X_OK)
    except OSError:
        return False


def cache_dirs() -> list[Path]:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return [Path(base) / "deeptut" / "kernels", Path(tempfile.gettempdir()) / f"deeptut-kernels-{uid}"]


def _build(name: str) -> ctypes.CDLL:
    src = CSRC / f"{name}.c"
    source = src.read_bytes() + b"".join(h.read_bytes() for h in sorted(CSRC.glob("*.h")))  # headers too
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler")
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(BASE_FLAGS + flags).encode(),
                                         _machine_id().encode()])).hexdigest()[:20]
        for d in cache_dirs():
            if not _private_dir(d):
                continue
            so = d / f"{name}-{key}.so"
            if not so.exists():
                try:
                    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=d)
                except OSError as e:
                    errors.append(f"{d}: {e}")
                    continue
                os.close(fd)
                try:
                    r = subprocess.run([cc, *BASE_FLAGS, *flags, str(src), "-o", tmp, "-lm"],
                                       capture_output=True, text=True, timeout=120)
                    if r.returncode != 0:
                        errors.append(f"{' '.join(flags)}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
                        break  # these flags fail: the next folder will not help, try the next flags
                    os.replace(tmp, so)  # atomic: a concurrent build of the same key writes the same thing
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            try:
                return ctypes.CDLL(str(so))
            except OSError as e:  # e.g. a noexec temp dir: try the next folder
                errors.append(f"load {so}: {e}")
    raise RuntimeError("; ".join(errors) or "no writable cache folder")


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library csrc/<name>.c, or None (cached per process, including the failure)."""
    global last_error
    if name in _cache:
        return _cache[name]  # type: ignore[return-value]
    lib = None
    if os.environ.get("DEEPTUT_NO_CKERNELS", "") not in ("", "0"):
        last_error = "disabled by DEEPTUT_NO_CKERNELS"
    else:
        try:
            lib = _build(name)
        except Exception as e:  # noqa: BLE001 - a missing kernel only costs speed
            last_error = f"{type(e).__name__}: {e}"
            if _compiler() is not None:
                print(f"deeptut: C kernel {name} unavailable ({last_error}); using numpy", file=sys.stderr)
    _cache[name] = lib
    return lib


def clear_cache() -> None:
    """Forget loaded/failed kernels (tests)."""
    _cache.clear()


def aligned_buffer(nbytes: int):
    """A numpy uint8 buffer of nbytes at a 64-byte boundary (the kernels' scratch: they use 64-byte vectors)."""
    import numpy as np

    raw = np.empty(nbytes + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + nbytes]


def takes(x, y, *params) -> bool:
    """Whether the kernels can read these: x [n, n_in] float32 and y [n] int64, contiguous CPU tensors with
    n > 0 and n_in = params[0].shape[0], and every parameter array (numpy) C-contiguous."""
    import torch

    return (x.dtype == torch.float32 and y.dtype == torch.int64 and x.dim() == 2 and x.device.type == "cpu"
            and y.device.type == "cpu" and x.is_contiguous() and y.is_contiguous()
            and x.shape[1] == params[0].shape[0] and y.shape == (x.shape[0],) and x.shape[0] > 0
            and all(p.flags.c_contiguous for p in params))


def logistic_step():
    """The C function `logistic_step`, argtypes set, or None. Attributes: the other functions of
    csrc/logistic_step.c: `nparts(T)`, `scratch_bytes(d, k, T)`, `errors` (evaluation), `pack_count` and
    `pack_fill` (packing a split's nonzeros)."""
    lib = load("logistic_step")
    if lib is None:
        return None
    f = lib.logistic_step
    p, i, dbl = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    i64 = ctypes.c_int64
    f.argtypes = [p, p, i, i, i, p, p, p, i, dbl, dbl, dbl, p, p, p, p, i64]
    f.restype = i
    lib.logistic_nparts.argtypes = [i]
    lib.logistic_nparts.restype = i
    lib.logistic_scratch_bytes.argtypes = [i, i, i]
    lib.logistic_scratch_bytes.restype = ctypes.c_size_t
    lib.logistic_errors.argtypes = [p, p, i, i, i, p, p, p, i, p, p, p, p, i64]
    lib.logistic_errors.restype = i
    lib.logistic_pack_count.argtypes = [p, i64, i, p]
    lib.logistic_pack_count.restype = i
    lib.logistic_pack_fill.argtypes = [p, i64, i, p, p, p]
    lib.logistic_pack_fill.restype = i
    f.nparts = lib.logistic_nparts
    f.scratch_bytes = lib.logistic_scratch_bytes
    f.errors = lib.logistic_errors
    f.pack_count, f.pack_fill = lib.logistic_pack_count, lib.logistic_pack_fill
    return f


def mlp_step():
    """csrc/mlp_step.c's functions, argtypes set, as an object with `forward`, `backward` and
    `scratch_bytes`; or None (no compiler, a failed build, DEEPTUT_NO_CKERNELS=1)."""
    lib = load("mlp_step")
    if lib is None:
        return None
    p, i, dbl, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_int64
    lib.mlp_scratch_bytes.argtypes = [i, i, i, i]
    lib.mlp_scratch_bytes.restype = ctypes.c_size_t
    lib.mlp_forward.argtypes = [p, i, i, i, i, p, p, p, p, i, p, p, p, i64]
    lib.mlp_forward.restype = i
    lib.mlp_backward.argtypes = [p, i, i, i, i, p, p, p, p, p, p, i, dbl, dbl, dbl, p]
    lib.mlp_backward.restype = i

    class _MLP:
        scratch_bytes, forward, backward = lib.mlp_scratch_bytes, lib.mlp_forward, lib.mlp_backward

    return _MLP


def pretrain_update():
    """csrc/pretrain_update.c's `da_rank1_sgd` and `da_sum2_sgd`, argtypes set, as an object; or None (no
    compiler, a failed build, DEEPTUT_NO_CKERNELS=1)."""
    lib = load("pretrain_update")
    if lib is None:
        return None
    p, i, f, l = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_long
    lib.da_rank1_sgd.argtypes = [p, p, p, p, p, i, i, f]
    lib.da_rank1_sgd.restype = None
    lib.da_sum2_sgd.argtypes = [p, p, p, l, f]
    lib.da_sum2_sgd.restype = None

    class _Pretrain:
        rank1_sgd, sum2_sgd = lib.da_rank1_sgd, lib.da_sum2_sgd

    return _Pretrain
