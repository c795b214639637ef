"""The packages and their modules form layers: no import, at module level or inside a function,
runs back up (``l2t_env`` <- ``l2t_agents`` <- ``l2t_bench``, and no circle between the modules of
one package).

The graph is read from the source with ``ast`` (nothing is imported), so an import hidden inside a
function counts as much as one at the top. Imports under ``if TYPE_CHECKING:`` are left out: they
name a type for the checker and never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package name -> its folder
PACKAGES = {"l2t_env": ROOT / "l2t_env", "l2t_agents": ROOT / "agents", "l2t_bench": ROOT / "l2t_bench"}
#: a package may import only those listed below it
LAYERS = ["l2t_env", "l2t_agents", "l2t_bench"]


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The dotted names ``module`` imports anywhere in its source (functions included)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (the package's ``__init__`` for a name defined there)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        imported = _imported(ast.parse(path.read_text(), str(path)), name, path.stem == "__init__")
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or [] when it has none."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def _package(module: str) -> str:
    return module.split(".")[0]


def test_the_walk_sees_imports_inside_functions_and_finds_cycles():
    """The checker itself: a function-level import is an edge, a TYPE_CHECKING one is not, and a circle is found."""
    src = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from l2t_bench.records import X\n"
        "def f():\n    from l2t_bench.config import Y\n    from . import stats\n"
    )
    assert _imported(ast.parse(src), "l2t_bench.report", False) >= {"l2t_bench.config", "l2t_bench.stats"}
    assert "l2t_bench.records" not in _imported(ast.parse(src), "l2t_bench.report", False)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_every_package_module_is_seen():
    graph = import_graph()
    for must in ("l2t_env.env", "l2t_env.checkpoint", "l2t_agents.sb3_teachers", "l2t_bench.runner", "l2t_bench.backends"):
        assert must in graph
    assert "l2t_env.functional" in graph["l2t_env.env"]  # edges are found at all


def test_packages_import_only_the_layers_below():
    graph = import_graph()
    upward = sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets
        if LAYERS.index(_package(b)) > LAYERS.index(_package(a))
    )
    assert upward == [], f"imports that run up the layers l2t_env <- l2t_agents <- l2t_bench: {upward}"


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_cycle_between_the_modules_of_a_package(package):
    graph = import_graph()
    inside = {a: {b for b in targets if _package(b) == package} for a, targets in graph.items() if _package(a) == package}
    cycle = _cycle(inside)
    assert cycle == [], f"import cycle in {package}: {' -> '.join(cycle)}"
