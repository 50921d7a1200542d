"""A convergent optimiser for the exact beta-ELBO: trust-region Newton on the projected objective.


**The step** (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Alg. 4.1 and 7.2): minimise
``f = -Phi`` over ``x = (W, log sigma2)`` (``log sigma2`` only when it is learned) with a
trust-region step from Steihaug's truncated conjugate gradients on Hessian-vector products
(``jax.jvp`` of ``jax.grad``; the Hessian is never formed), which follows negative curvature to
the trust-region boundary, so saddles are left.  After the convergence test
(:mod:`linear_vae.training.convergence`) found an ascent direction of ``Phi`` at a point of negligible
gain (a collapsed saddle), the next step follows it.  ``Phi`` itself, the model a decoder stands
for and the flat parameter vector live in :mod:`linear_vae.training.projected`; this module is the solver
(:class:`Newton`, the interface of :mod:`linear_vae.training.solver`) and its state.

References: docs/theory.md (T7.2); Nocedal & Wright, *Numerical Optimization*, Alg. 4.1 and 7.2.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from linear_vae.theory.elbo import DataStats, LinearVAEParams
from linear_vae.training.convergence import Diagnosis, steihaug_cg
from linear_vae.training.projected import ProjectedProblem, problem_at, represented_vae, unpack, with_canonical_signs
from linear_vae.training.solver import Objective, Solver

# --------------------------------------------------------------------------------------------
# The optimiser state and step
# --------------------------------------------------------------------------------------------


class NewtonState(NamedTuple):
    """Per-configuration state of the trust-region iteration."""

    trust_radius: jax.Array  # trust-region radius
    max_trust_radius: jax.Array
    escape: jax.Array  # a unit ascent direction of Phi found by the curvature check (0: none)


def init_newton(x, stats: DataStats) -> NewtonState:
    """Radius ``0.1 sqrt(tr S)`` (the optimal decoder has ``||W||_F^2 <= tr S``), capped at ``100 sqrt(tr S) + 10``.

    >>> import numpy as np
    >>> state = init_newton(jnp.zeros(6), DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 2.0])))
    >>> round(float(state.trust_radius), 6), round(float(state.max_trust_radius), 6), state.escape.shape  # tr S = 8
    (0.283843, 292.842712, (6,))
    """
    return initial_newton_state(x, jnp.sqrt(stats.trace))


def initial_newton_state(x, scale) -> NewtonState:
    """Radius ``0.1 scale``, capped at ``100 scale + 10``, no escape direction: ``scale`` bounds the
    norm of the optimal ``x`` (``sqrt(tr S)`` for the linear VAE's decoder).

    >>> initial_newton_state(jnp.zeros(2), 10.0)
    NewtonState(trust_radius=1.001, max_trust_radius=1010.0, escape=Array([0., 0.], dtype=float64))
    """
    return NewtonState(0.1 * scale + 1e-3, 100.0 * scale + 10.0, jnp.zeros_like(x))


def newton_step(x, state: NewtonState, problem: ProjectedProblem):
    """One trust-region Newton iteration on ``f = -Phi``; returns ``(x, state, f(x))``, ``f`` at the
    iteration's start (the caller's non-finite check needs it and should not evaluate it again).

    The step is the Steihaug-CG step, or, after the curvature check found an ascent direction of
    ``Phi`` at a point of negligible gradient, that direction scaled to the trust-region boundary
    (sign chosen downhill for ``f``).  Acceptance and radius updates follow Nocedal & Wright
    Alg. 4.1 (shrink by 4 below ratio 1/4, double above 3/4 at the boundary, accept above 1e-4);
    when the predicted decrease is below float64 round-off of ``f`` the step is accepted as is.

    On a quadratic ``f(x) = x^T H x / 2 - b^T x`` one step from 0 lands on the minimum ``H^{-1} b``
    when it lies inside the trust region:

    >>> from linear_vae.training.projected import ProjectedProblem
    >>> H, b = 2.0 * jnp.eye(2), jnp.array([2.0, 1.0])
    >>> problem = ProjectedProblem(lambda x: x @ H @ x / 2 - b @ x, None, lambda x: (H @ x - b, lambda v: H @ v, lambda v: v))
    >>> x, state, f0 = newton_step(jnp.zeros(2), initial_newton_state(jnp.zeros(2), 20.0), problem)
    >>> x.round(6), float(f0), round(float(problem.f(x)), 6), float(state.trust_radius)  # radius kept: inside it
    (Array([1. , 0.5], dtype=float64), 0.0, -1.25, 2.001)
    >>> x, state, _ = newton_step(jnp.zeros(2), initial_newton_state(jnp.zeros(2), 1.0), problem)
    >>> x.round(6), round(float(jnp.linalg.norm(x)), 6), float(state.trust_radius)  # cut at the boundary, radius doubled
    (Array([0.090337, 0.045169], dtype=float64), 0.101, 0.202)

    References: docs/theory.md (T7.2); Nocedal & Wright, *Numerical Optimization*, Alg. 4.1.
    """
    f0 = problem.f(x)
    g, hvp, _ = problem.reduced_derivatives(x)
    cg = steihaug_cg(hvp, g, state.trust_radius)
    escaping = jnp.any(state.escape != 0)
    sign = jnp.where(g @ state.escape > 0, -1.0, 1.0)
    step = jnp.where(escaping, sign * state.trust_radius * state.escape, cg.step)
    predicted = -(g @ step + 0.5 * step @ hvp(step))
    f1 = problem.f(x + step)
    actual = f0 - f1
    roundoff = 1e-13 * (1.0 + jnp.abs(f0))
    ratio = jnp.where(jnp.abs(predicted) <= roundoff, 1.0, actual / jnp.where(predicted == 0, 1.0, predicted))
    ratio = jnp.where(jnp.isfinite(f1), ratio, -1.0)
    step_norm = jnp.linalg.norm(step)
    at_boundary = step_norm >= 0.99 * state.trust_radius
    radius = jnp.where(
        ratio < 0.25,
        0.25 * jnp.minimum(state.trust_radius, jnp.maximum(step_norm, 1e-12)),
        jnp.where(
            (ratio > 0.75) & at_boundary,
            jnp.minimum(2.0 * state.trust_radius, state.max_trust_radius),
            state.trust_radius,
        ),
    )
    accept = (ratio > 1e-4) & (actual >= -roundoff)
    x = jnp.where(accept, x + step, x)
    escape = jnp.where(accept, jnp.zeros_like(state.escape), state.escape)
    return x, NewtonState(radius, state.max_trust_radius, escape), f0


def with_escape(state: NewtonState, diagnosis: Diagnosis, gain_tol) -> NewtonState:
    """The state with the test's ascent direction as the next step's, where the convergence test found a
    saddle (negligible predicted gain, but an ascent direction of the objective; docs/theory.md (T7.3)).

    >>> up = jnp.array([0.0, 1.0])  # the test found Phi rising along the second coordinate
    >>> at_saddle = Diagnosis(jnp.array(0.0), jnp.array(0.0), jnp.array(0.0), jnp.array(0.5), up, jnp.array(False))
    >>> with_escape(initial_newton_state(jnp.zeros(2), 10.0), at_saddle, gain_tol=1e-8).escape
    Array([0., 1.], dtype=float64)
    >>> with_escape(initial_newton_state(jnp.zeros(2), 10.0), at_saddle._replace(converged=jnp.array(True)), 1e-8).escape
    Array([0., 0.], dtype=float64)
    """
    at_saddle = ~diagnosis.converged & (diagnosis.predicted_gain <= gain_tol)
    return state._replace(escape=jnp.where(at_saddle, diagnosis.ascent, state.escape))


# --------------------------------------------------------------------------------------------
# The solver (the interface of linear_vae.training.solver)
# --------------------------------------------------------------------------------------------


#: Newton iterations between two convergence checks of a sweep.
CHECK_EVERY = 5
#: A sweep skips a convergence check while some running configuration's last iteration still
#: raised its objective by more than this (nats per datapoint).  Newton converges superlinearly,
#: so the gap left after a step that gained ``g`` is of order ``g^2`` or more (more where the trust
#: region cut the step), far above the test's ``GAIN_TOL = 1e-8``: the sweep cannot stop at that
#: check.  The check would only freeze the configurations already finished and hand an escape
#: direction to one stalled at a saddle, and both wait until the last one nears the end.
SKIP_CHECK_GAIN = 1e-3


class Newton(Solver):
    """Trust-region Newton on the projected objective ``Phi`` (docs/theory.md (T7.2)), as a
    :class:`linear_vae.training.solver.Solver`.

    It trains the decoder (and ``log sigma2`` when learned) only; the model it stands for is
    :func:`represented_vae`.  Its state is a :class:`NewtonState`.  A convergence check that finds
    a saddle (negligible predicted gain, but an ascent direction of ``Phi``) hands the direction to
    the next step.  Iterations are few and costly: each is recorded, the eigenbasis makes them
    O(d k^2), the sweep checks convergence every :data:`CHECK_EVERY` iterations but skips a check
    while the last iteration still gained more than :data:`SKIP_CHECK_GAIN`.

    >>> solver = Newton()
    >>> solver.name, solver.needs_exact_objective, solver.has_step_size, solver.check_every
    ('newton', True, False, 5)
    """

    name = "newton"
    needs_exact_objective = True
    has_step_size = False
    check_every = CHECK_EVERY
    skip_check_gain = SKIP_CHECK_GAIN
    progress_units = "iteration"
    default_steps, default_log_every, default_basis = 500, 1, "eigen"
    start_in_data_basis = True

    def init(self, trainable, objective: Objective, config) -> NewtonState:
        """The first :class:`NewtonState` (:func:`init_newton` at the trainable's ``x``).

        >>> import numpy as np
        >>> from linear_vae.training.train import Trainable
        >>> objective = Objective(None, 1.0, False, DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 2.0])))
        >>> start = Trainable(LinearVAEParams(jnp.ones((3, 2)), jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros(2)), jnp.log(1.5))
        >>> round(float(Newton().init(start, objective, None).trust_radius), 6)  # 0.1 sqrt(tr S) + 1e-3
        0.283843
        """
        x, _ = problem_at(trainable, objective)
        return init_newton(x, objective.stats)

    def step(self, trainable, state: NewtonState, objective: Objective, key, config):
        """One :func:`newton_step` on the trainable's ``x``: ``(trainable, state, f before the step)``.

        Fifteen iterations from ``W = 1`` reach the closed-form optimum (data variances 4, 2, 1,
        ``k = 2``, ``beta = 1``, ``sigma2 = 1.5`` fixed; its ELBO is -5.332602 per datapoint):

        >>> import numpy as np
        >>> from linear_vae.training.train import Trainable
        >>> objective = Objective(None, 1.0, False, DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 1.0])))
        >>> start = Trainable(LinearVAEParams(jnp.ones((3, 2)), jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros(2)), jnp.log(1.5))
        >>> solver = Newton()
        >>> def iterate(trainable, state):  # what the training loop does, without its checks
        ...     return jax.lax.fori_loop(0, 15, lambda i, c: solver.step(*c, objective, None, None)[:2], (trainable, state))
        >>> trained, _ = jax.jit(iterate)(start, solver.init(start, objective, None))
        >>> x, problem = problem_at(trained, objective)
        >>> round(-float(problem.f(x)), 6)  # Phi at the closed-form optimum
        -5.332602
        """
        x, problem = problem_at(trainable, objective)
        x, state, loss = newton_step(x, state, problem)
        W, log_sigma2 = unpack(x, trainable.params.W.shape, trainable.log_sigma2, objective.learn_sigma2)
        return trainable._replace(params=trainable.params._replace(W=W), log_sigma2=log_sigma2), state, loss

    def model(self, trainable, objective: Objective) -> LinearVAEParams:
        """The represented VAE (:func:`represented_vae`: rotated decoder, optimal encoder, bias at the mean).

        >>> import numpy as np
        >>> from linear_vae.training.train import Trainable
        >>> objective = Objective(None, 1.0, False, DataStats.from_moments(np.full(3, 5.0), np.diag([4.0, 2.0, 1.0])))
        >>> trained = Trainable(LinearVAEParams(jnp.ones((3, 1)), jnp.zeros(3), jnp.zeros((1, 3)), jnp.zeros(1)), jnp.log(1.0))
        >>> vae = Newton().model(trained, objective)
        >>> vae.mu, vae.log_D.round(6)  # mu at the data mean, D = sigma2 / (||w||^2 + sigma2) = 1/4
        (Array([5., 5., 5.], dtype=float64), Array([-1.386294], dtype=float64))
        """
        sigma2 = jnp.exp(trainable.log_sigma2)
        return represented_vae(trainable.params.W, objective.stats.mean, sigma2, objective.phi_beta)

    def after_check(self, state: NewtonState, diagnosis: Diagnosis, config) -> NewtonState:
        """Hand an ascent direction to a configuration at a saddle (negligible predicted gain, but
        an ascent direction of ``Phi``).

        >>> from types import SimpleNamespace
        >>> up = jnp.array([0.0, 1.0])  # the check found Phi rising along the second coordinate
        >>> at_saddle = Diagnosis(jnp.array(0.0), jnp.array(0.0), jnp.array(0.0), jnp.array(0.5), up, jnp.array(False))
        >>> Newton().after_check(initial_newton_state(jnp.zeros(2), 10.0), at_saddle, SimpleNamespace(gain_tol=1e-8)).escape
        Array([0., 1.], dtype=float64)
        """
        return with_escape(state, diagnosis, config.gain_tol)

    def final_params(self, params: LinearVAEParams) -> LinearVAEParams:
        """The trained model with canonical signs (:func:`with_canonical_signs`).

        >>> params = LinearVAEParams(jnp.array([[[-2.0], [1.0]]]), jnp.zeros((1, 2)), jnp.array([[[-0.5, 0.0]]]), jnp.zeros((1, 1)))
        >>> Newton().final_params(params).W[0]  # the column's largest entry made positive
        array([[ 2.],
               [-1.]])
        """
        return with_canonical_signs(params)
