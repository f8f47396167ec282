"""IDX reader/writer: round trips, and every kind of damaged or hostile file -> DataError naming it."""

from __future__ import annotations

import gzip
import hashlib
import time
import tracemalloc
import zlib

import numpy as np
import pytest

from deeptut.data.idx import MNIST_SHA256, parse_idx, read_idx, read_labels, write_idx
from deeptut.errors import DataError

NAME = "train-images-idx3-ubyte"


def raw_idx(arr: np.ndarray, tmp_path) -> bytes:
    write_idx(tmp_path / "tmp.idx", arr)
    return (tmp_path / "tmp.idx").read_bytes()


def check_refused(tmp_path, data: bytes, *words: str, name: str = NAME, **kwargs) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError) as e:
        read_labels(path, **kwargs) if "labels" in name else read_idx(path, **kwargs)
    msg = str(e.value)
    assert name in msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,shape", [("u1", (5, 28, 28)), ("i1", (7,)), (">i2", (3, 4)), ("<i4", (2, 3, 4)),
                                         ("f4", (6, 2)), (">f8", (1, 1, 1, 3))])
def test_round_trip(tmp_path, dtype, shape, gz):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr, gzip=gz)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype).newbyteorder("=") and back.flags.writeable
    np.testing.assert_array_equal(back, arr)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", arr)  # raw despite the name
    write_idx(tmp_path / "labels.raw", arr, gzip=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.raw"), arr)


def test_header_is_big_endian(tmp_path):
    data = raw_idx(np.array([[1, 2, 3]], dtype=">i2"), tmp_path)
    assert data == bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 1, 0, 2, 0, 3])


def test_writer_refuses_unsupported_arrays(tmp_path):
    for bad in (np.zeros(3, bool), np.zeros(3, complex), np.zeros(3, np.uint16), np.array(5, np.uint8)):
        with pytest.raises(DataError, match="cannot write"):
            write_idx(tmp_path / "x", bad)


def test_labels_are_int64_and_checked(tmp_path):
    write_idx(tmp_path / "ok-labels", np.array([0, 9, 3], np.uint8))
    y = read_labels(tmp_path / "ok-labels")
    assert y.dtype == np.int64 and y.tolist() == [0, 9, 3]
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 10, 3, 200], np.uint8), gzip=True)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 2 label\(s\) outside 0..9 \(first: 10\)"):
        read_labels(tmp_path / "t10k-labels-idx1-ubyte")
    write_idx(tmp_path / "img-labels", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="img-labels: not a label file"):
        read_labels(tmp_path / "img-labels")


# --- damaged files -------------------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path) -> bytes:
    return raw_idx(np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8), tmp_path)


def test_truncated_raw(tmp_path, images):
    msg = check_refused(tmp_path, images[:-100], "truncated", "3x28x28", "2352 bytes", "has 2252")
    assert msg.startswith(str(tmp_path / NAME))


def test_truncated_inside_gzip(tmp_path, images):
    check_refused(tmp_path, gzip.compress(images[:-1]), "truncated", "has 2351")


def test_truncated_gzip_stream(tmp_path, images):
    whole = gzip.compress(images)
    for cut in (len(whole) - 4, len(whole) // 2, 11):
        check_refused(tmp_path, whole[:cut], "gzip")


def test_truncated_header(tmp_path, images):
    check_refused(tmp_path, images[:2], "truncated")
    check_refused(tmp_path, images[:9], "truncated", "3 dimensions")
    check_refused(tmp_path, gzip.compress(images[:9]), "truncated")
    check_refused(tmp_path, b"", "not an IDX file")


def test_trailing_bytes(tmp_path, images):
    check_refused(tmp_path, images + b"\0", "trailing data", "has 2353")
    check_refused(tmp_path, gzip.compress(images + b"extra"), "trailing data")


def test_wrong_magic(tmp_path, images):
    check_refused(tmp_path, b"\x01" + images[1:], "not an IDX file", "01 00 08 03")
    check_refused(tmp_path, b"PK\x03\x04" + images[4:], "not an IDX file")


def test_wrong_type_code(tmp_path, images):
    check_refused(tmp_path, images[:2] + b"\x07" + images[3:], "unknown IDX type code 0x07")


def test_wrong_ndim(tmp_path, images):
    check_refused(tmp_path, images[:3] + b"\x00" + images[4:], "0 dimensions")
    # one dimension fewer: the header swallows 4 data bytes, and the length no longer adds up
    check_refused(tmp_path, images[:3] + b"\x02" + images[4:], "trailing data")
    check_refused(tmp_path, images[:3] + b"\x04" + images[4:], "3x28x28x", "limit")  # pixels as a 4th size


def test_label_file_with_image_header(tmp_path, images):
    check_refused(tmp_path, images, "not a label file", "3x28x28", name="train-labels-idx1-ubyte")


def test_zero_and_huge_dimensions(tmp_path):
    check_refused(tmp_path, bytes([0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 5]), "zero dimension", "0x5")
    big = bytes([0, 0, 0x0E, 3]) + b"\xff\xff\xff\xff" * 3  # (2^32-1)^3 doubles: overflows int64
    t = time.perf_counter()
    check_refused(tmp_path, big + bytes(100), "more than the", "limit")
    check_refused(tmp_path, gzip.compress(big + bytes(100)), "more than the", "limit")
    assert time.perf_counter() - t < 1
    many = bytes([0, 0, 8, 255]) + b"\x00\x00\x00\x02" * 255  # 2^255 bytes
    check_refused(tmp_path, many, "limit")


def test_declared_size_over_caller_limit(tmp_path, images):
    check_refused(tmp_path, gzip.compress(images), "limit", max_decompressed=1000)
    check_refused(tmp_path, images, "limit", max_decompressed=1000)


def test_corrupt_gzip(tmp_path, images):
    whole = bytearray(gzip.compress(images))
    whole[len(whole) // 2] ^= 0xFF
    check_refused(tmp_path, bytes(whole), "corrupt gzip")
    crc = bytearray(gzip.compress(images))
    crc[-6] ^= 1  # the CRC-32 of the content
    check_refused(tmp_path, bytes(crc), "corrupt gzip")


def test_extra_gzip_member_and_stray_bytes(tmp_path, images):
    one = gzip.compress(images)
    assert gzip.decompress(one + gzip.compress(b"x")) == images + b"x"  # what Python's gzip would accept
    check_refused(tmp_path, one + gzip.compress(b"x"), "second gzip member")
    check_refused(tmp_path, one + b"\0\0\0\0", "4 stray bytes after the end of the gzip stream")


def test_checksum(tmp_path, images):
    path = tmp_path / NAME
    path.write_bytes(gzip.compress(images))
    good = hashlib.sha256(images).hexdigest()
    assert read_idx(path, expected_sha256=good).shape == (3, 28, 28)
    assert read_idx(path, expected_sha256=good.upper()).shape == (3, 28, 28)
    changed = bytearray(images)
    changed[-1] ^= 1
    check_refused(tmp_path, bytes(changed), "checksum mismatch", good, expected_sha256=good)
    check_refused(tmp_path, gzip.compress(bytes(changed)), "checksum mismatch", expected_sha256=good)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(DataError, match="nope-idx1-ubyte: cannot read"):
        read_idx(tmp_path / "nope-idx1-ubyte")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path)  # a folder


def _bomb(declared: bytes, zero_mib: int) -> bytes:
    """A gzip stream: `declared` (an IDX header) then zero_mib MiB of zeros, built from one repeated
    full-flush block so that making it is instant (its CRC is wrong: a reader must stop long before)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = c.compress(declared) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * zero_mib + c.flush()


def test_decompression_bomb_is_stopped_early(tmp_path):
    data = _bomb(bytes([0, 0, 8, 1, 0, 0, 0, 10]), 4096)  # declares 10 bytes, inflates to 4 GiB
    assert len(data) < 5_000_000
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(DataError, match="bomb-labels.*trailing data"):
        parse_idx(data, "bomb-labels")
    took = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 1 and peak < 32 * 2**20  # the input and copies of it, not the 4 GiB it inflates to


def test_decompression_bomb_within_declared_size_hits_the_cap(tmp_path):
    data = _bomb(bytes([0, 0, 8, 1]) + (300 << 20).to_bytes(4, "big"), 300)  # honest 300 MiB of zeros
    t = time.perf_counter()
    with pytest.raises(DataError, match="limit"):
        parse_idx(data, "zeros")
    assert time.perf_counter() - t < 1


def test_parse_idx_names_source():
    with pytest.raises(DataError, match="^somewhere/x.gz: "):
        parse_idx(b"\x1f\x8bnot really", "somewhere/x.gz")


def test_bundled_mnist_checksums():
    from deeptut.data.datasets import REPO_DATA

    for f, sha in MNIST_SHA256.items():
        arr = read_idx(REPO_DATA / "mnist" / f"{f}.gz", expected_sha256=sha)
        assert arr.shape[0] == (60000 if f.startswith("train") else 10000)
