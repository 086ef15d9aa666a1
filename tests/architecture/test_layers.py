"""The package's structure: layers as pyproject.toml declares them, no import cycle, every module importable on its
own, and no module reaching into another's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import lardon_store

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(lardon_store.__file__).resolve().parent


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_import_linter_contracts_are_kept():
    """The layer contracts of pyproject.toml ([tool.importlinter]), checked by import-linter itself."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def import_edges() -> dict[str, set[str]]:
    """module -> the modules its import runs: those it names (at module level or inside functions), and its parent
    packages, whose ``__init__`` Python runs first. A package's own submodules are left out of its edges: its
    ``__init__`` may re-export them, since none of them reads a name from it (an explicit import of a package by
    one of its submodules stays an edge, and would close a cycle)."""
    graph = grimp.build_graph("lardon_store")
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        targets = {t for t in graph.find_modules_directly_imported_by(module) if not t.startswith(module + ".")}
        parts = module.split(".")
        targets |= {".".join(parts[:i]) for i in range(2, len(parts))}  # (never the root: nothing imports it)
        edges[module] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a path that starts and ends on the same module), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_has_no_cycle():
    edges = import_edges()
    assert len(edges) == len(module_names())
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


@pytest.mark.parametrize("module", module_names())
def test_each_module_imports_on_its_own(module):
    code = f"import {module}"
    if module == "lardon_store.torch":
        pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def private_names_defined(tree: ast.Module) -> set[str]:
    """The private names a module defines: functions, classes, attributes it assigns, slots it declares."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
            names.add(node.value)  # (__slots__ entries)
    return {n for n in names if n.startswith("_")}


def private_uses(path: Path) -> list[str]:
    """``module._name`` and ``obj._name`` uses in ``path`` of private names the file does not define itself, and
    ``from x import _name`` of another module."""
    tree = ast.parse(path.read_text(), str(path))
    own = private_names_defined(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [f"{path.name}:{node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr not in own:
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg and node.arg.startswith("_") and node.arg not in own:
            found.append(f"{path.name}:{node.value.lineno}: {node.arg}=")
    return sorted(found)


def test_private_uses_are_found(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from x import _hidden\nstore._reader.get()\nself._mine = 1\nself._mine\nStore(p, _create=True)\n")
    assert private_uses(bad) == ["bad.py:1: from x import _hidden", "bad.py:2: ._reader", "bad.py:5: _create="]


@pytest.mark.parametrize("folder", ["lardon_store", "benchmarks"])
def test_no_module_reaches_into_another_modules_private_names(folder):
    found = [use for path in sorted((ROOT / folder).rglob("*.py")) for use in private_uses(path)]
    assert found == []
