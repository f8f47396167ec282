"""The family seam (docs/ARCHITECTURE.md "Adding a model family"), proved from outside src/: families defined in
this file only, registered through the public functions, trained end to end by `deeptut train` (a subprocess
that imports this module as a plug-in through $DEEPTUT_PLUGINS) and by the Python API (deeptut.train), killed with SIGKILL
and resumed bit-identically, and drawn by `deeptut viz`. Also: no family's name as a string outside models/
and presets/.

The pre-training family here, "spda", is a denoising autoencoder whose noise is salt and pepper (each
corrupted pixel set to 0 or 1 with equal odds, Vincent et al. 2010) instead of dA.py's zeros: its own layer
trainer (its rule, "salt-and-pepper", which no accelerator knows, so its reference update runs), its own
printed line, the dA's module and pictures.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import synthetic
import tiny
from deeptut import registry
from deeptut.errors import ConfigError
from deeptut.models import families
from deeptut.models.families import DAArgs, ModelArgs

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "deeptut"
PLUGIN = Path(__file__).stem  # this module, imported by the subprocesses as a plug-in
KILL_ENV = "SEAM_KILL_AT_EPOCH"  # the subprocess SIGKILLs itself after printing this epoch's line ...
MARKER_ENV = "SEAM_KILL_MARKER"  # ... once: the marker file says it has been done


# --- the pre-training family, defined here only -----------------------------------------------------------


def _salt_and_pepper_update(unit: torch.nn.Module, level: float, lr: float):
    """update(x, generator, chain, i) -> (cost, None): SGD on the cross-entropy of x reconstructed from x with
    a fraction `level` of its pixels set to 0 or 1 (half each), drawn from the run's generator."""
    def update(x, g, chain, i):
        pick = torch.rand(x.shape, generator=g, dtype=x.dtype) < level
        salt = torch.rand(x.shape, generator=g, dtype=x.dtype) < 0.5
        tilde = torch.where(pick, salt.to(x.dtype), x)
        y = unit.get_hidden_values(tilde)
        z = unit.reconstruction_logits(y)
        cost = torch.nn.functional.binary_cross_entropy_with_logits(z, x, reduction="none").sum(1).mean()
        grads = torch.autograd.grad(cost, unit.params)
        with torch.no_grad():
            for p, gr in zip(unit.params, grads):
                p.sub_(lr * gr)
        maybe_die(i)
        return cost.detach(), None
    return update


def maybe_die(update_index: int) -> None:
    """SIGKILL this process at the start of the update after the epoch named by $SEAM_KILL_AT_EPOCH's
    checkpoint was written (update index = epoch x 10 minibatches), once."""
    at, marker = os.environ.get(KILL_ENV), os.environ.get(MARKER_ENV)
    if at is None or marker is None or Path(marker).exists():
        return
    if update_index == (int(at) + 1) * 10 + 3:  # a few updates into the next epoch: work that is lost
        Path(marker).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class SaltPepperDAArgs(DAArgs):
    """A dA trained on salt-and-pepper noise: the dA's fields and module, its own rule and line."""

    procedure: ClassVar[str] = "pretrain"
    classifier: ClassVar[bool] = False
    first_layer: ClassVar[tuple[str, str] | None] = ("chapter", "W")

    def layer_trainers(self, model, batch_size):
        from deeptut.models.trainers import LayerTrainer, mean_line

        return [LayerTrainer(model, "salt-and-pepper",
                             lambda lr: _salt_and_pepper_update(model, self.corruption_level, lr),
                             mean_line("Salt-and-pepper epoch {epoch}, cost  {cost}"),
                             {"corruption_level": self.corruption_level})]


# --- the sequence family, defined here only ----------------------------------------------------------------


class TinyGRU(torch.nn.Module):
    """Embedding -> GRU -> the last valid step's state -> logits: a recurrent classifier of token sequences.
    forward(x [n, T] int64, mask [n, T] float) -> logits [n, n_out]; cost as the sequence procedure asks."""

    def __init__(self, n_words: int, dim: int, n_out: int, init_seed: int) -> None:
        super().__init__()
        torch.manual_seed(init_seed)  # the module's own initialisation, a function of init_seed
        self.emb = torch.nn.Embedding(n_words, dim)
        self.gru = torch.nn.GRU(dim, dim, batch_first=True)
        self.out = torch.nn.Linear(dim, n_out)
        self.calls = 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            maybe_die(self.calls - 1)
        h, _ = self.gru(self.emb(x))  # [n, T, dim]
        last = mask.sum(1).long() - 1  # [n]: a padded step after the last is never read
        return self.out(h[torch.arange(len(x)), last])

    def cost(self, logits: torch.Tensor, y: torch.Tensor, decay_c: float = 0.0) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, y)


@dataclass(frozen=True)
class TinyGRUArgs(families.LSTMArgs):
    """The LSTM chapter's fields and procedure ("sequence"), another network: the procedure is the family's
    choice, the module its own."""

    def build(self, init_seed: int | None = None):
        return TinyGRU(self.n_words, self.dim_proj, self.n_out, 0 if init_seed is None else init_seed)


def seam_sequences(cfg: Any, data_dir: Any = None):
    """The dataset "seam-sequences": token sequences of 3..9 tokens from 1..7; the label says whether the first
    and the last token are equal (a bag of words cannot tell which is first or last)."""
    from deeptut.data.sequences import SequenceSets, SequenceSplit

    rng = np.random.default_rng(7)

    def split(n: int) -> SequenceSplit:
        seqs, labels = [], []
        for i in range(n):
            seq = list(rng.integers(1, 8, rng.integers(3, 10)))
            if i % 2:
                seq[-1] = seq[0]
            seqs.append(seq)
            labels.append(int(seq[-1] == seq[0]))
        return SequenceSplit.from_lists(seqs, labels, "seam-sequences")

    return SequenceSets(split(320), split(80), split(80), source="generated", name="seam-sequences",
                        n_classes=2, vocabulary=8)


def seam_images(cfg: Any, data_dir: Any = None):
    """The dataset "seam-images": 8x8 synthetic images in 4 classes, 200 training rows (10 minibatches of 20)."""
    return synthetic.tiny_splits(n_train=200, n_valid=40, n_test=40, n_in=64, n_out=4)


def register() -> None:
    families.register_family("spda", SaltPepperDAArgs)
    families.register_family("tinygru", TinyGRUArgs)
    registry.register_dataset("seam-images", seam_images)
    registry.register_dataset("seam-sequences", seam_sequences)


if PLUGIN in os.environ.get(registry.PLUGINS_ENV, "").split(","):  # imported as a plug-in by a subprocess
    register()


@pytest.fixture
def registered():
    register()
    yield
    for name in ("spda", "tinygru"):
        families.unregister_family(name)
    for name in ("seam-images", "seam-sequences"):
        registry.DATASETS.pop(name, None)


SPDA_TOML = """model = "spda"
init_seed = 5

[spda]
n_visible = 64
n_hidden = 12
corruption_level = 0.25

[optim]
learning_rate = 0.1
batch_size = 20
n_epochs = 4

[data]
dataset = "seam-images"

[run]
preset = "spda"
threads = 1
device = "cpu"
"""


def cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """`deeptut ARGS` in a new process that loads this module as a plug-in."""
    environ = {**os.environ, registry.PLUGINS_ENV: PLUGIN,
               "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([sys.executable, "-m", "deeptut", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=240)


# --- the tests ------------------------------------------------------------------------------------------


def test_a_registered_family_gets_flags_tables_and_checks(registered):
    from deeptut import config

    cfg = config.resolve(None, overrides={"model": "spda", "n_visible": 64, "corruption_level": 0.5})
    assert isinstance(cfg.net, SaltPepperDAArgs) and cfg.corruption_level == 0.5
    assert cfg.sections()["spda"]["n_visible"] == 64
    with pytest.raises(ConfigError, match="corruption_level must be in"):
        config.resolve(None, overrides={"model": "spda", "corruption_level": 2.0})
    assert "spda" in families.with_trait("first_layer") and "spda" not in families.with_trait("samples")


def test_registration_refuses_clashes_and_leaves_the_registry_as_it_was():
    from deeptut import config

    @dataclass(frozen=True)
    class Clash(ModelArgs):
        learning_rate: float = 0.1  # a section's field: refused

    @dataclass(frozen=True)
    class Typed(ModelArgs):
        n_hidden: str = "many"  # another family's field with another type: refused

    before = dict(families.FAMILIES), dict(config.FIELDS)
    for cls, message in ((Clash, "learning_rate is a field of the \\[optim\\] section"),
                         (Typed, "another family has a field n_hidden")):
        with pytest.raises(ConfigError, match=message):
            families.register_family("clash", cls)
        assert (dict(families.FAMILIES), dict(config.FIELDS)) == before
    with pytest.raises(ConfigError, match="already registered"):
        families.register_family("da", SaltPepperDAArgs)
    with pytest.raises(ConfigError, match="a dataclass subclassing ModelArgs"):
        families.register_family("x", dict)
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_dataset("mnist", seam_images)
    with pytest.raises(registry.RegistryError, match="no procedure named 'nope'"):
        registry.procedure("nope")


def test_a_bad_plugin_is_a_clear_error(tmp_path):
    r = cli(["presets"], tmp_path, **{registry.PLUGINS_ENV: "no_such_module_here"})
    assert r.returncode == 2 and "DEEPTUT_PLUGINS module 'no_such_module_here' failed to import" in r.stderr


@pytest.mark.slow
def test_the_pretraining_family_trains_is_killed_resumes_and_is_drawn(tmp_path, registered):
    """deeptut train (subprocess) twice: once whole, once SIGKILLed in epoch 2 then --resume: the same
    files bit for bit; the Python API's run is the CLI's; deeptut viz draws its cost curve and filters."""
    (tmp_path / "spda.toml").write_text(SPDA_TOML)
    whole = cli(["train", "--config", "spda.toml", "--run-dir", "whole"], tmp_path)
    assert whole.returncode == 0, whole.stderr
    lines = [ln for ln in whole.stdout.splitlines() if ln.startswith("Salt-and-pepper epoch")]
    assert [ln.split(",")[0] for ln in lines] == [f"Salt-and-pepper epoch {e}" for e in range(4)]
    costs = [float(ln.split()[-1]) for ln in lines]
    assert costs[-1] < costs[0]  # it learns

    marker = tmp_path / "killed.marker"
    env = {KILL_ENV: "1", MARKER_ENV: str(marker)}
    killed = cli(["train", "--config", "spda.toml", "--run-dir", "killed"], tmp_path, **env)
    assert killed.returncode == -signal.SIGKILL and marker.exists(), killed.stderr
    resumed = cli(["train", "--resume", "killed"], tmp_path, **env)
    assert resumed.returncode == 0, resumed.stderr
    assert tiny.differences(tiny.run_record(tmp_path / "killed"), tiny.run_record(tmp_path / "whole")) == []

    import deeptut

    run = deeptut.train(str(tmp_path / "spda.toml"), run_dir=tmp_path / "api", quiet=True)
    assert run.summary["final_cost"] == pytest.approx(costs[-1], rel=1e-12)
    assert run.model.W.shape == (64, 12) and run.config.model == "spda"
    assert (tmp_path / "api" / "best.safetensors").read_bytes() == (tmp_path / "whole" / "best.safetensors").read_bytes()

    drawn = cli(["viz", "whole"], tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    names = {Path(p).name for p in drawn.stdout.split()}
    assert {"pretrain_costs.png", "filters.png"} <= names


GRU_TOML = """model = "tinygru"
init_seed = 3

[tinygru]
n_words = 8
dim_proj = 16
n_out = 2
use_dropout = false
optimizer = "adam"

[optim]
learning_rate = 0.03
batch_size = 32
n_epochs = 15

[early_stopping]
patience = 10

[data]
dataset = "seam-sequences"

[run]
preset = "tinygru"
threads = 1
device = "cpu"
"""


@pytest.mark.slow
def test_the_sequence_family_trains_is_killed_resumes_and_is_drawn(tmp_path, registered):
    """A recurrent classifier of variable-length sequences, through the chapter's sequence procedure: deeptut
    train whole, and SIGKILLed in epoch 3 then --resume, bit for bit; the Python API's run is the CLI's;
    deeptut viz draws its learning curves; it learns what a bag of words cannot."""
    (tmp_path / "gru.toml").write_text(GRU_TOML)
    whole = cli(["train", "--config", "gru.toml", "--run-dir", "whole"], tmp_path)
    assert whole.returncode == 0, whole.stderr
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["best_validation_error"] < 35.0  # chance: 50 %

    marker = tmp_path / "killed.marker"
    env = {KILL_ENV: "1", MARKER_ENV: str(marker)}  # 10 minibatches an epoch: dies in epoch 3
    killed = cli(["train", "--config", "gru.toml", "--run-dir", "killed"], tmp_path, **env)
    assert killed.returncode == -signal.SIGKILL and marker.exists(), killed.stderr
    resumed = cli(["train", "--resume", "killed"], tmp_path, **env)
    assert resumed.returncode == 0, resumed.stderr
    a, b = tiny.run_record(tmp_path / "killed"), tiny.run_record(tmp_path / "whole")
    for record in (a, b):  # the procedure's own timings
        for key in ("seconds_per_epoch", "final_train_error_seconds", "result"):  # "result" ends with the time
            record["summary"].pop(key, None)
    assert tiny.differences(a, b) == [], {k: (a["summary"][k], b["summary"].get(k)) for k in a["summary"]
                                         if a["summary"][k] != b["summary"].get(k)}

    import deeptut

    run = deeptut.train(str(tmp_path / "gru.toml"), run_dir=tmp_path / "api", quiet=True)
    assert run.summary["best_validation_error"] == summary["best_validation_error"]
    assert isinstance(run.model, TinyGRU) and not run.model.training
    assert len(run.history) == len((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines())  # a row
    #   per validation
    assert (tmp_path / "api" / "best.safetensors").read_bytes() == (tmp_path / "whole" / "best.safetensors").read_bytes()

    drawn = cli(["viz", "whole"], tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert "learning_curves.png" in {Path(p).name for p in drawn.stdout.split()}


def test_the_rule_is_the_familys_not_an_accelerators(registered):
    """deeptut.accel fuses the chapters' rules by the unit's type and rule; this family's rule runs as given."""
    from deeptut import accel, config
    from deeptut.models import build_model
    from deeptut.train import pretrain

    cfg = config.resolve(None, overrides={"model": "spda", "n_visible": 64, "n_hidden": 12, "batch_size": 20,
                                          "device": "cpu", "threads": 1})
    model = build_model(cfg.model_args(), cfg.init_seed)
    trainer = pretrain.layer_trainers(model, cfg)[0]
    ref = pretrain.layer_update(model, cfg, 0, 0.1)
    update = accel.make_pretrain_update(trainer, cfg, 0.1, torch.device("cpu"), ref)
    from deeptut.accel.cpu.pretrain import DAFusedUpdate

    assert not isinstance(update, DAFusedUpdate)
    da_cfg = config.resolve(None, overrides={"model": "da", "n_visible": 64, "n_hidden": 12, "batch_size": 20,
                                             "device": "cpu", "threads": 1})
    da = build_model(da_cfg.model_args(), da_cfg.init_seed)
    fused = accel.make_pretrain_update(pretrain.layer_trainers(da, da_cfg)[0], da_cfg, 0.1, torch.device("cpu"),
                                       pretrain.layer_update(da, da_cfg, 0, 0.1))
    assert isinstance(fused, DAFusedUpdate)


# --- no family named outside models/ and presets/ -----------------------------------------------------------


def family_name_literals(root: Path = SRC, names: set[str] | None = None) -> list[tuple[str, int, str]]:
    """(file, line, name) of each string constant equal to a registered family's name in deeptut's source,
    outside models/ and presets/ (where a family's own section and presets name it). Docstrings and
    messages that merely contain a name are not constants equal to it."""
    names = set(families.FAMILIES) if names is None else names
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("models/", "presets/")):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append((rel, node.lineno, node.value))
    return found


def test_no_family_name_as_a_string_outside_models_and_presets():
    assert family_name_literals() == []


def test_the_literal_check_can_fail(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ok.py").write_text('NAME = "rbm"\n')
    (tmp_path / "viz.py").write_text('if model == "rbm":\n    pass\nprint("an rbm run")\n')
    assert family_name_literals(tmp_path, {"rbm"}) == [("viz.py", 1, "rbm")]


# --- the loops read top to bottom ---------------------------------------------------------------------------


def _functions(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (lines, deepest nesting of for/while/if/with/try) of each function in a file."""
    def depth(node: ast.AST, d: int = 0) -> int:
        deepest = d
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.For, ast.While, ast.If, ast.With, ast.Try)):
                deepest = max(deepest, depth(child, d + 1))
            elif not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                deepest = max(deepest, depth(child, d))
        return deepest
    return {n.name: (n.end_lineno - n.lineno + 1, depth(n)) for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_the_training_loops_fit_on_a_screen():
    """fit's and pre-training's loops: at most 70 lines, nested at most 4 deep; no function in train/ over 80."""
    for module, name in (("minibatches.py", "run_epochs"), ("loop.py", "_fit"), ("pretrain.py", "pretrain")):
        lines, nesting = _functions(SRC / "train" / module)[name]
        assert lines <= 70 and nesting <= 4, (module, name, lines, nesting)
    long = {f"{p.name}:{n}": lines for p in (SRC / "train").glob("*.py")
            for n, (lines, _) in _functions(p).items() if lines > 80}
    assert long == {}


def test_the_length_check_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    (tmp_path / "f.py").write_text(f"def f():\n{body}\n    for a in b:\n        if a:\n            while a:\n"
                                   f"                with a:\n                    if a:\n                        pass\n")
    lines, nesting = _functions(tmp_path / "f.py")["f"]
    assert lines > 80 and nesting == 5
