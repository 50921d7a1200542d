"""Theorem 1 of Lucas et al., numerically: the ELBO has the MLL's stationary points, more saddles, no new maxima.

The MLL's stationary points at a fixed ``sigma2`` are enumerated in closed form by
:func:`linear_vae.theory.ppca.stationary_points` (docs/theory.md (T2.4)).  This module supplies what it
takes to check the ELBO against them without assuming the answer:

* the autodiff Hessians of the MLL in ``W`` and of the exact ELBO in *all* its parameters
  ``(W, mu, V, log D)`` (:func:`mll_hessian`, :func:`elbo_hessian`) and their inertia
  (:func:`inertia`), next to the inertia the theory predicts (:func:`predicted_inertia`);
* a direct search for stationary points of the ELBO in all parameters from random starts: a
  vmapped Levenberg-Marquardt iteration on the gradient ``g(x) = grad ELBO(x)`` (a root finder,
  which converges to saddles as readily as to maxima; :func:`search_stationary_points`);
* :func:`identify_stationary_point`, which names the point a found one is: one of the MLL's
  (T2.4), or one the MLL lacks, where columns of equal norm share eigen-directions
  (:func:`tied_group_norms`, T15.3), always a saddle;
* :func:`tied_family`, the whole family of those points in closed form (T15.4), against which every
  endpoint of the search is matched: a test of the family's completeness.

References: docs/theory.md (T15.1, T15.2, T15.3, T15.4); Lucas et al. 2019, Section 4.2 and Appendix C.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from linear_vae.core import spd
from linear_vae.theory.elbo import DataStats, LinearVAEParams, exact_elbo, with_optimal_encoder
from linear_vae.theory.ppca import StationaryPoint
from linear_vae.training.projected import projected_elbo

#: A Hessian eigenvalue within this fraction of the spectral radius counts as zero (float64
#: autodiff Hessians are exact to ~1e-15 relative; the smallest non-zero curvature of the problems
#: here is ~1e-3 of the radius, so 1e-9 separates the two by six decades either way).
ZERO_CURVATURE = 1e-9


# --------------------------------------------------------------------------------------------
# Hessians and their inertia
# --------------------------------------------------------------------------------------------


def elbo_hessian(params: LinearVAEParams, sigma2, stats: DataStats):
    """The (n, n) autodiff Hessian of the exact ELBO (beta = 1) in all its parameters, flattened
    in the order ``W, mu, V, log D`` (``n = 2 d k + d + k``), float64 (a JAX function: vmap it over
    a batch of parameters).

    At the MLL's global maximum (``k = 1``, ``sigma2 = 0.5``) with the optimal encoder, all
    ``2 d k + d + k = 10`` directions curve down: a maximum of the ELBO too.

    >>> from linear_vae.theory.ppca import stationary_points
    >>> stats = DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 1.0]))  # S diagonal: u_i = e_i
    >>> best = next(p for p in stationary_points([4.0, 2.0, 1.0], 1, sigma2=0.5) if p.is_global_max)
    >>> vaes = stationary_vaes(best.weights(np.eye(3))[None], np.zeros(3), 0.5)  # a stack of one
    >>> inertia(batched_elbo_hessians(vaes, 0.5, stats)[0])  # elbo_hessian, vmapped and compiled
    Inertia(positive=0, zero=0, negative=10)

    References: docs/theory.md (T15.2, T3.1); Lucas et al. 2019, Appendix C.
    """
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda x: exact_elbo(unravel(x), sigma2, 1.0, stats))(flat)


def mll_hessian(W, sigma2, stats: DataStats):
    """The (d k, d k) autodiff Hessian of the pPCA MLL in ``W`` (bias at the sample mean), float64
    (a JAX function, like :func:`elbo_hessian`).

    The MLL is evaluated as :func:`linear_vae.training.projected.projected_elbo` at beta = 1, which is the MLL
    of (T2.1) written with a closed-form derivative of ``M^{-1}`` and ``log det M``, so that the
    second derivatives are matrix products (the tests check its value against
    :func:`linear_vae.theory.ppca.log_marginal_likelihood`).

    At the saddle whose column follows ``u_2`` (``k = 1``), one direction rises: turning towards ``u_1``.

    >>> from linear_vae.theory.ppca import stationary_points
    >>> stats = DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 1.0]))  # S diagonal: u_i = e_i
    >>> saddle = next(p for p in stationary_points([4.0, 2.0, 1.0], 1, sigma2=0.5) if p.directions == (1,))
    >>> inertia(batched_mll_hessians(saddle.weights(np.eye(3))[None], 0.5, stats)[0])  # mll_hessian, vmapped and compiled
    Inertia(positive=1, zero=0, negative=2)

    References: docs/theory.md (T15.2, T2.1, T7.1); Tipping & Bishop 1999, eq. 4.
    """
    W = jnp.asarray(W)
    log_sigma2 = jnp.log(sigma2)
    hessian = jax.hessian(lambda w: projected_elbo(w.reshape(W.shape), log_sigma2, 1.0, stats))
    return hessian(W.reshape(-1))


#: :func:`elbo_hessian` and :func:`mll_hessian` over a leading batch axis of parameters, compiled once per shape.
batched_elbo_hessians = jax.jit(jax.vmap(elbo_hessian, in_axes=(0, None, None)))
batched_mll_hessians = jax.jit(jax.vmap(mll_hessian, in_axes=(0, None, None)))


class Inertia(NamedTuple):
    """Numbers of positive (ascent), zero and negative eigenvalues of a symmetric Hessian."""

    positive: int
    zero: int
    negative: int


def inertia(hessian, zero_tol: float = ZERO_CURVATURE) -> Inertia:
    """:class:`Inertia` of a symmetric matrix, counting ``|eigenvalue| <= zero_tol * spectral radius``
    as zero (numpy's ``eigvalsh`` on the host).

    >>> inertia(np.diag([2.0, 1e-12, -1.0]))
    Inertia(positive=1, zero=1, negative=1)

    References: docs/theory.md (T15.2).
    """
    hessian = np.asarray(hessian, dtype=np.float64)
    eigenvalues = np.linalg.eigvalsh(0.5 * (hessian + hessian.T))
    tol = zero_tol * np.max(np.abs(eigenvalues))
    return Inertia(
        int(np.sum(eigenvalues > tol)), int(np.sum(np.abs(eigenvalues) <= tol)), int(np.sum(eigenvalues < -tol))
    )


def predicted_inertia(eigenvalues, point: StationaryPoint, sigma2: float) -> tuple[Inertia, Inertia]:
    """The inertia of the MLL's Hessian in ``W`` and of the ELBO's in ``(W, mu, V, log D)`` at ``point``.

    With ``J`` the used directions (``r = |J|``), ``z = k - r`` zero columns and ``d`` eigenvalues:

    * ascent directions (both objectives): a zero column growing along an unused ``u_i`` with
      ``lambda_i > sigma2``, and a used ``u_j`` turning towards an unused ``u_i`` with
      ``lambda_i > lambda_j``: ``n_+ = z #{i not in J: lambda_i > sigma2} + sum_{j in J} #{i not in J: lambda_i > lambda_j}``;
    * zero directions of the MLL: its rotation symmetry ``W -> W R``, whose orbit through ``W``
      has dimension ``dim O(k) - dim O(z) = r z + r (r - 1) / 2`` (rotations among the zero columns
      leave ``W`` fixed);
    * the ELBO has no zero direction: its diagonal encoder breaks the rotation symmetry, and a
      rotation between columns of unequal norms makes ``W^T W`` non-diagonal, which costs the
      ELBO the gap (T3.3), so those directions curve down.  Its encoder and bias add
      ``k d + k + d`` negative directions (it is strictly concave in them).

    >>> from linear_vae.theory.ppca import stationary_points
    >>> saddle = next(p for p in stationary_points([4.0, 2.0, 1.0], 1, sigma2=0.5) if p.directions == (1,))
    >>> predicted_inertia([4.0, 2.0, 1.0], saddle, 0.5)  # as mll_hessian and elbo_hessian find
    (Inertia(positive=1, zero=0, negative=2), Inertia(positive=1, zero=0, negative=9))

    References: docs/theory.md (T15.2, T2.4, T3.3); Lucas et al. 2019, Section 4.2 and Appendix C.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    d, k = len(lam), len(point.column_variances)
    used = list(point.directions)
    unused = lam[np.setdiff1d(np.arange(d), used)]
    r, z = len(used), k - len(used)
    ascent = z * int(np.sum(unused > sigma2)) + sum(int(np.sum(unused > lam[j])) for j in used)
    rotations = r * z + r * (r - 1) // 2
    mll = Inertia(ascent, rotations, d * k - ascent - rotations)
    elbo = Inertia(ascent, 0, 2 * d * k + d + k - ascent)
    return mll, elbo


def stationary_vaes(W, mean, sigma2) -> LinearVAEParams:
    """The linear VAEs at a stack (P, d, k) of MLL stationary points ``W`` (T2.4): ``mu`` the sample
    mean and the optimal encoder (T3.2), at which the ELBO's gradient in all parameters vanishes
    (T15.1).  Leading axis P.

    >>> from linear_vae.theory.elbo import exact_elbo
    >>> from linear_vae.theory.ppca import stationary_points
    >>> stats = DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 1.0]))  # S diagonal: u_i = e_i
    >>> W = np.stack([p.weights(np.eye(3)) for p in stationary_points([4.0, 2.0, 1.0], 1, sigma2=0.5)])
    >>> vaes = stationary_vaes(W, np.zeros(3), 0.5)
    >>> gradient = jax.jit(jax.vmap(jax.grad(lambda params: exact_elbo(params, 0.5, 1.0, stats))))(vaes)
    >>> W.shape, max(float(jnp.abs(g).max()) for g in gradient) < 1e-12  # 4 points, all stationary
    ((4, 3, 1), True)

    References: docs/theory.md (T15.1, T3.2); Lucas et al. 2019, Appendix C.
    """
    return jax.jit(jax.vmap(lambda w: with_optimal_encoder(w, jnp.asarray(mean), sigma2, 1.0)))(jnp.asarray(W))


# --------------------------------------------------------------------------------------------
# Searching for the ELBO's stationary points directly
# --------------------------------------------------------------------------------------------


class SearchResult(NamedTuple):
    """Where each start of :func:`search_stationary_points` ended (leading axis: start)."""

    params: LinearVAEParams
    gradient_norm: np.ndarray  # ||grad ELBO|| in all parameters at the end
    initial_gradient_norm: np.ndarray


def random_starts(seed: int, n_starts: int, d: int, k: int, mean, scale_range=(0.05, 3.0)) -> LinearVAEParams:
    """``n_starts`` random linear VAEs (numpy ``default_rng(seed)``, float64): ``W`` and ``V``
    Gaussian with a per-start scale drawn log-uniformly from ``scale_range``, ``mu`` the mean plus
    that noise, ``log D ~ U(-2, 1)``.

    >>> starts = random_starts(0, n_starts=4, d=3, k=1, mean=np.zeros(3))
    >>> starts.W.shape, starts.mu.shape, starts.V.shape, starts.log_D.shape
    ((4, 3, 1), (4, 3), (4, 1, 3), (4, 1))
    """
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]), (n_starts, 1, 1)))
    W = scale * rng.standard_normal((n_starts, d, k))
    mu = np.asarray(mean, dtype=np.float64) + scale[:, :, 0] * rng.standard_normal((n_starts, d))
    V = scale * rng.standard_normal((n_starts, k, d))
    log_D = rng.uniform(-2.0, 1.0, (n_starts, k))
    return LinearVAEParams(W, mu, V, log_D)


def search_stationary_points(starts: LinearVAEParams, sigma2, stats: DataStats, iterations: int = 400) -> SearchResult:
    """Solve ``grad ELBO(x) = 0`` in all parameters from every start (vmapped, float64).

    Levenberg-Marquardt on the residual ``g(x)`` with Jacobian ``H(x)`` (the Hessian, by autodiff):
    ``x <- x - (H^2 + m I)^{-1} H g``, accepted when it lowers ``||g||`` (then ``m <- m / 3``),
    else rejected with ``m <- 4 m`` (Nocedal & Wright, *Numerical Optimization*, Section 10.3).
    Minimising ``||g||^2`` is blind to the sign of the curvature, so the search finds saddles and
    maxima alike; a start that ends at a non-zero local minimum of ``||g||`` is reported by its
    ``gradient_norm``.  ``iterations`` steps, then stop: no tolerance inside the loop.

    Four random starts (``k = 1``) end at stationary points, which :func:`identify_stationary_point` names:

    >>> stats = DataStats.from_moments(np.zeros(3), np.diag([4.0, 2.0, 1.0]))  # S diagonal: u_i = e_i
    >>> found = search_stationary_points(random_starts(0, 4, 3, 1, np.zeros(3)), 0.5, stats, iterations=100)
    >>> found.initial_gradient_norm.round(3), bool(found.gradient_norm.max() < 1e-12)
    (array([6.341, 1.61 , 0.506, 0.595]), True)
    >>> [identify_stationary_point(W, np.eye(3), [4.0, 2.0, 1.0], 0.5) for W in found.params.W]  # saddles, W = 0 twice
    [(Group(size=1, directions=(1,)),), (Group(size=1, directions=(2,)),), (), ()]

    References: docs/theory.md (T15.3); Nocedal & Wright, *Numerical Optimization*, Section 10.3.
    """
    params, norm, norm0 = _search(starts, sigma2, stats, iterations)
    return SearchResult(jax.tree.map(np.asarray, params), np.asarray(norm), np.asarray(norm0))


@partial(jax.jit, static_argnames="iterations")
def _search(starts: LinearVAEParams, sigma2, stats: DataStats, iterations: int):
    _, unravel = ravel_pytree(jax.tree.map(lambda a: a[0], starts))

    def gradient(x):
        return ravel_pytree(jax.grad(lambda p: exact_elbo(p, sigma2, 1.0, stats))(unravel(x)))[0]

    def solve_one(start):
        x0, _ = ravel_pytree(start)
        n = x0.shape[0]

        def step(_, carry):
            x, g, m = carry
            H = jax.jacfwd(gradient)(x)
            dx = -spd.solve(spd.cholesky(H @ H + m * jnp.eye(n)), H @ g)
            g_new = gradient(x + dx)
            better = jnp.sum(g_new**2) < jnp.sum(g**2)
            return (
                jnp.where(better, x + dx, x),
                jnp.where(better, g_new, g),
                jnp.where(better, jnp.maximum(m / 3.0, 1e-12), m * 4.0),
            )

        g0 = gradient(x0)
        x, g, _ = jax.lax.fori_loop(0, iterations, step, (x0, g0, jnp.asarray(1e-3, x0.dtype)))
        return unravel(x), jnp.linalg.norm(g), jnp.linalg.norm(g0)

    return jax.vmap(solve_one)(starts)


def tied_group_norms(eigenvalues, group_size: int, sigma2: float) -> np.ndarray:
    """Squared norms ``x_i`` of the directions a tied group of ``m = group_size`` columns spans (T15.3).

    ``m`` columns of equal norm have equal optimal encoder variances, so the ELBO is invariant to
    rotating them among themselves.  Rotated to orthogonal columns ``u_i sqrt(x_i)`` (``i`` in a set
    ``P`` of ``p <= m`` eigen-directions, ``m - p`` zero columns), the ELBO maximised over the
    encoder with the group's variances tied is ``-1/2 sum_P lambda_i / (sigma2 + x_i) - m/2 log c``
    plus terms free of ``x``, ``c = sigma2 + (sum_P x_i) / m``; it is stationary iff
    ``sigma2 + x_i = sqrt(lambda_i c)`` for every ``i`` in ``P``, so ``y = sqrt(c)`` solves
    ``m y^2 - y sum_P sqrt(lambda_i) - (m - p) sigma2 = 0``.  ``m = p = 1`` gives
    ``x = lambda - sigma2``, the MLL's stationary point.  Returns ``x`` (``p``,), possibly
    non-positive (then no such stationary point exists).

    >>> tied_group_norms([4.0], group_size=1, sigma2=0.5)  # one column: lambda - sigma2, the MLL's
    array([3.5])
    >>> tied_group_norms([4.0], group_size=2, sigma2=0.5).round(6)  # two equal columns along u_1
    array([1.914214])

    References: docs/theory.md (T15.3); Lucas et al. 2019, Appendix C.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m, p = group_size, len(lam)
    if not 1 <= p <= m:
        raise ValueError(f"a group of `group_size` {m} columns spans 1 to {m} directions, got {p} `eigenvalues`")
    root_sum = float(np.sum(np.sqrt(lam)))
    y = (root_sum + np.sqrt(root_sum**2 + 4.0 * m * (m - p) * sigma2)) / (2.0 * m)
    return np.sqrt(lam) * y - sigma2


class Group(NamedTuple):
    """Columns of a stationary ``W`` that share one norm (and so one encoder variance), and the
    eigen-directions they span; a group of one column with one direction is an MLL stationary column."""

    size: int
    directions: tuple[int, ...]


def identify_stationary_point(
    W, eigenvectors, eigenvalues, sigma2: float, tol: float = 1e-6
) -> tuple[Group, ...] | None:
    """Name the stationary point ``W`` is, up to column order, sign and rotation within a tied group.

    The non-zero columns (``||w_c||^2 > tol``) are grouped by equal norm (within ``tol``).  Each
    group's ``W_G^T W_G`` has eigenvalues ``x_i`` and (left) singular directions; every direction
    with ``x_i > tol`` must be an eigenvector ``u_j`` of ``S`` (``|cos| >= 1 - tol``), distinct
    across groups, and the ``x_i`` must equal :func:`tied_group_norms` of the group's size and
    eigenvalues (for a group of one column: ``lambda_j - sigma2``).  Returns the groups, sorted, or
    ``None`` for a ``W`` that is no such point.  An MLL stationary point (T2.4) is the case where
    every group has one column and one direction.

    >>> W = np.array([[3.5**0.5], [0.0], [0.0]])  # u_1 sqrt(lambda_1 - sigma2): the MLL's maximum
    >>> identify_stationary_point(W, np.eye(3), [4.0, 2.0, 1.0], 0.5)
    (Group(size=1, directions=(0,)),)
    >>> identify_stationary_point(2 * W, np.eye(3), [4.0, 2.0, 1.0], 0.5) is None  # not stationary
    True

    References: docs/theory.md (T15.1, T15.3, T2.4); Lucas et al. 2019, Section 4.1 and Appendix C.
    """
    W = np.asarray(W, dtype=np.float64)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    norms = np.sum(W**2, axis=0)
    columns = [c for c in np.argsort(norms) if norms[c] > tol]
    groups, used = [], set()
    while columns:
        members = [c for c in columns if abs(norms[c] - norms[columns[0]]) <= tol]
        columns = [c for c in columns if c not in members]
        B = W[:, members]
        x, R = np.linalg.eigh(B.T @ B)
        directions = []
        for xi, r in zip(x, R.T):
            if xi <= tol:
                continue
            cosines = np.abs(eigenvectors.T @ (B @ r)) / np.sqrt(xi)
            j = int(np.argmax(cosines))
            if cosines[j] < 1 - tol or j in used:
                return None
            used.add(j)
            directions.append((j, xi))
        directions.sort()
        if not directions:
            return None  # columns of equal non-zero norm spanning nothing: impossible for a real W
        predicted = tied_group_norms(lam[[j for j, _ in directions]], len(members), sigma2)
        if np.max(np.abs(predicted - [xi for _, xi in directions])) > tol:
            return None
        groups.append(Group(len(members), tuple(j for j, _ in directions)))
    return tuple(sorted(groups))


def is_mll_point(groups: tuple[Group, ...]) -> bool:
    """Whether :func:`identify_stationary_point`'s groups describe a stationary point of the MLL.

    >>> is_mll_point((Group(1, (0,)), Group(1, (2,)))), is_mll_point((Group(2, (0,)),))
    (True, False)
    """
    return all(g.size == 1 and len(g.directions) == 1 for g in groups)


# --------------------------------------------------------------------------------------------
# The whole tied-column family, enumerated in closed form
# --------------------------------------------------------------------------------------------


def balanced_rotation(values) -> np.ndarray:
    """An orthogonal ``R`` (m, m) with ``diag(R^T diag(values) R)`` equal to ``mean(values)`` everywhere.

    It exists by the Schur-Horn theorem (a constant vector is majorised by every vector of the same
    sum); built by ``m - 1`` plane rotations (Chan & Li 1983): rotate a *carry* basis vector, with
    diagonal entry ``a_c``, against an untouched one on the other side of the mean ``t``, with
    ``a_l``, by ``cos^2 theta = (t - a_l) / (a_c - a_l)``: the carry's entry becomes ``t`` (and stays
    so), the other one's ``a_c + a_l - t`` and it becomes the carry.  The entry between the carry and
    an untouched vector stays zero, so each rotation sees a diagonal 2 x 2 block.  Applied to a tied
    group's orthogonal columns it makes the group's column norms equal (docs/theory.md (T15.3)).

    References: docs/theory.md (T15.4); Chan & Li 1983, *Diagonal elements and eigenvalues of a real
    symmetric matrix*, J. Math. Anal. Appl. 91.

    >>> R = balanced_rotation([3.0, 1.0])
    >>> R.round(6), np.diag(R.T @ np.diag([3.0, 1.0]) @ R).round(6)
    (array([[ 0.707107, -0.707107],
           [ 0.707107,  0.707107]]), array([2., 2.]))
    """
    a = np.asarray(values, dtype=np.float64).copy()
    m, t = len(a), float(np.mean(a))
    R = np.eye(m)
    untouched = [int(i) for i in np.argsort(-a)]
    carry = untouched.pop(0)
    while untouched:
        # The carry and the untouched entries average to t, so the extreme one on the carry's other side exists.
        other = min(untouched, key=lambda j: a[j]) if a[carry] >= t else max(untouched, key=lambda j: a[j])
        untouched.remove(other)
        gap = a[carry] - a[other]
        cos2 = 1.0 if gap == 0.0 else float(np.clip((t - a[other]) / gap, 0.0, 1.0))
        c, s = np.sqrt(cos2), np.sqrt(1.0 - cos2)
        R[:, [carry, other]] = R[:, [carry, other]] @ np.array([[c, -s], [s, c]])
        a[carry], a[other] = t, a[carry] + a[other] - t
        carry = other
    return R


class TiedPoint(NamedTuple):
    """One stationary point of the ELBO's tied-column family (T15.3), up to column order and sign and
    rotations within a group: its groups (as :func:`identify_stationary_point` names them) and the
    squared norms ``x_i`` of the directions each group spans (:func:`tied_group_norms`)."""

    groups: tuple[Group, ...]
    norms: tuple[np.ndarray, ...]

    @property
    def is_mll_point(self) -> bool:
        """Whether every group is one column along one direction (:func:`is_mll_point`).

        >>> [point.is_mll_point for point in tied_family([4.0, 2.0, 1.0], latent_dim=2, sigma2=0.5)][6:8]
        [True, False]
        """
        return is_mll_point(self.groups)

    def weights(self, eigenvectors, latent_dim: int) -> np.ndarray:
        """A ``W`` (d, k) at this point: each group's orthogonal columns ``u_i sqrt(x_i)`` (and its
        ``m - p`` zero columns) rotated by :func:`balanced_rotation` to equal norms, groups side by
        side, then the zero columns.

        >>> tied = TiedPoint((Group(2, (0,)),), (tied_group_norms([4.0], 2, 0.5),))  # two columns share u_1
        >>> W = tied.weights(np.eye(3), latent_dim=2)
        >>> W.round(6), identify_stationary_point(W, np.eye(3), [4.0, 2.0, 1.0], 0.5)
        (array([[ 0.978318, -0.978318],
               [ 0.      ,  0.      ],
               [ 0.      ,  0.      ]]), (Group(size=2, directions=(0,)),))
        """
        U = np.asarray(eigenvectors, dtype=np.float64)
        blocks = []
        for group, x in zip(self.groups, self.norms):
            frame = np.zeros((U.shape[0], group.size))
            frame[:, : len(x)] = U[:, list(group.directions)] * np.sqrt(x)
            blocks.append(frame @ balanced_rotation(np.concatenate([x, np.zeros(group.size - len(x))])))
        W = np.zeros((U.shape[0], latent_dim))
        if blocks:
            stacked = np.concatenate(blocks, axis=1)
            W[:, : stacked.shape[1]] = stacked
        return W


def tied_family(eigenvalues, latent_dim: int, sigma2: float, tol: float = 1e-9) -> list[TiedPoint]:
    """Every stationary point of the tied-column family of the ELBO (T15.3), MLL points included.

    A point is a set of groups ``(m_g, P_g)``: ``m_g >= 1`` columns of equal norm spanning a set
    ``P_g`` of ``1 <= p_g <= m_g`` eigen-directions, the ``P_g`` disjoint, ``sum m_g <= k`` (the other
    columns zero), with every ``x_i`` of :func:`tied_group_norms` above ``tol`` (a direction need not
    have ``lambda_i > sigma2``: in a group with ``m > p`` the level ``c`` exceeds ``sigma2``).  Two
    groups whose columns have equal norms ``sum x_i / m`` have one encoder variance: they are the
    group with both their columns and directions (the same ``x_i``), listed once as that.  The
    ``m_g = p_g = 1`` points are the MLL's (T2.4).  Sorted by groups.

    >>> family = tied_family([4.0, 2.0, 1.0], latent_dim=2, sigma2=0.5)
    >>> len(family), sum(point.is_mll_point for point in family)  # 7 MLL points (W = 0 included), 6 tied
    (13, 7)
    >>> family[7]
    TiedPoint(groups=(Group(size=2, directions=(0,)),), norms=(array([1.91421356]),))

    References: docs/theory.md (T15.4, T15.3, T2.4); Lucas et al. 2019, Appendix C.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    points = []
    for groups in _group_sets(tuple(range(len(lam))), latent_dim, None):
        norms = tuple(tied_group_norms(lam[list(g.directions)], g.size, sigma2) for g in groups)
        if any(np.min(x) <= tol for x in norms):
            continue
        column_norms = np.sort([np.sum(x) / g.size for g, x in zip(groups, norms)])
        if np.any(np.diff(column_norms) <= tol * column_norms[1:]):
            continue  # coincident norms: the merged group, enumerated by itself
        points.append(TiedPoint(groups, norms))
    return sorted(points, key=lambda p: p.groups)


def _group_sets(available: tuple[int, ...], columns: int, last: Group | None):
    """Every set of groups on ``available`` directions with at most ``columns`` columns in all, each
    set once (its groups in increasing order, each after ``last``)."""
    yield ()
    for size in range(1, columns + 1):
        for p in range(1, size + 1):
            for directions in itertools.combinations(available, p):
                group = Group(size, directions)
                if last is not None and group <= last:
                    continue
                rest = tuple(j for j in available if j not in directions)
                for tail in _group_sets(rest, columns - size, group):
                    yield (group, *tail)


def tied_zero_directions(groups: tuple[Group, ...]) -> int:
    """The zero eigenvalues that the ELBO's Hessian in all parameters has at a tied-column point (T15.3).

    Rotating a group's ``m`` columns by ``R`` in ``O(m)`` (with the rows of ``V``, its ``D`` tied)
    leaves the ELBO unchanged; the rotations that keep the columns' norms equal keep the point
    stationary, so they form a set of stationary points of one ELBO, and its tangent lies in the
    Hessian's null space.  The group's orbit has dimension ``dim O(m) - dim O(m - p)`` (rotations
    among its ``m - p`` zero columns fix it) and equal norms impose ``m - 1`` conditions:
    ``sum_g [m (m - 1) / 2 - (m - p) (m - p - 1) / 2 - (m - 1)]``, zero for ``m <= 2`` and for
    ``m = 3, p = 1``; for distinct eigenvalues away from ``sigma2`` these are all the zero
    eigenvalues (checked by autodiff, not proved).  An MLL point (every ``m = p = 1``) has none (T15.2).

    >>> tied_zero_directions((Group(1, (0,)),)), tied_zero_directions((Group(2, (0,)),)), tied_zero_directions((Group(3, (0, 1)),))
    (0, 0, 1)

    References: docs/theory.md (T15.4, T15.2).
    """
    return sum(
        g.size * (g.size - 1) // 2 - (g.size - len(g.directions)) * (g.size - len(g.directions) - 1) // 2 - (g.size - 1)
        for g in groups
    )
