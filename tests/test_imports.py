"""Claim: the package's imports run downward only.

Every ``import linear_vae...`` statement in the package (at module level or inside a function)
is an edge of a graph, read from the source with ``ast``; that graph has no cycle, nothing but
the CLI itself imports the CLI, and the training loop imports nothing of any model.
"""

from __future__ import annotations

import ast
from pathlib import Path

import linear_vae

PACKAGE = Path(linear_vae.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports() -> dict[str, set[str]]:
    """``{module: the linear_vae modules it imports}`` for every module of the package."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from linear_vae import loop" imports the module linear_vae.loop
                targets = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                ]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name and t != "linear_vae"}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of modules, or ``None`` (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_is_read():
    graph = package_imports()
    assert "linear_vae.train" in graph and "linear_vae.loop" in graph["linear_vae.train"]
    assert "linear_vae.problem" in graph["linear_vae.compare"]


def test_the_package_imports_have_no_cycle():
    assert find_cycle(package_imports()) is None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_nothing_in_the_library_imports_the_cli():
    importers = [name for name, edges in package_imports().items() if "linear_vae.cli" in edges]
    assert importers == [], importers


def test_the_training_loop_imports_no_model():
    # Only the atomic file writer, for the checkpoint of a grid that stops by rule.
    assert package_imports()["linear_vae.loop"] <= {"linear_vae.io"}


def test_the_deep_trainer_does_not_import_the_linear_one():
    assert "linear_vae.train" not in package_imports()["linear_vae.deep"]


def test_the_single_configuration_trainer_does_not_import_the_sweep_driver():
    graph = package_imports()
    assert "linear_vae.train" in graph["linear_vae.sweep"]
    assert "linear_vae.sweep" not in graph["linear_vae.train"]


def test_modules_that_need_only_the_projected_objective_do_not_import_the_solver():
    graph = package_imports()
    for module in ("linear_vae.compare", "linear_vae.stationary"):
        assert "linear_vae.projected" in graph[module]
        assert "linear_vae.newton" not in graph[module], module
