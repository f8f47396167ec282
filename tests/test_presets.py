"""The MLP and LeNet presets: the tutorial ones hold the tutorials' values; the fast ones train the same
networks (same model_args and initialisation) with the modern options, under the same stopping rule."""

import pytest

from deeptut import config


def test_mlp_preset_is_the_tutorial():
    cfg = config.resolve("mlp")
    assert (cfg.model, cfg.n_hidden, cfg.activation, cfg.init_seed) == ("mlp", 500, "tanh", 1234)
    assert (cfg.learning_rate, cfg.L1_reg, cfg.L2_reg, cfg.batch_size) == (0.01, 0.0, 1e-4, 20)
    assert (cfg.n_epochs, cfg.patience, cfg.patience_increase, cfg.improvement_threshold) == \
        (1000, 10000, 2.0, 0.995)
    assert (cfg.momentum, cfg.weight_decay, cfg.lr_schedule, cfg.shuffle) == (0.0, 0.0, "constant", False)
    assert cfg.evaluation == "tutorial" and cfg.validation_frequency == 0
    assert cfg.augment_shift == 0  # the tutorials train on the images as they are


def test_lenet_preset_is_the_tutorial():
    cfg = config.resolve("lenet")
    assert (cfg.model, cfg.nkerns, cfg.n_hidden, cfg.activation, cfg.init_seed) == \
        ("lenet", (20, 50), 500, "tanh", 23455)
    assert (cfg.learning_rate, cfg.batch_size, cfg.n_epochs, cfg.patience) == (0.1, 500, 200, 10000)
    assert (cfg.L1_reg, cfg.L2_reg, cfg.momentum, cfg.shuffle, cfg.lr_schedule) == (0.0, 0.0, 0.0, False, "constant")
    assert (cfg.patience_increase, cfg.improvement_threshold, cfg.evaluation) == (2.0, 0.995, "tutorial")
    assert cfg.augment_shift == 0


def test_lenet_fast_gpu_trains_a_wider_lenet_on_moved_standardised_images():
    # chosen 2026-11-28 by validation on MNIST and Fashion-MNIST (BENCHMARKS.md): the tutorial's layout
    # (two conv-pool layers, one hidden layer of 500, its initialisation) with 32 and 64 kernels and ReLU
    f, t = config.resolve("lenet-fast-gpu"), config.resolve("lenet")
    assert f.nkerns == (32, 64) and f.n_hidden == t.n_hidden and f.activation == "relu"
    assert f.init_seed == t.init_seed
    assert f.augment_shift == 1 and f.normalize == "standard" and f.shuffle and f.tf32 and f.evaluation == "full"
    assert (f.patience_increase, f.improvement_threshold) == (t.patience_increase, t.improvement_threshold)


@pytest.mark.parametrize("fast, tutorial", [("mlp-fast", "mlp"), ("lenet-fast", "lenet")])
def test_fast_presets_train_the_same_network_the_modern_way(fast, tutorial):
    f, t = config.resolve(fast), config.resolve(tutorial)
    assert f.preset == fast
    # the tutorial's layer sizes and initialisation; ReLU units on inputs standardised with the training
    # split's mean and std (chosen 2026-11-28 by validation on MNIST and Fashion-MNIST: BENCHMARKS.md)
    same = {k: v for k, v in t.model_args().items() if k != "activation"}
    assert {k: v for k, v in f.model_args().items() if k != "activation"} == same and f.init_seed == t.init_seed
    assert f.activation == "relu" and t.activation == "tanh" and f.normalize == "standard"
    assert f.shuffle and f.momentum > 0 and f.nesterov
    assert f.lr_schedule in ("onecycle", "cosine")
    assert f.batch_size > t.batch_size if tutorial == "mlp" else f.batch_size <= t.batch_size  # LeNet's is 500
    # the same patience rule and model selection
    assert (f.patience, f.patience_increase, f.improvement_threshold, f.validation_frequency) == \
        (t.patience, t.patience_increase, t.improvement_threshold, t.validation_frequency)
    assert f.evaluation == "full" and f.n_epochs <= 24  # the schedule spans a small, fixed budget
    assert f.L1_reg == t.L1_reg and f.L2_reg == t.L2_reg


def test_cli_lists_the_fast_presets(capsys):
    """`deeptut presets --json` prints one line per preset, `name: {values as JSON}`; `train --help` names
    them."""
    import json

    from deeptut import cli

    assert cli.main(["presets", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {}
    for line in lines:
        name, _, values = line.partition(": ")
        listed[name] = json.loads(values)
    assert {"mlp", "lenet", "mlp-fast", "lenet-fast"} <= set(listed)
    assert list(listed) == config.preset_names() and len(lines) == len(listed)
    for name in listed:  # (JSON has lists where the preset has tuples)
        assert listed[name] == json.loads(json.dumps(config.load_preset(name))), name
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    assert "mlp-fast" in capsys.readouterr().out


def test_presets_are_written_in_the_configs_tables():
    """Each preset file: `model` and `init_seed` at the top, every other field in its section's table (the
    model's own fields in the table named after the model)."""
    import tomllib
    from importlib import resources

    for name in config.preset_names():
        data = tomllib.loads((resources.files("deeptut.presets") / f"{name}.toml").read_text())
        model = data["model"]
        assert {k for k, v in data.items() if not isinstance(v, dict)} <= {"model", "init_seed"}, name
        for table, fields in data.items():
            if isinstance(fields, dict):
                assert table in (*config.SECTIONS, model), (name, table)
                assert set(fields) <= set(config._TABLES[table]), (name, table)
        assert config.from_dict(data) == config.resolve(name).replace(preset="logistic"), name


def test_cli_presets_table_for_people(capsys, monkeypatch):
    """`deeptut presets`: a row per preset with its model, kind, purpose and result with the machine; the
    result is the registry's line (deeptut/claims.toml) with its figures; a preset without one says so."""
    from deeptut import cli, presets

    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    body = out.split("\n\n")[0].splitlines()[2:]
    rows = {line.split()[0]: line.split() for line in body if not line.startswith(" ")}  # wrapped: indented
    assert list(rows) == config.preset_names()
    for name, row in rows.items():
        assert row[1] == config.resolve(name).model and row[2] == ("fast" if "fast" in name else "tutorial")
    assert max(map(len, out.splitlines())) <= presets.WIDTH == 100  # fits 100 columns (issue 24)
    assert "BENCHMARKS.md" not in out  # a pip install has no BENCHMARKS.md: the evidence is presets NAME
    flat = " ".join(out.split())
    registry = presets.measured()
    for name in config.preset_names():
        assert " ".join(presets.about(name)[2].split()) in flat
        if name in registry:
            assert presets.about(name)[2] == presets.result(name, registry) != presets.NO_FIGURE
    assert "AMD EPYC" in out and "H200" in out
    # the figures printed are the registry's values, each checked against its raw result
    assert "MNIST " + registry["mlp-fast"]["figures"]["mnist"]["value"] + " %" in out
    # a preset without a registry line: listed, without a figure
    monkeypatch.setattr(presets, "measured", lambda: {k: v for k, v in registry.items() if k != "mlp"})
    assert presets.about("mlp") == ("tutorial", presets.ABOUT["mlp"][1], presets.NO_FIGURE)


def test_presets_registry_figures_are_their_raw_results(monkeypatch):
    """Every figure `deeptut presets` prints is its raw result under bench/results/, rounded as printed; a
    figure edited in the registry without new evidence fails."""
    from claims_helpers import ClaimError, check_figure
    from deeptut import presets

    registry = presets.measured()
    figures = [(n, k, f) for n, e in registry.items() for k, f in e.get("figures", {}).items()]
    assert len(figures) >= 30
    for name, key, fig in figures:
        check_figure(fig["value"], fig)
    name, key, fig = next(x for x in figures if x[0] == "mlp-fast" and x[1] == "mnist")
    with pytest.raises(ClaimError):
        check_figure("0.97", fig)  # the drifted figure a hand edit would leave


def test_cli_presets_name_marks_the_defaults(capsys):
    from deeptut import cli

    assert cli.main(["presets", "lenet-fast"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "[optim]" in lines and "[data]" in lines and "[lenet]" in lines
    assert "* learning_rate = 0.05" in lines and "* augment_shift = 1" in lines  # set by the preset
    assert "  L2_reg = 0.0" in lines and "  divergence = \"on\"" in lines  # defaults, unmarked
    # every field of the resolved config is shown once, under its section
    shown = [ln[2:].split(" = ")[0] for ln in lines if ln[:2] in ("* ", "  ") and " = " in ln]
    assert sorted(shown) == sorted(config.resolve("lenet-fast").to_dict())
    assert lines.index("  divergence = \"on\"") > lines.index("[early_stopping]") > lines.index("[optim]")
    assert cli.main(["presets", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err

