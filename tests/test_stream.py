"""Chunked streaming (data/stream.py): the same minibatches as the resident split, chunk logic, budgets, and
whole training runs that match the resident run bit for bit. Runs on CPU (synchronous copies); the CUDA
variant of the equality is in test_gpu_paths.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deeptut import config
from deeptut.config import parse_bytes
from deeptut.data.datasets import Split, Splits
from deeptut.data.device import DeviceSplit
from deeptut.data.stream import StreamSplit, blocks, make_split, row_chunks, split_bytes
from deeptut.errors import ConfigError
from deeptut.train.loop import epoch_permutation, evaluate, fit

ROW = 784 * 4 + 8  # bytes per example on the device: float32 pixels + int64 label


def _data(n: int, width: int = 784, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, width), dtype=np.float32), rng.integers(0, 10, n)


def _same(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --- budgets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("123", 123), (456, 456), ("512MB", 512 * 10**6), ("512mb", 512 * 10**6), ("2GiB", 2 * 2**30),
    ("1.5 GB", 1_500_000_000), ("64k", 64_000), ("3Mi", 3 * 2**20), ("1e6", 10**6)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["abc", "-5", "12XB", "", "inf", "nan"])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ConfigError, match="byte count|>= 0"):
        parse_bytes(bad, "device_memory_budget")


def test_config_budget_field():
    assert config.resolve("logistic", None, {"device_memory_budget": "2GB"}).device_memory_budget == "2GB"
    assert config.resolve("logistic", None, config.parse_overrides(["--device-memory-budget", "100"])) \
        .device_memory_budget == "100"
    assert config.from_dict({"device_memory_budget": 1000}).device_memory_budget == "1000"  # TOML integer
    with pytest.raises(ConfigError, match="device_memory_budget"):
        config.resolve("logistic", None, {"device_memory_budget": "lots"})
    for key, bad in (("graphs", "maybe"), ("amp", "fp8")):
        with pytest.raises(ConfigError, match=key):
            config.resolve("logistic", None, {key: bad})


def test_make_split_resident_or_streamed():
    x, y = _data(100)
    assert split_bytes(x) == 100 * ROW
    assert isinstance(make_split(x, y, "cpu", 0), DeviceSplit)
    assert isinstance(make_split(x, y, "cpu", 100 * ROW), DeviceSplit)
    assert isinstance(make_split(x, y, "cpu", 100 * ROW - 1), StreamSplit)


def test_budget_too_small_for_two_minibatches():
    x, y = _data(100)
    s = StreamSplit(x, y, "cpu", 2 * 10 * ROW - 1)
    with pytest.raises(ConfigError, match="too small"):
        s.minibatch(0, 10)
    assert s.minibatch(0, 9)[0].shape == (9, 784)


# --- the same minibatches as DeviceSplit ------------------------------------------------------------------


def test_sequential_epochs_match_and_each_chunk_loads_once():
    x, y = _data(1000)
    bs = 20
    ref = DeviceSplit(x, y)
    s = StreamSplit(x, y, "cpu", 2 * 7 * bs * ROW)  # two buffers of 7 minibatches: 8 chunks, the last short
    ring = s.buffers(bs)
    assert (ring.batches_per_chunk, ring.n_chunks) == (7, 8)
    for epoch in range(3):
        for i in range(s.n_batches(bs)):
            assert _same(s.minibatch(i, bs), ref.minibatch(i, bs)), (epoch, i)
    # chunk c+1 is prefetched when chunk c becomes current, and the last prefetches chunk 0: every chunk is
    # copied once per epoch, plus one prefetch of chunk 0 ahead of a next epoch
    assert ring.loads == 3 * 8 + 1


def test_chunks_keep_the_resident_address_alignment():
    """A chunk of minibatches spans a multiple of 256 bytes of x where possible, so minibatch i has the same
    address alignment (mod 256) in a buffer as in the resident split: cuBLAS then picks the same kernels."""
    x, y = _data(1000)
    s = StreamSplit(x, y, "cpu", 2 * 7 * 3 * ROW)  # batch 3: 9,408 bytes of x, 2^6 * 147: chunks of 4
    ring = s.buffers(3)
    assert ring.batches_per_chunk == 4 and (4 * 3 * 784 * 4) % 256 == 0
    ref = DeviceSplit(x, y)
    assert all(_same(s.minibatch(i, 3), ref.minibatch(i, 3)) for i in range(s.n_batches(3)))
    s = StreamSplit(x, y, "cpu", 2 * 3 * 3 * ROW)  # fewer than 4 fit: as many as fit
    assert s.buffers(3).batches_per_chunk == 3


def test_permuted_views_match_device_permuted():
    x, y = _data(1000)
    bs = 50
    ref = DeviceSplit(x, y)
    s = StreamSplit(x, y, "cpu", 2 * 3 * bs * ROW)
    for epoch in (1, 2):
        perm = epoch_permutation(1234, epoch, len(ref))
        a, b = s.permuted(perm), ref.permuted(perm)
        for i in range(a.n_batches(bs)):
            assert _same(a.minibatch(i, bs), b.minibatch(i, bs))
    p1, p2 = torch.randperm(1000), torch.randperm(1000)
    a, b = s.permuted(p1).permuted(p2), ref.permuted(p1).permuted(p2)  # composes like DeviceSplit
    assert all(_same(a.minibatch(i, bs), b.minibatch(i, bs)) for i in range(20))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), bs=st.integers(1, 40), per_buffer=st.integers(1, 9), shuffle=st.booleans(),
       order=st.sampled_from(["forward", "backward", "random"]))
def test_any_access_pattern_matches(n, bs, per_buffer, shuffle, order):
    x, y = _data(n, width=6, seed=n)
    row = 6 * 4 + 8
    ref = DeviceSplit(x, y)
    s = StreamSplit(x, y, "cpu", 2 * per_buffer * bs * row + 1)
    if shuffle:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
        ref, s = ref.permuted(perm), s.permuted(perm)
    idx = list(range(s.n_batches(bs)))
    if order == "backward":
        idx.reverse()
    elif order == "random":
        idx = [int(i) for i in np.random.default_rng(bs).integers(0, max(1, len(idx)), 2 * len(idx))] if idx else []
    for i in idx:
        assert _same(s.minibatch(i, bs), ref.minibatch(i, bs))


def test_blocks_stay_within_one_buffer_and_cover_the_range():
    x, y = _data(1000)
    bs = 10
    ref = DeviceSplit(x, y)
    s = StreamSplit(x, y, "cpu", 2 * 8 * bs * ROW)  # 8 minibatches per buffer
    got = [(xb.clone(), yb.clone(), nb) for xb, yb, nb in blocks(s, 5, 30, bs)]  # views: valid until reused
    assert [nb for _, _, nb in got] == [3, 8, 8, 8, 3]  # 5..7 | 8..15 | 16..23 | 24..31 | 32..34
    xs = torch.cat([xb for xb, _, _ in got])
    ys = torch.cat([yb for _, yb, _ in got])
    assert torch.equal(xs, ref.x[50:350]) and torch.equal(ys, ref.y[50:350])
    (xb, yb, nb), = blocks(ref, 5, 30, bs)  # a resident split: one block of views
    assert nb == 30 and xb.data_ptr() == ref.x[50].data_ptr()


@pytest.mark.parametrize("n", [1000, 999, 400, 37])
def test_row_chunks_for_evaluation(n):
    x, y = _data(1000)
    ref = DeviceSplit(x, y)
    s = StreamSplit(x, y, "cpu", 2 * 3 * 100 * ROW)  # 300 rows per buffer
    pieces = [(px.clone(), py.clone()) for px, py in row_chunks(s, n, 128, 100)]  # views: valid until reused
    assert all(len(px) <= 128 for px, _ in pieces)
    assert torch.equal(torch.cat([px for px, _ in pieces]), ref.x[:n])
    assert torch.equal(torch.cat([py for _, py in pieces]), ref.y[:n])


def test_evaluate_streamed_equals_resident():
    x, y = _data(1000)
    model = torch.nn.Linear(784, 10)
    for mode in ("tutorial", "full"):
        a = evaluate(model, DeviceSplit(x, y), 60, mode)
        b = evaluate(model, StreamSplit(x, y, "cpu", 2 * 4 * 60 * ROW), 60, mode)
        assert a == b


# --- whole runs ---------------------------------------------------------------------------------------


def _splits(n_train: int = 1200, n_eval: int = 300) -> Splits:
    (xt, yt), (xv, yv), (xs, ys) = _data(n_train, seed=1), _data(n_eval, seed=2), _data(n_eval, seed=3)
    return Splits(Split(xt, yt), Split(xv, yv), Split(xs, ys), "test", "mnist")


def _params(cfg: config.TrainConfig, data: Splits) -> tuple[dict, dict]:
    """The trained (best) parameters and the summary of a run."""
    import deeptut.models as models  # train/runner.py prepare builds the run's module with it

    captured = {}
    real = models.build_model

    def spy(*a, **k):
        captured["model"] = real(*a, **k)
        return captured["model"]

    models.build_model = spy
    try:
        summary = fit(cfg, data, None, quiet=True)
    finally:
        models.build_model = real
    return {k: v.clone() for k, v in captured["model"].state_dict().items()}, summary


@pytest.mark.parametrize("overrides", [
    {},  # the CPU fused logistic step
    {"shuffle": True},
    {"fast_step": False, "shuffle": True, "momentum": 0.9, "lr_schedule": "cosine"},  # AutogradStep
    {"graphs": "on"},  # the graph step's dense update, eagerly
    {"graphs": "on", "shuffle": True, "momentum": 0.5},  # the graph step's autograd update
    {"augment_shift": 2},  # each epoch's images moved (data/augment.py), chunk by chunk when streamed
    {"graphs": "on", "shuffle": True, "augment_shift": 1},
])
def test_streamed_run_is_identical_to_resident(overrides):
    data = _splits()
    # divergence off: momentum at the logistic preset's rate diverges on this data (cost ~8x chance), and the
    # comparison is of the arithmetic, which must agree all the same
    base = {"device": "cpu", "n_epochs": 3, "batch_size": 40, "patience": 10_000, "divergence": "off", **overrides}
    resident = config.resolve("logistic", None, base)
    streamed = config.resolve("logistic", None, {**base, "device_memory_budget": str(2 * 4 * 40 * ROW)})
    # the training split (1200 rows) streams through buffers of 4 minibatches; valid/test (300) stay resident
    p1, s1 = _params(resident, data)
    p2, s2 = _params(streamed, data)
    for k in p1:
        assert torch.equal(p1[k], p2[k]), k
    for key in ("best_validation_error", "test_error", "iterations", "best_iteration"):
        assert s1[key] == s2[key]


def test_streamed_valid_and_test_splits():
    data = _splits(600, 500)
    base = {"device": "cpu", "n_epochs": 2, "batch_size": 50}
    p1, s1 = _params(config.resolve("logistic", None, base), data)
    p2, s2 = _params(config.resolve("logistic", None, {**base, "device_memory_budget": str(2 * 2 * 50 * ROW)}),
                     data)  # every split streams
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert s1["best_validation_error"] == s2["best_validation_error"] and s1["test_error"] == s2["test_error"]


# --- pixels k / 256 cross the bus as bytes -----------------------------------------------------------------


def test_as_bytes_only_when_exact():
    from deeptut.data.stream import as_bytes

    x = torch.tensor([[0.0, 1 / 256, 128 / 256, 255 / 256]])
    assert torch.equal(as_bytes(x), torch.tensor([[0, 1, 128, 255]], dtype=torch.uint8))
    for bad in (1.0, -1 / 256, 0.5 / 256, float("nan"), float("inf")):
        assert as_bytes(torch.tensor([[0.0, bad]])) is None, bad
    assert as_bytes(x.double()) is None  # only float32 rows are scaled back exactly as stored
    xs, _ = _data(10)
    assert as_bytes(torch.from_numpy(xs)) is None  # arbitrary floats


@pytest.mark.parametrize("shuffled", [False, True])
def test_byte_transport_gives_the_resident_floats(shuffled):
    rng = np.random.default_rng(3)
    x = (rng.integers(0, 256, (500, 784)) / 256).astype(np.float32)
    y = rng.integers(0, 10, 500)
    bs = 25
    ref = DeviceSplit(x, y)
    s = StreamSplit(x, y, "cpu", 2 * 3 * bs * (ROW + 784))  # a byte staging row per float32 row
    assert s.shared.xq is not None and s.shared.xq.dtype == torch.uint8
    assert s.buffers(bs).batches_per_chunk == 3
    if shuffled:
        perm = epoch_permutation(7, 1, len(ref))
        s, ref = s.permuted(perm), ref.permuted(perm)
    for i in range(s.n_batches(bs)):
        assert _same(s.minibatch(i, bs), ref.minibatch(i, bs)), i


@pytest.mark.parametrize("shuffle,shift", [(False, 0), (True, 0), (True, 2)])
def test_byte_streamed_run_is_identical_to_resident(shuffle, shift):
    from synthetic import tiny_splits

    data = tiny_splits(1200, 300, 300)  # pixels at multiples of 1/256: the split streams as bytes
    base = {"device": "cpu", "n_epochs": 3, "batch_size": 40, "patience": 10_000, "shuffle": shuffle,
            "augment_shift": shift}
    p1, s1 = _params(config.resolve("logistic", None, base), data)
    p2, s2 = _params(config.resolve("logistic", None, {**base, "device_memory_budget": str(2 * 4 * 40 * ROW)}),
                     data)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert s1["best_validation_error"] == s2["best_validation_error"] and s1["test_error"] == s2["test_error"]
