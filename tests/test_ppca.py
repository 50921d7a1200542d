"""Tests of :mod:`linear_vae.theory.ppca`: the pPCA log marginal likelihood, its maximum-likelihood
solution and its stationary points (docs/theory.md (T2); Tipping & Bishop 1999; Lucas et al. 2019,
Section 4.1).

Every number is checked against an independent reference: scikit-learn's ``PCA.score``, a dense
``slogdet``/``solve`` of the d x d covariance ``C``, and JAX autodiff (gradients, Hessians and
second directional derivatives) of the objective itself.
"""

from __future__ import annotations

from math import comb

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import LOG_2PI, dense_mll, ppca_mle
from sklearn.decomposition import PCA

import linear_vae  # noqa: F401  (float64)
from linear_vae.data.datasets import load_data, make_synthetic
from linear_vae.data.moments import compute_moments, eigen_decomposition
from linear_vae.theory.ppca import (
    collapsed_curvature,
    log_marginal_likelihood,
    mle_sigma2,
    ppca_optimum,
    stationary_points,
)

# --------------------------------------------------------------------------------------------
# Helpers (the independent references are in tests/reference.py)
# --------------------------------------------------------------------------------------------


def random_orthogonal(rng, d):
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def covariance_with_spectrum(eigenvalues, seed):
    """``S = U diag(lambda) U^T`` with a random orthogonal ``U`` (columns in the order of lambda)."""
    U = random_orthogonal(np.random.default_rng(seed), len(eigenvalues))
    S = (U * eigenvalues) @ U.T
    return (S + S.T) / 2, U


# --------------------------------------------------------------------------------------------
# Agreement with scikit-learn's PCA log-likelihood
# --------------------------------------------------------------------------------------------


def _synthetic():
    return make_synthetic(spectrum=[9.0, 5.0, 3.0, 2.0, 1.2, 0.8, 0.5, 0.3, 0.2, 0.1], n=600, seed=3).X


def _non_gaussian():
    rng = np.random.default_rng(11)
    sources = np.concatenate(
        [rng.exponential(size=(500, 4)) ** 2, rng.uniform(-1, 1, size=(500, 4)), rng.standard_t(3, size=(500, 4))],
        axis=1,
    )
    return sources @ rng.standard_normal((12, 12)) + rng.normal(size=12)


_MNIST_CACHE = {}


def _mnist_1000():
    if "X" not in _MNIST_CACHE:
        _MNIST_CACHE["X"] = load_data("mnist", n=1000, subset_seed=0).X
    return _MNIST_CACHE["X"]


SKLEARN_CASES = [
    ("synthetic", _synthetic, 3),
    ("non-gaussian", _non_gaussian, 4),
    ("mnist1000", _mnist_1000, 2),
    ("mnist1000", _mnist_1000, 10),
    ("mnist1000", _mnist_1000, 32),
]


@pytest.mark.parametrize("name,make,k", SKLEARN_CASES, ids=[f"{c[0]}-k{c[2]}" for c in SKLEARN_CASES])
def test_mll_reproduces_sklearn_pca_score_and_project_mle_scores_at_least_as_high(name, make, k):
    X = make()
    N, d = X.shape
    pca = PCA(n_components=k, svd_solver="full").fit(X)
    W = pca.components_.T * np.sqrt(pca.explained_variance_ - pca.noise_variance_)
    sigma2 = pca.noise_variance_
    C = W @ W.T + sigma2 * np.eye(d)
    # The reconstruction of sklearn's C from (W, sigma2): both are sums of the same few float64
    # products, so they agree to a few ulps of the largest entry; 1e-12 leaves ~1e3 headroom.
    np.testing.assert_allclose(C, pca.get_covariance(), rtol=0, atol=1e-12 * np.abs(C).max())

    moments = compute_moments(X)
    S = X.T @ X / N - np.outer(X.mean(0), X.mean(0))  # independent 1/N covariance
    np.testing.assert_allclose(moments.cov, S, rtol=0, atol=1e-12 * np.abs(S).max())
    score = pca.score(X)
    ours = float(log_marginal_likelihood(W, sigma2, moments.cov))
    # sklearn's score goes through its own inverse of C (Woodbury) and fast_logdet: two float64
    # routes to the same number; measured agreement is ~1e-13 relative even on MNIST (k = 32),
    # so 1e-9 (the required agreement) is generous and still catches a 1/N vs 1/(N-1) slip (~1e-6).
    assert ours == pytest.approx(score, rel=1e-9)

    # The project's MLE (1/N covariance) must score at least as high as sklearn's fit (1/(N-1)).
    spectrum = eigen_decomposition(moments.cov)
    opt = ppca_optimum(spectrum.eigenvalues, k)
    at_weights = float(log_marginal_likelihood(opt.weights(spectrum.eigenvectors), opt.sigma2, moments.cov))
    assert opt.mll >= score
    assert at_weights >= score
    # Exact size of the gap: sklearn's C is c C* with c = N/(N-1) (every eigenvalue, and the mean
    # of the tail, is scaled by c), and tr(C*^-1 S) = d, so
    # MLL* - MLL(c C*) = d/2 (log c + 1/c - 1) ~ d / (4 N^2).  Tolerance: both sides carry
    # ~1e-15 relative rounding of |MLL| (<= 500 here), i.e. < 1e-11 absolute; 1e-9 absolute.
    c = N / (N - 1)
    assert opt.mll - score == pytest.approx(0.5 * d * (np.log(c) + 1 / c - 1), abs=1e-9)


@pytest.mark.parametrize("name,make,k", SKLEARN_CASES, ids=[f"{c[0]}-k{c[2]}" for c in SKLEARN_CASES])
def test_mle_value_equals_mll_at_its_weights_and_tipping_bishop_closed_form(name, make, k):
    X = make()
    moments = compute_moments(X)
    spectrum = eigen_decomposition(moments.cov)
    lam = np.sort(np.linalg.eigvalsh(moments.cov))[::-1]
    opt = ppca_optimum(spectrum.eigenvalues, k)
    # sigma2* = mean of the d - k smallest eigenvalues; eigvalsh vs the library's eigh differ by
    # round-off only (~1e-15 * lambda_1 absolute; the tail mean is >= 1e-4 * lambda_1): 1e-10.
    assert opt.sigma2 == pytest.approx(lam[k:].mean(), rel=1e-10)
    W = opt.weights(spectrum.eigenvectors)
    # Three float64 routes (eigenbasis sum, Woodbury through W, T&B closed form) to one number
    # of size <= 500: rounding is ~1e-13 relative; 1e-10 is the bound with margin.
    assert opt.mll == pytest.approx(float(log_marginal_likelihood(W, opt.sigma2, moments.cov)), rel=1e-10)
    assert opt.mll == pytest.approx(ppca_mle(lam, k)[1], rel=1e-10)
    assert opt.mll == pytest.approx(dense_mll(W, opt.sigma2, moments.cov), rel=1e-10)


# --------------------------------------------------------------------------------------------
# log_marginal_likelihood against a dense computation
# --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sigma2=st.floats(0.01, 50.0),
    w_scale=st.floats(0.01, 10.0),
    offset_scale=st.floats(0.0, 5.0),
)
def test_mll_matches_dense_slogdet_and_solve_with_mean_offset(seed, sigma2, w_scale, offset_scale):
    rng = np.random.default_rng(seed)
    d, k = 7, 3
    A = rng.standard_normal((d, 2 * d))
    S = A @ A.T / (2 * d)
    W = w_scale * rng.standard_normal((d, k))
    offset = offset_scale * rng.standard_normal(d)
    expected = dense_mll(W, sigma2, S, offset)
    got = float(log_marginal_likelihood(W, sigma2, S, mean_offset=offset))
    # Woodbury/determinant lemma vs dense d x d: cond(C) <= (100 * 10 + 50) / 0.01 ~ 1e5 here, so
    # each route is accurate to ~1e-11 relative of the largest term; the terms (log|C|,
    # tr(C^-1 S)/...) are at most ~1e4 in magnitude while the value can be smaller, so compare
    # against the scale of the terms: 1e-10 relative to |log|C|| + |tr C^-1 S| + d log 2pi.
    C = W @ W.T + sigma2 * np.eye(d)
    term_scale = abs(np.linalg.slogdet(C)[1]) + abs(np.trace(np.linalg.solve(C, S))) + d * LOG_2PI
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10 * term_scale)


def test_mll_mean_offset_none_equals_zero_offset_and_offset_lowers_mll():
    rng = np.random.default_rng(5)
    S, _ = covariance_with_spectrum(np.array([4.0, 2.0, 1.0, 0.5, 0.2]), seed=1)
    W = rng.standard_normal((5, 2))
    base = float(log_marginal_likelihood(W, 0.3, S))
    # Identical arithmetic apart from adding 0: equal to rounding (1e-14 relative).
    assert float(log_marginal_likelihood(W, 0.3, S, mean_offset=np.zeros(5))) == pytest.approx(base, rel=1e-14)
    offset = rng.standard_normal(5)
    # The offset adds -1/2 delta^T C^-1 delta < 0 exactly; compare with the dense quadratic form
    # (1e-10 relative: same conditioning argument as the dense test above).
    C = W @ W.T + 0.3 * np.eye(5)
    drop = 0.5 * offset @ np.linalg.solve(C, offset)
    assert float(log_marginal_likelihood(W, 0.3, S, mean_offset=offset)) == pytest.approx(base - drop, rel=1e-10)


# --------------------------------------------------------------------------------------------
# Stationary points: autodiff gradient, Hessian and collapsed curvature (d = 5, k = 2)
# --------------------------------------------------------------------------------------------

D_SMALL, K_SMALL = 5, 2
LAMBDA_SMALL = np.array([5.0, 3.0, 2.0, 1.0, 0.5])
S_SMALL, U_SMALL = covariance_with_spectrum(LAMBDA_SMALL, seed=7)

# Jitted once at module level with static shapes (5, 2): every stationary point reuses them.
_mll_grad = jax.jit(jax.grad(log_marginal_likelihood))
_mll_hessian = jax.jit(
    lambda W, s2, S: jax.hessian(log_marginal_likelihood)(W, s2, S).reshape(D_SMALL * K_SMALL, D_SMALL * K_SMALL)
)
_mll_second_directional = jax.jit(
    lambda W, direction, s2, S: jax.grad(jax.grad(lambda eps: log_marginal_likelihood(W + eps * direction, s2, S)))(0.0)
)


def curvature_scale(sigma2):
    """Natural size of the MLL's curvature in W: ``(lambda_1 + sigma2) / sigma2^2``."""
    return (LAMBDA_SMALL[0] + sigma2) / sigma2**2


# sigma2 between eigenvalues (never equal to one): 4, 3, 2 and 1 usable directions.
SIGMA2_BETWEEN = [0.7, 1.5, 2.5, 4.0]


@pytest.mark.parametrize("sigma2", SIGMA2_BETWEEN)
def test_mll_gradient_vanishes_at_every_enumerated_stationary_point(sigma2):
    points = list(stationary_points(LAMBDA_SMALL, K_SMALL, sigma2))
    n_usable = int(np.sum(LAMBDA_SMALL > sigma2))
    # One point per subset of the usable directions of size <= k (independent count).
    assert len(points) == sum(comb(n_usable, r) for r in range(min(K_SMALL, n_usable) + 1))
    for point in points:
        W = point.weights(U_SMALL)
        grad = np.asarray(_mll_grad(W, sigma2, S_SMALL))
        # Each gradient entry is a difference of terms of size <= curvature_scale * |W| (+1);
        # float64 rounding leaves ~1e-15 of that, 1e-10 gives a factor 1e5 of headroom while a
        # real non-stationary point has gradient ~ curvature_scale * |W|.
        tol = 1e-10 * curvature_scale(sigma2) * (1 + np.abs(W).max())
        assert np.abs(grad).max() < tol, (point.directions, grad)


@pytest.mark.parametrize("sigma2", SIGMA2_BETWEEN)
def test_mll_hessian_local_max_iff_is_global_max(sigma2):
    n_max = 0
    for point in stationary_points(LAMBDA_SMALL, K_SMALL, sigma2):
        W = point.weights(U_SMALL)
        H = np.asarray(_mll_hessian(W, sigma2, S_SMALL))
        eig = np.linalg.eigvalsh((H + H.T) / 2)
        # Exactly-flat symmetry directions (rotation among columns, a zero column sliding along a
        # used direction) have eigenvalue 0 up to rounding, ~1e-15 * scale; every genuine
        # curvature here is >= min |lambda_i - lambda_j| / sigma2^2 style, >= 1e-2 * scale.
        tol = 1e-8 * curvature_scale(sigma2)
        is_local_max = bool(np.all(eig <= tol))
        assert is_local_max == point.is_global_max, (sigma2, point.directions, eig)
        if not point.is_global_max:
            assert eig.max() > 1e3 * tol  # a saddle has clearly positive curvature
        n_max += point.is_global_max
    assert n_max == 1  # distinct eigenvalues: exactly one global maximum up to R


@pytest.mark.parametrize("sigma2", SIGMA2_BETWEEN)
def test_collapsed_curvature_equals_autodiff_second_derivative_along_each_unused_direction(sigma2):
    checked = 0
    for point in stationary_points(LAMBDA_SMALL, K_SMALL, sigma2):
        W = point.weights(U_SMALL)
        unused = [i for i in range(D_SMALL) if i not in point.directions]
        n_zero = K_SMALL - len(point.directions)
        if n_zero == 0:
            assert point.collapsed_curvatures.size == 0
            continue
        assert len(point.collapsed_curvatures) == len(unused)
        for c in range(len(point.directions), K_SMALL):  # the zero columns
            assert np.all(W[:, c] == 0)
            for pos, i in enumerate(unused):
                direction = np.zeros((D_SMALL, K_SMALL))
                direction[:, c] = U_SMALL[:, i]
                curv = float(_mll_second_directional(W, direction, sigma2, S_SMALL))
                # Autodiff second derivative vs (lambda_i - sigma2) / sigma2^2: same float64
                # quantity by two routes, ~1e-14 relative; curvatures are >= 0.03 * scale in
                # size here, so 1e-9 of the scale is tight but safe.
                atol = 1e-9 * curvature_scale(sigma2)
                assert curv == pytest.approx((LAMBDA_SMALL[i] - sigma2) / sigma2**2, abs=atol)
                assert curv == pytest.approx(point.collapsed_curvatures[pos], abs=atol)
                assert curv == pytest.approx(float(collapsed_curvature(LAMBDA_SMALL[i], sigma2)), abs=atol)
                checked += 1
    assert checked > 0


def test_sigma2_above_all_eigenvalues_only_zero_weights_and_they_are_the_global_max():
    sigma2 = 6.0
    points = list(stationary_points(LAMBDA_SMALL, K_SMALL, sigma2))
    assert len(points) == 1
    (point,) = points
    assert point.directions == () and point.is_global_max
    np.testing.assert_array_equal(point.column_variances, np.zeros(K_SMALL))
    W = point.weights(U_SMALL)
    np.testing.assert_array_equal(W, 0.0)
    H = np.asarray(_mll_hessian(W, sigma2, S_SMALL))
    eig = np.sort(np.linalg.eigvalsh((H + H.T) / 2))
    # At W = 0 the Hessian in vec(W) is I_k (x) (S - sigma2 I) / sigma2^2: its spectrum is each
    # (lambda_i - sigma2) / sigma2^2 repeated k times, all < 0.  Rounding ~1e-15; 1e-10 absolute.
    expected = np.sort(np.repeat((LAMBDA_SMALL - sigma2) / sigma2**2, K_SMALL))
    np.testing.assert_allclose(eig, expected, rtol=0, atol=1e-10)
    assert eig.max() < 0
    # The global maximum is W = 0, with value -1/2 [d log 2pi sigma2 + tr S / sigma2].
    assert ppca_optimum(LAMBDA_SMALL, K_SMALL, sigma2).mll == pytest.approx(
        -0.5 * (D_SMALL * np.log(2 * np.pi * sigma2) + LAMBDA_SMALL.sum() / sigma2), rel=1e-12
    )


@pytest.mark.parametrize("sigma2", SIGMA2_BETWEEN)
def test_fixed_sigma2_optimum_is_best_stationary_point_and_beats_random_weights(sigma2):
    opt = ppca_optimum(LAMBDA_SMALL, K_SMALL, sigma2)
    # Column variances max(lambda_i - sigma2, 0), written out here.
    np.testing.assert_allclose(opt.column_variances, np.maximum(LAMBDA_SMALL[:K_SMALL] - sigma2, 0), rtol=1e-15)
    W_opt = opt.weights(U_SMALL)
    # Dense reference, 1e-10 relative (conditioning ~lambda_1/sigma2 <= 10).
    assert opt.mll == pytest.approx(dense_mll(W_opt, sigma2, S_SMALL), rel=1e-10)
    values = [dense_mll(p.weights(U_SMALL), sigma2, S_SMALL) for p in stationary_points(LAMBDA_SMALL, K_SMALL, sigma2)]
    # The global max is the best stationary point (ties only for the max itself): 1e-10 relative.
    assert max(values) == pytest.approx(opt.mll, rel=1e-10)
    rng = np.random.default_rng(0)
    for _ in range(200):
        W = rng.standard_normal((D_SMALL, K_SMALL)) * rng.uniform(0.01, 3)
        assert dense_mll(W, sigma2, S_SMALL) <= opt.mll + 1e-12 * abs(opt.mll)  # rounding only


# --------------------------------------------------------------------------------------------
# Learned sigma2: the MLE beats a dense grid of the profile likelihood
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 3), (2, 5)])
def test_learned_sigma2_mle_maximises_mll_over_dense_sigma2_grid(seed, k):
    rng = np.random.default_rng(seed)
    d = 8
    lam = np.sort(rng.uniform(0.05, 10.0, d))[::-1]
    S, U = covariance_with_spectrum(lam, seed=seed + 100)
    opt = ppca_optimum(lam, k)
    assert opt.sigma2 == pytest.approx(lam[k:].mean(), rel=1e-14)  # same mean, rounding only
    assert mle_sigma2(lam, k) == opt.sigma2
    # Profile likelihood: at each sigma2 the fixed-sigma2 optimum W = U_k sqrt(max(lambda - s, 0)),
    # evaluated densely (stacked slogdet / solve), independent of the library.
    grid = np.geomspace(lam[-1] / 20, lam[0] * 20, 3001)
    Wg = U[None, :, :k] * np.sqrt(np.maximum(lam[:k][None, :] - grid[:, None], 0.0))[:, None, :]
    C = Wg @ np.swapaxes(Wg, 1, 2) + grid[:, None, None] * np.eye(d)
    logdet = np.linalg.slogdet(C)[1]
    quad = np.trace(np.linalg.solve(C, np.broadcast_to(S, C.shape)), axis1=1, axis2=2)
    profile = -0.5 * (d * LOG_2PI + logdet + quad)
    # No grid point may beat the MLE beyond rounding (values are O(10), rounding ~1e-14).
    assert profile.max() <= opt.mll + 1e-11
    # And the grid comes close to it: log-step h = 1.5e-3, the loss near the peak is about
    # (d-k)/4 h^2 < 1e-5; so the best grid value is within 1e-4 and next to sigma2*.
    assert opt.mll - profile.max() < 1e-4
    best = grid[np.argmax(profile)]
    assert abs(np.log(best / opt.sigma2)) <= 2 * np.log(grid[1] / grid[0])
    # The MLE's own value is also the value of its weights (dense, 1e-10 relative).
    assert opt.mll == pytest.approx(dense_mll(opt.weights(U), opt.sigma2, S), rel=1e-10)


def test_mle_sigma2_zero_for_rank_deficient_spectrum_raises():
    with pytest.raises(ValueError, match="sigma2 is 0"):
        mle_sigma2(np.array([3.0, 1.0, 0.0, 0.0]), 2)
    with pytest.raises(ValueError, match="sigma2 is 0"):
        ppca_optimum(np.array([3.0, 1.0]), 2)  # no tail at all
