"""Claims about the solver interface (:mod:`linear_vae.training.solver`, docs/theory.md (T7)):

* an optimiser defined outside the package (here, plain gradient ascent with a fixed step) trains
  a sweep through the interface alone, and reproduces the package's own SGD at a constant rate;
* a solver's state is a pytree: saved to disk and restored, training continues bitwise as if it
  had never stopped, and the state narrowed to a subset of configurations trains those
  configurations exactly as the whole sweep did;
* the drivers never look inside a solver: no module outside the solvers tests the optimiser's
  name, and no field of a solver's state is read or written outside that solver's module (read
  from the source with ``ast``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linear_vae
from linear_vae.data.problem import Problem
from linear_vae.training import newton
from linear_vae.training.solver import Solver
from linear_vae.training.solvers import SOLVERS
from linear_vae.training.sweep import train_sweep
from linear_vae.training.train import Hyper, TrainConfig, TrainData, init_state, run_steps

PACKAGE = Path(linear_vae.__file__).parent
#: The solvers' own modules: the interface, the registry and the implementations.
SOLVER_MODULES = {"training/solver.py", "training/solvers.py", "training/newton.py", "training/gradient_solvers.py"}
BETAS, SIGMA2S, SEEDS = [0.5, 1.0, 3.0], [1.0, 0.8, 1.2], [0, 1, 2]


class GradientAscent(Solver):
    """Plain gradient ascent on the objective with a fixed step: ``theta <- theta + rate grad``.

    Its state counts the steps taken (a pytree leaf, so that the sweep carries it)."""

    name = "gradient-ascent"

    def __init__(self, rate: float):
        self.rate = rate

    def init(self, trainable, objective, config):
        return jnp.zeros((), int)

    def step(self, trainable, state, objective, key, config):
        loss, grad = jax.value_and_grad(objective.negative)(trainable, key)
        return jax.tree.map(lambda p, g: p - self.rate * g, trainable, grad), state + 1, loss


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    return Problem.from_data(rng.normal(size=(300, 5)) @ np.diag([2.0, 1.5, 1.0, 0.6, 0.3]) + 0.5)


def test_an_optimiser_defined_outside_the_package_trains_a_sweep(problem):
    data = TrainData.build(problem)
    rate, steps = 0.05, 400
    toy = TrainConfig(2, steps=steps, log_every=100, optimizer=GradientAscent(rate), stop_when_converged=False)
    result = train_sweep(data, toy, BETAS, SIGMA2S, SEEDS)
    assert result.config.solver.name == "gradient-ascent"
    assert result.history.elbo.shape == (3, 4)  # after steps 100, 200, 300 and 400
    assert np.all(np.diff(result.history.elbo, axis=1) > 0)  # the ELBO rises at every record
    assert np.all(result.steps_used == steps)
    # Plain gradient ascent is SGD at a constant rate: the package's optax SGD takes the same steps.
    sgd = toy._replace(optimizer="sgd", learning_rate=rate, schedule="constant")
    reference = train_sweep(data, sgd, BETAS, SIGMA2S, SEEDS)
    for got, want in zip(result.params, reference.params):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(result.history.elbo, reference.history.elbo, rtol=1e-12)


def _compiled(config):
    init = jax.jit(jax.vmap(lambda h, d: init_state(config, h, d), in_axes=(0, None)))
    run = jax.jit(jax.vmap(lambda s, h, d, n: run_steps(s, h, d, config, n), in_axes=(0, 0, None, None)))
    return init, run


@pytest.mark.parametrize("optimizer", ["newton", "adam"])
def test_the_solver_state_is_saved_restored_and_narrowed(problem, optimizer, tmp_path):
    config = TrainConfig(2, optimizer=optimizer, steps=12, log_every=3, stop_when_converged=False).resolved()
    data = TrainData.build(problem, config.basis)
    hyper = Hyper(jnp.asarray(BETAS), jnp.asarray(SIGMA2S), jnp.asarray(SEEDS, dtype=jnp.uint32))
    init, run = _compiled(config)
    per_record = jnp.asarray([3, 3])
    state = init(hyper, data)
    half, _ = run(state, hyper, data, per_record)
    whole, _ = run(half, hyper, data, per_record)

    # Save half-way, restore from disk, and continue.
    save(half, tmp_path / "state.npz")
    resumed, _ = run(restore(half, tmp_path / "state.npz"), hyper, data, per_record)
    for a, b in zip(host_leaves(resumed), host_leaves(whole)):
        np.testing.assert_array_equal(a, b)

    # Narrow the half-way state (and the values) to configurations 0 and 2, and continue.
    keep = np.array([0, 2])
    narrowed, _ = run(jax.tree.map(lambda a: a[keep], half), jax.tree.map(lambda a: a[keep], hyper), data, per_record)
    for a, b in zip(host_leaves(narrowed), host_leaves(whole)):
        np.testing.assert_allclose(a, b[keep], rtol=1e-12, atol=1e-13)


def host_leaves(state) -> list[np.ndarray]:
    """The leaves of a state as numpy arrays (a random key as its raw data)."""
    return [
        np.asarray(jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf)
        for leaf in jax.tree.leaves(state)
    ]


def save(state, path: Path) -> None:
    np.savez(path, *host_leaves(state))


def restore(like, path: Path):
    """The state saved at ``path``, with the structure (and key types) of ``like``."""
    leaves, structure = jax.tree.flatten(like)
    with np.load(path) as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(leaves))]
    return jax.tree.unflatten(
        structure,
        [
            jax.random.wrap_key_data(a, impl=jax.random.key_impl(leaf))
            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
            else jnp.asarray(a)
            for leaf, a in zip(leaves, arrays)
        ],
    )


# --------------------------------------------------------------------------------------------
# The drivers never look inside a solver (read from the source)
# --------------------------------------------------------------------------------------------


def library_modules():
    """``(path relative to the package, syntax tree)`` of every module outside the solvers' own.

    The experiments are left out: they are users of the trainer that choose their optimisers by
    name, and what they analyse (the escape-time prediction of plain gradient ascent, T9) is a
    property of the algorithm they named."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.as_posix() in SOLVER_MODULES or relative.parts[0] == "experiments":
            continue
        yield relative, ast.parse(path.read_text())


def name_tests(tree, names) -> list[int]:
    """Lines that compare something with a solver's name or look a value up by one."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                elements = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                if any(isinstance(e, ast.Constant) and e.value in names for e in elements):
                    lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in names:
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Dict)
            and node.keys
            and all(isinstance(k, ast.Constant) and k.value in names for k in node.keys)
        ):
            lines.append(node.lineno)  # a table keyed on the solvers' names
    return lines


def test_name_tests_finds_comparisons_and_lookups():
    source = 'a = x == "newton"\nb = y in ("adam", "z")\nc = t["sgd"]\nd = {"newton": 1, "adam": 2}\ne = x == "n"'
    assert name_tests(ast.parse(source), set(SOLVERS)) == [1, 2, 3, 4]


def test_no_module_outside_the_solvers_tests_the_optimisers_name():
    found = {str(path): lines for path, tree in library_modules() if (lines := name_tests(tree, set(SOLVERS)))}
    assert found == {}, found


def state_field_uses(tree, fields) -> list[int]:
    """Lines that read a field of a solver's state (``x.solver_state.f``, ``x.f`` for one of the
    state's ``fields``) or write one (``_replace(f=...)``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (
            node.attr in fields or (isinstance(node.value, ast.Attribute) and node.value.attr == "solver_state")
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and any(k.arg in fields for k in node.keywords):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "_replace":
                lines.append(node.lineno)
    return lines


def test_state_field_uses_finds_reads_and_writes():
    source = "a = s.solver_state.count\nb = o.escape\nc = o._replace(radius=1)\nd = s.solver_state\ne = o.radiusx"
    assert state_field_uses(ast.parse(source), {"escape", "radius"}) == [1, 2, 3]


def test_no_field_of_a_solver_state_is_touched_outside_its_solver():
    # Newton's state is :class:`linear_vae.training.newton.NewtonState`; optax's states are reached only
    # through ``solver_state``, which the first clause of state_field_uses covers.
    fields = set(newton.NewtonState._fields)
    found = {str(path): lines for path, tree in library_modules() if (lines := state_field_uses(tree, fields))}
    assert found == {}, found
