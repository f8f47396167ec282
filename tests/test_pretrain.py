"""train/pretrain.py on tiny synthetic data: dA, cA and RBM training and SdA / DBN greedy pre-training then
fine-tuning through fit. Each run is checked against a reference loop written here from the models' own
functions (the procedure, the noise, the PCD chain, the pseudo-likelihood bit index), the printed lines
against the tutorials' format, the run directory against the contract (UNSUP_CONTRACT), and resuming
after SIGTERM mid-epoch against the uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal

import numpy as np
import pytest
import torch

import tiny
from deeptut import cli
from deeptut.config import TrainConfig
from deeptut.errors import ConfigError
from deeptut.models import build_model
from deeptut.store import rundir
from deeptut.store.tensors import load_tensors
from deeptut.train import loop, pretrain
from deeptut.train.session import Interrupted

keep_threads = pytest.fixture(autouse=True)(tiny.keep_torch_threads)

DATA = tiny.tiny_splits()  # 400 / 200 / 200 examples of 32 pixels in [0, 1), 4 classes
N_BATCHES = 40  # 400 training examples in minibatches of 10

SINGLE = {
    "da": dict(n_visible=32, n_hidden=10, corruption_level=0.3, learning_rate=0.1, batch_size=10, n_epochs=3),
    "ca": dict(n_visible=32, n_hidden=10, contraction_level=0.1, learning_rate=0.05, batch_size=10, n_epochs=3),
    "rbm": dict(n_visible=32, n_hidden=10, k=3, persistent=True, learning_rate=0.1, batch_size=10, n_epochs=3),
}
STACK = {
    "sda": dict(n_in=32, hidden_layers_sizes=(12, 8), corruption_levels=(0.2, 0.3), n_out=4),
    "dbn": dict(n_in=32, hidden_layers_sizes=(12, 8), n_out=4, k=1),
}
FINETUNE = dict(pretraining_epochs=2, pretrain_lr=0.05, learning_rate=0.1, batch_size=10, n_epochs=4,
                patience=1000, validation_frequency=20)


def config(model: str, **kw) -> TrainConfig:
    values = dict(SINGLE.get(model) or {**STACK[model], **FINETUNE})
    values.update(kw)
    return TrainConfig(model=model, preset=f"t-{model}", threads=1, device="cpu", seed=7, **values)


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / rundir.METRICS).read_text().splitlines()]


def reference_single(cfg: TrainConfig) -> tuple[torch.nn.Module, list[np.ndarray]]:
    """dA.py / cA.py / rbm.py's loop, written out: the model's update on each minibatch in order, the
    noise from one Generator seeded as the tutorial seeds its RandomStreams, PCD's chain carried from
    update to update (zeros at the start), the PL bit index = the update count modulo n_visible."""
    model = build_model(cfg.model_args(), cfg.init_seed)
    g = torch.Generator().manual_seed(getattr(model, "corruption_seed", getattr(model, "sample_seed", 0)))
    x_all = torch.from_numpy(DATA.train.x)
    chain = torch.zeros(cfg.batch_size, cfg.n_hidden) if cfg.model == "rbm" else None
    if cfg.model == "ca":
        model.n_batchsize, model.floor_division = cfg.batch_size, cfg.floor_division
    costs, updates = [], 0
    for epoch in range(cfg.n_epochs):
        c = []
        for i in range(N_BATCHES):
            x = x_all[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            if cfg.model == "da":
                c.append(float(model.get_cost_updates(x, cfg.corruption_level, cfg.learning_rate, g)))
            elif cfg.model == "ca":
                c.append([float(v) for v in model.get_cost_updates(x, cfg.contraction_level, cfg.learning_rate)])
            else:
                cost, chain = model.get_cost_updates(x, cfg.learning_rate, chain, cfg.k, g, updates % 32)
                c.append(float(cost))
            updates += 1
        costs.append(np.asarray(c, dtype=np.float64))
    return model, costs


@pytest.mark.parametrize("model", ["da", "ca", "rbm"])
def test_single_layer_run_is_the_tutorial_loop_and_writes_the_contract(tmp_path, capsys, model):
    cfg = config(model)
    summary = pretrain.train(cfg, DATA, tmp_path)
    ref, ref_costs = reference_single(cfg)

    # the final model is the reference loop's, bit for bit
    best = load_tensors(tmp_path / rundir.BEST)
    assert set(best) == set(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(best[k], v), k
    assert not torch.equal(best["W"], load_tensors(tmp_path / rundir.INIT)["W"])

    # metrics.jsonl: one line per epoch, the epoch mean of the costs (cA: mean reconstruction cost and
    # mean Jacobian norm)
    lines = metrics(tmp_path)
    assert [(m["phase"], m["layer"], m["epoch"]) for m in lines] == [("pretrain", 0, e) for e in range(3)]
    for m, c in zip(lines, ref_costs):
        if model == "ca":
            assert m["cost"] == pytest.approx(c[:, 0].mean(), rel=1e-12)
            assert m["jacobian_norm"] == pytest.approx(np.sqrt(c[:, 1]).mean(), rel=1e-12)
        else:
            assert m["cost"] == pytest.approx(c.mean(), rel=1e-12)
        assert m["elapsed_s"] >= 0
    if model == "rbm":
        assert {m["cost_kind"] for m in lines} == {"pseudo-likelihood"} and all(m["cost"] < 0 for m in lines)

    # the tutorial's printed lines, word for word, with the values of the metrics lines
    out = capsys.readouterr().out.splitlines()
    for e, m in enumerate(lines):
        if model == "da":
            assert out[e] == f"Training epoch {e}, cost  {m['cost']}"
        elif model == "rbm":
            assert out[e] == f"Training epoch {e}, cost is  {m['cost']}"
        else:
            assert out[e] == (f"Training epoch {e}, reconstruction cost  {m['cost']}  "
                              f"jacobian norm  {m['jacobian_norm']}")

    # the contract's files
    for e in range(3):
        assert (tmp_path / rundir.pretrain_model_name(0, e)).is_file()
    last = load_tensors(tmp_path / rundir.pretrain_model_name(0, 2))
    assert all(torch.equal(last[k], best[k]) for k in best)
    saved = json.loads((tmp_path / rundir.SUMMARY).read_text())
    assert saved == summary
    assert {k: saved[k] for k in ("phase", "epochs", "final_cost", "stopped")} == \
        {"phase": "pretrain", "epochs": 3, "final_cost": lines[-1]["cost"], "stopped": "n_epochs"}
    loaded, saved_cfg = rundir.load_model(tmp_path)
    assert type(loaded) is type(ref) and saved_cfg == cfg


def test_ca_tutorial_preset_prints_cA_py_rows_not_means(tmp_path, capsys):
    """floor_division (the tutorial's arithmetic) prints what cA.py prints: rows 0 and 1 of its cost array."""
    cfg = config("ca", floor_division=True, n_epochs=1)
    pretrain.train(cfg, DATA, tmp_path)
    _, (c,) = reference_single(cfg)
    line = capsys.readouterr().out.splitlines()[0]
    assert line == f"Training epoch 0, reconstruction cost  {np.mean(c[0])}  jacobian norm  {np.mean(np.sqrt(c[1]))}"


def reference_stack(cfg: TrainConfig) -> torch.nn.Module:
    """SdA.py / DBN.py's pre-training, written out with the layer's input computed at every step from the
    minibatch (the tutorial's graph), not once per layer."""
    model = build_model(cfg.model_args(), cfg.init_seed)
    seed = model.corruption_seed if cfg.model == "sda" else model.sample_seed
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(DATA.train.x)
    for layer in range(model.n_layers):
        for epoch in range(cfg.pretraining_epochs):
            for i in range(N_BATCHES):
                with torch.no_grad():
                    x = model.layer_input(layer, x_all[i * cfg.batch_size:(i + 1) * cfg.batch_size])
                if cfg.model == "sda":
                    model.dA_layers[layer].get_cost_updates(x, cfg.corruption_levels[layer], cfg.pretrain_lr, g)
                else:
                    model.rbm_layers[layer].get_cost_updates(x, cfg.pretrain_lr, None, cfg.k, g)
    return model


@pytest.mark.parametrize("model", ["sda", "dbn"])
def test_pretraining_then_finetuning_end_to_end(tmp_path, capsys, monkeypatch, model):
    cfg = config(model)
    started_from = {}
    real_step = loop.make_train_step

    def make_train_step(m, *a):  # fit's model when its step is made: where fine-tuning starts
        started_from.update({k: v.clone() for k, v in m.state_dict().items()})
        return real_step(m, *a)
    monkeypatch.setattr(loop, "make_train_step", make_train_step)
    summary = pretrain.train(cfg, DATA, tmp_path)

    # pre-training: the per-step reference's parameters (the layer inputs computed once per layer are the
    # same function in larger matrix products: equal up to float32 rounding)
    pre = load_tensors(tmp_path / rundir.PRETRAINED)
    ref = reference_stack(cfg).state_dict()
    init = load_tensors(tmp_path / rundir.INIT)
    for k in ref:
        torch.testing.assert_close(pre[k], ref[k], rtol=1e-4, atol=1e-5)
    for k in ("sigmoid_layers.0.W", "sigmoid_layers.1.W", "sigmoid_layers.1.b"):
        assert not torch.equal(pre[k], init[k]), k
    assert torch.equal(pre["logLayer.W"], init["logLayer.W"])  # pre-training leaves the top layer alone

    # fine-tuning starts from the pre-trained parameters and changes them
    assert all(torch.equal(started_from[k], pre[k]) for k in pre)
    best = load_tensors(tmp_path / rundir.BEST)
    assert not torch.equal(best["logLayer.W"], pre["logLayer.W"])

    # metrics: the pre-training lines, then fit's lines tagged "finetune"
    lines = metrics(tmp_path)
    assert [(m["layer"], m["epoch"]) for m in lines[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(m["phase"] == "pretrain" for m in lines[:4])
    fine = lines[4:]
    assert len(fine) == 4 * N_BATCHES // 20 and all(m["phase"] == "finetune" for m in fine)
    assert {"epoch", "iteration", "valid_error", "test_error", "best", "patience"} <= set(fine[0])
    out = capsys.readouterr().out.splitlines()
    for m, line in zip(lines[:4], out):
        assert line == f"Pre-training layer {m['layer']}, epoch {m['epoch']}, cost  {m['cost']}"
    assert out[4].startswith("epoch 1, minibatch 20/40, validation error ")
    assert json.loads((tmp_path / rundir.SUMMARY).read_text()) == summary
    assert summary["pretrain_seconds"] > 0 and summary["best_validation_error"] < 75  # 4 classes
    assert summary["epochs"] == 4 and summary["stopped"] == "n_epochs"
    assert (tmp_path / rundir.pretrain_model_name(0, 1)).is_file()  # each layer's last epoch
    assert (tmp_path / rundir.pretrain_model_name(1, 1)).is_file()
    assert not (tmp_path / rundir.pretrain_model_name(0, 0)).exists()  # save_every 0
    rundir.load_model(tmp_path)


def test_sda_layer_inputs_are_the_uncorrupted_outputs_below():
    """Layer 1 of an SdA trains on sigmoid(x W0 + b0) of the clean x (corruption only at its own input)."""
    cfg = config("sda")
    model = build_model(cfg.model_args(), cfg.init_seed)
    x = torch.from_numpy(DATA.train.x)
    expected = torch.sigmoid(x @ model.sigmoid_layers[0].W + model.sigmoid_layers[0].b)
    torch.testing.assert_close(pretrain.layer_inputs(model, 1, x), expected)
    assert pretrain.layer_inputs(model, 0, x) is x


def run_until_signal(cfg, run_dir, at_update: int, monkeypatch) -> Interrupted:
    """Train; SIGTERM arrives just before pre-training update number `at_update`."""
    count, real = [0], pretrain.make_update

    def make_update(*a):
        update = real(*a)

        def counted(*b):
            count[0] += 1
            if count[0] == at_update:
                os.kill(os.getpid(), signal.SIGTERM)
            return update(*b)
        return counted
    monkeypatch.setattr(pretrain, "make_update", make_update)
    with pytest.raises(Interrupted) as e:
        pretrain.train(cfg, DATA, run_dir, quiet=True)
    monkeypatch.setattr(pretrain, "make_update", real)
    return e.value


@pytest.mark.parametrize("model, at_update, where", [
    ("rbm", 55, "layer 0, epoch 1, minibatch 15/40"),   # PCD: the chain and the bit index go on
    ("dbn", 40 * 2 + 47, "layer 1, epoch 1, minibatch 7/40"),  # 2 epochs of 40 per layer
    ("sda", 40 * 2 + 52, "layer 1, epoch 1, minibatch 12/40"),
])
def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path, monkeypatch, capsys, model, at_update, where):
    cfg = config(model, **({"persistent": True, "k": 2} if model == "dbn" else {}))
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir()
    run_dir.mkdir()
    pretrain.train(cfg, DATA, ref_dir, quiet=True)
    e = run_until_signal(cfg, run_dir, at_update, monkeypatch)
    assert e.signum == signal.SIGTERM
    err = capsys.readouterr().err
    assert f"interrupted by SIGTERM at {where}" in err and f"deeptut train --resume {run_dir}" in err
    manifest = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    assert manifest["loop"]["phase"] == "pretrain" and manifest["loop"]["next_minibatch"] > 0
    ckpt = load_tensors(run_dir / "checkpoints" / next(iter(manifest["files"])))
    assert ckpt["state/epoch_costs"].shape[0] == int(where.split("minibatch ")[1].split("/")[0])
    if model != "sda":  # the PCD chain at the interruption: a binary hidden state, not the zeros it began as
        chain = ckpt["state/chain"]
        assert chain.shape == (cfg.batch_size, 10 if model == "rbm" else 8) and chain.any()
        assert set(chain.unique().tolist()) <= {0.0, 1.0}
    pretrain.train(rundir.load_config(run_dir), DATA, run_dir, quiet=True, resume=True)
    assert tiny.differences(tiny.run_record(run_dir), tiny.run_record(ref_dir)) == []


def test_resuming_a_finished_run_does_nothing(tmp_path, capsys):
    cfg = config("da", n_epochs=1)
    summary = pretrain.train(cfg, DATA, tmp_path, quiet=True)
    assert pretrain.train(cfg, DATA, tmp_path, resume=True) == summary
    assert "already finished" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "da", "--corruption_level", "1.5"], "corruption_level must be in [0, 1]"),
    (["train", "sda", "--hidden_layers_sizes", "0"], "hidden_layers_sizes must be one or more sizes >= 1"),
    (["train", "sda", "--hidden_layers_sizes", "500,500"], "corruption_levels needs one level per hidden layer"),
    (["train", "rbm", "--k", "0"], "k (Gibbs steps per CD-k / PCD-k update) must be >= 1"),
    (["train", "rbm", "--persistent", "maybe"], "persistent expects bool, got 'maybe'"),
    (["train", "dbn", "--finetune_lr", "0.1", "--learning_rate", "0.2"],
     "finetune_lr is another name for learning_rate"),
    (["train", "mlp", "--finetune_lr", "0.1"], "finetune_lr is the fine-tuning step size of the models that pre-train"),
    (["train", "da", "--pretrain_lr", "0.1"], "pretrain_lr is a field of models sda, dbn, not of da"),
])
def test_bad_input_is_a_clear_error(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_finetune_lr_is_learning_rate(tmp_path):
    from deeptut import config as cfgmod

    toml = tmp_path / "c.toml"
    toml.write_text('model = "sda"\n[optim]\nfinetune_lr = 0.07\n')
    assert cfgmod.resolve(None, toml).learning_rate == 0.07
    toml.write_text('model = "sda"\n[optim]\nfinetune_lr = 0.07\nlearning_rate = 0.1\n')
    with pytest.raises(ConfigError, match="another name for learning_rate"):
        cfgmod.resolve(None, toml)

    cfg = cfgmod.resolve("sda", overrides={"finetune_lr": "0.05"})
    assert cfg.learning_rate == 0.05 and "finetune_lr" not in cfg.to_dict()
    assert cfgmod.resolve("dbn", overrides=cfgmod.parse_overrides(["--finetune-lr=0.2"])).learning_rate == 0.2


@pytest.mark.parametrize("model", ["sda", "da"])
def test_a_minibatch_larger_than_the_split_is_a_clear_error(model):
    with pytest.raises(ConfigError, match="batch_size 500 is larger than the training split"):
        pretrain.train(config(model, batch_size=500), DATA)
    with pytest.raises(ConfigError, match=r"validation split \(200\)"):
        pretrain.train(config("dbn", batch_size=300), DATA)  # before any pre-training
    with pytest.raises(ConfigError, match="augment_shift moves the images of supervised training"):
        pretrain.train(config("rbm", augment_shift=2, n_visible=36), DATA)


def test_cli_trains_and_resumes_an_unsupervised_run(tmp_path, capsys):
    import synthetic

    data_dir = synthetic.write_tiny_idx(tmp_path, n_train=300, n_valid=60, n_test=60)
    argv = ["train", "rbm", "--dataset", "idx", "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs"),
            "--n_hidden", "6", "--n_epochs", "2", "--k", "1", "--device", "cpu", "--threads", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Training epoch 1, cost is  -\d+\.\d+", out, re.M)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("rbm-")
    assert cli.main(["train", "--resume", str(run_dir), "--data-dir", str(data_dir), "-q"]) == 0
    assert "final cost" in capsys.readouterr().out


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_rbm_lr_schedule_sets_each_updates_step_size(tmp_path, monkeypatch, schedule):
    """[optim] lr_schedule for a single RBM: update i (0-based over all epochs) is made with fit's
    learning_rate_at(cfg, i, n_epochs x n_train_batches), so the step shrinks to ~0 at the end; the
    constant schedule (the tutorials') makes one update function for the whole run."""
    made, real = [], pretrain.layer_update

    def layer_update(model, cfg, layer, lr):
        made.append(lr)
        return real(model, cfg, layer, lr)
    monkeypatch.setattr(pretrain, "layer_update", layer_update)
    cfg = config("rbm", lr_schedule=schedule, warmup_fraction=0.25)
    pretrain.train(cfg, DATA, None, quiet=True)
    total = 3 * N_BATCHES
    # first made once per layer (the constant lr), then once per update with the scheduled lr
    assert made[1:] == [loop.learning_rate_at(cfg, i, total) for i in range(total)]
    assert made[-1] < 0.01 * cfg.learning_rate and max(made[1:]) <= cfg.learning_rate
    if schedule == "onecycle":  # rises for a quarter of the updates, then falls
        assert made[1] == pytest.approx(cfg.learning_rate / 30) and made[30] == cfg.learning_rate
    made.clear()
    pretrain.train(config("rbm"), DATA, None, quiet=True)
    assert made == [0.1]


def test_rbm_lr_schedule_resumes_bit_identical(tmp_path, monkeypatch, capsys):
    """The scheduled step size depends only on the update's index: SIGTERM mid-epoch then --resume ends
    with the uninterrupted run's parameters."""
    cfg = config("rbm", lr_schedule="cosine")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = pretrain.train(cfg, DATA, tmp_path / "a", quiet=True)
    run_until_signal(cfg, tmp_path / "b", 55, monkeypatch)
    pretrain.train(rundir.load_config(tmp_path / "b"), DATA, tmp_path / "b", quiet=True, resume=True)
    assert whole["epochs"] == 3
    assert tiny.differences(tiny.run_record(tmp_path / "b"), tiny.run_record(tmp_path / "a")) == []
    unscheduled = pretrain.train(config("rbm"), DATA, None, quiet=True)
    assert unscheduled["final_cost"] != whole["final_cost"]  # the schedule did change the training
