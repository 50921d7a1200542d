"""Claim: the package's imports run downward only.

Every ``import linear_vae...`` statement in the package (at module level or inside a function)
is an edge of a graph, read from the source with ``ast``; that graph has no cycle, every module
imports only its own subpackage and the subpackages below it (:data:`LAYERS`), nothing but the
CLI itself imports the CLI, and the training loop imports nothing of any model.
"""

from __future__ import annotations

import ast
from pathlib import Path

import linear_vae

PACKAGE = Path(linear_vae.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute_module(importer: str, node: ast.ImportFrom, is_package: bool = False) -> str:
    """The absolute name of the module a ``from ... import`` statement of ``importer`` reads from.

    >>> absolute_module("linear_vae.training.train", ast.parse("from .loop import run").body[0])
    'linear_vae.training.loop'
    >>> absolute_module("linear_vae.training.train", ast.parse("from ..theory import elbo").body[0])
    'linear_vae.theory'
    """
    if node.level == 0:
        return node.module
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def package_imports() -> dict[str, set[str]]:
    """``{module: the linear_vae modules it imports}`` for every module of the package."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or node.level):
                # "from linear_vae.training import loop" imports the module linear_vae.training.loop;
                # "from . import loop" in linear_vae/training/train.py imports the same one
                source = absolute_module(name, node, is_package=path.name == "__init__.py")
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
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
    assert "linear_vae.training.train" in graph and "linear_vae.training.loop" in graph["linear_vae.training.train"]
    assert "linear_vae.data.problem" in graph["linear_vae.verification.compare"]


def test_the_package_imports_have_no_cycle():
    assert find_cycle(package_imports()) is None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_nothing_in_the_library_imports_the_cli():
    importers = [name for name, edges in package_imports().items() if "linear_vae.cli" in edges]
    assert importers == [], importers


def test_the_training_loop_imports_no_model():
    # Only the atomic file writer, for the checkpoint of a grid that stops by rule.
    assert package_imports()["linear_vae.training.loop"] <= {"linear_vae.core.io"}


def test_the_deep_trainer_does_not_import_the_linear_one():
    assert "linear_vae.training.train" not in package_imports()["linear_vae.deep.deep"]


def test_the_single_configuration_trainer_does_not_import_the_sweep_driver():
    graph = package_imports()
    assert "linear_vae.training.train" in graph["linear_vae.training.sweep"]
    assert "linear_vae.training.sweep" not in graph["linear_vae.training.train"]


def test_modules_that_need_only_the_projected_objective_do_not_import_the_solver():
    graph = package_imports()
    for module in ("linear_vae.verification.compare", "linear_vae.training.stationary"):
        assert "linear_vae.training.projected" in graph[module]
        assert "linear_vae.training.newton" not in graph[module], module


#: The subpackages of :mod:`linear_vae`, bottom layer first.  A module may import its own
#: subpackage and the layers below it, never one above or beside it (``deep`` and
#: ``verification`` share a layer and import neither the other).  The modules directly under
#: ``linear_vae/`` (the CLI, the estimator, the analysis) are the top layer.
LAYERS = {
    "core": 0,
    "data": 1,
    "theory": 2,
    "training": 3,
    "deep": 4,
    "verification": 4,
    "experiments": 5,
}
TOP = max(LAYERS.values()) + 1


def subpackage(module: str) -> str | None:
    """The subpackage ``module`` belongs to, or ``None`` for the top-level modules.

    >>> subpackage("linear_vae.theory.elbo"), subpackage("linear_vae.theory"), subpackage("linear_vae.cli")
    ('theory', 'theory', None)
    """
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def layer(module: str) -> int:
    sub = subpackage(module)
    return TOP if sub is None else LAYERS[sub]


def imports_against_the_layers(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, imported)`` for every edge that leaves the importer's subpackage other than downward."""
    return sorted(
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if subpackage(target) != subpackage(module) and layer(target) >= layer(module)
    )


def test_every_subpackage_has_a_layer():
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(LAYERS), subpackages ^ set(LAYERS)


def test_every_module_imports_only_its_own_layer_and_those_below():
    violations = imports_against_the_layers(package_imports())
    assert violations == [], violations


def test_the_layer_check_sees_an_upward_and_a_sideways_import():
    graph = {
        "linear_vae.theory.elbo": {"linear_vae.training.loop", "linear_vae.theory.ppca", "linear_vae.core.io"},
        "linear_vae.deep.deep": {"linear_vae.verification.compare", "linear_vae.training.loop"},
        "linear_vae.cli": {"linear_vae.analysis", "linear_vae.experiments.runner"},
        "linear_vae.core.io": {"linear_vae.cli"},
    }
    assert imports_against_the_layers(graph) == [
        ("linear_vae.core.io", "linear_vae.cli"),
        ("linear_vae.deep.deep", "linear_vae.verification.compare"),
        ("linear_vae.theory.elbo", "linear_vae.training.loop"),
    ]


def test_relative_imports_are_read():
    tree = ast.parse("from . import loop\nfrom ..core.io import atomic_write_json\nfrom .. import theory")
    nodes = tree.body
    assert [absolute_module("linear_vae.training.train", node) for node in nodes] == [
        "linear_vae.training",
        "linear_vae.core.io",
        "linear_vae",
    ]
    assert absolute_module("linear_vae.training", nodes[0], is_package=True) == "linear_vae.training"
