"""The layers import one way: core <- theory <- sims <- analysis <- plotting <- experiments <- cli.

Every module of ``src/grokphase`` is parsed (imports inside functions included) and each import of a
grokphase module is checked against the layer map: a module may import its own layer and the layers
below, never one above.  The import graph between modules must also be free of cycles.  The checker
is tested on a copy of the package with a planted reverse import (it must fail there) and with a
planted cycle.  See docs/architecture.md.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: layer of each module prefix (longest prefix wins); grokphase itself and its base modules are "core"
LAYERS = ("core", "theory", "sims", "analysis", "plotting", "experiments", "cli")
PREFIXES = {
    "grokphase": "core",
    "grokphase.theory": "theory",
    "grokphase.sims": "sims",
    "grokphase.analysis": "analysis",
    "grokphase.plotting": "plotting",
    "grokphase.experiments": "experiments",
    "grokphase.cli": "cli",
}


def layer_of(module: str) -> str:
    best = max((p for p in PREFIXES if module == p or module.startswith(p + ".")), key=len)
    return PREFIXES[best]


def modules(src: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((src / "grokphase").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported grokphase module, line) of every import statement in the file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "grokphase")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "grokphase":
                continue
            for a in node.names:        # `from pkg import submodule` imports the submodule
                sub = f"{mod}.{a.name}"
                out.append((sub if sub in known else mod, node.lineno))
    return out


def check(src: Path) -> tuple[list[str], list[list[str]]]:
    """(layering violations, import cycles) of the package under ``src``."""
    mods = modules(src)
    known = set(mods)
    violations, graph = [], {m: set() for m in mods}
    for name, path in mods.items():
        here = LAYERS.index(layer_of(name))
        for target, line in imports_of(name, path, known):
            if target not in known:
                violations.append(f"{path.relative_to(src)}:{line} imports unknown module {target}")
                continue
            if target != name:
                graph[name].add(target)
            there = LAYERS.index(layer_of(target))
            if there > here:
                violations.append(f"{path.relative_to(src)}:{line}: {name} ({LAYERS[here]}) imports {target} "
                                  f"({LAYERS[there]}), a layer above")
    return violations, cycles(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for name in modules(SRC):
        assert layer_of(name) in LAYERS


def test_layers_import_one_way():
    violations, _ = check(SRC)
    assert not violations, "\n".join(violations)


def test_no_import_cycles():
    _, found = check(SRC)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.fixture()
def copy_of_package(tmp_path):
    shutil.copytree(SRC / "grokphase", tmp_path / "grokphase", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_checker_catches_a_planted_reverse_import(copy_of_package):
    """theory importing the CLI (even inside a function) is reported."""
    target = copy_of_package / "grokphase" / "theory" / "roots.py"
    target.write_text(target.read_text() + "\n\ndef _planted():\n    from grokphase.cli import main\n    return main\n")
    violations, _ = check(copy_of_package)
    assert any("theory/roots.py" in v and "grokphase.cli" in v for v in violations), violations


def test_checker_catches_a_planted_cycle(copy_of_package):
    """Two analysis modules importing each other form a cycle, although the layering allows both."""
    a = copy_of_package / "grokphase" / "analysis" / "replica.py"
    a.write_text(a.read_text() + "\nfrom grokphase.analysis import perp_norm  # noqa\n")
    b = copy_of_package / "grokphase" / "analysis" / "perp_norm.py"
    b.write_text(b.read_text() + "\nfrom grokphase.analysis import replica  # noqa\n")
    _, found = check(copy_of_package)
    assert any({"grokphase.analysis.replica", "grokphase.analysis.perp_norm"} <= set(c) for c in found), found
