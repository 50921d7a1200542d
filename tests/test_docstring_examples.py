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
    "__init__", "analysis", "cli", "compilation_cache", "core/io", "core/precision", "core/progress",
    "core/spd", "core/validation", "data/conditioning", "data/datasets", "data/joint_expectations",
    "data/joint_moments", "data/moments", "data/problem", "data/readers", "deep/deep", "deep/stopping",
    "estimator", "experiments/plotting", "interrupts", "theory/collapse", "theory/conditional", "theory/elbo",
    "theory/escape", "theory/estimators", "theory/hierarchical", "theory/metrics", "theory/optimum",
    "theory/ppca", "training/convergence", "training/cvae_training", "training/divergence",
    "training/gradient_solvers", "training/hvae_training", "training/loop", "training/model_objective",
    "training/newton", "training/projected", "training/solver", "training/solvers", "training/stationary",
    "training/sweep", "training/train", "verification/compare", "verification/hard_cases",
    "verification/model_verify", "verification/verify",
    "core/__init__", "data/__init__", "deep/__init__", "theory/__init__", "training/__init__", "verification/__init__",
    # The experiments: the shared helpers, the closed-form landscape, kl_per_dim at a tiny config (one
    # small Newton sweep), and the modules that only set a CONFIG for another's run and plot.
    "experiments/__init__", "experiments/common", "experiments/deep_vae_fashion", "experiments/kl_per_dim",
    "experiments/landscape", "experiments/landscape_paper", "experiments/latent_dim_paper", "experiments/pairs",
    "experiments/runner", "experiments/training_curves_paper",
]  # fmt: skip
#: Left out: the experiments whose ``run`` trains (a Newton sweep, Adam runs, a deep-VAE grid, the
#: CVAE/HVAE trainers): each is a compilation of its own, 3-5 s of CPU at a tiny configuration
#: (kl_per_dim, shown, takes 3.5 s), and their ``plot`` needs ``run``'s results.  Together they would
#: add about a minute of CPU to the suite, beyond its time budget.  Their quick runs and figures are
#: checked by tests/test_experiments.py.
UNDOCUMENTED_EXPERIMENTS = [
    "collapse_fraction", "collapse_threshold", "conditional_information", "cvae_collapse", "deep_vae", "encoders",
    "escape_time", "hvae_collapse", "identifiability", "latent_dim", "metric_calibration", "rate_distortion",
    "stationary_points", "training_curves",
]  # fmt: skip


def test_every_module_is_documented_or_left_out():
    modules = {path.relative_to(PACKAGE).with_suffix("").as_posix() for path in PACKAGE.rglob("*.py")}
    listed = set(DOCUMENTED) | {f"experiments/{name}" for name in UNDOCUMENTED_EXPERIMENTS}
    assert modules == listed, f"not listed: {sorted(modules - listed)}; no such module: {sorted(listed - modules)}"


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
