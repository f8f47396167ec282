"""Config: defaults, presets, overrides, rejection of unknown keys and wrong types."""

import dataclasses
import json
import os
import signal

import pytest
import torch

from deeptut import config
from deeptut.config import Accelerators, Optimisation, TrainConfig
from deeptut.errors import ConfigError
from deeptut.models import FAMILIES, LeNetArgs, LogisticArgs, MLPArgs, build_model


def test_logistic_preset_is_the_tutorial():
    cfg = config.resolve("logistic")
    assert (cfg.model, cfg.learning_rate, cfg.batch_size, cfg.n_epochs, cfg.patience) == \
        ("logistic", 0.13, 600, 1000, 5000)
    assert (cfg.patience_increase, cfg.improvement_threshold, cfg.shuffle) == (2.0, 0.995, False)


def test_every_preset_loads():
    names = config.preset_names()
    assert {"logistic", "mlp", "lenet"} <= set(names)
    for name in names:
        assert config.resolve(name).preset == name


def test_overrides_dashes_equals_and_types():
    ov = config.parse_overrides(["--learning-rate", "0.1", "--n_epochs=5", "--batch_size", "20",
                                 "--L2_reg", "1e-4", "--shuffle", "--nkerns", "10,20"])
    cfg = config.resolve("lenet", overrides=ov)
    assert (cfg.learning_rate, cfg.n_epochs, cfg.batch_size, cfg.L2_reg) == (0.1, 5, 20, 1e-4)
    assert cfg.shuffle is True and cfg.nkerns == (10, 20)


@pytest.mark.parametrize("args,message", [
    (["--learning_rat", "0.1"], "unknown config key 'learning_rat'"),
    (["--l2_reg", "0.1"], "did you mean 'L2_reg'"),
    (["--n_epochs", "five"], "n_epochs expects int"),
    (["--n_epochs", "2.5"], "n_epochs expects int"),
    (["--shuffle", "maybe"], "shuffle expects bool"),
    (["--batch_size"], "needs a value"),
    (["stray"], "unexpected argument"),
])
def test_bad_overrides_rejected(args, message):
    with pytest.raises(ConfigError, match=message):
        config.resolve("logistic", overrides=config.parse_overrides(args))


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "svm"}, "model must be one of"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"learning_rate": -1.0}, "learning_rate must be > 0"),
    ({"momentum": 1.0}, "momentum"),
    ({"device": "tpu"}, "device must be one of"),
])
def test_invalid_values_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_config_file_and_precedence(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('learning_rate = 0.5\nn_epochs = 3\n')
    cfg = config.resolve("logistic", f, {"n_epochs": "7"})
    assert (cfg.learning_rate, cfg.n_epochs, cfg.batch_size) == (0.5, 7, 600)
    f.write_text('learning_rate = "fast"\n')
    with pytest.raises(ConfigError, match="c.toml: learning_rate expects float"):
        config.resolve("logistic", f)
    f.write_text('colour = 1\n')
    with pytest.raises(ConfigError, match="unknown config key 'colour'"):
        config.resolve(None, f)
    f.write_text('learning_rate = \n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.resolve(None, f)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'logistc'"):
        config.resolve("logistc")


def test_dict_round_trip_and_frozen():
    cfg = config.resolve("lenet")
    assert config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Exception):
        cfg.learning_rate = 1.0  # type: ignore[misc]
    assert cfg.model_args() == {"model": "lenet", "nkerns": [20, 50], "n_hidden": 500, "n_out": 10,
                                "activation": "tanh"}


# --- sections -------------------------------------------------------------------------------------------

# config.json's "config" of a run made by deeptut before the sections (commit abcfc91:
# `deeptut train logistic --n_epochs 1 --runs-dir /tmp/oldrun --quiet`), copied as written: every field, flat,
# the LeNet and MLP ones included
OLD_FLAT_CONFIG = {
    "model": "logistic", "preset": "logistic", "dataset": "mnist", "n_in": 784, "n_out": 10, "n_hidden": 500,
    "nkerns": [20, 50], "activation": "tanh", "init_seed": 1234, "learning_rate": 0.13, "batch_size": 600,
    "n_epochs": 1, "L1_reg": 0.0, "L2_reg": 0.0, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
    "lr_schedule": "constant", "warmup_fraction": 0.0, "shuffle": False, "augment_shift": 0, "patience": 5000,
    "patience_increase": 2.0, "improvement_threshold": 0.995, "validation_frequency": 0,
    "evaluation": "tutorial", "seed": 1234, "device": "auto", "threads": 0, "fast_step": True, "sparse": True,
    "save_every": 0, "checkpoint_every": 1, "max_cost": 0.0, "device_memory_budget": "0", "graphs": "auto",
    "compile": False, "amp": "off", "tf32": False, "conv": "auto"}
OLD_MODEL_JSON = {"model": "logistic", "n_in": 784, "n_out": 10, "format": 1}  # the same run's model.json


def test_sections_hold_the_flat_fields():
    cfg = config.resolve("lenet-fast-gpu")
    assert isinstance(cfg.net, LeNetArgs) and cfg.net.nkerns == cfg.nkerns == (32, 64)
    assert cfg.optim.learning_rate == cfg.learning_rate == 0.1 and cfg.early_stopping.patience == cfg.patience
    assert cfg.data.augment_shift == 1 and cfg.data.normalize == cfg.normalize == "standard"
    assert cfg.accel.tf32 and cfg.run.preset == "lenet-fast-gpu"
    # every flat name reads as an attribute, with its section's value
    for name, section in config._SECTION_OF.items():
        assert getattr(cfg, name) == getattr(getattr(cfg, section), name), name
    assert set(config.FIELDS) == {"model", "init_seed", *config._SECTION_OF,
                                  *(f.name for c in FAMILIES.values() for f in dataclasses.fields(c))}
    assert config.MODELS == tuple(FAMILIES)
    assert config.MODELS[:8] == ("logistic", "mlp", "lenet", "da", "ca", "sda", "rbm", "dbn")  # then the later chapters


def test_family_sections_build_their_modules():
    for name, args in [("logistic", LogisticArgs(n_in=12, n_out=3)),
                       ("mlp", MLPArgs(n_in=12, n_hidden=5, n_out=3)),
                       ("lenet", LeNetArgs(nkerns=(2, 3), n_hidden=5, n_out=4))]:
        cfg = TrainConfig(net=args, init_seed=5)  # the section says which model
        assert cfg.model == name and cfg.net == args
        m = cfg.net.build(cfg.init_seed)
        shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
        again = build_model(cfg.model_args(), 5)  # what the loop and model.json do
        assert {k: tuple(v.shape) for k, v in again.state_dict().items()} == shapes
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))
        assert list(shapes.values())[-1] == (args.n_out,)  # the output layer's bias
        assert name == "lenet" or list(shapes.values())[0][0] == args.n_in
    assert {k: tuple(v.shape) for k, v in build_model(OLD_MODEL_JSON).state_dict().items()} == \
        {"W": (784, 10), "b": (10,)}
    # a field model.json lacks takes its default; an unknown one and an unknown model are refused
    assert tuple(build_model({"model": "mlp", "n_hidden": 7}).state_dict()["hiddenLayer.W"].shape) == (784, 7)
    with pytest.raises(TypeError, match="colour"):
        build_model({"model": "mlp", "colour": 1})
    with pytest.raises(ConfigError, match="model must be one of"):
        build_model({"model": "svm"})


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "mlp", "nkerns": (4, 8)}, "nkerns is a field of model lenet, not of mlp"),
    ({"model": "logistic", "n_hidden": 20}, "n_hidden is a field of models mlp, lenet, da, ca, rbm, .*not of logistic"),
    ({"model": "logistic", "activation": "relu"}, "activation is a field of models mlp, lenet"),
    ({"model": "lenet", "n_in": 100}, "n_in is a field of models logistic, mlp, sda, dbn, .*not of lenet"),
    ({"model": "mlp", "conv": "gemm"}, "conv is a field of model lenet, not of mlp"),
    ({"model": "mlp", "pretraining_epochs": 3}, "pretraining_epochs is a field of models sda, dbn, not of mlp"),
    ({"model": "lenet", "nkerns": (4,)}, "nkerns must be two positive integers"),
    ({"model": "mlp", "activation": "softplus"}, "activation must be one of"),
    ({"model": "mlp", "n_hidden": 0}, "n_hidden must be >= 1"),
    ({"colour": 1}, "unknown config key 'colour'"),
    ({"optim": {"learning_rate": 1}}, "optim must be an instance of Optimisation"),
    ({"net": LeNetArgs(), "nkerns": (4, 8), "model": "mlp"}, "nkerns is a field of model lenet, not of mlp"),
])
def test_fields_of_another_model_and_bad_sections_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_another_models_field_at_its_default_is_accepted_and_reads_as_its_default():
    cfg = TrainConfig(model="logistic", n_hidden=500, nkerns=[20, 50], conv="auto")  # asks for nothing
    assert cfg == TrainConfig() and "n_hidden" not in cfg.to_dict() and "conv" not in cfg.to_dict()
    assert (cfg.n_hidden, cfg.nkerns, cfg.activation, cfg.conv) == (500, (20, 50), "tanh", "auto")
    assert config.resolve("lenet").n_in == 784  # LeNet's 28x28 images (data/augment.py reads it)
    assert not config.applies("nkerns", "mlp") and config.applies("nkerns", "lenet")
    assert config.applies("conv", "lenet") and not config.applies("conv", "logistic")
    assert config.applies("learning_rate", "logistic") and not config.applies("pretrain_lr", "lenet")


def test_flags_of_another_model_rejected_through_the_cli(capsys):
    from deeptut import cli

    assert cli.main(["train", "mlp", "--nkerns", "4,8", "--n_epochs", "1"]) == 2
    assert "nkerns is a field of model lenet, not of mlp" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="conv is a field of model lenet"):
        config.resolve("logistic", overrides={"conv": "gemm"})
    # a preset's model fields follow it to another model where they apply there too
    cfg = config.resolve("lenet", overrides={"model": "mlp"})
    assert (cfg.model, cfg.n_hidden, cfg.init_seed, cfg.learning_rate) == ("mlp", 500, 23455, 0.1)


def test_replace_flat_and_sectioned():
    cfg = config.resolve("lenet")
    assert cfg.replace(learning_rate=0.5).optim == dataclasses.replace(cfg.optim, learning_rate=0.5)
    assert cfg.replace(learning_rate=0.5).replace(learning_rate=0.1) == cfg
    assert dataclasses.replace(cfg, conv="gemm").conv == "gemm"  # bench/gpu_lenet.py does this
    assert dataclasses.replace(cfg, nkerns=(4, 8)).net == LeNetArgs(nkerns=(4, 8))
    assert cfg.replace(optim=Optimisation(learning_rate=0.3), batch_size=7).optim == \
        Optimisation(learning_rate=0.3, batch_size=7)  # a section, then flat fields over it
    to_mlp = cfg.replace(model="mlp")  # the fields both families have go along
    assert isinstance(to_mlp.net, MLPArgs) and to_mlp.n_hidden == 500 and to_mlp.n_in == 784
    with pytest.raises(ConfigError, match="conv is a field of model lenet"):
        cfg.replace(conv="gemm").replace(model="mlp")
    with pytest.raises(ConfigError, match="learning_rate must be > 0"):
        cfg.replace(learning_rate=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.net.n_hidden = 3  # type: ignore[misc]


def test_saved_form_round_trips_for_every_preset():
    for name in config.preset_names():
        cfg = config.resolve(name)
        d = cfg.to_dict()
        assert all(config.applies(k, cfg.model) for k in d)  # only the fields that apply to the model
        assert config.from_dict(json.loads(json.dumps(d))) == cfg
        assert config.from_dict(json.loads(json.dumps(cfg.sections()))) == cfg
        assert config.differences(d, cfg) == [] and config.differences(cfg.sections(), cfg) == []
    nested = config.resolve("mlp").sections()
    assert nested["mlp"] == {"n_in": 784, "n_hidden": 500, "n_out": 10, "activation": "tanh"}
    assert nested["optim"]["learning_rate"] == 0.01 and nested["accel"] == {
        k: v for k, v in dataclasses.asdict(Accelerators(sparse=False)).items() if k != "conv"}
    assert "pretraining" not in nested and "lenet" not in nested


def test_old_flat_config_json_loads():
    cfg = config.from_dict(OLD_FLAT_CONFIG, "old/config.json")
    assert cfg == config.resolve("logistic", overrides={"n_epochs": "1"})
    assert set(OLD_FLAT_CONFIG) - set(cfg.to_dict()) == {"n_hidden", "nkerns", "activation", "conv"}
    assert all(cfg.to_dict()[k] == v for k, v in OLD_FLAT_CONFIG.items() if k in cfg.to_dict())
    assert config.differences(OLD_FLAT_CONFIG, cfg) == []  # a checkpoint holding it resumes under cfg
    assert config.differences({**OLD_FLAT_CONFIG, "learning_rate": 0.5}, cfg) == ["learning_rate"]
    assert config.differences({**OLD_FLAT_CONFIG, "colour": 1}, cfg) == ["layout"]
    assert config.differences(None, cfg) == ["layout"]
    # an old run that was given another model's field (it had no effect then) loads; a later key defaults
    old = {k: v for k, v in OLD_FLAT_CONFIG.items() if k != "augment_shift"} | {"nkerns": [4, 8]}
    assert config.from_dict(old) == cfg
    old_lenet = OLD_FLAT_CONFIG | {"model": "lenet", "conv": "gemm", "n_in": 784}
    assert config.from_dict(old_lenet).conv == "gemm" and config.from_dict(old_lenet).nkerns == (20, 50)
    with pytest.raises(ConfigError, match="old/config.json: unknown config key 'colour'"):
        config.from_dict({**OLD_FLAT_CONFIG, "colour": 1}, "old/config.json")
    with pytest.raises(ConfigError, match="model must be one of"):
        config.from_dict({**OLD_FLAT_CONFIG, "model": "svm"})


def test_a_run_saved_in_the_old_flat_form_resumes(tmp_path, monkeypatch):
    """A run directory whose config.json and checkpoint hold the flat form of every field (as deeptut wrote
    them before the sections) resumes and ends as the uninterrupted run."""
    import tiny
    from deeptut.store import rundir
    from deeptut.train import loop

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave the suite's thread count alone
    ref = tmp_path / "ref"
    ref.mkdir()
    loop.fit(tiny.tiny_config("fused"), tiny.tiny_splits(), ref, quiet=True)
    run = tmp_path / "run"
    run.mkdir()
    with monkeypatch.context() as m:
        tiny.at_step(m, 9, lambda: os.kill(os.getpid(), signal.SIGINT))
        with pytest.raises(loop.Interrupted):
            loop.fit(tiny.tiny_config("fused"), tiny.tiny_splits(), run, quiet=True)

    def old_form(new: dict) -> dict:
        return {k: new.get(k, v) for k, v in OLD_FLAT_CONFIG.items()}

    for path, key in ((run / "config.json", "config"), (run / "checkpoints" / "last.json", "config")):
        d = json.loads(path.read_text())
        d[key] = old_form(d[key])
        path.write_text(json.dumps(d))
    assert "nkerns" in json.loads((run / "config.json").read_text())["config"]
    loop.fit(rundir.load_config(run), tiny.tiny_splits(), run, quiet=True, resume=True)
    assert tiny.differences(tiny.run_record(run), tiny.run_record(ref)) == []


def test_toml_tables_and_flat_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('model = "lenet"\nn_epochs = 3\n[lenet]\nnkerns = [4, 8]\n[optim]\nlearning_rate = 0.5\n'
                 '[early_stopping]\npatience = 7\n[accel]\nconv = "gemm"\n')
    cfg = config.resolve("logistic", f, {"learning_rate": "0.25"})  # defaults < preset < file < flags
    assert (cfg.model, cfg.nkerns, cfg.n_epochs, cfg.learning_rate, cfg.patience, cfg.conv) == \
        ("lenet", (4, 8), 3, 0.25, 7, "gemm")
    assert cfg.batch_size == 600  # from the preset, which the file does not set
    for text, message in [
        ('[optim]\npatience = 7\n', r"c.toml: patience belongs in \[early_stopping\], not in \[optim\]"),
        ('[logistic]\nnkerns = [4, 8]\n', r"nkerns belongs in \[lenet\], not in \[logistic\]"),
        ('[optim]\nlearning_rat = 0.1\n', "c.toml: unknown config key 'learning_rat'"),
        ('[optimisation]\nlearning_rate = 0.1\n', r"c.toml: unknown table \[optimisation\]"),
        ('learning_rate = 0.1\n[optim]\nlearning_rate = 0.2\n', "c.toml: learning_rate is given twice"),
        ('[optim]\nlearning_rate = "fast"\n', "c.toml: learning_rate expects float"),
        ('[lenet]\nnkerns = [4, 8, 16]\n', "nkerns expects"),
        ('[lenet]\nnkerns = [4.5, 8]\n', "nkerns expects"),
    ]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=message):
            config.resolve("logistic", f)


def test_tuple_fields_of_any_length_coerce():
    """The pre-training families' fields (hidden_layers_sizes = 1000,1000,1000; corruption_levels) are
    variable-length tuples: flags and TOML lists give them alike."""
    config._TYPES["_sizes"], config.FIELDS["_sizes"] = tuple[int, ...], None
    config._TYPES["_levels"], config.FIELDS["_levels"] = tuple[float, ...], None
    try:
        assert config._coerce("_sizes", "1000,1000,1000", "t") == (1000, 1000, 1000)
        assert config._coerce("_sizes", [500], "t") == (500,)
        assert config._coerce("_levels", "0.1 0.2,0.3", "t") == (0.1, 0.2, 0.3)
        for bad in ("", "1,x", [1.5], [True], 3):
            with pytest.raises(ConfigError, match="_sizes expects"):
                config._coerce("_sizes", bad, "t")
    finally:
        for k in ("_sizes", "_levels"):
            del config._TYPES[k], config.FIELDS[k]


def test_pretraining_fields_apply_to_the_families_that_pretrain(monkeypatch):
    with pytest.raises(ConfigError, match="pretrain_lr is a field of models sda, dbn, not of mlp"):
        TrainConfig(model="mlp", pretrain_lr=0.01)
    assert TrainConfig(model="dbn", pretrain_lr=0.01).pretrain_lr == 0.01
    monkeypatch.setattr(MLPArgs, "pretrains", True)  # as the SdA and DBN sections will say
    cfg = config.resolve("mlp", overrides={"pretraining_epochs": "3", "pretrain_lr": "0.01"})
    assert (cfg.pretraining_epochs, cfg.pretraining.pretrain_lr) == (3, 0.01)
    assert cfg.sections()["pretraining"] == {"pretraining_epochs": 3, "pretrain_lr": 0.01}
    assert config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="pretrain_lr is a field of models mlp, sda, dbn, not of lenet"):
        TrainConfig(model="lenet", pretrain_lr=0.01)
    with pytest.raises(ConfigError, match="pretraining_epochs must be >= 1"):
        cfg.replace(pretraining_epochs=0)
