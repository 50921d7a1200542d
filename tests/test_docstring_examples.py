"""Every public function and method of the documented modules shows a worked example in its
docstring (the suite runs them: ``--doctest-modules`` over ``linear_vae`` in pyproject.toml).

:data:`DOCUMENTED` lists the modules held to that so far (by path in the package, without
``.py``: ``"theory/elbo"`` is :mod:`linear_vae.theory.elbo`); a module joins it once every public
function of it has an example, and from then on a new function without one fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "linear_vae"
DOCUMENTED = [
    "analysis", "compilation_cache", "core/precision", "core/progress", "core/spd", "core/validation",
    "data/conditioning", "data/datasets", "data/joint_expectations", "data/joint_moments", "data/moments",
    "data/problem", "data/readers", "deep/stopping", "experiments/plotting", "interrupts", "theory/collapse",
    "theory/conditional", "theory/elbo", "theory/escape", "theory/estimators", "theory/hierarchical",
    "theory/metrics", "theory/optimum", "theory/ppca", "training/convergence", "training/cvae_training",
    "training/divergence", "training/gradient_solvers", "training/hvae_training", "training/loop",
    "training/model_objective", "training/projected", "training/solver", "training/solvers", "verification/compare",
    "verification/hard_cases", "verification/model_verify", "verification/verify",
]  # fmt: skip


def public_callables(tree: ast.Module):
    """``(name, node)`` of the public functions and classes of a module and the public methods of
    its public classes (properties included, dunder methods and NamedTuple fields left out)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node.name, node
            if isinstance(node, ast.ClassDef):
                for member in node.body:
                    if isinstance(member, ast.FunctionDef) and not member.name.startswith("_"):
                        yield f"{node.name}.{member.name}", member


def has_example(node) -> bool:
    return ">>>" in (ast.get_docstring(node) or "")


@pytest.mark.parametrize("module", DOCUMENTED)
def test_every_public_function_shows_an_example(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    missing = [
        name
        for name, node in public_callables(tree)
        if not has_example(node) and not (isinstance(node, ast.ClassDef) and _documented_by_its_maker(node))
    ]
    assert not missing, f"linear_vae/{module}.py: no example in the docstring of {missing}"


def _documented_by_its_maker(node: ast.ClassDef) -> bool:
    """A result type (a NamedTuple a documented function returns) is shown by that function's
    example, and an exception by the example of a function that raises it."""
    names = [base.id for base in node.bases if isinstance(base, ast.Name)]
    return "NamedTuple" in names or any(name.endswith("Error") for name in names)


def test_the_check_sees_a_missing_example():
    tree = ast.parse('def shown():\n    """>>> 1\n    1"""\n\n\ndef bare():\n    """No example."""\n')
    assert [name for name, node in public_callables(tree) if not has_example(node)] == ["bare"]
