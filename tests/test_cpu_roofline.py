"""bench/cpu_roofline.py: the FLOP counts against hand counts, the bound table and the full-run extrapolation
on small fake inputs (no process is started, no torch is imported)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_cpu_roofline", ROOT / "bench" / "cpu_roofline.py")
roof = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(roof)


def test_products_by_hand():
    assert roof.mm(2, 3, 4) == 48
    # MLP step at batch 20: x@W1, h@W2, gW2, delta@W2^T, gW1 = 2 x 20*784*500 + 3 x 20*500*10, x 2 FLOPs
    assert roof.backprop_step(20, [784, 500, 10]) == 2 * 15_680_000 + 3 * 200_000 == 31_960_000
    assert roof.forward(20, [784, 500, 10]) == 15_880_000
    assert roof.da_step(20, 784, 500) == 4 * 15_680_000
    assert roof.rbm_step(1, 2, 3, k=15, persistent=True) == 36 * 12  # PCD-15: 2k + 6 products
    assert roof.rbm_step(1, 2, 3, k=1, persistent=False) == 6 * 12  # CD-1: 2k + 4


def test_logistic_one_epoch_by_hand():
    # 83 steps of x@W and x^T@delta (600 x 784 x 10: 9,408,000 FLOPs each), one validation of 16 minibatches
    f = roof.flops_logistic_sgd(n_epochs=1, test_evals=0)
    assert f == {"train": 83 * 2 * 9_408_000, "valid": 16 * 9_408_000, "test": 0,
                 "total": 1_561_728_000 + 150_528_000}
    # 30 epochs, a test after every validation unless told: 30 validations, 30 tests
    f30 = roof.flops_logistic_sgd()
    assert f30["valid"] == f30["test"] == 30 * 16 * 9_408_000
    assert roof.flops_logistic_sgd(test_evals=3)["test"] == 3 * 16 * 9_408_000
    # floor(10,000 / 25,000) = 0 validation minibatches; patience 2 -> validation_frequency 1: 2 validations
    tiny = roof.flops_logistic_sgd(n_epochs=1, batch_size=25_000, patience=2)
    assert tiny == {"train": 2 * 2 * 392_000_000, "valid": 0, "test": 0, "total": 1_568_000_000}


def test_mlp_da_rbm_by_hand():
    f = roof.flops_mlp(n_epochs=1, test_evals=1)
    assert f["train"] == 2500 * 31_960_000 and f["valid"] == f["test"] == 500 * 15_880_000
    assert f["total"] == 95_780_000_000
    # patience 1000 -> validation every min(2500, 500) = 500 steps: 5 per epoch
    assert roof.flops_mlp(n_epochs=1, patience=1000, test_evals=0)["valid"] == 5 * 500 * 15_880_000
    assert roof.flops_dA(n_epochs=1, runs=1)["total"] == 2500 * 4 * 15_680_000
    assert roof.flops_dA(n_epochs=2)["total"] == 4 * 2500 * 4 * 15_680_000  # 2 epochs x (0 %, 30 %)
    r = roof.flops_rbm(n_epochs=1, batch_size=300, n_chains=1, n_samples=1)
    assert r["train"] == 166 * 36 * 235_200_000 and r["sample"] == 1000 * 2 * 784_000


def test_stacks_by_hand():
    # one 1000-unit layer at batch 300: 166 pre-training steps of 4 x 300*784*1000 (470,400,000 FLOPs)
    s = roof.flops_SdA(pretraining_epochs=1, n_epochs=1, hidden_layers_sizes=(1000,), test_evals=0)
    assert s["pretrain"] == 166 * 4 * 470_400_000
    assert s["finetune"] == 166 * (2 * 470_400_000 + 3 * 6_000_000)  # no gradient into the data
    assert s["valid"] == 33 * (470_400_000 + 6_000_000) and s["test"] == 0
    assert s["total"] == 487_227_600_000
    # a second layer (1000 -> 500) also runs the first layer forward in each of its steps
    s2 = roof.flops_SdA(pretraining_epochs=1, n_epochs=0, hidden_layers_sizes=(1000, 500))
    assert s2["pretrain"] == 166 * 4 * 470_400_000 + 166 * (470_400_000 + 4 * 300_000_000)
    assert s2["finetune"] == s2["valid"] == 0
    d = roof.flops_DBN(pretraining_epochs=2, n_epochs=0, hidden_layers_sizes=(1000,))
    assert d["pretrain"] == 2 * 166 * 6 * 470_400_000


def _fake_peer() -> dict:
    return {"threads": 1, "machine_before": {"uptime": "load average: 1.0"}, "rows": [
        {"workload": "logistic_sgd", "what": "logistic_sgd, 30 epochs", "passes": [
            {"pass": 1, "peer_s": 6.0, "peer_rc": 0, "deeptut_s": 3.0, "deeptut_rc": 0,
             "peer_values": {"epoch 1 validation error": "9", "epoch 1 test error of best model": "9",
                             "epoch 2 test error of best model": "8"}},
            {"pass": 2, "peer_s": 5.0, "peer_rc": 0, "deeptut_s": 4.0, "deeptut_rc": 0, "peer_values": {}}]},
        {"workload": "dA", "what": "dA, 2 + 2 epochs", "passes": [
            {"pass": 1, "peer_s": 20.0, "peer_rc": 0, "deeptut_s": 1.0, "deeptut_rc": 2},
            {"pass": 2, "peer_s": 30.0, "peer_rc": 0, "deeptut_s": 10.0, "deeptut_rc": 0}]},
        {"workload": "SdA", "what": "SdA", "passes": [
            {"pass": 1, "peer_s": 40.0, "peer_rc": 0, "deeptut_s": 20.0, "deeptut_rc": 0, "peer_values": {}}]},
        {"workload": "hmc", "what": "hmc", "skipped": "no counterpart", "passes": [{"peer_s": 3.0, "peer_rc": 0}]},
    ]}


def test_bound_rows_on_fake_peer_json():
    rows = {r["workload"]: r for r in roof.bound_rows(_fake_peer(), 100.0, {("logistic_sgd", 2): 4})}
    assert set(rows) == {"logistic_sgd", "dA", "SdA"}  # hmc has no FLOP count
    lg = rows["logistic_sgd"]  # best passes: peer 5.0 (pass 2, its log counted 4 tests), deeptut 3.0
    assert lg["peer_s"] == 5.0 and lg["deeptut_s"] == 3.0 and lg["ratio"] == pytest.approx(5 / 3)
    assert lg["test_evals"] == 4 and not lg["test_evals_upper_bound"]
    assert lg["flops"] == roof.flops_logistic_sgd(test_evals=4)
    t = lg["flops"]["total"] / 100e9
    assert lg["t_peak_s"] == pytest.approx(t)
    assert lg["max_ratio"] == pytest.approx(5.0 / t) and lg["deeptut_frac"] == pytest.approx(t / 3.0)
    # without the log count, the peer's printed values give 2 test evaluations for pass 1
    lg1 = roof.bound_rows({"rows": [dict(_fake_peer()["rows"][0], passes=_fake_peer()["rows"][0]["passes"][:1])]},
                          100.0)[0]
    assert lg1["test_evals"] == 2
    da = rows["dA"]  # deeptut's failed pass (rc 2) is not used
    assert da["deeptut_s"] == 10.0 and da["peer_s"] == 20.0
    assert da["t_peak_s"] == pytest.approx(627.2e9 / 100e9)
    sda = rows["SdA"]  # no count anywhere: one test after every validation, marked as an upper bound
    assert sda["test_evals_upper_bound"] and sda["flops"]["test"] == sda["flops"]["valid"]
    table = roof.render_bound(list(rows.values()), 100.0)
    assert "| SdA | <= " in table and "1.67x" in table and table.count("\n") == 6


def test_extrapolation_and_full_row():
    e = roof.extrapolate({1: 10.0, 2: 14.0}, 100)
    assert e == {"per_epoch_s": 4.0, "intercept_s": 6.0, "full_s": 400.0}
    e3 = roof.extrapolate({1: 10.0, 2: 15.0, 3: 18.0}, 10)  # least squares: slope 4, intercept 6.333
    assert e3["per_epoch_s"] == pytest.approx(4.0) and e3["intercept_s"] == pytest.approx(19 / 3)
    assert roof.extrapolate({1: 10.0, 2: 9.0}, 10)["full_s"] is None  # noise: no estimate
    assert roof.extrapolate({1: 10.0}, 10)["full_s"] is None
    r = roof.full_row("dA", {1: 30.0, 2: 50.0}, {1: 12.0, 2: 20.0}, 100.0)
    assert r["peer"]["full_s"] == 300.0 and r["deeptut"]["full_s"] == 120.0 and r["ratio"] == 2.5
    assert r["full_gflop"] == pytest.approx(15 * 313.6)  # 15 epochs of both autoencoders
    assert r["deeptut_frac"] == pytest.approx(47.04 / 120.0)
    table = roof.render_full([r], 100.0)
    assert "| 2.50x |" in table and "39.2%" in table and "noise" not in table
    fast = roof.full_row("dA", {1: 30.0, 2: 50.0}, {1: 12.0, 2: 12.5}, 100.0)  # 7.5 s < 47 s at peak
    assert "(noise: > peak)" in roof.render_full([fast], 100.0)


def test_full_run_calls_and_compiledir(tmp_path):
    assert roof.FULL_RUNS["SdA"].peer_call.format(n=2, f=1) == \
        "import SdA; SdA.test_SdA(pretraining_epochs=2, training_epochs=1)"
    assert roof.FULL_RUNS["mlp"].n_full == 1000 and roof.FULL_RUNS["DBN"].n_full == 100
    assert roof.count_test_evals("epoch 1 ... test error of best model 9 %\nvalidation error\n"
                                 "     epoch 2, minibatch 1/1, test error of best model 8 %") == 2
    d = tmp_path / "compiledir_Linux"
    (d / "tmpa").mkdir(parents=True)
    (d / "lock_dir").mkdir()
    before = roof._compiled_entries(tmp_path)
    (d / "tmpb").mkdir()
    assert roof._compiled_entries(tmp_path) - before == {"compiledir_Linux/tmpb"}
    (tmp_path / "numba").mkdir()
    after = roof._compiled_entries(tmp_path)
    (tmp_path / "numba" / "f.nbc").touch()
    assert roof._compiled_entries(tmp_path) - after == {"numba/f.nbc"}
    dirs = roof._cache_dirs({"PYTENSOR_FLAGS": "floatX=float32,compiledir=/x/y,blas__ldflags=-lopenblas"})
    assert dirs == [Path("/x/y"), Path.home() / ".pytensor"]
