"""The fused C logistic step (deeptut.ckernels, csrc/logistic_step.c) against the numpy step, and its fallback.

Tolerance: both are float32 with different summation orders (the C kernel sums x_blk . W along d in
8-lane vectors and the batch in fixed parts; OpenBLAS blocks its own way), so after a few SGD steps the
parameters agree to rtol 1e-5 / atol 1e-6 and the costs to rel 1e-5 (float32 epsilon is 1.2e-7; a
gradient sum over 600 rows of 784 products loses a few digits in its last bits, not more).
"""

import numpy as np
import pytest
import torch

from deeptut.accel.cpu import ckernels
from deeptut.accel.cpu.evaluate import LogisticErrors
from deeptut.accel.cpu.fused import LogisticFusedStep
from deeptut.config import TrainConfig
from synthetic import random_batch, random_logistic, sparse_batch

needs_c = pytest.mark.skipif(ckernels.logistic_step() is None, reason=f"no C kernel: {ckernels.last_error}")


def _batch(n, seed, n_in=784):
    return random_batch(n, seed, n_in)


def _model(seed=1, n_in=784):
    return random_logistic(seed, n_in)


def _run(n, L1_reg, L2_reg, use_c, threads, steps=5, n_in=784):
    torch.set_num_threads(threads)
    m = _model(n_in=n_in)
    step = LogisticFusedStep(m, TrainConfig(batch_size=n, L1_reg=L1_reg, L2_reg=L2_reg), use_ckernel=use_c)
    assert (step._c is not None) == use_c
    costs = [step(*_batch(n, i, n_in), 0.13) for i in range(steps)]
    return costs, m.W.detach().clone(), m.b.detach().clone()


@pytest.fixture(autouse=True)
def _restore_threads():
    t = torch.get_num_threads()
    yield
    torch.set_num_threads(t)


@needs_c
@pytest.mark.parametrize("n,L1_reg,L2_reg", [(600, 0.0, 0.0), (600, 1e-3, 1e-4), (60, 0.0, 1e-2),
                                             (13, 1e-3, 0.0), (1, 0.0, 0.0), (601, 0.0, 0.0)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_c_step_matches_numpy_step(n, L1_reg, L2_reg, threads):
    """Several batch sizes (not multiples of the 8-row block or of the parts), L1/L2, thread counts."""
    cc, Wc, bc = _run(n, L1_reg, L2_reg, True, threads)
    cn, Wn, bn = _run(n, L1_reg, L2_reg, False, threads)
    assert cc == pytest.approx(cn, rel=1e-5)
    np.testing.assert_allclose(Wc.numpy(), Wn.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bc.numpy(), bn.numpy(), rtol=1e-5, atol=1e-6)


@needs_c
def test_c_step_other_input_width():
    """d not a multiple of the vector width: the scalar tail."""
    cc, Wc, bc = _run(37, 1e-3, 1e-4, True, 2, n_in=29)
    cn, Wn, bn = _run(37, 1e-3, 1e-4, False, 2, n_in=29)
    assert cc == pytest.approx(cn, rel=1e-5)
    np.testing.assert_allclose(Wc.numpy(), Wn.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bc.numpy(), bn.numpy(), rtol=1e-5, atol=1e-6)


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
def test_c_step_deterministic(threads):
    a = _run(600, 1e-3, 1e-4, True, threads, steps=10)
    b = _run(600, 1e-3, 1e-4, True, threads, steps=10)
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


@needs_c
def test_c_step_same_bits_whether_the_worker_spins_or_sleeps():
    """pool.h: an idle worker spins SPIN pauses (~10-60 us), then sleeps until woken. Steps back to back (it
    may still be spinning, and claims parts) and steps 5 ms apart (it is asleep when the step starts) give
    the same bits: the parts are fixed, whoever computes them."""
    import time

    def run(pause_s):
        torch.set_num_threads(2)
        m = _model()
        step = LogisticFusedStep(m, TrainConfig(batch_size=600), use_ckernel=True)
        costs = []
        for i in range(6):
            costs.append(step(*_batch(600, i), 0.13))
            time.sleep(pause_s)
        return costs, m.W.detach().clone(), m.b.detach().clone()

    a, b = run(0.0), run(0.005)
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


@needs_c
def test_c_step_bad_label_raises():
    m = _model()
    step = LogisticFusedStep(m, TrainConfig(batch_size=4))
    x, y = _batch(4, 0)
    y[2] = 10
    with pytest.raises(IndexError):
        step(x, y, 0.1)


def test_fallback_without_compiler(monkeypatch, tmp_path):
    """No compiler (and nothing cached under that compiler's key): the numpy path, no crash, no output."""
    monkeypatch.setattr(ckernels, "COMPILER", "deeptut-no-such-cc")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ckernels.clear_cache()
    try:
        assert ckernels.logistic_step() is None
        m = _model()
        step = LogisticFusedStep(m, TrainConfig(batch_size=60))
        assert step._c is None
        assert np.isfinite(step(*_batch(60, 0), 0.13))
    finally:
        ckernels.clear_cache()


def test_disabled_by_env(monkeypatch):
    monkeypatch.setenv("DEEPTUT_NO_CKERNELS", "1")
    ckernels.clear_cache()
    try:
        assert ckernels.logistic_step() is None
    finally:
        ckernels.clear_cache()


@needs_c
def test_builds_when_cache_dir_unwritable(monkeypatch, tmp_path):
    """$XDG_CACHE_HOME not writable: built in a private folder under the temp dir instead."""
    blocker = tmp_path / "a-file"  # a folder under a plain file cannot be made, not even by root
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    ckernels.clear_cache()
    try:
        assert ckernels.logistic_step() is not None
        assert list((tmp_path / "tmp").glob("deeptut-kernels-*/logistic_step-*.so"))
    finally:
        ckernels.clear_cache()


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_in", [784, 29, 16])
def test_c_step_sparse_rows_match_numpy(threads, n_in):
    """Rows of mostly zeros (the case the kernel compacts), widths with and without a vector tail."""
    torch.set_num_threads(threads)
    out = []
    for use_c in (True, False):
        m = _model(n_in=n_in)
        step = LogisticFusedStep(m, TrainConfig(batch_size=50, L2_reg=1e-4), use_ckernel=use_c)
        costs = [step(*sparse_batch(50, i, n_in), 0.13) for i in range(5)]
        out.append((costs, m.W.detach().clone(), m.b.detach().clone()))
    (cc, Wc, bc), (cn, Wn, bn) = out
    assert cc == pytest.approx(cn, rel=1e-5)
    np.testing.assert_allclose(Wc.numpy(), Wn.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bc.numpy(), bn.numpy(), rtol=1e-5, atol=1e-6)


def _epochs(step, x, y, n_batches, batch, epochs):
    costs = []
    for _ in range(epochs):
        for i in range(n_batches):
            costs.append(step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch], 0.13))
    return costs


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
def test_packed_split_gives_the_scanned_bits(monkeypatch, threads):
    """Epochs over one split: packed after the first pass, and bit-identical to scanning every time."""
    from deeptut.accel.cpu.packed import PackCache

    torch.set_num_threads(threads)
    x, y = sparse_batch(400, 7)
    runs = []
    for packing in (True, False):
        if not packing:
            monkeypatch.setattr(PackCache, "args", lambda self, x: PackCache.NONE)
        m = _model()
        step = LogisticFusedStep(m, TrainConfig(batch_size=100))
        costs = _epochs(step, x, y, 4, 100, 3)
        runs.append((costs, m.W.detach().clone(), m.b.detach().clone()))
        if packing:
            assert len(step._pack._packed) == 1  # the split was packed
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])


@needs_c
def test_pack_policy():
    """A tensor is packed after a whole pass over its rows; one-off tensors never are; a dense one is not
    worth packing; an in-place change through torch drops the packed copy."""
    from deeptut.accel.cpu.packed import PackCache

    c = PackCache(ckernels.logistic_step())
    x, _ = sparse_batch(100, 1)
    assert c.args(x[:60]) == PackCache.NONE and c.args(x[60:]) == PackCache.NONE  # 100 rows: one pass
    ptr, idx, val, row0 = c.args(x[40:80])  # the next use: packed
    assert ptr is not None and row0 == 40
    x.mul_(1.0)  # an in-place change: counted afresh, then packed again from the current data
    assert c.args(x) == PackCache.NONE and not c._packed
    assert c.args(x[:10])[0] is not None and len(c._packed) == 1
    for seed in range(5):  # one-off copies, used once each (a shuffled epoch's), stay unpacked
        assert c.args(sparse_batch(100, seed)[0]) == PackCache.NONE
    dense, _ = random_batch(100, 0)
    for _ in range(3):
        assert c.args(dense) == PackCache.NONE  # packed form would not be smaller
    assert c.args(torch.zeros(10, 784, dtype=torch.float64)) == PackCache.NONE


@needs_c
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_c_errors_match_numpy(threads):
    """The evaluation kernel: argmax(x W + b) != y as numpy computes it, for dense, sparse and tied rows,
    packed or not."""
    from deeptut.accel import cpu_evaluator
    from deeptut.data.device import DeviceSplit

    torch.set_num_threads(threads)
    m = _model()
    ev = cpu_evaluator(m)
    assert ev is not None
    for x, y in (_batch(257, 3), sparse_batch(300, 4)):
        split = DeviceSplit(x, y)
        want = (x.numpy() @ m.W.detach().numpy() + m.b.detach().numpy()).argmax(1) != y.numpy()
        for _ in range(3):  # the later calls use the packed split
            got = ev.misclassified(split, len(x) - 7, 0, 1)
            np.testing.assert_array_equal(got.numpy(), want[:len(x) - 7])
    zero = _model()
    with torch.no_grad():
        zero.W.zero_()
        zero.b.zero_()
    x, y = sparse_batch(40, 5)
    x[3, 5] = float("nan")  # NaN logits: numpy's argmax is the first NaN, class 0
    got = cpu_evaluator(zero).misclassified(DeviceSplit(x, y), 40, 0, 1)
    np.testing.assert_array_equal(got.numpy(), y.numpy() != 0)  # all tied (or NaN): class 0


@needs_c
def test_c_step_too_wide_falls_back_to_numpy():
    """Inputs wider than the kernel's uint16 pixel index: the numpy step, same arithmetic."""
    m = _model(n_in=70_000)
    step = LogisticFusedStep(m, TrainConfig(batch_size=2))
    x, y = sparse_batch(2, 0, n_in=70_000)
    assert step._c_call(x, y, 0.1) is None
    assert np.isfinite(step(x, y, 0.1))


@needs_c
def test_portable_build_matches_numpy(monkeypatch, tmp_path):
    """The kernel built without -march=native (no AVX-512: the plain-C scan of nonzeros, vectors of 16
    emulated by the compiler), as on a CPU the native flags do not fit."""
    monkeypatch.setattr(ckernels, "FLAG_SETS", (("-O3",),))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ckernels.clear_cache()
    try:
        assert ckernels.logistic_step() is not None
        test_c_step_sparse_rows_match_numpy(2, 29)
        test_c_step_sparse_rows_match_numpy(1, 784)
        test_packed_split_gives_the_scanned_bits(monkeypatch, 2)
    finally:
        ckernels.clear_cache()


def test_sparse_false_gives_the_numpy_step():
    from deeptut.accel import make_train_step

    cpu = torch.device("cpu")
    for sparse, has_c in ((False, False), (True, ckernels.logistic_step() is not None)):
        step = make_train_step(_model(), TrainConfig(sparse=sparse), cpu)
        assert isinstance(step, LogisticFusedStep) and (step._c is not None) == has_c
        # evaluation follows the step's arithmetic: the C kernel's, or numpy's product
        assert isinstance(step.evaluator, LogisticErrors) == has_c and step.evaluator is not None


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
def test_paired_registers_give_the_generic_vectors_bits(monkeypatch, threads):
    """csrc/logistic_step.c's AVX2 loops (8-lane register pairs, where GCC would move 16-lane vectors
    through the stack) against the generic 16-lane code, built with -DDEEPTUT_GENERIC_VECTORS: the same
    costs, parameters and mistakes, bit for bit, scanned and packed, at 10 classes (the paired loops) and 20
    (the generic ones in both)."""
    import ctypes

    from deeptut.accel.cpu.packed import pack_array

    paired = ckernels.logistic_step()
    ckernels.clear_cache()
    monkeypatch.setattr(ckernels, "BASE_FLAGS", ckernels.BASE_FLAGS + ("-DDEEPTUT_GENERIC_VECTORS",))
    generic = ckernels.logistic_step()
    ckernels.clear_cache()
    assert generic is not None and generic is not paired
    x, _ = sparse_batch(400, 3)
    x = np.ascontiguousarray(x.numpy())
    rng = np.random.default_rng(0)
    for k in (10, 20):
        y = rng.integers(0, k, len(x)).astype(np.int64)
        runs = []
        for f in (paired, generic):
            packed = pack_array(f, x)
            W, b = np.zeros((784, k), np.float32), np.zeros(k, np.float32)
            sc = ckernels.aligned_buffer(f.scratch_bytes(784, k, threads))
            cost, costs = ctypes.c_double(), []
            for step in range(8):
                j = (step % 4) * 100
                pk = packed.args(j) if step >= 4 and packed else (None, None, None, 0)
                assert f(x[j:].ctypes.data, y[j:].ctypes.data, 100, 784, k, W.ctypes.data, b.ctypes.data,
                         sc.ctypes.data, threads, 0.13, 1e-4, 1e-3, ctypes.byref(cost), *pk) == 0
                costs.append(cost.value)
            wrong = np.empty(len(x), np.uint8)
            sc1 = ckernels.aligned_buffer(f.scratch_bytes(784, k, 1))
            assert f.errors(x.ctypes.data, y.ctypes.data, len(x), 784, k, W.ctypes.data, b.ctypes.data,
                            sc1.ctypes.data, threads, wrong.ctypes.data, *packed.args(0)) == 0
            runs.append((costs, W.view(np.uint32).copy(), b.view(np.uint32).copy(), wrong))
        (c1, W1, b1, w1), (c2, W2, b2, w2) = runs
        assert c1 == c2 and np.array_equal(W1, W2) and np.array_equal(b1, b2) and np.array_equal(w1, w2), k
        assert 0 < w1.mean() < 1  # a real evaluation: some right, some wrong
