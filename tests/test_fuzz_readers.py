"""Fuzzing the IDX and pickle readers with mutated valid files (bit flips, truncations, insertions,
deletions, overwrites; on the raw bytes and on gzip wrappers): whatever the bytes, a reader either
returns arrays or raises a DeeptutError -- never a numpy, zlib, pickle, EOF or Memory error.

Derandomized, so a CI run is reproducible; about 14,000 cases in all, 15-30 s on 2 cores.
Run with -s to see the summary line.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from data_helpers import py2_pickle, small_splits
from deeptut.data.idx import as_labels, parse_idx, write_idx
from deeptut.data.legacy_pickle import parse_pkl
from deeptut.errors import DeeptutError

pytestmark = pytest.mark.slow  # ~15 s for the module (2 to 4 s a test)

N_IDX = 3334  # per IDX test; three of them
N_PKL = 2000  # per pickle test; two of them
LIMIT = 1 << 20  # bytes: keeps every case small and fast
COUNTS: Counter = Counter()

FUZZ = settings(max_examples=N_IDX, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _idx_bases(tmp) -> list[bytes]:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), rng.integers(0, 10, 7, dtype=np.uint8),
              rng.integers(-300, 300, (2, 3)).astype(">i2"), rng.standard_normal(4).astype(">f8")]
    out = []
    for arr in arrays:
        write_idx(tmp, arr)
        out.append(tmp.read_bytes())
    return out


def _pkl_bases() -> list[bytes]:
    s = small_splits(n=2, width=6)
    data = tuple((sp.x, sp.y) for sp in (s.train, s.valid, s.test))
    return [pickle.dumps(data, protocol=p) for p in (0, 2, 4, 5)] + [py2_pickle(s)]


ops = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]),
                         st.integers(0, 1 << 16), st.binary(min_size=1, max_size=6)), min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for kind, pos, extra in edits:
        p = pos % (len(b) + 1)
        if kind == "flip" and b:
            b[p % len(b)] ^= 1 << (extra[0] % 8)
        elif kind == "truncate":
            del b[p:]
        elif kind == "insert":
            b[p:p] = extra
        elif kind == "delete":
            del b[p:p + extra[0] % 16 + 1]
        elif kind == "set" and b:
            b[p % len(b)] = extra[0]
    return bytes(b)


def run_idx(data: bytes, check_sum: bool) -> None:
    sha = hashlib.sha256(data).hexdigest() if check_sum else None
    try:
        arr = parse_idx(data, "fuzz.idx", max_decompressed=LIMIT, expected_sha256=sha)
        if arr.ndim == 1:
            as_labels(arr, "fuzz.idx")
        COUNTS["idx loaded"] += 1
    except DeeptutError as e:
        assert "fuzz.idx" in str(e)
        COUNTS["idx refused"] += 1
    COUNTS["idx"] += 1


def run_pkl(data: bytes) -> None:
    try:
        parse_pkl(data, "fuzz.pkl", max_decompressed=LIMIT)
        COUNTS["pkl loaded"] += 1
    except DeeptutError as e:
        assert "fuzz.pkl" in str(e)
        COUNTS["pkl refused"] += 1
    COUNTS["pkl"] += 1


@pytest.fixture(scope="module")
def idx_bases(tmp_path_factory):
    return _idx_bases(tmp_path_factory.mktemp("fuzz") / "base.idx")


def _count(key: str, fn) -> int:
    before = COUNTS[key]
    fn()
    return COUNTS[key] - before


def test_fuzz_idx_raw(idx_bases):
    @FUZZ
    @given(st.sampled_from(idx_bases), ops, st.booleans())
    def case(base, edits, check_sum):
        run_idx(mutate(base, edits), check_sum)

    assert _count("idx", case) == N_IDX


def test_fuzz_idx_gzip_stream(idx_bases):
    """Mutations of the compressed bytes: mostly caught by zlib (bad data, CRC, length), some not."""
    gz = [gzip.compress(b, mtime=0) for b in idx_bases]

    @FUZZ
    @given(st.sampled_from(gz), ops)
    def case(base, edits):
        run_idx(mutate(base, edits), False)

    assert _count("idx", case) == N_IDX


def test_fuzz_idx_inside_gzip(idx_bases):
    """Mutations of the content, then gzipped correctly: the IDX checks behind the gzip layer."""
    @FUZZ
    @given(st.sampled_from(idx_bases), ops, st.binary(max_size=3))
    def case(base, edits, tail):
        gz = gzip.compress(mutate(base, edits), mtime=0)
        run_idx(gz + tail, False)  # tail: sometimes bytes after the gzip member

    assert _count("idx", case) == N_IDX


def test_fuzz_pickle_raw():
    bases = _pkl_bases()

    @settings(FUZZ, max_examples=N_PKL)
    @given(st.sampled_from(bases), ops)
    def case(base, edits):
        run_pkl(mutate(base, edits))

    assert _count("pkl", case) == N_PKL


def test_fuzz_pickle_gzipped():
    bases = _pkl_bases()

    @settings(FUZZ, max_examples=N_PKL)
    @given(st.sampled_from(bases), ops, st.booleans())
    def case(base, edits, inside):
        gz = gzip.compress(base, mtime=0)
        run_pkl(gzip.compress(mutate(base, edits), mtime=0) if inside else mutate(gz, edits))

    assert _count("pkl", case) == N_PKL


def test_fuzz_summary():
    """Runs last (file order): the totals of the tests above, when they all ran."""
    if COUNTS["idx"] < 3 * N_IDX or COUNTS["pkl"] < 2 * N_PKL:
        pytest.skip("only part of the fuzz tests ran")
    print(f"\nfuzz: {COUNTS['idx']} IDX + {COUNTS['pkl']} pickle cases, all raised only DeeptutError or loaded "
          f"(IDX: {COUNTS['idx loaded']} loaded, {COUNTS['idx refused']} refused; "
          f"pickle: {COUNTS['pkl loaded']} loaded, {COUNTS['pkl refused']} refused)")
    assert COUNTS["idx"] >= 10_000 and COUNTS["pkl"] >= 4_000
    assert COUNTS["idx refused"] > 0 and COUNTS["pkl refused"] > 0 and COUNTS["idx loaded"] > 0
