"""store/ (files, tensors, checkpoint) and the `last` checkpoint of train/state.py: atomic writes, bounded
and checked reads, what a checkpoint holds, and that loading refuses what does not belong to the run."""

from __future__ import annotations

import errno
import json
import os
import random
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tiny
from deeptut.errors import CheckpointError, DeeptutError
from deeptut.store import files, rundir, tensors
from deeptut.train import state as train_state
from deeptut.train.loop import fit

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)


# --- atomic writes ----------------------------------------------------------------------------------------


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "f.bin"
    files.atomic_write_bytes(p, b"old")
    files.atomic_write_bytes(p, b"new" * 1000)
    assert p.read_bytes() == b"new" * 1000
    assert [q.name for q in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("fail", ["write", "fsync", "replace"])
def test_a_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch, fail):
    p = tmp_path / "f.bin"
    files.atomic_write_bytes(p, b"old")

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(files.os, fail, boom)
    with pytest.raises(CheckpointError, match="No space left on device"):
        files.atomic_write_bytes(p, b"new")
    monkeypatch.undo()
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["f.bin"]


def test_writing_into_a_missing_directory_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot write"):
        files.atomic_write_bytes(tmp_path / "nope" / "f", b"x")


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".best.safetensors.abc.tmp").write_bytes(b"torn")
    (tmp_path / "keep.txt").write_text("x")
    files.remove_stale_temporaries(tmp_path)
    assert [q.name for q in tmp_path.iterdir()] == ["keep.txt"]


# --- safetensors: deterministic bytes, checked headers, bounded reads -------------------------------------


def test_serialized_tensors_are_deterministic_and_standard(tmp_path):
    t = {"W": torch.arange(12.0).reshape(3, 4), "b": torch.ones(4)}
    meta = {"model": "logistic", "format": "1", "zeta": "z", "alpha": "a"}
    blobs = {tensors.serialize_tensors(t, meta) for _ in range(20)}
    assert len(blobs) == 1  # safetensors alone writes metadata in hash-map order
    p = tmp_path / "t.safetensors"
    p.write_bytes(blobs.pop())
    loaded = load_file(p)
    assert torch.equal(loaded["W"], t["W"]) and torch.equal(loaded["b"], t["b"])
    assert tensors.tensor_metadata(p) == meta


def _safetensors(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def test_a_header_declaring_a_huge_tensor_is_refused_before_allocation(monkeypatch):
    def no_load(*a):
        raise AssertionError("the loader must not be reached")
    monkeypatch.setattr(tensors, "st_load", no_load)
    huge = _safetensors({"W": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}},
                        b"\0" * 16)
    with pytest.raises(CheckpointError, match="bad shape"):
        tensors.load_tensors_bytes(huge, "huge")
    beyond = _safetensors({"W": {"dtype": "F32", "shape": [4], "data_offsets": [0, 2**42]}}, b"\0" * 16)
    with pytest.raises(CheckpointError, match="outside the file"):
        tensors.load_tensors_bytes(beyond, "beyond")
    lying = _safetensors({"W": {"dtype": "F32", "shape": [8, 8], "data_offsets": [0, 16]}}, b"\0" * 16)
    with pytest.raises(CheckpointError, match="needs 256 bytes"):
        tensors.load_tensors_bytes(lying, "lying")
    overlap = _safetensors({"a": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]},
                            "b": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]}}, b"\0" * 16)
    with pytest.raises(CheckpointError, match="overlap"):
        tensors.load_tensors_bytes(overlap, "overlap")
    with pytest.raises(CheckpointError, match="header of"):
        tensors.load_tensors_bytes(struct.pack("<Q", 2**62) + b"{}", "header")


def test_truncated_and_bit_flipped_files(tmp_path):
    good = tensors.serialize_tensors({"W": torch.randn(8, 4)})
    for cut in (0, 5, 8, 20, len(good) - 1):
        with pytest.raises(CheckpointError):
            tensors.load_tensors_bytes(good[:cut], "cut")
    p = tmp_path / "t.safetensors"
    sha = files.sha256_bytes(good)
    flipped = bytearray(good)
    flipped[-3] ^= 0x10  # in the data: still a valid file, caught by the manifest's SHA-256
    p.write_bytes(bytes(flipped))
    tensors.load_tensors(p)
    with pytest.raises(CheckpointError, match="SHA-256"):
        tensors.load_tensors(p, expected_sha256=sha)


def test_oversized_files_are_refused_before_reading(tmp_path):
    p = tmp_path / "big.safetensors"
    with open(p, "wb") as f:
        f.truncate(64 * 2**30)  # sparse: 64 GiB that take no space
    with pytest.raises(CheckpointError, match="more than"):
        tensors.load_tensors(p)
    with pytest.raises(CheckpointError, match="more than"):
        files.read_json(p)


@pytest.mark.parametrize("text", [b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
                                  b"1" * 5000, b'{"a": NaN'])
def test_bad_json_is_a_checkpoint_error(tmp_path, text):
    p = tmp_path / "m.json"
    p.write_bytes(text)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        files.read_json(p)


# --- the `last` checkpoint ----------------------------------------------------------------------------------


@pytest.fixture
def momentum_run(tmp_path):
    cfg = tiny.tiny_config("momentum", device="cpu", n_epochs=3)
    fit(cfg, tiny.tiny_splits(), tmp_path, quiet=True)
    return cfg, tmp_path


def test_checkpoint_files_are_plain_safetensors_and_json(momentum_run):
    cfg, run = momentum_run
    manifest = json.loads((run / "checkpoints" / "last.json").read_text())
    (name, sha), = manifest["files"].items()
    tensors = load_file(run / "checkpoints" / name)  # no unpickler anywhere
    assert {"rng/torch", "rng/numpy_keys", "rng/python"} <= set(tensors)
    assert any(k.startswith("optimizer/") for k in tensors)  # momentum buffers
    assert {f"model/{k}" for k in ("W", "b")} <= set(tensors) and {"best/W", "best/b"} <= set(tensors)
    assert manifest["config"] == cfg.to_dict() and manifest["threads"] == 1
    assert manifest["loop"]["finished"] and manifest["loop"]["stopped"] == "n_epochs"
    assert manifest["data"] == train_state.data_fingerprint(tiny.tiny_splits())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted([name, "last.json"])


def test_save_and_load_restore_everything(tmp_path):
    cfg = tiny.tiny_config("momentum", device="cpu")
    model, step, stopper = tiny.fresh_parts(cfg)
    x, y = torch.randn(20, tiny.N_IN), torch.randint(0, tiny.N_OUT, (20,))
    for _ in range(3):
        step(x, y, 0.01)
    stopper.update(10, 0.3)
    torch.set_num_threads(1)
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    s = train_state.LoopState(epoch=2, next_minibatch=3, best_validation_loss=0.3, best_iter=10,
                              n_validations=4, cost_sum=1.25, cost_count=3, stopped="patience",
                              test_score=0.25)
    best = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    train_state.save_last(tmp_path, model, step, stopper, s, best, cfg)
    expected_draws = (random.random(), np.random.rand(), torch.rand(1))
    expected_params = {k: v.clone() for k, v in model.state_dict().items()}
    expected_opt = step.state_dict()

    torch.set_num_threads(2)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    model2, step2, stopper2 = tiny.fresh_parts(cfg)
    s2 = train_state.load_last(tmp_path, model2, step2, stopper2, cfg)
    assert torch.get_num_threads() == 1
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected_draws
    for k, v in model2.state_dict().items():
        assert torch.equal(v, expected_params[k]) and torch.equal(s2.best_params[k], best[k])
    o = step2.state_dict()["state"]
    assert all(torch.equal(o[i]["momentum_buffer"], expected_opt["state"][i]["momentum_buffer"]) for i in o)
    assert stopper2.state_dict() == stopper.state_dict()
    assert s2.scalars() == s.scalars()


def test_loading_refuses_another_model_config_data_or_version(momentum_run, tmp_path):
    cfg, run = momentum_run
    fp = train_state.data_fingerprint(tiny.tiny_splits())
    train_state.load_last(run, *tiny.fresh_parts(cfg), cfg, fp)  # the right one loads

    other = tiny.tiny_config("momentum", device="cpu", n_epochs=3, n_in=tiny.N_IN + 1)
    with pytest.raises(CheckpointError, match="another model"):
        train_state.load_last(run, *tiny.fresh_parts(other))
    with pytest.raises(CheckpointError, match="another config .*n_in"):
        train_state.load_last(run, *tiny.fresh_parts(cfg), other)
    with pytest.raises(CheckpointError, match="the data differs"):
        train_state.load_last(run, *tiny.fresh_parts(cfg), cfg, train_state.data_fingerprint(tiny.tiny_splits(1)))
    plain = tiny.tiny_config("fused", device="cpu")  # a step without optimizer state
    with pytest.raises(CheckpointError, match="optimizer state"):
        train_state.load_last(run, *tiny.fresh_parts(plain))

    manifest_path = run / "checkpoints" / "last.json"
    m = json.loads(manifest_path.read_text())
    for change, message in ((dict(format=1), "format 1"), (dict(format=99, deeptut="9.0"), "deeptut 9.0"),
                            (dict(threads=10**6), "thread count"), (dict(files={}), "exactly one"),
                            (dict(files={"../../etc/passwd": "0" * 64}), "bad file entry")):
        manifest_path.write_text(json.dumps({**m, **change}))
        with pytest.raises(CheckpointError, match=message):
            train_state.load_last(run, *tiny.fresh_parts(cfg))
    (name, sha), = m["files"].items()
    manifest_path.write_text(json.dumps({**m, "files": {name: "0" * 64}}))
    with pytest.raises(CheckpointError, match="SHA-256"):
        train_state.load_last(run, *tiny.fresh_parts(cfg))
    manifest_path.write_text(json.dumps(m))
    (run / "checkpoints" / name).unlink()
    with pytest.raises(CheckpointError, match="cannot read"):
        train_state.load_last(run, *tiny.fresh_parts(cfg))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train_state.load_last(tmp_path / "elsewhere", *tiny.fresh_parts(cfg))


def test_a_failed_load_restores_nothing(momentum_run):
    cfg, run = momentum_run
    manifest_path = run / "checkpoints" / "last.json"
    m = json.loads(manifest_path.read_text())
    m["rng"]["python"] = [3, "not a float"]  # caught only after the tensors were read and checked
    manifest_path.write_text(json.dumps(m))
    model, step, stopper = tiny.fresh_parts(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    with pytest.raises(CheckpointError, match="RNG"):
        train_state.load_last(run, model, step, stopper)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and step.state_dict()["state"] == {}


def test_metrics_log_keeps_exactly_the_checkpointed_lines(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4, "torn')
    rundir.MetricsLog(tmp_path, keep_lines=2)
    assert (tmp_path / "metrics.jsonl").read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    with pytest.raises(CheckpointError, match="has 2 lines but the checkpoint recorded 3"):
        rundir.MetricsLog(tmp_path, keep_lines=3)


def test_background_write_failures_surface_with_the_way_back(tmp_path, monkeypatch):
    cfg = tiny.tiny_config("fused", device="cpu")
    run_files = rundir.RunFiles(tmp_path, cfg)
    model, step, stopper = tiny.fresh_parts(cfg)
    snapshot = train_state.snapshot(model, step, stopper, train_state.LoopState(epoch=1), dict(model.state_dict()),
                                    cfg, None)
    run_files.save_checkpoint(*snapshot, 0, "epoch 1, iteration 10")
    run_files.flush()

    def full(*a):
        raise CheckpointError("best.safetensors: cannot write: No space left on device")
    monkeypatch.setattr(files, "atomic_write_bytes", full)
    run_files.save_best(dict(model.state_dict()))
    with pytest.raises(CheckpointError) as e:
        run_files.flush()
    assert "No space left" in str(e.value) and "epoch 1, iteration 10" in str(e.value)
    assert f"deeptut train --resume {tmp_path}" in str(e.value)
    with pytest.raises(DeeptutError):  # and every later write refuses, too
        run_files.save_best(dict(model.state_dict()))
    run_files.close()
    monkeypatch.undo()
    train_state.load_last(tmp_path, *tiny.fresh_parts(cfg))  # the previous checkpoint is intact


def test_plain_sgd_checkpoints_cross_between_steps(tmp_path):
    """A plain-SGD checkpoint of the hand-fused CPU step resumes into torch's SGD (the step a GPU or
    fast_step=false uses for the same config), and the other way round: neither keeps state."""
    cfg = tiny.tiny_config("fused", device="cpu")
    model, step, stopper = tiny.fresh_parts(cfg)
    train_state.save_last(tmp_path, model, step, stopper, train_state.LoopState(), dict(model.state_dict()))
    autograd = tiny.tiny_config("fused", device="cpu", fast_step=False)
    model2, step2, stopper2 = tiny.fresh_parts(autograd)
    assert type(step2).__name__ != type(step).__name__
    train_state.load_last(tmp_path, model2, step2, stopper2)
    x, y = torch.randn(20, tiny.N_IN), torch.randint(0, tiny.N_OUT, (20,))
    step2(x, y, 0.1)
    train_state.save_last(tmp_path, model2, step2, stopper2, train_state.LoopState(), dict(model2.state_dict()))
    train_state.load_last(tmp_path, *tiny.fresh_parts(cfg))


def test_a_loop_state_with_more_fields_round_trips(tmp_path):
    """A loop with more to resume (pre-training: the layer it is in) subclasses LoopState; its fields are
    written, checked on load (type, presence) and restored; the plain LoopState refuses such a checkpoint."""
    from dataclasses import dataclass

    @dataclass
    class LayerState(train_state.LoopState):
        layer: int = 0

        @classmethod
        def scalar_types(cls):
            return {**super().scalar_types(), "layer": int}

    cfg = tiny.tiny_config("fused", device="cpu")
    model, step, stopper = tiny.fresh_parts(cfg)
    train_state.save_last(tmp_path, model, step, stopper, LayerState(epoch=3, next_minibatch=2, layer=2),
                          dict(model.state_dict()))
    s = train_state.load_last(tmp_path, *tiny.fresh_parts(cfg), state_type=LayerState)
    assert type(s) is LayerState and (s.layer, s.epoch, s.next_minibatch) == (2, 3, 2)
    with pytest.raises(CheckpointError, match="malformed loop state"):
        train_state.load_last(tmp_path, *tiny.fresh_parts(cfg))
    manifest_path = tmp_path / "checkpoints" / "last.json"
    m = json.loads(manifest_path.read_text())
    m["loop"]["layer"] = "two"
    manifest_path.write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="loop state layer"):
        train_state.load_last(tmp_path, *tiny.fresh_parts(cfg), state_type=LayerState)
