"""The dependency rules of the layout, checked on deeptut's import graph built from the source.

The tutorials' path is data/ -> models/ -> train/; the accelerators (accel/) plug in through one seam,
`deeptut.accel` itself. Rules:
* no import cycles anywhere in deeptut;
* models/ imports none of train/, accel/, viz/, cli (a model is the chapter's nn.Module, nothing about
  speed or training);
* data/ imports none of models/, train/, accel/, viz/, cli;
* train/ imports from accel/ only the seam `deeptut.accel` (never deeptut.accel.cpu.* / .cuda.* ...).

The graph: every `import` and `from ... import` anywhere in a module (inside functions too; under
TYPE_CHECKING too), relative imports resolved, and `from package import name` read as the submodule
`package.name` where that is a module (else as `package`). An import names the module it names, not its
parent packages (which Python also runs, but whose own imports are their own edges).
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
            for alias in node.names:
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base)
                if target:
                    found.add(target)
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
FORBIDDEN = {
    "deeptut.models": ("deeptut.train", "deeptut.accel", "deeptut.viz", "deeptut.cli"),
    "deeptut.data": ("deeptut.models", "deeptut.train", "deeptut.accel", "deeptut.viz", "deeptut.cli"),
}


def violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            for layer, banned in FORBIDDEN.items():
                if within(module, layer) and any(within(target, b) for b in banned):
                    out.append(f"{module} -> {target} ({layer} must not import {', '.join(banned)})")
            if within(module, "deeptut.train") and within(target, "deeptut.accel") and target != "deeptut.accel":
                out.append(f"{module} -> {target} (train/ reaches the accelerators only through deeptut.accel)")
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
    assert g["pkg.models.m"] == {"pkg.train.loop"}  # inside a function, relative (two levels)
    assert g["pkg.train.loop"] == {"pkg.accel.cpu.fast", "pkg.train.step", "pkg.models.m"}
    assert g["pkg.train.step"] == {"pkg.accel", "pkg.train.loop"}  # `from pkg import accel`: the package
    assert find_cycle(g) == ["pkg.models.m", "pkg.train.loop", "pkg.models.m"]
    renamed = {k.replace("pkg.", "deeptut.", 1): {t.replace("pkg.", "deeptut.", 1) for t in v} for k, v in g.items()}
    bad = violations(renamed)
    assert any(b.startswith("deeptut.models.m -> deeptut.train.loop") for b in bad)
    assert any(b.startswith("deeptut.train.loop -> deeptut.accel.cpu.fast") for b in bad)
    assert not any(b.startswith("deeptut.train.step -> deeptut.accel ") for b in bad)  # the seam is allowed
