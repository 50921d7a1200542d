"""Theorem 1 on a small problem: the MLL's stationary points are the ELBO's, classified by autodiff
Hessians as predicted; the ELBO's own extra stationary points (tied columns) are saddles; a direct
search finds nothing else, and no local maximum but the global one (docs/theory.md (T15))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from reference import dense_mll

from linear_vae.theory.elbo import DataStats, LinearVAEParams, exact_elbo
from linear_vae.theory.ppca import log_marginal_likelihood, stationary_points
from linear_vae.training import stationary

LAM = np.array([4.0, 2.0, 1.4, 0.5])  # distinct; sigma2 = 1 between 1.4 and 0.5
SIGMA2, K = 1.0, 2


@pytest.fixture(scope="module")
def problem():
    Q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((4, 4)))
    S = (Q * LAM) @ Q.T
    return S, Q, DataStats.from_moments(np.zeros(4), S)


def gradient_norms_of(params: LinearVAEParams, stats) -> np.ndarray:
    """||grad ELBO|| in all parameters, for a batch of parameters."""
    gradient = jax.grad(lambda p: exact_elbo(p, SIGMA2, 1.0, stats))
    return np.asarray(jax.jit(jax.vmap(lambda p: jnp.linalg.norm(ravel_pytree(gradient(p))[0])))(params))


@pytest.mark.slow  # the default suite checks the same on the quick `stationary_points` run
def test_mll_stationary_points_are_elbo_stationary_points_with_the_predicted_inertia(problem):
    S, Q, stats = problem
    points = list(stationary_points(LAM, K, SIGMA2))
    assert len(points) == 1 + 3 + 3  # subsets of at most 2 of the 3 directions above sigma2
    vaes = stationary.stationary_vaes(np.stack([p.weights(Q) for p in points]), np.zeros(4), SIGMA2)
    gradient_norms = gradient_norms_of(vaes, stats)
    elbos = jax.jit(jax.vmap(lambda p: exact_elbo(p, SIGMA2, 1.0, stats)))(vaes)
    elbo_hessians = stationary.batched_elbo_hessians(vaes, SIGMA2, stats)
    mll_hessians = stationary.batched_mll_hessians(vaes.W, SIGMA2, stats)
    for i, point in enumerate(points):
        # Stationary in all parameters (float64 round-off ~1e-15 of gradients of order 1).
        assert gradient_norms[i] < 1e-12
        # ELBO = MLL there (W^T W is diagonal), against the dense d x d MLL.
        np.testing.assert_allclose(float(elbos[i]), dense_mll(vaes.W[i], SIGMA2, S), atol=1e-12)
        mll, elbo = stationary.predicted_inertia(LAM, point, SIGMA2)
        assert stationary.inertia(mll_hessians[i]) == mll
        assert stationary.inertia(elbo_hessians[i]) == elbo
        assert (elbo.positive == 0) == point.is_global_max  # the only local maximum is the global one


def test_mll_hessian_is_that_of_the_likelihood_and_its_null_space_is_the_rotations(problem):
    S, Q, stats = problem
    point = next(p for p in stationary_points(LAM, K, SIGMA2) if p.directions == (0,))  # one zero column
    W = point.weights(Q)
    # The projected objective it differentiates is the MLL of (T2.1), to round-off.
    from linear_vae.training.projected import projected_elbo

    np.testing.assert_allclose(
        float(projected_elbo(jnp.asarray(W), jnp.log(SIGMA2), 1.0, stats)),
        float(log_marginal_likelihood(W, SIGMA2, S)),
        atol=1e-12,
    )
    H = np.asarray(stationary.batched_mll_hessians(W[None], SIGMA2, stats)[0])
    # ... and its Hessian, against central differences of the dense MLL (step 1e-4: error ~1e-8).
    h, basis = 1e-4, np.eye(W.size)

    def mll_at(v):
        return dense_mll(v.reshape(W.shape), SIGMA2, S)

    w = W.reshape(-1)
    fd = np.array(
        [
            [
                (mll_at(w + h * (a + b)) - mll_at(w + h * (a - b)) - mll_at(w - h * (a - b)) + mll_at(w - h * (a + b)))
                / (4 * h * h)
                for b in basis
            ]
            for a in basis
        ]
    )
    np.testing.assert_allclose(H, fd, atol=1e-6)
    # The rotation generator W A (A antisymmetric) is a null vector, and spans the null space.
    A = np.array([[0.0, 1.0], [-1.0, 0.0]])
    tangent = (W @ A).reshape(-1)
    np.testing.assert_allclose(H @ tangent, 0.0, atol=1e-12)
    eigenvalues, vectors = np.linalg.eigh(H)
    null = vectors[:, np.abs(eigenvalues) < 1e-9 * np.abs(eigenvalues).max()]
    assert null.shape[1] == 1
    np.testing.assert_allclose(abs(null[:, 0] @ tangent) / np.linalg.norm(tangent), 1.0, atol=1e-10)


def test_tied_group_norms_solve_the_stationarity_of_the_elbo(problem):
    """Two columns sharing u_1 equally (norms x/2 each): stationary in all parameters, and a saddle."""
    _, Q, stats = problem
    np.testing.assert_allclose(stationary.tied_group_norms(LAM[[1]], 1, SIGMA2), LAM[1] - SIGMA2, atol=1e-15)
    (x,) = stationary.tied_group_norms(LAM[[0]], 2, SIGMA2)
    # lambda (x/2 + sigma2) = (sigma2 + x)^2 for m = 2 columns, p = 1 direction (T15.3), by hand:
    np.testing.assert_allclose(LAM[0] * (x / 2 + SIGMA2), (SIGMA2 + x) ** 2, rtol=1e-12)
    W = np.sqrt(x / 2) * np.stack([Q[:, 0], -Q[:, 0]], axis=1)
    vaes = stationary.stationary_vaes(W[None], np.zeros(4), SIGMA2)
    assert gradient_norms_of(vaes, stats)[0] < 1e-12
    assert stationary.inertia(stationary.batched_elbo_hessians(vaes, SIGMA2, stats)[0]).positive >= 1
    groups = stationary.identify_stationary_point(W, Q, LAM, SIGMA2)
    assert groups == (stationary.Group(2, (0,)),) and not stationary.is_mll_point(groups)
    # A non-stationary W (the same columns, unequal norms) is not identified.
    assert stationary.identify_stationary_point(W * [1.0, 1.2], Q, LAM, SIGMA2) is None


@pytest.mark.slow  # the default suite checks the same on the quick `stationary_points` run
def test_search_finds_only_identified_points_and_no_spurious_maximum(problem):
    _, Q, stats = problem
    starts = stationary.random_starts(0, 12, 4, K, np.zeros(4))
    found = stationary.search_stationary_points(starts, SIGMA2, stats, iterations=200)
    converged = found.gradient_norm < 1e-8
    assert converged.sum() >= 8  # measured: 12 of 12
    hessians = np.asarray(stationary.batched_elbo_hessians(found.params, SIGMA2, stats))
    points = stationary.tied_family(LAM, K, SIGMA2)
    vaes = stationary.stationary_vaes(np.stack([p.weights(Q, K) for p in points]), np.zeros(4), SIGMA2)
    elbos = np.asarray(jax.jit(jax.vmap(lambda p: exact_elbo(p, SIGMA2, 1.0, stats)))(vaes))
    family = {p.groups: elbo for p, elbo in zip(points, elbos)}
    # Global max (T2.4): C has eigenvalues 4, 2 on u_1, u_2 and sigma2 = 1 on u_3, u_4.
    best = -0.5 * (4 * np.log(2 * np.pi) + (np.log(4.0) + 1) + (np.log(2.0) + 1) + 1.4 + 0.5)
    for i in np.flatnonzero(converged):
        groups = stationary.identify_stationary_point(found.params.W[i], Q, LAM, SIGMA2)
        assert groups is not None
        # Complete: every endpoint is a point of the enumerated family, at its ELBO (round-off ~1e-12).
        assert groups in family
        params = jax.tree.map(lambda a: a[i], found.params)
        np.testing.assert_allclose(float(exact_elbo(params, SIGMA2, 1.0, stats)), family[groups], atol=1e-9)
        if stationary.inertia(hessians[i]).positive == 0:
            assert groups == (stationary.Group(1, (0,)), stationary.Group(1, (1,)))
            np.testing.assert_allclose(float(exact_elbo(params, SIGMA2, 1.0, stats)), best, atol=1e-9)


def test_tied_group_norms_rejects_more_directions_than_columns():
    with pytest.raises(ValueError, match="`group_size`"):
        stationary.tied_group_norms(LAM[:3], 2, SIGMA2)


@pytest.mark.parametrize("values", [[3.0], [2.0, 0.0], [5.0, 1.0, 0.0], [4.0, 2.5, 0.3, 0.0, 0.0], [1.0, 1.0, 1.0]])
def test_balanced_rotation_equalises_the_diagonal(values):
    R = stationary.balanced_rotation(values)
    np.testing.assert_allclose(R.T @ R, np.eye(len(values)), atol=1e-14)  # orthogonal, to round-off
    np.testing.assert_allclose(np.diag(R.T @ np.diag(values) @ R), np.mean(values), atol=1e-14)


def test_tied_family_is_complete_stationary_and_all_saddles_but_the_global_max(problem):
    """The family at K = 2, counted by hand from (T15.3) and checked by autodiff gradients and Hessians.

    With at most 2 columns a point is a set of single columns on u_i (lambda_i > sigma2: the MLL's
    points) or one group of m = 2 columns on one direction (x = sqrt(lambda) y - sigma2 with
    y = (sqrt(lambda) + sqrt(lambda + 8 sigma2)) / 4) or on two (y = (sqrt(lambda_i) + sqrt(lambda_j)) / 2),
    written out here apart from :func:`stationary.tied_group_norms`.
    """
    _, Q, stats = problem
    points = stationary.tied_family(LAM, K, SIGMA2)
    G = stationary.Group
    one = [
        (G(2, (i,)),)
        for i in range(4)
        if np.sqrt(LAM[i]) * (np.sqrt(LAM[i]) + np.sqrt(LAM[i] + 8 * SIGMA2)) / 4 > SIGMA2
    ]
    root = np.sqrt(LAM)
    two = [
        (G(2, (i, j)),)
        for i in range(4)
        for j in range(i + 1, 4)
        if min(root[i], root[j]) * (root[i] + root[j]) / 2 > SIGMA2
    ]
    mll = [tuple(G(1, (j,)) for j in p.directions) for p in stationary_points(LAM, K, SIGMA2)]
    assert sorted(p.groups for p in points) == sorted(mll + one + two)
    assert (len(mll), len(one), len(two)) == (7, 3, 3)  # by hand: lambda = 0.5 takes part in none
    W = np.stack([p.weights(Q, K) for p in points])
    vaes = stationary.stationary_vaes(W, np.zeros(4), SIGMA2)
    assert np.max(gradient_norms_of(vaes, stats)) < 1e-12  # stationary in all 22 parameters
    hessians = stationary.batched_elbo_hessians(vaes, SIGMA2, stats)
    for point, w, hessian in zip(points, W, hessians):
        assert stationary.identify_stationary_point(w, Q, LAM, SIGMA2) == point.groups
        inertia = stationary.inertia(hessian)
        assert inertia.zero == stationary.tied_zero_directions(point.groups) == 0  # isolated points for m <= 2
        global_max = point.groups == (G(1, (0,)), G(1, (1,)))
        assert (inertia.positive == 0) == global_max  # every other point is a saddle


def test_three_tied_columns_on_two_directions_form_a_curve_of_saddles(problem):
    """m = 3 columns on p = 2 directions: the balanced rotations form a curve (T15.3), one zero
    eigenvalue of the ELBO's Hessian in all 31 parameters, and an ascent direction."""
    _, Q, stats = problem
    (point,) = [p for p in stationary.tied_family(LAM, 3, SIGMA2) if p.groups == (stationary.Group(3, (0, 1)),)]
    assert stationary.tied_zero_directions(point.groups) == 1
    vaes = stationary.stationary_vaes(point.weights(Q, 3)[None], np.zeros(4), SIGMA2)
    assert gradient_norms_of(vaes, stats)[0] < 1e-12
    inertia = stationary.inertia(stationary.batched_elbo_hessians(vaes, SIGMA2, stats)[0])
    assert inertia.zero == 1 and inertia.positive >= 1
