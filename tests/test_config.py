"""Config: defaults, presets, overrides, rejection of unknown keys and wrong types."""

import pytest

from deeptut import config
from deeptut.config import TrainConfig
from deeptut.errors import ConfigError


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
