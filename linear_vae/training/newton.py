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
    """Radius ``0.1 sqrt(tr S)`` (the optimal decoder has ``||W||_F^2 <= tr S``), capped at ``100 sqrt(tr S) + 10``."""
    return initial_newton_state(x, jnp.sqrt(stats.trace))


def initial_newton_state(x, scale) -> NewtonState:
    """Radius ``0.1 scale``, capped at ``100 scale + 10``, no escape direction: ``scale`` bounds the
    norm of the optimal ``x`` (``sqrt(tr S)`` for the linear VAE's decoder)."""
    return NewtonState(0.1 * scale + 1e-3, 100.0 * scale + 10.0, jnp.zeros_like(x))


def newton_step(x, state: NewtonState, problem: ProjectedProblem):
    """One trust-region Newton iteration on ``f = -Phi``; returns ``(x, state, f(x))``, ``f`` at the
    iteration's start (the caller's non-finite check needs it and should not evaluate it again).

    The step is the Steihaug-CG step, or, after the curvature check found an ascent direction of
    ``Phi`` at a point of negligible gradient, that direction scaled to the trust-region boundary
    (sign chosen downhill for ``f``).  Acceptance and radius updates follow Nocedal & Wright
    Alg. 4.1 (shrink by 4 below ratio 1/4, double above 3/4 at the boundary, accept above 1e-4);
    when the predicted decrease is below float64 round-off of ``f`` the step is accepted as is.

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
    saddle (negligible predicted gain, but an ascent direction of the objective; docs/theory.md (T7.3))."""
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
        x, _ = problem_at(trainable, objective)
        return init_newton(x, objective.stats)

    def step(self, trainable, state: NewtonState, objective: Objective, key, config):
        x, problem = problem_at(trainable, objective)
        x, state, loss = newton_step(x, state, problem)
        W, log_sigma2 = unpack(x, trainable.params.W.shape, trainable.log_sigma2, objective.learn_sigma2)
        return trainable._replace(params=trainable.params._replace(W=W), log_sigma2=log_sigma2), state, loss

    def model(self, trainable, objective: Objective) -> LinearVAEParams:
        """The represented VAE (:func:`represented_vae`: rotated decoder, optimal encoder, bias at the mean)."""
        sigma2 = jnp.exp(trainable.log_sigma2)
        return represented_vae(trainable.params.W, objective.stats.mean, sigma2, objective.phi_beta)

    def after_check(self, state: NewtonState, diagnosis: Diagnosis, config) -> NewtonState:
        """Hand an ascent direction to a configuration at a saddle (negligible predicted gain, but
        an ascent direction of ``Phi``)."""
        return with_escape(state, diagnosis, config.gain_tol)

    def final_params(self, params: LinearVAEParams) -> LinearVAEParams:
        return with_canonical_signs(params)
