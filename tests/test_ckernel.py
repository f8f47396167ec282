"""The fused C logistic step (deeptut.ckernels, csrc/logistic_step.c) against the numpy step, and its fallback.

Tolerance: both are float32 with different summation orders (the C kernel sums x_blk . W along d in
8-lane vectors and the batch in fixed parts; OpenBLAS blocks its own way), so after a few SGD steps the
parameters agree to rtol 1e-5 / atol 1e-6 and the costs to rel 1e-5 (float32 epsilon is 1.2e-7; a
gradient sum over 600 rows of 784 products loses a few digits in its last bits, not more).
"""

import numpy as np
import pytest
import torch

from deeptut import ckernels
from deeptut.config import TrainConfig
from deeptut.train.step import LogisticFusedStep
from synthetic import random_batch, random_logistic

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
