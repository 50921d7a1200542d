"""The projected objective ``Phi``: the exact beta-ELBO maximised over all but the decoder.

Gradient methods stall on the linear VAE because its slow directions are rotations: of the
latent space (only the diagonal encoder variance ``D`` breaks the symmetry ``W -> W R``, with a
curvature proportional to ``(lambda_i - lambda_j)^2``, tiny for near-equal eigenvalues) and of
the encoder against the decoder.  This module removes both exactly, leaving ``Phi`` for the
optimisers to climb (:mod:`linear_vae.training.newton`) and for the convergence test
(:mod:`linear_vae.training.convergence`) to judge (docs/theory.md (T7); Lucas et al. 2019, Appendix C for
the optimal encoder).

**The projected objective.**  For a decoder ``W`` and ``sigma2``, let ``t = beta sigma2`` and
``M = W^T W + t I_k``.  Maximising the exact beta-ELBO over the bias ``mu`` (its maximiser is the
sample mean), the encoder ``(V, D)`` (the closed-form :func:`linear_vae.theory.elbo.optimal_encoder`) and
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

``Phi`` is the same function for every optimiser: the convergence test of every solver reads it,
and so do modules that need the MLL of a decoder (:mod:`linear_vae.training.stationary`,
:mod:`linear_vae.verification.compare`) without importing any solver.

References: docs/theory.md (T7.1, T7.2); Lucas et al. 2019, Appendix C; Tipping & Bishop 1999, eq. 4.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.core import spd
from linear_vae.data.moments import LOG_2PI
from linear_vae.theory.elbo import DataStats, LinearVAEParams, with_optimal_encoder
from linear_vae.theory.ppca import covariance_times
from linear_vae.training.solver import Objective

# --------------------------------------------------------------------------------------------
# The projected objective and the model it stands for
# --------------------------------------------------------------------------------------------


@jax.custom_jvp
def inverse_and_log_det(M):
    """``(M^{-1}, log det M)`` of a symmetric positive-definite (k, k) ``M`` (Cholesky, :mod:`linear_vae.core.spd`).

    Its derivative is given in closed form, ``d M^{-1} = -M^{-1} dM M^{-1}`` and
    ``d log det M = tr(M^{-1} dM)``, so that gradients and Hessian-vector products of
    :func:`projected_elbo` are matrix products only: after :func:`jax.linearize` the k sequential
    steps of the factorisation run once per Newton iteration, not once per Hessian-vector product.

    >>> inverse, log_det = inverse_and_log_det(jnp.diag(jnp.array([4.0, 0.5])))
    >>> inverse, round(float(log_det), 6)  # log 2
    (Array([[0.25, 0.  ],
           [0.  , 2.  ]], dtype=float64), 0.693147)

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

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum([4.0, 2.0, 1.0], latent_dim=2, beta=1.0, sigma2=1.5)
    >>> W = optimum.parameters(np.zeros(3), np.eye(3)).W
    >>> stats = DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 1.0]))
    >>> round(float(projected_elbo(W, np.log(1.5), 1.0, stats)), 6), round(optimum.elbo, 6)  # Phi = ELBO at the optimum
    (-5.332602, -5.332602)

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


def represented_vae(W, mean, sigma2, beta) -> LinearVAEParams:
    """The linear VAE a decoder ``W`` stands for: ``(W R, mean, V*, log D*)`` with ``Phi(W)`` as its ELBO.

    ``R`` holds the eigenvectors of ``W^T W`` (largest first, so the columns come out by
    decreasing norm), which makes the columns of ``W R`` orthogonal; the encoder is then the
    closed-form maximiser :func:`linear_vae.theory.elbo.with_optimal_encoder` (Lucas et al. Appendix C),
    whose ``M`` is then diagonal.  Column signs are left to :func:`with_canonical_signs`, applied
    in the data basis.

    >>> params = represented_vae(jnp.array([[0.0, 1.0], [0.5, 0.0], [0.0, 0.0]]), jnp.zeros(3), 1.5, 1.0)
    >>> params.W.round(6), params.log_D.round(6)  # log D = log(sigma2 / (||w_i||^2 + sigma2))
    (Array([[1. , 0. ],
           [0. , 0.5],
           [0. , 0. ]], dtype=float64), Array([-0.510826, -0.154151], dtype=float64))

    References: docs/theory.md (T7.1, T3.2); Lucas et al. 2019, Appendix C.
    """
    _, R = spd.eigh(W.T @ W)
    return with_optimal_encoder(W @ R[:, ::-1], mean, sigma2, beta)


def with_canonical_signs(params: LinearVAEParams) -> LinearVAEParams:
    """Flip each latent dimension (column of ``W``, row of ``V``) so that the column's entry of largest
    magnitude is positive, as the eigenvectors of :mod:`linear_vae.data.moments` (numpy; leading
    configuration axis).  The ELBO is unchanged: the prior and ``D`` are symmetric.

    >>> params = LinearVAEParams(np.array([[[-2.0, 0.0], [0.0, 1.0]]]), np.zeros((1, 2)), np.array([[[-0.5, 0.0], [0.0, 0.5]]]), np.zeros((1, 2)))
    >>> with_canonical_signs(params).W[0] + 0.0, with_canonical_signs(params).V[0] + 0.0  # column 0 and row 0 flipped
    (array([[2., 0.],
           [0., 1.]]), array([[0.5, 0. ],
           [0. , 0.5]]))

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

    >>> W = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> project = rotation_projector(W)
    >>> rotation = W @ jnp.array([[0.0, 1.0], [-1.0, 0.0]])  # W A, A antisymmetric: a rotation direction
    >>> jnp.abs(project(rotation)).max() < 1e-12, project(jnp.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))
    (Array(True, dtype=bool), Array([[0., 0.],
           [0., 0.],
           [1., 1.]], dtype=float64))

    References: docs/theory.md (T7.2).
    """
    n, Q = spd.eigh(W.T @ W)
    denominator = n[:, None] + n[None, :]
    keep = denominator > relative_cutoff * jnp.max(n) + 1e-300
    inverse = jnp.where(keep, 1.0 / jnp.where(keep, denominator, 1.0), 0.0)

    def project(V):
        B = Q.T @ (W.T @ V - V.T @ W) @ Q
        return V - W @ (Q @ (B * inverse) @ Q.T)

    return project


def reduced_problem(f, projector_at) -> ProjectedProblem:
    """The :class:`ProjectedProblem` of a scalar ``f`` on a flat vector whose exact symmetries are
    removed by ``projector_at(x)``, the orthogonal projector (a function ``v -> P v``) onto the
    complement of the symmetry directions at ``x``.  Any model's objective goes through the same
    solver code this way (:mod:`linear_vae.training.model_objective`).

    A function of ``x = (a, b)`` through ``a + b`` only is invariant along ``(1, -1)``; the reduced
    Hessian-vector product projects that direction out of ``v = (1, 0)`` (leaving ``(1/2, 1/2)``)
    before applying the Hessian ``2 (1, 1)(1, 1)^T``:

    >>> keep = jnp.array([1.0, 1.0]) / jnp.sqrt(2.0)
    >>> problem = reduced_problem(lambda x: (x[0] + x[1] - 1.0) ** 2, lambda x: lambda v: keep * (keep @ v))
    >>> g, hvp, project = problem.reduced_derivatives(jnp.array([1.0, 1.0]))
    >>> np.round(np.asarray(g), 6).tolist(), np.round(np.asarray(hvp(jnp.array([1.0, 0.0]))), 6).tolist()
    ([2.0, 2.0], [2.0, 2.0])

    References: docs/theory.md (T7.2).
    """

    def derivatives(x):
        return jax.linearize(jax.grad(f), x)

    def reduced_derivatives(x):
        project = projector_at(x)
        g, hvp = derivatives(x)
        return project(g), lambda v: project(hvp(project(v))), project

    return ProjectedProblem(f, derivatives, reduced_derivatives)


def make_problem(shape, learn_sigma2: bool, log_sigma2_fixed, beta, stats: DataStats) -> ProjectedProblem:
    """``f``, its gradient and Hessian-vector product on ``x = vec W`` (plus ``log sigma2`` if learned).

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> W = beta_elbo_optimum([4.0, 2.0, 1.0], latent_dim=2, beta=1.0, sigma2=1.5).parameters(np.zeros(3), np.eye(3)).W
    >>> problem = make_problem((3, 2), False, jnp.log(1.5), 1.0, DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 1.0])))
    >>> g, hvp = problem.derivatives(W.reshape(-1))
    >>> round(float(problem.f(W.reshape(-1))), 6), float(jnp.abs(g).max()) < 1e-12  # f = -Phi, stationary at the optimum
    (5.332602, True)
    """
    size = shape[0] * shape[1]

    def f(x):
        log_sigma2 = x[size] if learn_sigma2 else log_sigma2_fixed
        return -projected_elbo(x[:size].reshape(shape), log_sigma2, beta, stats)

    def projector_at(x):
        project_W = rotation_projector(x[:size].reshape(shape))

        def project(v):  # log sigma2, when learned, is not part of any rotation
            return v.at[:size].set(project_W(v[:size].reshape(shape)).reshape(-1))

        return project

    return reduced_problem(f, projector_at)


def problem_at(trainable, objective: Objective):
    """``(x, f = -Phi)`` at a trainable ``(params, log_sigma2)`` of one configuration: the flat
    vector ``x = (vec W [, log sigma2])`` and the :class:`ProjectedProblem` around it.

    >>> from linear_vae.training.train import Trainable
    >>> stats = DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 1.0]))
    >>> trainable = Trainable(LinearVAEParams(jnp.ones((3, 2)), jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros(2)), jnp.log(1.5))
    >>> x, problem = problem_at(trainable, Objective(None, 1.0, False, stats))
    >>> x.shape, round(float(problem.f(x)), 6)
    ((6,), 5.880843)

    References: docs/theory.md (T7.1).
    """
    W, log_sigma2 = trainable.params.W, trainable.log_sigma2
    problem = make_problem(W.shape, objective.learn_sigma2, log_sigma2, objective.phi_beta, objective.stats)
    return pack(W, log_sigma2, objective.learn_sigma2), problem


def pack(W, log_sigma2, learn_sigma2: bool):
    """The flat vector ``x = (vec W [, log sigma2])`` the Newton solver works on.

    >>> pack(jnp.ones((3, 2)), jnp.array(0.5), learn_sigma2=True)
    Array([1. , 1. , 1. , 1. , 1. , 1. , 0.5], dtype=float64)
    """
    x = W.reshape(-1)
    return jnp.concatenate([x, log_sigma2[None]]) if learn_sigma2 else x


def unpack(x, shape, log_sigma2, learn_sigma2: bool):
    """``(W, log sigma2)`` from :func:`pack`'s vector (``log_sigma2`` as given when it is fixed).

    >>> W, log_sigma2 = unpack(jnp.arange(7.0), (3, 2), jnp.array(0.0), learn_sigma2=True)
    >>> W.shape, float(log_sigma2)
    ((3, 2), 6.0)
    """
    size = shape[0] * shape[1]
    return x[:size].reshape(shape), (x[size] if learn_sigma2 else log_sigma2)
