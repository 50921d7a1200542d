"""Tests of :mod:`linear_vae.theory.elbo` and :mod:`linear_vae.theory.optimum`: the linear VAE's beta-ELBO in
closed form, its Monte-Carlo estimator, the optimal encoder, the closed-form global optimum and
posterior collapse (docs/theory.md (T3); Lucas et al. 2019, Section 4.2 and Appendix C).

References are independent of the code under test: a dense numpy ELBO computed per datapoint
with ``A = I - W V`` formed explicitly, JAX autodiff (gradients and full Hessians in all
parameters), random perturbations, dense grids over sigma2, and formulas written out in
tests/reference.py.
"""

from __future__ import annotations

from math import comb

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree
from reference import dense_elbo_terms, dense_mll, optimal_beta_elbo, optimal_decoder, optimal_kl_per_dim

import linear_vae  # noqa: F401  (float64)
from linear_vae.data.datasets import make_synthetic
from linear_vae.data.moments import compute_moments, eigen_decomposition
from linear_vae.theory.elbo import (
    DataStats,
    LinearVAEParams,
    elbo_gap_optimal_encoder,
    elbo_terms,
    exact_elbo,
    kl_per_datapoint,
    monte_carlo_elbo,
    optimal_encoder,
    with_optimal_encoder,
)
from linear_vae.theory.optimum import beta_elbo_optimum, collapse_thresholds, learned_sigma2
from linear_vae.theory.ppca import log_marginal_likelihood, mle_sigma2, stationary_points

# Jitted once at module level; shapes are fixed per test group so each compiles once or twice.
_elbo = jax.jit(exact_elbo)
_elbo_grad = jax.jit(jax.grad(exact_elbo))
_elbo_batch = jax.jit(jax.vmap(exact_elbo, in_axes=(0, None, None, None)))
_mll = jax.jit(log_marginal_likelihood)


# --------------------------------------------------------------------------------------------
# Helpers (the independent references are in tests/reference.py)
# --------------------------------------------------------------------------------------------


def random_orthogonal(rng, d):
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def problem(eigenvalues, seed):
    """``S = U diag(lambda) U^T`` (random U, columns ordered like lambda), a random mean, stats."""
    rng = np.random.default_rng(seed)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    U = random_orthogonal(rng, lam.size)
    S = (U * lam) @ U.T
    S = (S + S.T) / 2
    mean = rng.normal(size=lam.size)
    return S, U, mean, DataStats.from_moments(mean, S)


def random_params(rng, d, k, mu, w_scale=1.0):
    return LinearVAEParams(
        W=w_scale * rng.standard_normal((d, k)),
        mu=np.asarray(mu, dtype=np.float64),
        V=0.5 * rng.standard_normal((k, d)),
        log_D=rng.normal(scale=0.7, size=k),
    )


def scale_aware_tol(grad_fn, params, args, rel=1e-9, seed=0):
    """Tolerance for a vanishing gradient: ``rel`` times the gradient norm at a point 10% away
    (random relative perturbation of every parameter plus a 0.1 absolute jitter).

    The gradient's entries are differences of terms about as large as that reference; float64
    rounding leaves ~1e-15 of them, so ``rel = 1e-9`` keeps ~1e6 headroom while a point that is
    not stationary has a gradient comparable to the reference."""
    rng = np.random.default_rng(seed)
    moved = jax.tree_util.tree_map(
        lambda p: np.asarray(p) * (1 + 0.1 * rng.standard_normal(np.shape(p))) + 0.1 * rng.standard_normal(np.shape(p)),
        params,
    )
    flat, _ = ravel_pytree(grad_fn(moved, *args))
    return rel * float(jnp.linalg.norm(flat))


# --------------------------------------------------------------------------------------------
# Exact ELBO against a dense per-datapoint computation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,beta,sigma2", [(0, 1.0, 0.5), (1, 0.3, 2.0), (2, 4.0, 0.05)])
def test_exact_elbo_and_terms_match_dense_per_datapoint_computation_with_mean_offset(seed, beta, sigma2):
    rng = np.random.default_rng(seed)
    N, d, k = 60, 6, 3
    X = rng.exponential(size=(N, d)) @ rng.standard_normal((d, d)) + rng.normal(size=d)
    mean = X.mean(0)
    S = (X - mean).T @ (X - mean) / N
    mu = mean + rng.normal(size=d)  # nonzero offset mean - mu
    params = random_params(rng, d, k, mu)
    stats = DataStats.from_moments(mean, S)
    log_lik_ref, kl_ref = dense_elbo_terms(params, sigma2, X)
    log_lik, kl = elbo_terms(params, sigma2, stats)
    # Same quantities, different float64 routes (trace identities vs per-datapoint sums of
    # O(1e1..1e3)-sized terms): rounding ~1e-14 relative; 1e-10 leaves four orders of margin.
    assert float(log_lik) == pytest.approx(log_lik_ref, rel=1e-10)
    np.testing.assert_allclose(np.asarray(kl), kl_ref, rtol=1e-10)
    # The beta-ELBO, eagerly and compiled (the other tests use the compiled one), against the same
    # dense reference.
    for elbo_fn in (exact_elbo, _elbo):
        elbo = float(elbo_fn(params, sigma2, beta, stats))
        assert elbo == pytest.approx(log_lik_ref - beta * kl_ref.sum(), rel=1e-10)


# --------------------------------------------------------------------------------------------
# Monte Carlo estimator
# --------------------------------------------------------------------------------------------

_MC_SAMPLES = 16


@jax.jit
def _mc_many(params, sigma2, beta, X, keys):
    return jax.vmap(lambda key: monte_carlo_elbo(params, sigma2, beta, X, key, n_samples=_MC_SAMPLES))(keys)


def _mc_setup(log_D):
    rng = np.random.default_rng(42)
    N, d, k = 100, 6, 3
    X = rng.standard_normal((N, d)) @ rng.standard_normal((d, d)) + 2.0
    mean = X.mean(0)
    S = (X - mean).T @ (X - mean) / N
    params = LinearVAEParams(
        W=rng.standard_normal((d, k)),
        mu=mean + 0.3 * rng.normal(size=d),
        V=0.3 * rng.standard_normal((k, d)),
        log_D=np.asarray(log_D, dtype=np.float64),
    )
    return params, X, DataStats.from_moments(mean, S)


@pytest.mark.parametrize(
    "log_D", [[0.0, 0.0, 0.0], [np.log(0.05), np.log(0.2), np.log(3.0)], [np.log(6.0), np.log(9.0), np.log(0.01)]]
)
def test_monte_carlo_elbo_agrees_with_exact_elbo_within_4_standard_errors(log_D):
    params, X, stats = _mc_setup(log_D)
    sigma2, beta = 0.7, 0.8
    keys = jax.random.split(jax.random.PRNGKey(0), 200)
    estimates = np.asarray(_mc_many(params, sigma2, beta, X, keys))
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    exact = float(exact_elbo(params, sigma2, beta, stats))
    # Unbiased estimator, 200 independent replicate estimates: the mean is within 4 standard
    # errors with probability 0.99994 (and the keys are fixed, so the test is deterministic).
    assert abs(estimates.mean() - exact) < 4 * se, (estimates.mean(), exact, se)


def test_monte_carlo_elbo_uses_standard_deviation_sqrt_D_not_variance_D():
    # D far from 1, so using D instead of sqrt(D) as the noise scale changes the expectation.
    params, X, stats = _mc_setup([np.log(6.0), np.log(9.0), np.log(0.05)])
    sigma2, beta = 0.7, 1.0
    keys = jax.random.split(jax.random.PRNGKey(1), 200)
    estimates = np.asarray(_mc_many(params, sigma2, beta, X, keys))
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    exact = float(exact_elbo(params, sigma2, beta, stats))
    # If eps were multiplied by D, E||W (D * eps)||^2 = sum_j D_j^2 ||w_j||^2 replaces
    # sum_j D_j ||w_j||^2 in the reconstruction error.
    D = np.exp(np.asarray(params.log_D))
    wrong = exact - np.sum((D**2 - D) * np.sum(np.asarray(params.W) ** 2, axis=0)) / (2 * sigma2)
    assert abs(estimates.mean() - exact) < 4 * se  # 4 SE: see the test above
    assert abs(estimates.mean() - wrong) > 100 * se  # the wrong scale is far off


# --------------------------------------------------------------------------------------------
# The optimal encoder
# --------------------------------------------------------------------------------------------

D6, K3 = 6, 3
LAMBDA6 = np.array([6.0, 4.0, 2.5, 1.2, 0.6, 0.3])
S6, U6, MEAN6, STATS6 = problem(LAMBDA6, seed=3)


@pytest.mark.parametrize("beta", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_optimal_encoder_zeroes_elbo_gradient_in_V_and_log_D(beta, offset):
    rng = np.random.default_rng(int(beta * 100) + int(offset * 10))
    sigma2 = 0.8
    W = rng.standard_normal((D6, K3))  # non-orthogonal columns
    mu = MEAN6 + offset * rng.normal(size=D6)  # the encoder is optimal for any mu
    params = with_optimal_encoder(W, mu, sigma2, beta)
    V, D = optimal_encoder(W, sigma2, beta)
    np.testing.assert_allclose(np.exp(np.asarray(params.log_D)), np.asarray(D), rtol=1e-14)
    # Written out independently: V = (W^T W + t I)^-1 W^T, D_j = t / (||w_j||^2 + t).
    t = beta * sigma2
    np.testing.assert_allclose(np.asarray(V), np.linalg.inv(W.T @ W + t * np.eye(K3)) @ W.T, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.asarray(D), t / (np.sum(W**2, 0) + t), rtol=1e-13)
    grad = _elbo_grad(params, sigma2, beta, STATS6)
    tol = scale_aware_tol(_elbo_grad, params, (sigma2, beta, STATS6))
    assert float(jnp.abs(grad.V).max()) < tol
    assert float(jnp.abs(grad.log_D).max()) < tol
    # It is a maximum in (V, log D): the ELBO is concave there, so random encoders do worse.
    best = float(_elbo(params, sigma2, beta, STATS6))
    for _ in range(20):
        other = params._replace(
            V=params.V + 0.05 * rng.standard_normal((K3, D6)), log_D=params.log_D + 0.05 * rng.standard_normal(K3)
        )
        assert float(_elbo(other, sigma2, beta, STATS6)) <= best + 1e-12 * abs(best)  # rounding


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("offset", [0.0, 0.7])
def test_elbo_gap_optimal_encoder_equals_mll_minus_elbo(seed, offset):
    rng = np.random.default_rng(seed)
    sigma2 = rng.uniform(0.1, 3.0)
    W = rng.standard_normal((D6, K3)) * rng.uniform(0.2, 3.0)
    mu = MEAN6 + offset * rng.normal(size=D6)
    params = with_optimal_encoder(W, mu, sigma2, 1.0)
    mll = float(_mll(W, sigma2, S6, MEAN6 - mu))
    elbo = float(_elbo(params, sigma2, 1.0, STATS6))
    gap = float(elbo_gap_optimal_encoder(W, sigma2))
    # Also the formula 1/2 [sum log M_jj - log det M], written out with numpy.
    M = W.T @ W + sigma2 * np.eye(K3)
    assert gap == pytest.approx(0.5 * (np.sum(np.log(np.diag(M))) - np.linalg.slogdet(M)[1]), rel=1e-10)
    assert gap > 0
    # MLL - ELBO is a difference of O(10) numbers: absolute rounding ~1e-14; 1e-10 * |MLL|.
    assert mll - elbo == pytest.approx(gap, abs=1e-10 * abs(mll))


@pytest.mark.parametrize("seed", range(3))
def test_elbo_gap_optimal_encoder_is_zero_for_orthogonal_columns(seed):
    rng = np.random.default_rng(seed)
    sigma2 = rng.uniform(0.1, 3.0)
    W = random_orthogonal(rng, D6)[:, :K3] * rng.uniform(0.1, 3.0, K3)
    # M is diagonal up to rounding (~1e-16 * ||W||^2), so log M_jj - log det M ~ 1e-15.
    assert abs(float(elbo_gap_optimal_encoder(W, sigma2))) < 1e-12
    params = with_optimal_encoder(W, MEAN6, sigma2, 1.0)
    mll = float(_mll(W, sigma2, S6))
    assert float(_elbo(params, sigma2, 1.0, STATS6)) == pytest.approx(mll, abs=1e-12 * abs(mll) + 1e-13)


# --------------------------------------------------------------------------------------------
# The closed-form global optimum: autodiff, perturbations, values
# --------------------------------------------------------------------------------------------

# (beta, sigma2): t = beta*sigma2 vs LAMBDA6[:3] = 6, 4, 2.5 -> active dims 3, 2, 2, 3, 0, 2, 1.
OPTIMUM_CASES = [(1.0, 0.5), (1.0, 3.0), (2.0, 1.5), (0.5, 2.0), (4.0, 2.0), (0.3, 10.0), (1.0, 5.0)]


@pytest.mark.parametrize("beta,sigma2", OPTIMUM_CASES)
def test_closed_form_optimum_is_stationary_in_all_parameters_and_no_perturbation_improves_it(beta, sigma2):
    opt = beta_elbo_optimum(LAMBDA6, K3, beta, sigma2)
    t = beta * sigma2
    assert opt.active_dims == int(np.sum(LAMBDA6[:K3] > t))
    params = LinearVAEParams(*(jnp.asarray(p) for p in opt.parameters(MEAN6, U6)))
    grad = _elbo_grad(params, sigma2, beta, STATS6)
    tol = scale_aware_tol(_elbo_grad, params, (sigma2, beta, STATS6))
    for name, g in zip(LinearVAEParams._fields, grad):
        assert float(jnp.abs(g).max()) < tol, (name, g)
    value = float(_elbo(params, sigma2, beta, STATS6))
    # Random perturbations in all parameters, small (1e-3) and larger (1e-1), many directions:
    # none may increase the ELBO beyond float64 rounding of an O(10) value (1e-12 relative).
    rng = np.random.default_rng(0)
    flat, unravel = ravel_pytree(params)
    for size in (1e-3, 1e-1):
        directions = rng.standard_normal((400, flat.size))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        batch = jax.vmap(unravel)(flat[None, :] + size * directions)
        values = np.asarray(_elbo_batch(batch, sigma2, beta, STATS6))
        assert values.max() <= value + 1e-12 * abs(value), (size, values.max() - value)


@pytest.mark.parametrize("beta,sigma2", OPTIMUM_CASES)
def test_closed_form_optimum_values_equal_exact_elbo_mll_and_written_out_formula(beta, sigma2):
    opt = beta_elbo_optimum(LAMBDA6, K3, beta, sigma2)
    params = opt.parameters(MEAN6, U6)
    # Value of an O(10) float64 computation by three routes: rounding ~1e-14; 1e-10 relative.
    assert float(_elbo(params, sigma2, beta, STATS6)) == pytest.approx(opt.elbo, rel=1e-10)
    assert opt.elbo == pytest.approx(optimal_beta_elbo(LAMBDA6, K3, beta, sigma2), rel=1e-10)
    assert float(_mll(np.asarray(params.W), sigma2, S6)) == pytest.approx(opt.mll, rel=1e-10)
    # Dense MLL of the same decoder (independent of the library's Woodbury route).
    assert opt.mll == pytest.approx(dense_mll(params.W, sigma2, S6), rel=1e-10)
    if beta == 1.0:
        assert opt.elbo == pytest.approx(opt.mll, rel=1e-12)  # the bound is tight: rounding only
    # The parameters themselves, written out: w_i = u_i sqrt(max(lambda_i - t, 0)), D_i = min(t/lambda_i, 1).
    t = beta * sigma2
    np.testing.assert_allclose(params.W, optimal_decoder(LAMBDA6, U6, K3, beta, sigma2), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(np.exp(params.log_D), np.minimum(t / LAMBDA6[:K3], 1.0), rtol=1e-14)
    # The encoder is the optimal encoder of the decoder.
    V, D = optimal_encoder(params.W, sigma2, beta)
    np.testing.assert_allclose(params.V, np.asarray(V), rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Claim: the ELBO adds no local maxima (full Hessian in W, mu, V, log D)
# --------------------------------------------------------------------------------------------

D5, K2 = 5, 2
LAMBDA5 = np.array([5.0, 3.0, 2.0, 1.0, 0.5])
S5, U5, MEAN5, STATS5 = problem(LAMBDA5, seed=8)
_, _UNRAVEL5 = ravel_pytree(LinearVAEParams(jnp.zeros((D5, K2)), jnp.zeros(D5), jnp.zeros((K2, D5)), jnp.zeros(K2)))
_elbo_hessian5 = jax.jit(jax.hessian(lambda flat, s2, beta, stats: exact_elbo(_UNRAVEL5(flat), s2, beta, stats)))


@pytest.mark.parametrize("sigma2", [0.7, 1.5, 2.5, 4.0])
def test_elbo_hessian_at_every_stationary_point_local_max_iff_global_max(sigma2):
    points = list(stationary_points(LAMBDA5, K2, sigma2))
    n_usable = int(np.sum(LAMBDA5 > sigma2))
    assert len(points) == sum(comb(n_usable, r) for r in range(min(K2, n_usable) + 1))
    n_max = 0
    for point in points:
        W = point.weights(U5)
        params = with_optimal_encoder(W, MEAN5, sigma2, 1.0)
        grad = _elbo_grad(params, sigma2, 1.0, STATS5)
        tol = scale_aware_tol(_elbo_grad, params, (sigma2, 1.0, STATS5))
        for name, g in zip(LinearVAEParams._fields, grad):
            assert float(jnp.abs(g).max()) < tol, (point.directions, name)
        flat, _ = ravel_pytree(params)
        H = np.asarray(_elbo_hessian5(flat, sigma2, 1.0, STATS5))
        eig = np.linalg.eigvalsh((H + H.T) / 2)
        # Exactly-flat directions (symmetries: a zero column with D = 1 and v = 0 sliding along
        # a used direction) have eigenvalue 0 up to rounding ~1e-15 * max|eig|; genuine
        # curvatures here are >= ~1e-2 * max|eig|.  Ignore |eig| < 1e-8 * max|eig|.
        null_tol = 1e-8 * np.abs(eig).max()
        is_local_max = bool(np.all(eig <= null_tol))
        assert is_local_max == point.is_global_max, (sigma2, point.directions, eig.max())
        if not point.is_global_max:
            assert eig.max() > 1e3 * null_tol
        n_max += is_local_max
    assert n_max == 1


# --------------------------------------------------------------------------------------------
# Property tests (hypothesis)
# --------------------------------------------------------------------------------------------

_seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=40, deadline=None)
@given(seed=_seeds, sigma2=st.floats(0.05, 20.0), w_scale=st.floats(0.05, 5.0))
def test_elbo_is_below_mll_for_random_parameters_and_with_optimal_encoder(seed, sigma2, w_scale):
    rng = np.random.default_rng(seed)
    params = random_params(rng, D6, K3, MEAN6 + rng.normal(size=D6), w_scale)
    mll = float(_mll(params.W, sigma2, S6, MEAN6 - params.mu))
    elbo = float(_elbo(params, sigma2, 1.0, STATS6))
    # ELBO <= MLL exactly (Jensen); the slack covers float64 rounding of O(1e3)-sized terms.
    slack = 1e-10 * (abs(mll) + abs(elbo))
    assert elbo <= mll + slack
    best = with_optimal_encoder(params.W, params.mu, sigma2, 1.0)
    elbo_best = float(_elbo(best, sigma2, 1.0, STATS6))
    assert elbo <= elbo_best + slack  # the optimal encoder is optimal
    assert elbo_best <= mll + slack
    # Orthogonalising W's columns (keeping their norms' effect through a diagonal M) closes the gap.
    Q = random_orthogonal(rng, D6)[:, :K3] * np.linalg.norm(np.asarray(params.W), axis=0)
    tight = with_optimal_encoder(Q, MEAN6, sigma2, 1.0)
    mll_q = float(_mll(Q, sigma2, S6))
    assert float(_elbo(tight, sigma2, 1.0, STATS6)) == pytest.approx(mll_q, abs=1e-10 * abs(mll_q) + 1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=_seeds, beta=st.floats(0.1, 10.0), sigma2=st.floats(0.05, 20.0))
def test_beta_elbo_at_beta_sigma2_equals_elbo_at_noise_beta_sigma2_rescaled(seed, beta, sigma2):
    """beta-ELBO(beta, s) = beta * ELBO(1, beta s) + d/2 [beta log(2 pi beta s) - log(2 pi s)].

    Derivation (any parameters): beta-ELBO(beta, s) = -d/2 log(2 pi s) - R/(2 s) - beta KL with
    R the expected reconstruction error; ELBO(1, beta s) = -d/2 log(2 pi beta s) - R/(2 beta s) - KL.
    Multiplying the latter by beta gives the same -R/(2s) - beta KL, so the relation holds for
    ARBITRARY (W, mu, V, D), not only at the optimum: we test both.
    """
    rng = np.random.default_rng(seed)
    const = 0.5 * D6 * (beta * np.log(2 * np.pi * beta * sigma2) - np.log(2 * np.pi * sigma2))
    params = random_params(rng, D6, K3, MEAN6 + rng.normal(size=D6))
    lhs = float(_elbo(params, sigma2, beta, STATS6))
    rhs_elbo = float(_elbo(params, beta * sigma2, 1.0, STATS6))
    # Cancellation between O(|terms|) numbers: tolerance relative to the terms' size.
    scale = abs(lhs) + abs(beta * rhs_elbo) + abs(const)
    assert lhs == pytest.approx(beta * rhs_elbo + const, abs=1e-11 * scale)

    opt_beta = beta_elbo_optimum(LAMBDA6, K3, beta, sigma2)
    opt_one = beta_elbo_optimum(LAMBDA6, K3, 1.0, beta * sigma2)
    assert opt_beta.elbo == pytest.approx(
        beta * opt_one.elbo + const, abs=1e-11 * (abs(opt_beta.elbo) + abs(beta * opt_one.elbo) + abs(const))
    )
    # Same maximisers: t = beta * sigma2 is the same float in both, so the parameters agree to
    # rounding (1e-14 relative).
    p_beta = opt_beta.parameters(MEAN6, U6)
    p_one = opt_one.parameters(MEAN6, U6)
    for a, b in zip(p_beta, p_one):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(opt_beta.active, opt_one.active)


@settings(max_examples=40, deadline=None)
@given(seed=_seeds, sigma2=st.floats(0.05, 10.0))
def test_elbo_equals_mll_at_the_beta_one_optimum(seed, sigma2):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0.05, 10.0, D6))[::-1]
    S, U, mean, stats = problem(lam, seed % 1000)
    opt = beta_elbo_optimum(lam, K3, 1.0, sigma2)
    params = opt.parameters(mean, U)
    elbo = float(_elbo(params, sigma2, 1.0, stats))
    mll = float(_mll(params.W, sigma2, S))
    # Two float64 routes to an O(10) value: 1e-10 relative.
    assert elbo == pytest.approx(mll, rel=1e-10)
    assert elbo == pytest.approx(opt.elbo, rel=1e-10)


def _grid_best(lam, k, beta, n=1200):
    grid = np.geomspace(lam[-1] * 1e-3, lam[0] * 1e2, n)
    values = np.array([beta_elbo_optimum(lam, k, beta, s).elbo for s in grid])
    return grid, values


@settings(max_examples=20, deadline=None)
@given(seed=_seeds, beta=st.floats(0.2, 5.0), k=st.integers(1, 4))
def test_learned_sigma2_beats_dense_sigma2_grid_of_optimal_beta_elbo(seed, beta, k):
    rng = np.random.default_rng(seed)
    d = 8
    lam = np.sort(rng.uniform(0.05, 10.0, d))[::-1]
    s_star = learned_sigma2(lam, k, beta)
    best = beta_elbo_optimum(lam, k, beta, s_star).elbo
    # Also the written-out value (so the comparison does not rest on the library's formula alone).
    assert best == pytest.approx(optimal_beta_elbo(lam, k, beta, s_star), rel=1e-12)
    grid, values = _grid_best(lam, k, beta)
    # No grid point beats it beyond rounding of an O(10) value.
    assert values.max() <= best + 1e-11 * abs(best)
    # The grid's log-step is h = ln(1e5 * lambda_1/lambda_d) / 1200 < 0.02; the value is C^1 in
    # log sigma2 with second derivative ~ (d - beta m)/2 <= 4 here, so the best grid value is
    # within ~ 4 * h^2 / 2 < 1e-3 of the maximum.
    assert best - values.max() < 1e-3
    # At the maximiser the value is stationary in sigma2 (numerical derivative in log sigma2).
    h = 1e-5
    up = beta_elbo_optimum(lam, k, beta, s_star * np.exp(h)).elbo
    down = beta_elbo_optimum(lam, k, beta, s_star * np.exp(-h)).elbo
    # Central difference: O(h^2 * third derivative) ~ 1e-9, plus rounding ~1e-14/1e-5 = 1e-9; 1e-6.
    assert abs(up - down) / (2 * h) < 1e-6


@settings(max_examples=30, deadline=None)
@given(seed=_seeds, k=st.integers(1, 7))
def test_learned_sigma2_at_beta_one_is_ppca_mle_when_all_k_active(seed, k):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0.05, 10.0, 8))[::-1]
    s = learned_sigma2(lam, k, 1.0)
    # mean(lambda_{k+1..d}) written out; distinct eigenvalues so all k are active.
    assert s == pytest.approx(lam[k:].mean(), rel=1e-13)
    assert s == pytest.approx(mle_sigma2(lam, k), rel=1e-13)
    assert np.all(lam[:k] > s)


# --------------------------------------------------------------------------------------------
# Collapse: active dimensions, thresholds, KL per dimension
# --------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=_seeds, sigma2=st.floats(0.01, 5.0))
def test_dimension_active_just_below_its_collapse_threshold_and_collapsed_above(seed, sigma2):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0.05, 10.0, D6))[::-1]
    thresholds = collapse_thresholds(lam, K3, sigma2)
    np.testing.assert_allclose(thresholds, lam[:K3] / sigma2, rtol=1e-15)  # written out
    for i, th in enumerate(thresholds):
        below = beta_elbo_optimum(lam, K3, th * (1 - 1e-9), sigma2)  # 1e-9 >> rounding 1e-16
        above = beta_elbo_optimum(lam, K3, th * (1 + 1e-9), sigma2)
        assert below.active[i] and not above.active[i]
        assert below.active_dims == int(np.sum(thresholds > th * (1 - 1e-9)))
        assert above.active_dims == int(np.sum(thresholds > th * (1 + 1e-9)))
        assert above.kl_per_dim[i] == 0 and above.column_variances[i] == 0
        assert above.encoder_variances[i] == 1.0


def test_dimension_is_collapsed_exactly_at_its_collapse_threshold():
    """Docstrings of ``collapse_thresholds``: dimension i collapses once ``beta >= beta_i*``.

    Passing the reported threshold itself as beta must give a collapsed dimension.  Deterministic
    sweep over many random spectra and sigma2 (the float rounding of ``(lambda/sigma2)*sigma2``
    makes a few percent of the cases fall either side of lambda)."""
    rng = np.random.default_rng(123)
    failures = []
    for _ in range(300):
        lam = np.sort(rng.uniform(0.05, 10.0, D6))[::-1]
        sigma2 = rng.uniform(0.01, 5.0)
        thresholds = collapse_thresholds(lam, K3, sigma2)
        for i, th in enumerate(thresholds):
            if beta_elbo_optimum(lam, K3, float(th), sigma2).active[i]:
                failures.append((lam[i], sigma2, float(th)))
    assert not failures, f"{len(failures)} of 900 dimensions still active at beta = threshold, e.g. {failures[0]}"


@pytest.mark.parametrize("beta,sigma2", [(1.0, 0.5), (1.0, 3.0), (2.0, 1.5), (0.4, 2.0), (1.0, 7.0)])
def test_kl_per_dim_at_optimum_equals_data_average_of_kl_per_datapoint(beta, sigma2):
    lam = np.array([6.0, 4.0, 2.5, 1.2, 0.6, 0.3])
    X = make_synthetic(spectrum=lam, n=400, seed=5).X
    moments = compute_moments(X)
    spectrum = eigen_decomposition(moments.cov)
    # make_synthetic's 1/N spectrum is exact up to round-off (1e-12 relative).
    np.testing.assert_allclose(spectrum.eigenvalues, lam, rtol=1e-12)
    opt = beta_elbo_optimum(spectrum.eigenvalues, K3, beta, sigma2)
    params = opt.parameters(moments.mean, spectrum.eigenvectors)
    per_point = np.asarray(kl_per_datapoint(params, X))
    assert per_point.shape == (400, K3)
    t = beta * sigma2
    expected = optimal_kl_per_dim(lam, K3, beta, sigma2)  # written out in tests/reference.py
    # Average over 400 points of O(1) numbers: rounding ~1e-15; 1e-10 absolute.
    np.testing.assert_allclose(per_point.mean(axis=0), opt.kl_per_dim, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(opt.kl_per_dim, expected, rtol=1e-10, atol=1e-12)
    # elbo_terms' KL (from the moments) agrees too.
    _, kl = elbo_terms(params, sigma2, DataStats.from_moments(moments.mean, moments.cov))
    np.testing.assert_allclose(np.asarray(kl), expected, rtol=1e-10, atol=1e-12)
    assert opt.active_dims == int(np.sum(lam[:K3] > t))
