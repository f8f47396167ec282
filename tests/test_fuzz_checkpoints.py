"""Property-based fuzzing of the checkpoint and model loaders: mutated safetensors bytes (bit flips, cuts,
insertions, forged headers declaring huge or overlapping tensors), mutated manifests (any field replaced by
any JSON value, deleted, or the text itself mangled), mutated tensors behind a matching SHA-256, mutated
model files. Whatever the input, a loader returns or raises CheckpointError: no other exception escapes,
and nothing larger than the file is allocated. Where a loader must refuse (a flipped byte in the tensors file
behind the manifest that names its SHA-256, a forged header, a manifest naming a file outside the checkpoint
folder) each case is checked to be refused, and the refusals are counted; the untouched checkpoint loads.

More than 10,000 cases run in well under a minute (derandomized: the same cases on every run).
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiny
from deeptut.errors import CheckpointError
from deeptut.store import files, rundir
from deeptut.store import tensors as store_tensors
from deeptut.train import state as train_state
from deeptut.train.loop import fit

pytestmark = pytest.mark.slow  # ~20 s for the module (1 to 5 s a fuzzer)

COUNT = {"cases": 0, "refused": 0}
RAN: dict[str, int] = {}  # fuzzer -> cases it ran in this session
FUZZ = settings(deadline=None, database=None, derandomize=True, print_blob=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def ckpt():
    """A real checkpoint (momentum SGD: optimizer buffers too) in a tmpfs when there is one."""
    n = torch.get_num_threads()
    base = Path(tempfile.mkdtemp(prefix="deeptut-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    run = base / "run"
    run.mkdir()
    cfg = tiny.tiny_config("momentum", n_epochs=2)
    fit(cfg, tiny.tiny_splits(), run, quiet=True)
    manifest = json.loads((run / "checkpoints" / "last.json").read_text())
    (name, _), = manifest["files"].items()
    tensors = (run / "checkpoints" / name).read_bytes()
    torch.set_num_threads(n)
    yield {"run": run, "cfg": cfg, "manifest": manifest, "name": name, "tensors": tensors,
           "manifest_text": json.dumps(manifest), "paths": list(paths(manifest)),
           "best": (run / "best.safetensors").read_bytes(), "fp": train_state.data_fingerprint(tiny.tiny_splits())}
    shutil.rmtree(base, ignore_errors=True)


def fuzzer(n: int, **strategies):
    """A fuzz case body, drawn by Hypothesis from `strategies`: calling the result (with the `ckpt`
    fixture) runs n cases; `test_fuzzer` counts them."""
    def decorate(body):
        run = settings(FUZZ, max_examples=n)(given(**strategies)(body))
        run.cases = n
        return run
    return decorate


def count() -> None:
    COUNT["cases"] += 1


def refused(fn, *args) -> bool:
    """Run a loader: True if it raised CheckpointError (counted), False if it returned."""
    try:
        fn(*args)
    except CheckpointError:
        COUNT["refused"] += 1
        return True
    return False


# --- byte-level mutations ---------------------------------------------------------------------------------

MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**16), st.integers(0, 7)),
    st.tuples(st.just("flip-header"), st.integers(0, 2**10), st.integers(0, 7)),
    st.tuples(st.just("set-header"), st.integers(0, 2**10), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**16)),
    st.tuples(st.just("insert"), st.integers(0, 2**16), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2**16), st.integers(1, 64)),
    st.tuples(st.just("header-length"), st.one_of(st.integers(0, 2**12), st.integers(0, 2**64 - 1))),
    st.tuples(st.just("digits"), st.integers(0, 2**10), st.integers(1, 6000)),
)


def mutate(data: bytes, mutations) -> bytes:
    b = bytearray(data)
    for m in mutations:
        n = len(b)
        if m[0] == "header-length":
            b[:8] = struct.pack("<Q", m[1])
        elif n == 0:
            continue
        elif m[0] in ("flip", "flip-header"):
            b[m[1] % n] ^= 1 << m[2]
        elif m[0] == "set-header":
            b[m[1] % n] = m[2]
        elif m[0] == "truncate":
            del b[m[1] % n:]
        elif m[0] == "insert":
            b[m[1] % (n + 1):m[1] % (n + 1)] = m[2]
        elif m[0] == "delete":
            del b[m[1] % n:m[1] % n + m[2]]
        elif m[0] == "digits":  # a number too long for int()
            b[m[1] % (n + 1):m[1] % (n + 1)] = b"9" * m[2]
    return bytes(b)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=6)

DIM = st.one_of(st.integers(0, 64), st.integers(-3, 2**64), st.just(2**31))
ENTRY = st.one_of(
    st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "U64", "x"]),
        "shape": st.lists(DIM, max_size=4),
        "data_offsets": st.lists(st.one_of(st.integers(0, 512), st.integers(-2**63, 2**64)), max_size=3)}),
    JSON)
HEADER = st.dictionaries(st.one_of(st.text(max_size=10), st.just("__metadata__")), ENTRY, max_size=5)


def forged(header: dict, body: bytes, pad: int) -> bytes:
    h = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + body


def check_tensors(data: bytes) -> bool:
    """True if refused; else what it allocated is checked against the file's size."""
    try:
        out = store_tensors.load_tensors_bytes(data, "fuzz")
    except CheckpointError:
        COUNT["refused"] += 1
        return True
    assert sum(t.numel() * t.element_size() for t in out.values()) <= len(data)
    return False


@fuzzer(3500, mutations=st.lists(MUTATION, min_size=1, max_size=4))
def mutated_safetensors_bytes(ckpt, mutations):
    count()
    check_tensors(mutate(ckpt["tensors"], mutations))


@fuzzer(1300, header=HEADER, body=st.binary(max_size=300), pad=st.integers(0, 9))
def forged_safetensors_headers(ckpt, header, body, pad):
    count()
    check_tensors(forged(header, body, pad))


# --- the `last` checkpoint: manifest and tensors together -------------------------------------------------


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


def edit(obj, path, op, value):
    if not path:
        return value if op != "delete" else {}
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if op == "delete":
        del parent[path[-1]]
    elif op == "replace":
        parent[path[-1]] = value
    elif op == "add" and isinstance(parent[path[-1]], dict):
        parent[path[-1]]["extra"] = value
    elif op == "nudge" and type(parent[path[-1]]) in (int, float):
        parent[path[-1]] = parent[path[-1]] + (value if type(value) in (int, float) else -1)
    return obj


def load(ckpt, manifest_bytes: bytes, tensors: bytes | None = None) -> bool:
    """Write the (mutated) files and resume from them into fresh parts: success (False) or CheckpointError
    (True, counted)."""
    run = ckpt["run"]
    d = run / "checkpoints"
    (d / "last.json").write_bytes(manifest_bytes)
    if tensors is not None or ckpt.get("mutated tensors on disk"):
        (d / ckpt["name"]).write_bytes(ckpt["tensors"] if tensors is None else tensors)
    ckpt["mutated tensors on disk"] = tensors is not None
    n = torch.get_num_threads()
    try:
        return refused(train_state.load_last, run, *tiny.fresh_parts(ckpt["cfg"]), ckpt["cfg"], ckpt["fp"])
    finally:
        torch.set_num_threads(n)


OPS = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["replace", "delete", "add", "nudge"]), JSON),
               min_size=1, max_size=3)


@fuzzer(1700, ops=OPS)
def mutated_manifest_fields(ckpt, ops):
    count()
    m = json.loads(ckpt["manifest_text"])
    for i, op, value in ops:
        try:
            m = edit(m, ckpt["paths"][i % len(ckpt["paths"])], op, value)
        except (KeyError, IndexError, TypeError):
            pass  # the path went away with an earlier edit
    load(ckpt, json.dumps(m).encode())


@fuzzer(2000, mutations=st.lists(MUTATION, min_size=1, max_size=3))
def mutated_manifest_text(ckpt, mutations):
    count()
    load(ckpt, mutate(json.dumps(ckpt["manifest"], indent=2).encode(), mutations))


def retensor(tensors: dict, ops) -> dict:
    names = sorted(tensors)
    for i, op, k in ops:
        name = names[i % len(names)]
        t = tensors.get(name)
        if op == "drop":
            tensors.pop(name, None)
        elif op == "add":
            tensors[f"{name}/extra"] = torch.zeros(k % 5)
        elif t is not None and op == "reshape":
            tensors[name] = t.flatten()[: max(0, t.numel() - k % 3)]
        elif t is not None and op == "dtype":
            tensors[name] = t.to([torch.float64, torch.int64, torch.uint8, torch.float16][k % 4])
        elif t is not None and op == "values" and t.numel():
            tensors[name] = t.clone().flatten().index_fill_(0, torch.tensor([k % t.numel()]),
                                                          [2**40 if t.dtype != torch.float16 else 6e4,
                                                           -1, float("nan"), 0][k % 4]
                                                          if t.is_floating_point() else [-1, 2**33, 0, 255][k % 4]
                                                          if t.dtype != torch.uint8 else [0, 255][k % 2]).view(t.shape)
    return tensors


@fuzzer(1200, ops=st.lists(st.tuples(st.integers(0, 1000),
                                     st.sampled_from(["drop", "add", "reshape", "dtype", "values"]),
                                     st.integers(0, 1000)), min_size=1, max_size=3),
        mutations=st.lists(MUTATION, max_size=2))
def mutated_tensors_behind_a_matching_sha(ckpt, ops, mutations):
    """The SHA-256 is recomputed, so the tensors file's contents reach every structural check."""
    count()
    tensors = retensor(store_tensors.load_tensors_bytes(ckpt["tensors"], "valid"), ops)
    data = mutate(store_tensors.serialize_tensors(tensors), mutations) if mutations else \
        store_tensors.serialize_tensors(tensors)
    m = json.loads(json.dumps(ckpt["manifest"]))
    m["files"] = {ckpt["name"]: files.sha256_bytes(data)}
    load(ckpt, json.dumps(m).encode(), data)


@fuzzer(1000, mutations=st.lists(MUTATION, min_size=1, max_size=4))
def mutated_model_files(ckpt, mutations):
    count()
    p = ckpt["run"] / "fuzzed-best.safetensors"
    p.write_bytes(mutate(ckpt["best"], mutations))
    model, _, _ = tiny.fresh_parts(ckpt["cfg"])
    refused(rundir.load_parameters, model, p)


@fuzzer(300, at=st.integers(0, 2**20), bit=st.integers(0, 7))
def flipped_bytes_behind_the_original_manifest(ckpt, at, bit):
    """One bit flipped anywhere in the tensors file (header or data), the manifest as written (its SHA-256
    the original file's): every case must be refused."""
    count()
    data = bytearray(ckpt["tensors"])
    data[at % len(data)] ^= 1 << bit
    assert load(ckpt, ckpt["manifest_text"].encode(), bytes(data)), f"byte {at % len(data)} bit {bit} accepted"


# fuzzer -> the least share of its cases that must be refused (1.0: every case; >0: some, so that a loader
# that accepts everything fails; 0: the input may be valid, e.g. a flipped bit in a float of a model file)
FUZZERS = {mutated_safetensors_bytes: 0.5, forged_safetensors_headers: 0.9, mutated_manifest_fields: 0.5,
           mutated_manifest_text: 0.9, mutated_tensors_behind_a_matching_sha: 0.5, mutated_model_files: 0.5,
           flipped_bytes_behind_the_original_manifest: 1.0}


@pytest.mark.parametrize("fuzz", list(FUZZERS), ids=lambda f: f.__name__)
def test_fuzzer(ckpt, fuzz):
    """Whatever the input, the loader returns or raises CheckpointError; every case ran (a filtered or
    exhausted strategy would run fewer: this counts them); at least the fuzzer's share of cases refused."""
    COUNT["cases"] = COUNT["refused"] = 0
    fuzz(ckpt)
    n, r = COUNT["cases"], COUNT["refused"]
    assert n >= fuzz.cases, f"{fuzz.__name__}: {n} of {fuzz.cases} cases ran"
    assert r >= FUZZERS[fuzz] * n and r > 0, f"{fuzz.__name__}: {r} of {n} cases refused"
    RAN[fuzz.__name__] = n
    print(f"{fuzz.__name__}: {r} of {n} cases refused")


def test_more_than_10000_cases():
    """The cases the fuzzers above ran in this session, counted as they ran (not their declared numbers)."""
    if len(RAN) < len(FUZZERS):
        pytest.skip("counts the cases of the fuzzers run before it in this session; run the whole module")
    assert sum(RAN.values()) > 10_000, RAN


def test_the_untouched_checkpoint_loads(ckpt):
    """The control: the refusals above are of the mutations, not of every checkpoint."""
    assert not load(ckpt, ckpt["manifest_text"].encode(), ckpt["tensors"])
    model, _, _ = tiny.fresh_parts(ckpt["cfg"])
    assert not refused(rundir.load_parameters, model, ckpt["run"] / "best.safetensors")
    assert store_tensors.load_tensors_bytes(ckpt["tensors"], "valid")


def _entry(data: bytes) -> dict:
    """The first tensor's header entry of a safetensors file, and the header's length."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    return {"header": header, "name": name, "body": data[8 + n:]}


def test_forged_headers_are_each_refused(ckpt):
    """Headers that lie about the data, each of which must be refused before anything is allocated."""
    e = _entry(ckpt["tensors"])
    h, name, body = e["header"], e["name"], e["body"]

    def forge(**change):
        header = json.loads(json.dumps(h))
        header[name] = {**header[name], **change}
        return forged(header, body, 0)

    cases = {
        "huge shape": forge(shape=[2**40], data_offsets=[0, 4 * 2**40]),
        "shape larger than its bytes": forge(shape=[10**6]),
        "offsets past the end": forge(data_offsets=[0, len(body) + 4]),
        "negative offset": forge(data_offsets=[-4, 0]),
        "unknown dtype": forge(dtype="F31"),
        "negative dimension": forge(shape=[-1]),
        "overlapping tensors": forged({**h, "again": dict(h[name])}, body, 0),
        "header longer than the file": struct.pack("<Q", len(ckpt["tensors"]) * 2) + ckpt["tensors"][8:],
        "header not JSON": struct.pack("<Q", 4) + b"{{{{" + body,
    }
    refusals = [k for k, data in cases.items() if check_tensors(data)]
    assert refusals == list(cases), f"accepted: {sorted(set(cases) - set(refusals))}"


def test_a_manifest_naming_a_file_outside_the_folder_is_refused(ckpt):
    """The manifest's file entry must name a checkpoint file in checkpoints/ itself, even with its SHA-256
    right: a path up, an absolute path, another name, a NUL."""
    run = ckpt["run"]
    outside = run / "ckpt-outside.safetensors"  # a valid tensors file, one folder up
    outside.write_bytes(ckpt["tensors"])
    sha = files.sha256_bytes(ckpt["tensors"])
    names = ["../ckpt-outside.safetensors", str(outside), "ckpt-x/../../ckpt-outside.safetensors",
             "ckpt-" + "../" * 3 + "ckpt-outside.safetensors", "best.safetensors", "../best.safetensors",
             ckpt["name"] + "\0", "ckpt-\\..\\ckpt-outside.safetensors"]
    refusals = 0
    for name in names:
        m = json.loads(ckpt["manifest_text"])
        m["files"] = {name: sha}
        refusals += load(ckpt, json.dumps(m).encode(), ckpt["tensors"])
    assert refusals == len(names)
