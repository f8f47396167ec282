"""MNIST and Fashion-MNIST, split and scaled as the tutorials' mnist.pkl.gz: train = the first 50,000
training images, valid = the last 10,000, test = the 10,000 test images; pixels float32 value/256.

Where the data is looked for, in order (the first folder that holds a complete set wins):
  1. the `data_dir` argument (--data-dir): nothing usable there is an error, not a fall-through;
  2. $DEEPTUT_DATA/<name>/ and $DEEPTUT_DATA/;
  3. (Fashion-MNIST) /usr/share/datasets/fashion-mnist/, from Debian's dataset-fashion-mnist;
  4. the repository's data/<name>/ and data/ (when run from a checkout: src/ beside pyproject.toml);
  5. the user cache, $XDG_CACHE_HOME/deeptut/<name>/ (default ~/.cache/deeptut/<name>/);
  6. (MNIST, download=True) a download from the mirrors into that cache.
A complete set is the four IDX files (each gzipped or not), or the tutorial pickle <name>.pkl.gz.
Every file whose checksum is known is verified; a mismatch is an error, never a silent substitute.

The dataset "idx" is any other set of the four IDX files of 28x28 images (your own digits, a tiny test set):
no checksums, and the last sixth of the training images is the validation set (for MNIST's 60,000 that is
the tutorials' 50,000 / 10,000).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deeptut.data import idx
from deeptut.data.legacy_pickle import read_pkl_gz, write_pkl_gz
from deeptut.store import files
from deeptut.errors import DataError

DATASETS = ("mnist", "fashion-mnist", "idx")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
N_TRAIN = 50_000  # the tutorials' train/valid boundary inside the 60,000 training images
SCALE = np.float32(1 / 256)  # exact in float32, so x * SCALE == x / 256 bit for bit

# SHA-256 of the uncompressed Fashion-MNIST files, computed from Debian's dataset-fashion-mnist
# (0.0~git20200523.55506a9-1), i.e. zalandoresearch/fashion-mnist as published.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
KNOWN_SHA256 = {"mnist": idx.MNIST_SHA256, "fashion-mnist": FASHION_MNIST_SHA256, "idx": {}}
SYSTEM_DIRS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
REPO_DATA = Path(__file__).resolve().parents[3] / "data"  # src layout: <repo>/src/deeptut/data/datasets.py


def in_checkout(module_file: str | Path = __file__) -> bool:
    """Whether this deeptut runs from a repository checkout (<repo>/src/deeptut/data/datasets.py beside
    <repo>/pyproject.toml), so that <repo>/data/ is the repository's data folder. Installed into a venv's
    site-packages, parents[3] is .../lib/ (nothing to search, and no "repository data/" to name)."""
    here = Path(module_file).resolve()
    return here.parents[2].name == "src" and (here.parents[3] / "pyproject.toml").is_file()

# Base URLs holding <file>.gz; $DEEPTUT_MNIST_MIRROR (space/comma separated) replaces the list.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MAX_DOWNLOAD = 64 * 2**20  # bytes per file; the largest, train-images .gz, is 9.9 MB
TIMEOUT_S = 30.0

Opener = Callable[[str, float], Any]  # (url, timeout in s) -> response with .read(n) (urlopen-like)


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32 [n, 784], pixel value / 256 (largest 0.99609375), the tutorial pickle's scaling
    y: np.ndarray  # int64 [n]


@dataclass(frozen=True)
class Splits:
    train: Split
    valid: Split
    test: Split
    source: str  # where the data came from (a folder of IDX files or a .pkl.gz)
    name: str  # "mnist" | "fashion-mnist"


@dataclass(frozen=True)
class Found:
    """A usable data location: the four IDX files (by name without .gz), or a pickle."""
    folder: Path
    idx_files: dict[str, Path] | None
    pickle: Path | None


def load_dataset(name: str = "mnist", data_dir: str | Path | None = None, *, download: bool = True,
                 mirrors: list[str] | tuple[str, ...] | None = None, opener: Opener | None = None) -> Splits:
    """The dataset's train/valid/test splits; see the module docstring for where it is looked for."""
    found = find_data(name, data_dir)
    if found is None:
        if not download or name != "mnist":
            raise DataError(_not_found_message(name, "downloading is turned off" if not download
                                               else "there is no download for it"))
        dest = cache_dir(name)
        try:
            download_mnist(dest, mirrors=mirrors, opener=opener)
        except DataError as e:
            raise DataError(f"{e}\n\n{_not_found_message(name, 'the download failed')}") from None
        found = _usable(dest, name)
    if found.idx_files is not None:
        return _from_idx(found, name)
    return _from_pickle(found.pickle, name)


def load_for_config(cfg: Any, data_dir: str | Path | None = None) -> Splits:
    """The registry's loader (deeptut/registry.py) of the image datasets: `cfg.dataset` from `data_dir`."""
    return load_dataset(cfg.dataset, data_dir)


def split_images(data: Any, split: str, dataset: str = "mnist") -> np.ndarray:
    """float32 [n, n_pixels] images of one split ("train", "valid", "test"), pixel / 256 as the tutorial's
    pickle. `data`: None (`dataset` at its default location), a data directory, or an object with
    `.train` / `.valid` / `.test` splits (a Splits) each with `.x` (numpy or torch, float or uint8)."""
    if data is None or isinstance(data, (str, Path)):
        data = load_dataset(dataset, data)
    part = getattr(data, split, None)
    x = getattr(part, "x", None)
    if x is None:
        raise DataError(f"no {split} split with images in {type(data).__name__}")
    return image_rows(x)


def image_rows(x: Any) -> np.ndarray:
    """Images (numpy or torch; uint8 0..255 or float pixel / 256) as float32 [n, n_pixels]."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(256)
    return x.reshape(len(x), -1).astype(np.float32, copy=False)


def export_pkl(out_path: str | Path, data_dir: str | Path | None = None, *, compresslevel: int = 6) -> Path:
    """Write the tutorial's mnist.pkl.gz, built from the MNIST IDX files found as load_dataset finds them."""
    write_pkl_gz(out_path, load_dataset("mnist", data_dir), compresslevel=compresslevel)
    return Path(out_path)


# --- where the data is ---------------------------------------------------------------------------


def cache_dir(name: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deeptut" / name


def search_path(name: str) -> list[tuple[Path, str]]:
    """The folders searched when no data_dir is given, each with why it is there."""
    _check_name(name)
    dirs: list[tuple[Path, str]] = []
    env = os.environ.get("DEEPTUT_DATA")
    if env:
        dirs += [(Path(env) / name, "$DEEPTUT_DATA"), (Path(env), "$DEEPTUT_DATA")]
    dirs += [(d, "system-wide package") for d in SYSTEM_DIRS.get(name, ())]
    if in_checkout():  # not when installed: no folder inside the venv named as the repository's
        dirs += [(REPO_DATA / name, "repository data/"), (REPO_DATA, "repository data/")]
    dirs.append((cache_dir(name), "user cache"))
    return dirs


def find_data(name: str = "mnist", data_dir: str | Path | None = None) -> Found | None:
    """The first usable location; None when nothing is found (DataError if data_dir has nothing)."""
    _check_name(name)
    if data_dir is not None:
        d = Path(data_dir)
        if d.is_file():  # --data-dir path/to/mnist.pkl.gz
            return Found(d.parent, None, d)
        found = _usable(d, name) or _usable(d / name, name)
        if found is None:
            raise DataError(f"{d}: no usable {name} data here: {_describe_dir(d, name)}. Expected "
                            f"{', '.join(f + '[.gz]' for f in IDX_FILES)}, or {_pkl_name(name)}")
        return found
    for d, _ in search_path(name):
        found = _usable(d, name)
        if found is not None:
            return found
    return None


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def _pkl_name(name: str) -> str:
    return "mnist.pkl.gz" if name == "idx" else f"{name}.pkl.gz"


def _idx_in(d: Path) -> dict[str, Path]:
    out = {}
    for f in IDX_FILES:
        for cand in (d / f, d / f"{f}.gz"):  # uncompressed first: it reads faster
            if cand.is_file():
                out[f] = cand
                break
    return out


def _usable(d: Path, name: str) -> Found | None:
    if not d.is_dir():
        return None
    files = _idx_in(d)
    if len(files) == len(IDX_FILES):
        return Found(d, files, None)
    if (d / _pkl_name(name)).is_file():
        return Found(d, None, d / _pkl_name(name))
    return None


def _describe_dir(d: Path, name: str) -> str:
    if not d.exists():
        return "no such folder"
    if not d.is_dir():
        return "not a folder"
    have = _idx_in(d)
    if have:
        return f"has {', '.join(p.name for p in have.values())} but lacks " + \
            ", ".join(f for f in IDX_FILES if f not in have)
    return "no IDX files and no " + _pkl_name(name)


def _not_found_message(name: str, why_no_download: str) -> str:
    lines = [f"no {name} data found ({why_no_download}). Looked in:"]
    lines += [f"  {d}  ({why}: {_describe_dir(d, name)})" for d, why in search_path(name)]
    lines.append("Put these four files (gzipped or not) into one of those folders, or into any folder "
                 "and point $DEEPTUT_DATA or --data-dir at it:")
    lines += [f"  {f}.gz" for f in IDX_FILES]
    lines.append(f"(or the tutorial's {_pkl_name(name)}).")
    if name == "fashion-mnist":
        lines.append("On Debian/Ubuntu: apt-get install dataset-fashion-mnist.")
    return "\n".join(lines)


# --- reading ---------------------------------------------------------------------------------------


def _from_idx(found: Found, name: str) -> Splits:
    sums = KNOWN_SHA256[name]
    files = found.idx_files
    # zlib, hashlib and numpy release the GIL: two threads overlap the files, then the scaling
    # (whose cost is mostly first-touch page faults on the 220 MB of float32 output)
    with ThreadPoolExecutor(2) as pool:
        jobs = {f: pool.submit(_read_idx_file, name, f, files[f], sums.get(f)) for f in IDX_FILES}
        arrays = {f: j.result() for f, j in jobs.items()}
        sets = []
        for prefix in ("train", "t10k"):
            images, labels = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
            img_path = files[f"{prefix}-images-idx3-ubyte"]
            if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
                raise DataError(f"{img_path}: expected n x 28 x 28 uint8 images, got "
                                f"{'x'.join(map(str, images.shape))} {images.dtype}")
            if len(images) != len(labels):
                raise DataError(f"{img_path}: {len(images)} images, but "
                                f"{files[f'{prefix}-labels-idx1-ubyte'].name} has {len(labels)} labels")
            sets.append((images, labels))
        (tr_x, tr_y), (te_x, te_y) = sets
        n_train = N_TRAIN if name != "idx" else len(tr_x) - len(tr_x) // 6
        if len(tr_x) <= n_train or n_train < 1 or len(te_x) < 1:
            raise DataError(f"{files[IDX_FILES[0]]}: {len(tr_x)} training images; the tutorial split needs "
                            f"more than {n_train} (train) plus a validation set")
        xs = [np.empty((n, 784), np.float32) for n in (n_train, len(tr_x) - n_train, len(te_x))]
        half = n_train // 2
        pieces = [(tr_x[:half], xs[0][:half]), (tr_x[half:n_train], xs[0][half:]), (tr_x[n_train:], xs[1]),
                  (te_x, xs[2])]
        list(pool.map(lambda p: _scale(*p), pieces))
    return Splits(Split(xs[0], tr_y[:n_train]), Split(xs[1], tr_y[n_train:]), Split(xs[2], te_y),
                  str(found.folder), name)


def decoded_dir(name: str) -> Path:
    """Where the uncompressed copies of a checksummed dataset's gzipped IDX files are kept: beside the
    datasets' cache folders, not in one (never a place the data is looked for)."""
    return cache_dir(name).parent / "decoded" / name


def _read_idx_file(name: str, f: str, path: Path, expected: str | None) -> np.ndarray:
    """One IDX file of the set (labels as int64, checked). A gzipped file whose published checksum is known
    is read from its uncompressed copy in decoded_dir(name), made the first time that very .gz was decoded
    (the copy's name holds the SHA-256 of the .gz's bytes: another .gz never finds it) and checked against
    the published checksum of the uncompressed bytes at every read. Reading the copy skips the
    decompression, ~0.25 s of a ~0.5 s load of MNIST on the 2-core CI machine. A damaged copy is decoded
    again and replaced; a copy that cannot be written costs only the speed."""
    if expected is None or not path.name.endswith(".gz"):
        raw = idx.read_idx(path, expected_sha256=expected)
    else:
        data = files.read_bounded(path, idx.MAX_DECOMPRESSED, DataError, idx.DATA_FILE)
        copy = decoded_dir(name) / f"{f}.{hashlib.sha256(data).hexdigest()[:24]}"
        raw = None
        if copy.is_file():
            try:
                raw = idx.read_idx(copy, expected_sha256=expected)
            except DataError:
                raw = None
        if raw is None:
            raw = idx.parse_idx(data, str(path), expected_sha256=expected)
            _keep_decoded(copy, raw)
    return idx.as_labels(raw, str(path)) if "labels" in f else raw


def _keep_decoded(copy: Path, raw: np.ndarray) -> None:
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        for old in copy.parent.glob(copy.name.rsplit(".", 1)[0] + ".*"):  # a copy of an earlier .gz
            old.unlink(missing_ok=True)
        tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
        idx.write_idx(tmp, raw)
        os.replace(tmp, copy)  # atomic: a reader sees the old copy, the new one or none
    except OSError:
        pass


def _scale(images: np.ndarray, out: np.ndarray) -> None:
    np.multiply(images.reshape(len(images), -1), SCALE, out=out, dtype=np.float32)


def _from_pickle(path: Path, name: str) -> Splits:
    d = read_pkl_gz(path)
    if d["train"][0].shape[1] != 784:
        raise DataError(f"{path}: images have {d['train'][0].shape[1]} pixels, expected 784 (28x28)")
    _verify_pickle(d, path, KNOWN_SHA256[name])
    return Splits(*(Split(*d[k]) for k in ("train", "valid", "test")), source=str(path), name=name)


def _verify_pickle(d: dict, path: Path, sums: dict[str, str]) -> None:
    """Check the pickle's content against the IDX checksums: the tutorial pickle is the IDX data
    with pixels divided by 256, so multiplying back must give the published bytes exactly."""
    for prefix, names in (("train", ("train", "valid")), ("t10k", ("test",))):
        n = sum(len(d[k][1]) for k in names)
        images = hashlib.sha256(bytes([0, 0, 8, 3]) + b"".join(k.to_bytes(4, "big") for k in (n, 28, 28)))
        labels = hashlib.sha256(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big"))
        for k in names:
            x, y = d[k]
            for i in range(0, len(x), 4096):  # in blocks: small temporaries stay in cache
                pixels = x[i:i + 4096] * np.float32(256)
                u8 = pixels.astype(np.uint8)
                if not np.array_equal(u8, pixels):  # also catches 1.0 (256 wraps to 0)
                    raise DataError(f"{path}: {k} pixel values are not k/256 for k in 0..255; "
                                    "not the tutorial's scaling")
                images.update(u8)
            labels.update(y.astype(np.uint8))  # labels were checked to lie in 0..9
        for f, digest in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            if f in sums and digest.hexdigest() != sums[f]:
                raise DataError(f"{path}: its {f.split('-')[0]} {f.split('-')[1]} differ from the published "
                                f"{f} (SHA-256 {digest.hexdigest()}, expected {sums[f]}); "
                                "a modified or different dataset")


# --- downloading -----------------------------------------------------------------------------------


def mirror_list(mirrors: list[str] | tuple[str, ...] | None = None) -> list[str]:
    if mirrors is None:
        env = os.environ.get("DEEPTUT_MNIST_MIRROR", "").replace(",", " ").split()
        mirrors = env or MNIST_MIRRORS
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def download_mnist(dest: str | Path, *, mirrors: list[str] | tuple[str, ...] | None = None,
                   opener: Opener | None = None, checksums: dict[str, str] | None = None,
                   max_bytes: int = MAX_DOWNLOAD) -> None:
    """Fetch each missing <file>.gz into dest, trying the mirrors in order; a file is kept only after
    it reads as valid IDX with the expected SHA-256, and appears atomically (temp file + rename)."""
    dest = Path(dest)
    checksums = idx.MNIST_SHA256 if checksums is None else checksums
    opener = opener or (lambda url, timeout: urllib.request.urlopen(url, timeout=timeout))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest}: cannot create the download folder: {e.strerror or e}") from None
    for f, sha in checksums.items():
        if (dest / f).is_file() or (dest / f"{f}.gz").is_file():
            continue
        failures = []
        bases = mirror_list(mirrors)
        for i, base in enumerate(bases):
            url = base + f + ".gz"
            tmp = dest / f".{f}.gz.{os.getpid()}.part"
            try:
                _fetch(url, tmp, opener, max_bytes)
                idx.read_idx(tmp, expected_sha256=sha)
                os.replace(tmp, dest / f"{f}.gz")
                break
            except (OSError, ValueError, http.client.HTTPException) as e:  # DataError is a ValueError
                why = str(e).replace(str(tmp), "download")
                failures.append(f"  {url}: {why}")
                more = ", trying the next mirror" if i + 1 < len(bases) else ""
                print(f"deeptut: {url} failed: {why}{more}", file=sys.stderr)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            raise DataError(f"could not download {f}.gz from any mirror:\n" + "\n".join(failures))


def _fetch(url: str, tmp: Path, opener: Opener, max_bytes: int) -> None:
    print(f"deeptut: downloading {url}", file=sys.stderr, flush=True)
    done = 0
    with opener(url, TIMEOUT_S) as resp, open(tmp, "wb") as out:
        total = int(getattr(resp, "headers", {}).get("Content-Length") or 0)
        if total > max_bytes:
            raise DataError(f"{total} bytes announced, more than the {max_bytes}-byte limit")
        while chunk := resp.read(1 << 20):
            done += len(chunk)
            if done > max_bytes:
                raise DataError(f"more than the {max_bytes}-byte limit")
            out.write(chunk)
            if total and sys.stderr.isatty():
                print(f"\r  {done / 1e6:.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr, flush=True)
    if total and done != total:
        raise DataError(f"got {done} of the {total} bytes announced")
    print(f"{chr(13) if total and sys.stderr.isatty() else ''}  {done / 1e6:.1f} MB", file=sys.stderr)
