"""A convergent optimiser for the exact beta-ELBO: trust-region Newton on the projected objective.

Gradient methods stall on the linear VAE because its slow directions are rotations: of the
latent space (only the diagonal encoder variance ``D`` breaks the symmetry ``W -> W R``, with a
curvature proportional to ``(lambda_i - lambda_j)^2``, tiny for near-equal eigenvalues) and of
the encoder against the decoder.  This module removes both exactly and runs Newton's method on
what is left (docs/theory.md (T7); Lucas et al. 2019, Appendix C for the optimal encoder).

**The projected objective.**  For a decoder ``W`` and ``sigma2``, let ``t = beta sigma2`` and
``M = W^T W + t I_k``.  Maximising the exact beta-ELBO over the bias ``mu`` (its maximiser is the
sample mean), the encoder ``(V, D)`` (the closed-form :func:`linear_vae.elbo.optimal_encoder`) and
the latent rotation ``R`` (``W -> W R``; the maximiser diagonalises ``R^T W^T W R``, by Hadamard's
inequality ``sum_j log M_jj >= log det M``) gives, in closed form,

``Phi(W, sigma2) = -d/2 log(2 pi sigma2) - [tr S - tr(M^{-1} W^T S W)] / (2 sigma2) - beta/2 log det(M / t)``.

At beta = 1 this is the pPCA log marginal likelihood of ``W`` (Tipping & Bishop 1999, eq. 4), so
the optimiser climbs the likelihood that the paper shows the ELBO to share.  ``Phi`` is invariant
to ``W -> W R``: its Hessian has an exact null space along the rotations and, away from them,
a condition number set by the spread of the spectrum, not by its near-equal pairs (at the optimum
of the raw-scale hard case 40, against 1.5e5 for the ELBO with only the encoder projected out;
``benchmarks/conditioning.json``).
The model a ``W`` stands for, :func:`represented_vae`, is a complete linear VAE
``(W R, mean, V*, D*)`` whose exact ELBO equals ``Phi(W)``; trained results are that model.

**The step** (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Alg. 4.1 and 7.2): minimise
``f = -Phi`` over ``x = (W, log sigma2)`` (``log sigma2`` only when it is learned) with a
trust-region step from Steihaug's truncated conjugate gradients on Hessian-vector products
(``jax.jvp`` of ``jax.grad``; the Hessian is never formed), which follows negative curvature to
the trust-region boundary, so saddles are left.

**Stopping** (:func:`convergence_test`): the predicted gain ``1/2 g^T H^{-1} g`` of a full Newton step is at
most ``gain_tol`` nats per datapoint, and the Hessian of ``Phi`` has no eigenvalue above
``curvature_tol`` times its spectral radius (Lanczos on Hessian-vector products from a random
start).  A collapsed saddle has zero gradient but an ascent direction, so it fails the second
test; the optimiser then steps along the Lanczos estimate of that direction.  Nothing here uses
the eigenvectors of ``S``, the collapse thresholds or the closed-form optimum.

References: docs/theory.md (T7.1, T7.2, T7.3); Lucas et al. 2019, Appendix C; Nocedal & Wright,
*Numerical Optimization*, Alg. 4.1 and 7.2.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae import spd
from linear_vae.elbo import DataStats, LinearVAEParams, with_optimal_encoder
from linear_vae.moments import LOG_2PI
from linear_vae.ppca import covariance_times
from linear_vae.solver import Objective, Solver

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
# The projected objective and the model it stands for
# --------------------------------------------------------------------------------------------


@jax.custom_jvp
def inverse_and_log_det(M):
    """``(M^{-1}, log det M)`` of a symmetric positive-definite (k, k) ``M`` (Cholesky, :mod:`linear_vae.spd`).

    Its derivative is given in closed form, ``d M^{-1} = -M^{-1} dM M^{-1}`` and
    ``d log det M = tr(M^{-1} dM)``, so that gradients and Hessian-vector products of
    :func:`projected_elbo` are matrix products only: after :func:`jax.linearize` the k sequential
    steps of the factorisation run once per Newton iteration, not once per Hessian-vector product.

    References: docs/theory.md (T7.2, T8.5).
    """
    L = spd.cholesky(M)
    return spd.solve(L, jnp.eye(M.shape[0], dtype=M.dtype)), spd.log_det(L)


@inverse_and_log_det.defjvp
def _inverse_and_log_det_jvp(primals, tangents):
    (M,), (dM,) = primals, tangents
    K, log_det = inverse_and_log_det(M)
    return (K, log_det), (-K @ dM @ K, jnp.sum(K * dM.T))


def projected_elbo(W, log_sigma2, beta, stats: DataStats):
    """``Phi(W, sigma2)``: the exact beta-ELBO maximised over ``mu``, the encoder and the latent rotation.

    See the module docstring for the formula (docs/theory.md (T7)).  Cost O(d^2 k) for ``S W`` in
    the data basis, O(d k^2) in the eigenbasis.

    References: docs/theory.md (T7.1, T8.1); Lucas et al. 2019, Appendix C; Tipping & Bishop 1999, eq. 4.
    """
    k = W.shape[1]
    d = stats.dim
    sigma2 = jnp.exp(log_sigma2)
    t = beta * sigma2
    K, log_det_M = inverse_and_log_det(W.T @ W + t * jnp.eye(k, dtype=W.dtype))
    explained = jnp.sum(K * (W.T @ covariance_times(stats.cov, W)))  # tr(M^{-1} W^T S W)
    return (
        -0.5 * d * (LOG_2PI + log_sigma2)
        - (stats.trace - explained) / (2.0 * sigma2)
        - 0.5 * beta * (log_det_M - k * jnp.log(t))
    )


def _host_eigh(A):
    """Eigen-decomposition of a symmetric (..., k, k) stack on the host (numpy, ascending).

    Called through :func:`jax.pure_callback` so that a vmapped sweep never runs XLA's batched
    LAPACK kernels, which deadlock on CPU with jaxlib 0.10 (see :mod:`linear_vae.spd`).
    """
    shapes = (jax.ShapeDtypeStruct(A.shape[:-1], A.dtype), jax.ShapeDtypeStruct(A.shape, A.dtype))
    return jax.pure_callback(lambda a: tuple(np.linalg.eigh(np.asarray(a))), shapes, A, vmap_method="expand_dims")


def represented_vae(W, mean, sigma2, beta) -> LinearVAEParams:
    """The linear VAE a decoder ``W`` stands for: ``(W R, mean, V*, log D*)`` with ``Phi(W)`` as its ELBO.

    ``R`` holds the eigenvectors of ``W^T W`` (largest first, so the columns come out by
    decreasing norm), which makes the columns of ``W R`` orthogonal; the encoder is then the
    closed-form maximiser :func:`linear_vae.elbo.with_optimal_encoder` (Lucas et al. Appendix C),
    whose ``M`` is then diagonal.  Column signs are left to :func:`with_canonical_signs`, applied
    in the data basis.

    References: docs/theory.md (T7.1, T3.2); Lucas et al. 2019, Appendix C.
    """
    _, R = _host_eigh(W.T @ W)
    return with_optimal_encoder(W @ R[:, ::-1], mean, sigma2, beta)


def with_canonical_signs(params: LinearVAEParams) -> LinearVAEParams:
    """Flip each latent dimension (column of ``W``, row of ``V``) so that the column's entry of largest
    magnitude is positive, as the eigenvectors of :mod:`linear_vae.moments` (numpy; leading
    configuration axis).  The ELBO is unchanged: the prior and ``D`` are symmetric.

    References: docs/theory.md (T1).
    """
    W, mu, V, log_D = (np.asarray(p) for p in params)
    rows = np.argmax(np.abs(W), axis=1)  # (C, k)
    signs = np.where(np.take_along_axis(W, rows[:, None, :], axis=1)[:, 0] < 0, -1.0, 1.0)
    return LinearVAEParams(W * signs[:, None, :], mu, V * signs[:, :, None], log_D)


# --------------------------------------------------------------------------------------------
# Flat parameter vector x = (vec W [, log sigma2]) and f = -Phi on it
# --------------------------------------------------------------------------------------------


class ProjectedProblem(NamedTuple):
    """``f(x) = -Phi`` for one configuration, as closures over a flat parameter vector.

    ``derivatives(x)`` returns ``(g, hvp)``: the gradient at ``x`` and its Hessian-vector product
    ``v -> H v`` linearised there (:func:`jax.linearize`: the primal work is done once).
    ``reduced_derivatives(x)`` returns ``(P g, v -> P H P v, P)`` with ``P`` the projector of
    :func:`rotation_projector`: the same derivatives with the rotation null space taken out.
    """

    f: callable
    derivatives: callable
    reduced_derivatives: callable


def rotation_projector(W, relative_cutoff: float = 1e-10):
    """``P``: the orthogonal projector, on (d, k) matrices, onto the complement of the rotation
    tangent space ``{W A : A = -A^T}``.

    ``Phi`` is invariant to ``W -> W exp(A)``, so its gradient lies in that complement and its
    Hessian vanishes on the tangent space (at stationary points; elsewhere it maps it into the
    complement's orthogonal part only through the gradient).  In floating point both hold only to
    round-off, and Newton's method would divide round-off gradient components by round-off
    curvatures there; projecting removes the k(k-1)/2 null directions exactly.

    The nearest tangent vector to ``V`` is ``W A`` with ``A`` solving ``M A + A M = W^T V - V^T W``
    (``M = W^T W``; the normal equations of ``min_A ||V - W A||_F`` over antisymmetric ``A``).
    With ``M = Q diag(n) Q^T``, ``A = Q [(Q^T (W^T V - V^T W) Q)_ij / (n_i + n_j)] Q^T``; pairs with
    ``n_i + n_j <= relative_cutoff * max(n)`` (two collapsed columns, for which ``W A`` vanishes)
    are left out.

    References: docs/theory.md (T7.2).
    """
    n, Q = _host_eigh(W.T @ W)
    denominator = n[:, None] + n[None, :]
    keep = denominator > relative_cutoff * jnp.max(n) + 1e-300
    inverse = jnp.where(keep, 1.0 / jnp.where(keep, denominator, 1.0), 0.0)

    def project(V):
        B = Q.T @ (W.T @ V - V.T @ W) @ Q
        return V - W @ (Q @ (B * inverse) @ Q.T)

    return project


def make_problem(shape, learn_sigma2: bool, log_sigma2_fixed, beta, stats: DataStats) -> ProjectedProblem:
    """``f``, its gradient and Hessian-vector product on ``x = vec W`` (plus ``log sigma2`` if learned)."""
    size = shape[0] * shape[1]

    def f(x):
        log_sigma2 = x[size] if learn_sigma2 else log_sigma2_fixed
        return -projected_elbo(x[:size].reshape(shape), log_sigma2, beta, stats)

    def derivatives(x):
        return jax.linearize(jax.grad(f), x)

    def reduced_derivatives(x):
        project_W = rotation_projector(x[:size].reshape(shape))

        def project(v):  # log sigma2, when learned, is not part of any rotation
            return v.at[:size].set(project_W(v[:size].reshape(shape)).reshape(-1))

        g, hvp = derivatives(x)
        return project(g), lambda v: project(hvp(project(v))), project

    return ProjectedProblem(f, derivatives, reduced_derivatives)


def problem_at(trainable, objective: Objective):
    """``(x, f = -Phi)`` at a trainable ``(params, log_sigma2)`` of one configuration: the flat
    vector ``x = (vec W [, log sigma2])`` and the :class:`ProjectedProblem` around it.

    References: docs/theory.md (T7.1).
    """
    W, log_sigma2 = trainable.params.W, trainable.log_sigma2
    problem = make_problem(W.shape, objective.learn_sigma2, log_sigma2, objective.phi_beta, objective.stats)
    return pack(W, log_sigma2, objective.learn_sigma2), problem


def pack(W, log_sigma2, learn_sigma2: bool):
    x = W.reshape(-1)
    return jnp.concatenate([x, log_sigma2[None]]) if learn_sigma2 else x


def unpack(x, shape, log_sigma2, learn_sigma2: bool):
    size = shape[0] * shape[1]
    return x[:size].reshape(shape), (x[size] if learn_sigma2 else log_sigma2)


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
    values, vectors = _host_eigh(T)
    direction = Q.T @ vectors[:, 0]
    return Curvature(values[0], jnp.max(jnp.abs(values)), direction / jnp.linalg.norm(direction))


# --------------------------------------------------------------------------------------------
# The optimiser state and step
# --------------------------------------------------------------------------------------------


class NewtonState(NamedTuple):
    """Per-configuration state of the trust-region iteration."""

    radius: jax.Array  # trust-region radius
    max_radius: jax.Array
    escape: jax.Array  # a unit ascent direction of Phi found by the curvature check (0: none)


def init_newton(x, stats: DataStats) -> NewtonState:
    """Radius ``0.1 sqrt(tr S)`` (the optimal decoder has ``||W||_F^2 <= tr S``), capped at ``100 sqrt(tr S) + 10``."""
    scale = jnp.sqrt(stats.trace)
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
    cg = steihaug_cg(hvp, g, state.radius)
    escaping = jnp.any(state.escape != 0)
    sign = jnp.where(g @ state.escape > 0, -1.0, 1.0)
    step = jnp.where(escaping, sign * state.radius * state.escape, cg.step)
    predicted = -(g @ step + 0.5 * step @ hvp(step))
    f1 = problem.f(x + step)
    actual = f0 - f1
    roundoff = 1e-13 * (1.0 + jnp.abs(f0))
    ratio = jnp.where(jnp.abs(predicted) <= roundoff, 1.0, actual / jnp.where(predicted == 0, 1.0, predicted))
    ratio = jnp.where(jnp.isfinite(f1), ratio, -1.0)
    step_norm = jnp.linalg.norm(step)
    at_boundary = step_norm >= 0.99 * state.radius
    radius = jnp.where(
        ratio < 0.25,
        0.25 * jnp.minimum(state.radius, jnp.maximum(step_norm, 1e-12)),
        jnp.where((ratio > 0.75) & at_boundary, jnp.minimum(2.0 * state.radius, state.max_radius), state.radius),
    )
    accept = (ratio > 1e-4) & (actual >= -roundoff)
    x = jnp.where(accept, x + step, x)
    escape = jnp.where(accept, jnp.zeros_like(state.escape), state.escape)
    return x, NewtonState(radius, state.max_radius, escape), f0


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
        encoder and the latent rotation by their maximisers (0 for the Newton optimiser).
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


# --------------------------------------------------------------------------------------------
# The solver (the interface of linear_vae.solver)
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
    :class:`linear_vae.solver.Solver`.

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

    def after_check(self, state: NewtonState, diagnosis: "Diagnosis", config) -> NewtonState:
        """Hand an ascent direction to a configuration at a saddle (negligible predicted gain, but
        an ascent direction of ``Phi``)."""
        at_saddle = ~diagnosis.converged & (diagnosis.predicted_gain <= config.gain_tol)
        return state._replace(escape=jnp.where(at_saddle, diagnosis.ascent, state.escape))

    def final_params(self, params: LinearVAEParams) -> LinearVAEParams:
        return with_canonical_signs(params)
