"""The closed-form-free convergence test of every optimiser, and the Krylov methods it shares with Newton.


**Stopping** (:func:`convergence_test`): the predicted gain ``1/2 g^T H^{-1} g`` of a full Newton step is at
most ``gain_tol`` nats per datapoint, and the Hessian of ``Phi`` has no eigenvalue above
``curvature_tol`` times its spectral radius (Lanczos on Hessian-vector products from a random
start).  A collapsed saddle has zero gradient but an ascent direction, so it fails the second
test; the Newton solver then steps along the Lanczos estimate of that direction.  Nothing here uses
the eigenvectors of ``S``, the collapse thresholds or the closed-form optimum.

Conjugate gradients (:func:`steihaug_cg`, Nocedal & Wright Alg. 7.2) solve the Newton system of
the test and also give the Newton solver (:mod:`linear_vae.training.newton`) its steps; Lanczos
(:func:`lanczos_lowest`) finds the ascent direction.  Both run on Hessian-vector products of the
projected objective ``Phi`` (:mod:`linear_vae.training.projected`).

References: docs/theory.md (T7.3); Nocedal & Wright, *Numerical Optimization*, Alg. 7.2;
Golub & Van Loan, *Matrix Computations*, Section 10.1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from linear_vae.core.spd import eigh
from linear_vae.training.projected import ProjectedProblem

#: Predicted gain (nats per datapoint) below which a run has converged.
GAIN_TOL = 1e-8
#: A Hessian eigenvalue of ``Phi`` above ``CURVATURE_TOL * spectral radius`` is an ascent direction.
CURVATURE_TOL = 1e-6
#: Conjugate-gradient iterations per Newton step, at most (an unfinished solve is still a descent step).
CG_MAX_ITERATIONS = 250
#: ... and for the predicted gain of the convergence test, which must be solved: CG needs about
#: sqrt(condition number) iterations per decade, and the raw-scale hard cases reach 1e4.
DIAGNOSIS_CG_MAX_ITERATIONS = 1000
#: Relative residual of the conjugate-gradient solve behind the predicted gain (which it then
#: gives to about this relative accuracy: ample against a threshold it is compared with by decades).
DIAGNOSIS_CG_TOLERANCE = 1e-2
#: Relative curvature (to the largest met) that conjugate gradients treat as zero.
FLAT = 1e-10
#: Lanczos iterations of the curvature check.
LANCZOS_ITERATIONS = 30


# --------------------------------------------------------------------------------------------
# Steihaug's truncated conjugate gradients (Nocedal & Wright Alg. 7.2)
# --------------------------------------------------------------------------------------------


class CGResult(NamedTuple):
    step: jax.Array
    negative_curvature: jax.Array  # a direction of curvature <= 0 was met
    iterations: jax.Array
    solved: jax.Array  # the residual reached the tolerance (or CG met zero curvature there)


def _to_boundary(z, p, radius):
    """``z + tau p`` with ``tau >= 0`` and ``||z + tau p|| = radius``."""
    a, b, c = p @ p, 2.0 * z @ p, z @ z - radius**2
    tau = (-b + jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0))) / (2.0 * jnp.maximum(a, 1e-300))
    return z + tau * p


def steihaug_cg(hvp, g, radius, max_iterations: int = CG_MAX_ITERATIONS, relative_tolerance=None) -> CGResult:
    """Approximately minimise ``g^T p + 1/2 p^T H p`` subject to ``||p|| <= radius``.

    Stops at residual ``relative_tolerance * ||g||``, by default ``eta = min(0.5, sqrt(||g||))``
    (superlinear inexact Newton; Nocedal & Wright Section 7.1) but at least 1e-3, since close to
    a maximum a smaller residual lies below the round-off of the Hessian-vector products; at the
    boundary; or at a direction of non-positive curvature (followed to the boundary).

    >>> H, g = jnp.diag(jnp.array([4.0, 1.0])), jnp.array([2.0, 1.0])
    >>> result = steihaug_cg(lambda v: H @ v, g, radius=10.0, relative_tolerance=1e-10)
    >>> result.step, bool(result.solved)  # inside the trust region: the Newton step -H^{-1} g
    (Array([-0.5, -1. ], dtype=float64), True)
    >>> steihaug_cg(lambda v: H @ v, g, radius=0.1).step.round(6)  # cut at the boundary, ||p|| = 0.1
    Array([-0.089443, -0.044721], dtype=float64)

    References: docs/theory.md (T7.2); Nocedal & Wright, *Numerical Optimization*, Alg. 7.2.
    """
    g_norm = jnp.linalg.norm(g)
    if relative_tolerance is None:
        relative_tolerance = jnp.clip(jnp.sqrt(g_norm), 1e-3, 0.5)
    tolerance = relative_tolerance * g_norm

    class Carry(NamedTuple):
        z: jax.Array
        r: jax.Array
        p: jax.Array
        done: jax.Array
        negative: jax.Array
        i: jax.Array
        scale: jax.Array  # largest curvature p^T H p / p^T p met so far
        solved: jax.Array

    def body(c: Carry) -> Carry:
        Hp = hvp(c.p)
        curvature = c.p @ Hp
        pp = c.p @ c.p
        scale = jnp.maximum(c.scale, curvature / pp)
        # A direction of zero curvature (what is left of the rotation null space after
        # rotation_projector, at round-off) ends CG at the current iterate.
        negative = curvature < -FLAT * scale * pp
        flat = ~negative & (curvature <= FLAT * scale * pp)
        rr = c.r @ c.r
        alpha = rr / jnp.where(flat | negative, 1.0, curvature)
        z_next = c.z + alpha * c.p
        outside = jnp.linalg.norm(z_next) >= radius
        boundary = _to_boundary(c.z, c.p, radius)
        r_next = c.r + alpha * Hp
        converged = jnp.linalg.norm(r_next) <= tolerance
        z = jnp.where(flat, c.z, jnp.where(negative | outside, boundary, z_next))
        p_next = -r_next + (r_next @ r_next) / rr * c.p
        return Carry(
            z,
            r_next,
            p_next,
            negative | flat | outside | converged,
            c.negative | negative,
            c.i + 1,
            scale,
            flat | converged,
        )

    start = Carry(
        jnp.zeros_like(g),
        g,
        -g,
        g_norm <= 0,
        jnp.asarray(False),
        jnp.asarray(0),
        jnp.asarray(0.0, g.dtype),
        g_norm <= 0,
    )
    end = jax.lax.while_loop(lambda c: ~c.done & (c.i < max_iterations), body, start)
    return CGResult(end.z, end.negative, end.i, end.solved)


# --------------------------------------------------------------------------------------------
# Lanczos estimate of the most negative curvature of f (the largest ascent curvature of Phi)
# --------------------------------------------------------------------------------------------


class Curvature(NamedTuple):
    lowest: jax.Array  # smallest Ritz value of the Hessian of f = -Phi
    radius: jax.Array  # largest |Ritz value|: the scale curvature_tol is relative to
    direction: jax.Array  # unit Ritz vector of `lowest`


def lanczos_lowest(hvp, start, iterations: int = LANCZOS_ITERATIONS) -> Curvature:
    """Smallest eigenvalue of the Hessian and its eigenvector by Lanczos with full reorthogonalisation.

    Ritz values lie inside the spectrum, so ``lowest`` is an upper bound on the smallest eigenvalue;
    extreme eigenvalues converge first (Golub & Van Loan, *Matrix Computations*, Section 10.1).

    >>> curvature = lanczos_lowest(lambda v: jnp.array([3.0, -1.0, 2.0]) * v, jnp.ones(3))
    >>> round(float(curvature.lowest), 6), round(float(curvature.radius), 6), jnp.abs(curvature.direction).round(6)
    (-1.0, 3.0, Array([0., 1., 0.], dtype=float64))

    References: docs/theory.md (T7.3); Golub & Van Loan, *Matrix Computations*, Section 10.1.
    """
    n = start.shape[0]
    m = min(iterations, n)
    q0 = start / jnp.linalg.norm(start)

    def body(j, carry):
        Q, alpha, beta = carry
        q = Q[j]
        w = hvp(q)
        a = q @ w
        w = w - Q.T @ (Q @ w)  # full reorthogonalisation against q_0..q_j (later rows are 0)
        w = w - Q.T @ (Q @ w)
        b = jnp.linalg.norm(w)
        q_next = jnp.where(b > 1e-14 * jnp.abs(a) + 1e-300, w / jnp.where(b > 0, b, 1.0), 0.0)
        return Q.at[j + 1].set(q_next), alpha.at[j].set(a), beta.at[j].set(b)

    Q = jnp.zeros((m + 1, n), start.dtype).at[0].set(q0)
    Q, alpha, beta = jax.lax.fori_loop(0, m, body, (Q, jnp.zeros(m, start.dtype), jnp.zeros(m, start.dtype)))
    Q = Q[:m]
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    values, vectors = eigh(T)
    direction = Q.T @ vectors[:, 0]
    return Curvature(values[0], jnp.max(jnp.abs(values)), direction / jnp.linalg.norm(direction))


# --------------------------------------------------------------------------------------------
# Convergence diagnosis (any optimiser)
# --------------------------------------------------------------------------------------------


class Diagnosis(NamedTuple):
    """How far a decoder is from a local maximum of the ELBO, without the closed form.

    Attributes
    ----------
    predicted_gain : ``block_gain + 1/2 g^T H^{-1} g`` (nats per datapoint): what exact block
        maximisation plus a full Newton step on ``Phi`` would add (inf where the Newton model
        has negative curvature, i.e. far from a maximum, or conjugate gradients did not solve
        it within :data:`DIAGNOSIS_CG_MAX_ITERATIONS`).
    block_gain : ``Phi(W) - ELBO(current parameters)``: the exact gain of replacing ``mu``, the
        encoder and the latent rotation by their maximisers (0 for the Newton solver).
    grad_norm : Euclidean norm of the gradient of ``Phi`` in ``(vec W, log sigma2)`` (the latter
        only when sigma2 is learned), in the basis the data are given in.
    ascent_curvature : largest Lanczos Ritz value of the Hessian of ``Phi`` (positive: an ascent
        direction), relative to the Hessian's spectral radius.
    ascent : the unit ascent direction found (meaningful when ``ascent_curvature > curvature_tol``).
    converged : ``predicted_gain <= gain_tol`` and ``ascent_curvature <= curvature_tol``.

    References: docs/theory.md (T7.3).
    """

    predicted_gain: jax.Array
    block_gain: jax.Array
    grad_norm: jax.Array
    ascent_curvature: jax.Array
    ascent: jax.Array
    converged: jax.Array


def convergence_test(
    x, problem: ProjectedProblem, block_gain, key, gain_tol: float = GAIN_TOL, curvature_tol: float = CURVATURE_TOL
) -> Diagnosis:
    """The convergence test of the module docstring at ``x`` (``key`` draws the Lanczos start).

    >>> from linear_vae.training.projected import ProjectedProblem
    >>> H, b = jnp.diag(jnp.array([4.0, 1.0])), jnp.array([2.0, 1.0])  # f(x) = x^T H x / 2 - b^T x
    >>> problem = ProjectedProblem(lambda x: x @ H @ x / 2 - b @ x, None, lambda x: (H @ x - b, lambda v: H @ v, lambda v: v))
    >>> far = convergence_test(jnp.zeros(2), problem, 0.0, jax.random.key(0))
    >>> float(far.predicted_gain), bool(far.converged)  # b^T H^{-1} b / 2 left to gain
    (1.0, False)
    >>> bool(convergence_test(jnp.array([0.5, 1.0]), problem, 0.0, jax.random.key(0)).converged)  # at the minimum
    True

    References: docs/theory.md (T7.3).
    """
    g, hvp, project = problem.reduced_derivatives(x)
    cg = steihaug_cg(hvp, g, jnp.inf, DIAGNOSIS_CG_MAX_ITERATIONS, relative_tolerance=DIAGNOSIS_CG_TOLERANCE)
    # For CG iterates z, z^T H z = -g^T z, so the model gain -(g^T z + 1/2 z^T H z) is -1/2 g^T z.
    # Unknown (inf) where the Newton model is indefinite or CG did not solve it within its budget.
    newton_gain = jnp.where(cg.negative_curvature | ~cg.solved, jnp.inf, -0.5 * (g @ cg.step))
    curvature = lanczos_lowest(hvp, project(jax.random.normal(key, x.shape, x.dtype)))
    relative = -curvature.lowest / jnp.maximum(curvature.radius, 1e-300)
    gain = jnp.maximum(block_gain, 0.0) + newton_gain
    return Diagnosis(
        gain,
        block_gain,
        jnp.linalg.norm(g),
        relative,
        curvature.direction,
        (gain <= gain_tol) & (relative <= curvature_tol),
    )
