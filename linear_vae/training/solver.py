"""The one shape of every optimiser of the linear trainer: ``init``, ``step`` over an explicit state.

In the style of optimistix (``init``/``step``/``terminate`` over an explicit state), a
:class:`Solver` is a stateless, hashable object (it is part of the static
:class:`~linear_vae.training.train.TrainConfig`) whose methods are pure functions of one configuration:

* ``init(trainable, objective, config) -> state``: the solver's state before the first step, a
  pytree of arrays (so a sweep ``vmap``s it, saves and restores it, and narrows it to a subset of
  configurations by indexing its leading axis);
* ``step(trainable, state, objective, key, config) -> (trainable, state, loss)``: one iteration;
  ``loss`` is the negative objective at the iteration's start (the trainer's non-finite watch);
* ``model(trainable, objective) -> LinearVAEParams``: the linear VAE the trainable values stand for;
* ``after_check(state, diagnosis, config) -> state``: what the solver does with the convergence
  test (docs/theory.md (T7.3)); convergence itself is judged by that one closed-form-free test
  for every solver, and a converged configuration is frozen by the driver;
* ``final_params(params) -> params``: a last normalisation of the trained models (numpy, leading
  configuration axis; by default none).

What a driver may ask of a solver is an attribute, never a test of its name: whether it needs the
exact objective, whether it takes a step size, how often the sweep checks it and while which gain it
skips a check, and its default steps.  Users choose a solver by name; :mod:`linear_vae.training.solvers`
turns the name into the object, once.  The objective a solver climbs is handed to it as an
:class:`Objective` built by the trainer, so a solver never imports the trainer.

References: docs/theory.md (T7).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from linear_vae.theory.elbo import DataStats, LinearVAEParams


class Objective(NamedTuple):
    """One configuration's objective, as a solver may ask for it.

    Attributes
    ----------
    negative : ``(trainable, key) -> -objective`` (the exact beta-ELBO, its minibatch Monte-Carlo
        estimate or the pPCA MLL; ``sigma2`` carries a gradient only when it is learned).
    phi_beta : the beta of the projected objective ``Phi`` (docs/theory.md (T7.1)): the
        configuration's beta, or 1 for the MLL objective, whose projected objective is the MLL.
    learn_sigma2 : whether ``log sigma2`` is trained.
    stats : the data moments in the training basis.
    """

    negative: Callable
    phi_beta: Any
    learn_sigma2: bool
    stats: DataStats


class Solver:
    """The interface of module docstring, with the attributes a driver may read.

    Attributes
    ----------
    name : what users call it (``TrainConfig(optimizer=name)``, ``--optimizer``).
    needs_exact_objective : it climbs the closed-form objective only (not a Monte-Carlo estimate).
    has_step_size : it takes ``learning_rate`` and ``schedule``.
    check_every : optimiser steps between two convergence checks of a sweep that stops when
        converged, or ``None`` for the sweep's even chunks.
    skip_check_gain : a sweep skips a convergence check while some running configuration's last
        recorded step still gained more than this (nats per datapoint); ``inf``: never skips.
    progress_units : what the progress display counts ("step", "iteration").
    default_steps, default_log_every, default_basis : the settings of a
        :class:`~linear_vae.training.train.TrainConfig` that leaves them unset.
    start_in_data_basis : the random start is drawn in the data basis also when training in the
        eigenbasis (for a solver whose trajectory is invariant to the basis, so that both bases
        train one model).

    >>> import jax
    >>> class Halving(Solver):  # a solver defined outside the package: halve every trainable value
    ...     name = "halving"
    ...     def init(self, trainable, objective, config):
    ...         return ()
    ...     def step(self, trainable, state, objective, key, config):
    ...         return jax.tree.map(lambda a: a / 2, trainable), state, objective.negative(trainable, key)
    >>> objective = Objective(lambda trainable, key: sum(trainable), 1.0, False, None)
    >>> Halving(), Halving().step((4.0, 2.0), (), objective, None, None)
    (<solver halving>, ((2.0, 1.0), (), 6.0))
    """

    name: str = "solver"
    needs_exact_objective: bool = False
    has_step_size: bool = True
    check_every: int | None = None
    skip_check_gain: float = math.inf
    progress_units: str = "step"
    default_steps: int = 20000
    default_log_every: int = 100
    default_basis: str = "data"
    start_in_data_basis: bool = False

    def init(self, trainable, objective: Objective, config):
        """The solver's state before the first step (a pytree of arrays).

        >>> Solver().init(None, None, None)
        Traceback (most recent call last):
            ...
        NotImplementedError
        """
        raise NotImplementedError

    def step(self, trainable, state, objective: Objective, key, config):
        """One iteration: ``(trainable, state, loss)``, ``loss`` the negative objective at its start.

        >>> Solver().step(None, None, None, None, None)
        Traceback (most recent call last):
            ...
        NotImplementedError
        """
        raise NotImplementedError

    def model(self, trainable, objective: Objective) -> LinearVAEParams:
        """The trained parameters themselves.

        >>> from types import SimpleNamespace
        >>> Solver().model(SimpleNamespace(params="the trained (W, mu, V, log D)"), None)
        'the trained (W, mu, V, log D)'
        """
        return trainable.params

    def after_check(self, state, diagnosis, config):
        """Nothing: the driver freezes converged configurations itself.

        >>> Solver().after_check("state", "diagnosis", "config")
        'state'
        """
        return state

    def final_params(self, params: LinearVAEParams) -> LinearVAEParams:
        """A last normalisation of the trained models (none by default).

        >>> Solver().final_params("params")
        'params'
        """
        return params

    def __repr__(self) -> str:
        return f"<solver {self.name}>"
