"""The dependency rules of the layout, checked on deeptut's import graph built from the source.

The tutorials' path is data/ -> models/ -> train/; the accelerators (accel/) plug in through one seam,
`deeptut.accel` itself; the step protocol and the reference step (deeptut/steps.py, deeptut/losses.py) sit
below both. Rules:
* no import cycles anywhere in deeptut, package `__init__` files included;
* models/ imports none of train/, accel/, viz/, cli (a model is the chapter's nn.Module, nothing about
  speed or training);
* data/ imports none of models/, train/, accel/, viz/, cli;
* store/ imports neither accel/ nor data/ (the caller hands it thread counts and the normaliser's
  statistics), nor train/, viz/, sweep/, cli;
* accel/ imports nothing from train/ (nor viz/, sweep/, cli);
* config.py imports no data/ code (nor train/, accel/, store/, viz/, sweep/, cli);
* steps.py and losses.py import none of train/, accel/, data/, store/, viz/, sweep/, cli;
* train/ imports from accel/ only the seam `deeptut.accel` (never deeptut.accel.cpu.* / .cuda.* ...);
* one atomic JSON writer (store/files.py): no function elsewhere both dumps JSON and renames a file
  into place; one signal handler (deeptut/signals.py `Interrupts`): no other module calls
  signal.signal. The training session and the sweep's driver both use them.

The graph: every `import` and `from ... import` anywhere in a module (inside functions too; under
TYPE_CHECKING too), relative imports resolved. `from package import name` is an edge to `package` itself
(its `__init__` runs, and `name` is looked up in it first) and, where `package.name` is a module, to that
submodule too; so `from deeptut.viz import plots` in a module that deeptut/viz/__init__.py imports is a
cycle, and `import deeptut.viz.plots` (or `from deeptut.viz.plots import ...`) is not. `import a.b.c` is
an edge to `a.b.c`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "deeptut"


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that module `name` (at `path`) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]  # the package relative imports start in
    found: set[str] = set()

    def known(dotted: str) -> str | None:  # the longest prefix of `dotted` that is one of our modules
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if candidate in modules:
                return candidate
        return None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = known(alias.name)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            package = known(base)
            if package:
                found.add(package)  # the package's __init__ (or the module) the names are read from
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")  # a submodule imported by name
    found.discard(name)
    return found


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    files = module_files(src, package)
    names = set(files)
    return {name: imported_modules(name, path, names) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}  # absent: unvisited; 1: on the current path; 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# layer -> the packages / modules it must not import
BELOW_BOTH = ("deeptut.train", "deeptut.accel", "deeptut.data", "deeptut.store", "deeptut.viz", "deeptut.sweep",
              "deeptut.cli")
FORBIDDEN = {
    "deeptut.models": ("deeptut.train", "deeptut.accel", "deeptut.viz", "deeptut.cli"),
    "deeptut.data": ("deeptut.models", "deeptut.train", "deeptut.accel", "deeptut.viz", "deeptut.cli"),
    "deeptut.store": ("deeptut.accel", "deeptut.data", "deeptut.train", "deeptut.viz", "deeptut.sweep", "deeptut.cli"),
    "deeptut.accel": ("deeptut.train", "deeptut.viz", "deeptut.sweep", "deeptut.cli"),
    "deeptut.config": ("deeptut.data", "deeptut.train", "deeptut.accel", "deeptut.store", "deeptut.viz",
                       "deeptut.sweep", "deeptut.cli"),
    "deeptut.steps": BELOW_BOTH,
    "deeptut.losses": BELOW_BOTH,
    "deeptut.signals": ("deeptut",),  # imports nothing of deeptut
}


def violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            for layer, banned in FORBIDDEN.items():
                if within(module, layer) and any(within(target, b) and not within(target, layer) for b in banned):
                    out.append(f"{module} -> {target} ({layer} must not import {', '.join(banned)})")
            if within(module, "deeptut.train") and within(target, "deeptut.accel") and target != "deeptut.accel":
                out.append(f"{module} -> {target} (train/ reaches the accelerators only through deeptut.accel)")
    return out


def _calls(tree: ast.AST) -> list[str]:
    """Dotted names of the functions called in `tree` ("os.replace", "json.dumps", "signal.signal", ...)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            out.append(".".join(reversed(parts)))
    return out


RENAMES = {"os.replace", "os.rename"}
WRITES = {"write", "write_text", "write_bytes"}


def _writes_json(tree: ast.AST) -> bool:
    """`json.dump(obj, f)`, or `f.write(json.dumps(...))` / `path.write_text(json.dumps(...))` (a JSON text
    written to a file; json.dumps into something else, an array's field, is not)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _calls(node)[0]
        if name == "json.dump":
            return True
        if isinstance(node.func, ast.Attribute) and node.func.attr in WRITES and any(
                c == "json.dumps" for arg in node.args for c in _calls(arg)):
            return True
    return False


def own_writers_and_handlers(src: Path = SRC, package: str = PACKAGE) -> list[str]:
    """Functions outside store/files.py that write JSON atomically themselves (dump JSON and rename a file
    into place in one function), and modules outside deeptut/signals.py that install signal handlers."""
    out = []
    for name, path in module_files(src, package).items():
        tree = ast.parse(path.read_text(), str(path))
        if name != f"{package}.store.files":
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if set(_calls(node)) & RENAMES and _writes_json(node):
                        out.append(f"{name}.{node.name}: an atomic JSON write of its own (use store/files.py)")
        if name != f"{package}.signals" and "signal.signal" in _calls(tree):
            out.append(f"{name}: installs a signal handler (use deeptut/signals.py Interrupts)")
    return out


# --- the rules, on deeptut --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    g = import_graph()
    assert {"deeptut.train.loop", "deeptut.models.lenet", "deeptut.accel", "deeptut.data.stream"} <= set(g)
    return g


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_only_what_they_may(graph):
    bad = violations(graph)
    assert not bad, "forbidden imports:\n  " + "\n  ".join(bad)


def test_train_uses_the_seam(graph):
    """The rule is not vacuous: the loop does reach the accelerators, through the seam."""
    assert "deeptut.accel" in graph["deeptut.train.loop"]


def test_the_step_sits_below_train_and_accel(graph):
    """accel/ builds its steps on deeptut.steps (not train/), and falls back to its AutogradStep."""
    assert "deeptut.steps" in graph["deeptut.accel"] and "deeptut.steps" in graph["deeptut.accel.cpu.fused"]
    assert "deeptut.losses" in graph["deeptut.steps"] and "deeptut.losses" in graph["deeptut.accel.evaluator"]


def test_one_atomic_json_writer_and_one_signal_handler(graph):
    bad = own_writers_and_handlers()
    assert not bad, "\n  ".join(["copies of store/files.py or deeptut/signals.py:"] + bad)
    for user in ("deeptut.train.session", "deeptut.sweep.run"):  # the rules are not vacuous
        assert "deeptut.signals" in graph[user], user
    assert "deeptut.store.files" in graph["deeptut.sweep.run"]


# --- the checker itself, on hand-made cases -----------------------------------------------------------------


def test_find_cycle_on_hand_made_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y"}}) == ["y", "y"]
    assert find_cycle({"a": set(), "b": {"c"}, "c": {"d"}, "d": {"b"}}) == ["b", "c", "d", "b"]


def test_imports_in_functions_and_relative_imports_count(tmp_path):
    pkg = tmp_path / "pkg"
    for d in ("", "models", "train", "accel", "accel/cpu"):
        (pkg / d).mkdir(exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "accel" / "cpu" / "fast.py").write_text("X = 1\n")
    (pkg / "models" / "m.py").write_text("def f():\n    from ..train import loop\n    return loop\n")
    (pkg / "train" / "loop.py").write_text("from pkg.accel.cpu import fast\nfrom . import step\n"
                                           "import pkg.models.m\n")
    (pkg / "train" / "step.py").write_text("from pkg import accel\nfrom .loop import X\n")
    g = import_graph(tmp_path, "pkg")
    assert g["pkg.models.m"] == {"pkg.train", "pkg.train.loop"}  # inside a function, relative (two levels)
    assert g["pkg.train.loop"] == {"pkg.accel.cpu", "pkg.accel.cpu.fast", "pkg.train", "pkg.train.step",
                                   "pkg.models.m"}
    # `from pkg import accel`: the package pkg (its __init__) and the subpackage; `from .loop`: the module
    assert g["pkg.train.step"] == {"pkg", "pkg.accel", "pkg.train.loop"}
    assert find_cycle(g) == ["pkg.models.m", "pkg.train.loop", "pkg.models.m"]
    renamed = {k.replace("pkg.", "deeptut.", 1): {t.replace("pkg.", "deeptut.", 1) for t in v} for k, v in g.items()}
    bad = violations(renamed)
    assert any(b.startswith("deeptut.models.m -> deeptut.train.loop") for b in bad)
    assert any(b.startswith("deeptut.train.loop -> deeptut.accel.cpu.fast") for b in bad)
    assert not any(b.startswith("deeptut.train.step -> deeptut.accel ") for b in bad)  # the seam is allowed


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A package `pkg` under tmp_path with the given modules ({relative path: source}); every folder gets an
    __init__.py (empty unless given)."""
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in [tmp_path / "pkg", *(tmp_path / "pkg").rglob("*")]:
        if d.is_dir() and not (d / "__init__.py").exists():
            (d / "__init__.py").write_text("")
    return tmp_path


def _as_deeptut(g: dict[str, set[str]]) -> dict[str, set[str]]:
    def ren(m: str) -> str:
        return "deeptut" + m[3:] if m == "pkg" or m.startswith("pkg.") else m
    return {ren(k): {ren(t) for t in v} for k, v in g.items()}


def test_cycles_through_package_inits_count(tmp_path):
    """deeptut.viz <-> deeptut.viz.report as it was: the package's __init__ imports report (in a function),
    report reads a name from the package (`from pkg.viz import plots`)."""
    src = _package(tmp_path, {"viz/__init__.py": "def write_report():\n    from pkg.viz.report import w\n",
                              "viz/plots.py": "X = 1\n", "viz/report.py": "from pkg.viz import plots\n"})
    g = import_graph(src, "pkg")
    assert g["pkg.viz.report"] == {"pkg.viz", "pkg.viz.plots"}
    assert find_cycle(g) == ["pkg.viz", "pkg.viz.report", "pkg.viz"]
    # the fix: import the submodule itself; then only the package imports report
    (src / "pkg" / "viz" / "report.py").write_text("import pkg.viz.plots as plots\n")
    g = import_graph(src, "pkg")
    assert g["pkg.viz.report"] == {"pkg.viz.plots"} and find_cycle(g) is None
    # the sweep's three-module cycle: __init__ -> run -> (in a function) backends -> the package
    src = _package(tmp_path / "b", {"sweep/__init__.py": "from pkg.sweep.run import go\n",
                                    "sweep/run.py": "def go():\n    from pkg.sweep.backends import b\n",
                                    "sweep/backends.py": "from pkg.sweep import trial\n", "sweep/trial.py": ""})
    assert find_cycle(import_graph(src, "pkg")) == ["pkg.sweep", "pkg.sweep.run", "pkg.sweep.backends", "pkg.sweep"]


def test_each_layer_rule_can_fail(tmp_path):
    src = _package(tmp_path, {
        "store/rundir.py": "from pkg.accel import thread_counts\nfrom pkg.data.normalize import N\n",
        "store/files.py": "",
        "accel/__init__.py": "def make():\n    from pkg.train.step import AutogradStep\n",
        "accel/cpu/fused.py": "from pkg.steps import EagerStep\n",
        "config.py": "def check():\n    from pkg.data.augment import image_side\n    from pkg.store import files\n",
        "steps.py": "from pkg.train.losses import L1\n", "losses.py": "import pkg.accel\n",
        "signals.py": "from pkg.errors import E\n", "errors.py": "",
        "data/normalize.py": "", "data/augment.py": "", "train/step.py": "", "train/losses.py": "",
    })
    bad = violations(_as_deeptut(import_graph(src, "pkg")))
    for edge in ("deeptut.store.rundir -> deeptut.accel ", "deeptut.store.rundir -> deeptut.data.normalize",
                 "deeptut.accel -> deeptut.train.step", "deeptut.config -> deeptut.data.augment",
                 "deeptut.config -> deeptut.store.files", "deeptut.steps -> deeptut.train.losses",
                 "deeptut.losses -> deeptut.accel ", "deeptut.signals -> deeptut.errors"):
        assert any(b.startswith(edge) for b in bad), (edge, bad)
    assert not any(b.startswith("deeptut.accel.cpu.fused -> deeptut.steps") for b in bad)  # allowed
    assert not any(b.startswith("deeptut.store.rundir -> deeptut.store ") for b in bad)  # within the layer


def test_own_json_writers_and_signal_handlers_are_found(tmp_path):
    src = _package(tmp_path, {
        "sweep/run.py": ("import json, os, signal\n\n"
                         "def _write_json(path, obj):\n    tmp = path + '.tmp'\n"
                         "    open(tmp, 'w').write(json.dumps(obj))\n    os.replace(tmp, path)\n\n"
                         "class _Stop:\n    def __enter__(self):\n        signal.signal(signal.SIGINT, print)\n"),
        "sweep/ledger.py": ("import json, os\n\ndef append(f, rec):\n    f.write(json.dumps(rec))\n\n"
                            "def move(a, b):\n    os.replace(a, b)\n"),  # JSON, and a rename, apart: fine
        "data/cache.py": ("import json, os\nimport numpy as np\n\ndef save(path, names, x):\n"
                          "    np.savez(path + '.t', x=x, names=np.array(json.dumps(names)))\n"
                          "    os.replace(path + '.t', path)\n"),  # JSON inside an .npz: not a JSON file
        "train/log.py": ("import json, os\n\ndef save(path, obj):\n    with open(path + '.t', 'w') as f:\n"
                         "        json.dump(obj, f)\n    os.rename(path + '.t', path)\n"),
        "store/files.py": ("import json, os\n\ndef atomic_write_json(path, obj):\n"
                           "    open(path + '.t', 'w').write(json.dumps(obj))\n    os.replace(path + '.t', path)\n"),
        "signals.py": "import signal\n\ndef install(h):\n    signal.signal(signal.SIGTERM, h)\n",
    })
    assert sorted(own_writers_and_handlers(src, "pkg")) == [
        "pkg.sweep.run._write_json: an atomic JSON write of its own (use store/files.py)",
        "pkg.sweep.run: installs a signal handler (use deeptut/signals.py Interrupts)",
        "pkg.train.log.save: an atomic JSON write of its own (use store/files.py)"]
