"""The solvers users choose by name, and the one place a name becomes a :class:`~linear_vae.training.solver.Solver`.

* ``"newton"``: trust-region Newton on the projected objective (:class:`linear_vae.training.newton.Newton`,
  docs/theory.md (T7.2)), exact objective only;
* ``"adam"`` and ``"sgd"``: the optax optimisers of :mod:`linear_vae.training.gradient_solvers`.

A :class:`~linear_vae.training.train.TrainConfig` also takes a solver object itself, for an optimiser
defined outside the package (:func:`resolve` passes it through).
"""

from __future__ import annotations

from linear_vae.training.gradient_solvers import ADAM, SGD
from linear_vae.training.newton import Newton
from linear_vae.training.solver import Solver

#: The named solvers, the default first.
SOLVERS: dict[str, Solver] = {"newton": Newton(), "adam": ADAM, "sgd": SGD}
OPTIMIZERS = tuple(SOLVERS)


def resolve(optimizer) -> Solver:
    """The solver named ``optimizer`` (or ``optimizer`` itself when it is a :class:`Solver`).

    >>> resolve("adam").has_step_size, resolve("newton").needs_exact_objective
    (True, True)
    """
    if isinstance(optimizer, Solver):
        return optimizer
    if optimizer not in SOLVERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    return SOLVERS[optimizer]


def name(optimizer) -> str:
    """What reports call the optimiser (its name, also for a solver object).

    >>> name("adam"), name(Newton())
    ('adam', 'newton')
    """
    return resolve(optimizer).name
