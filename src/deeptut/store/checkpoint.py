"""The files of the `last` checkpoint, whatever loop wrote it.

    checkpoints/ckpt-<validations:08d>-<sha256[:16]>.safetensors   every tensor (model, best, optimizer, RNG)
    checkpoints/last.json                                         the manifest: format, the tensors file and
                                                                  its SHA-256, and the loop's own JSON state

The tensors file is written (atomically) before the manifest that names it, so a crash at any point leaves
the previous checkpoint whole; files no manifest names are removed afterwards. What the manifest's other
keys mean (loop position, early stopping, RNG layout) is the training loop's business (train/state.py);
this module knows the layout only. Nested state dicts (an optimizer's) are split into tensors and a JSON
skeleton here, so nothing is ever unpickled.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import deeptut
from deeptut.errors import CheckpointError
from deeptut.store import files, tensors

if TYPE_CHECKING:  # imported where needed: a torch-free run writes its files without it
    import torch

CHECKPOINT_FORMAT = 2  # 1: the first version (no config, data fingerprint or stop reason)
CKPT_DIR = "checkpoints"
MANIFEST = "last.json"


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CKPT_DIR / MANIFEST).exists()


def write_checkpoint(ckpt_dir: Path, data: bytes, manifest: dict[str, Any], n_validations: int) -> None:
    """Write the tensors file `data`, then `manifest` naming it, then drop the files no manifest names."""
    ckpt_dir.mkdir(exist_ok=True)
    sha = files.sha256_bytes(data)
    name = f"ckpt-{n_validations:08d}-{sha[:16]}.safetensors"  # a new name for new content
    files.atomic_write_bytes(ckpt_dir / name, data)
    files.atomic_write_json(ckpt_dir / MANIFEST, {**manifest, "files": {name: sha}})
    for old in ckpt_dir.iterdir():
        if old.name != name and old.name != MANIFEST and (old.name.startswith("ckpt-") or
                                                          old.name.endswith(files.TMP_SUFFIX)):
            old.unlink(missing_ok=True)


def read_manifest(run_dir: str | Path) -> tuple[dict[str, Any], str, str]:
    """(manifest, tensors file name, its SHA-256) of `run_dir`'s checkpoint: format and file entry checked."""
    manifest_path = Path(run_dir) / CKPT_DIR / MANIFEST
    if not manifest_path.exists():
        raise CheckpointError(f"{manifest_path}: no checkpoint to resume from")
    m = files.read_json(manifest_path)
    where = str(manifest_path)
    if not isinstance(m, dict):
        raise CheckpointError(f"{where}: not a deeptut checkpoint manifest")
    if m.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where}: checkpoint format {repr(m.get('format'))[:40]} (written by deeptut "
                              f"{str(m.get('deeptut', '0.1.0 or older'))[:40]}); this deeptut "
                              f"({deeptut.__version__}) resumes format {CHECKPOINT_FORMAT} only")
    entries = m.get("files")
    if not isinstance(entries, dict) or len(entries) != 1:
        raise CheckpointError(f"{where}: must list exactly one tensors file")
    (name, sha), = entries.items()
    if not (isinstance(name, str) and name.startswith("ckpt-") and name.endswith(".safetensors")
            and "/" not in name and "\\" not in name and "\0" not in name and len(name) < 200
            and isinstance(sha, str) and len(sha) == 64):
        raise CheckpointError(f"{where}: bad file entry {str(name)[:80]!r}")
    return m, name, sha


def read_tensors(run_dir: str | Path, name: str, sha: str, max_bytes: int) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors file, its SHA-256 checked against the manifest's."""
    return tensors.load_tensors(Path(run_dir) / CKPT_DIR / name, expected_sha256=sha, max_bytes=max_bytes)


def drop_other_files(run_dir: str | Path, name: str) -> None:
    """Remove tensors files other than `name` (left by a crash between a manifest and the clean-up)."""
    try:
        for old in (Path(run_dir) / CKPT_DIR).glob("ckpt-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)
    except OSError:
        pass


# --- nested state (an optimizer's): tensors into the safetensors file, the rest into a JSON skeleton -------


def flatten(prefix: str, obj: Any, out: dict[str, torch.Tensor]) -> Any:
    """Split a nested state dict into tensors (keyed by path, added to `out`) and a JSON skeleton that refers
    to them."""
    torch = sys.modules.get("torch")  # not imported (a torch-free run): no object here is a tensor
    if torch is not None and isinstance(obj, torch.Tensor):
        out[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[type(k).__name__, k, flatten(f"{prefix}/{k}", v, out)]
                             for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten(f"{prefix}/{i}", v, out) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint optimizer state of type {type(obj).__name__}")


def unflatten(skel: Any, tensors: dict[str, torch.Tensor], prefix: str = "optimizer/") -> Any:
    """The inverse of `flatten`; only tensors under `prefix` may be referred to."""
    if isinstance(skel, dict):
        if set(skel) == {"__tensor__"} and isinstance(skel["__tensor__"], str) and \
                skel["__tensor__"].startswith(prefix) and skel["__tensor__"] in tensors:
            return tensors[skel["__tensor__"]]
        if set(skel) == {"__dict__"} and isinstance(skel["__dict__"], list):
            out = {}
            for item in skel["__dict__"]:
                if not (isinstance(item, list) and len(item) == 3 and item[0] in ("int", "str")
                        and isinstance(item[1], int if item[0] == "int" else str)
                        and not isinstance(item[1], bool)):
                    raise CheckpointError("malformed optimizer state")
                out[item[1]] = unflatten(item[2], tensors, prefix)
            return out
        raise CheckpointError("malformed optimizer state")
    if isinstance(skel, list):
        return [unflatten(v, tensors, prefix) for v in skel]
    if skel is None or isinstance(skel, (bool, int, float, str)):
        return skel
    raise CheckpointError("malformed optimizer state")
