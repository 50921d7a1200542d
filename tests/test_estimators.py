"""Tests of the sampling estimators of :mod:`linear_vae.theory.estimators` (docs/theory.md (T12)) against the
exact values of :mod:`linear_vae.theory.metrics` (docs/theory.md (T11)) and the pPCA log density, and of the
rate-distortion frontier of :mod:`linear_vae.theory.metrics` (docs/theory.md (T11.5)).

The model is a linear VAE on Gaussian data (d = 6, k = 3, fixed seeds), where every metric is known:
on a fixed sample of rows the rate, distortion and active-unit variances are exact functions of the
sample's moments, so the only randomness left is the estimator's own (``z ~ q``), and its standard
error is measured from independent keys.  Tolerances are stated in those standard errors (4 SE: a
false failure about once in 16,000 runs per check for a Gaussian error; the seeds are fixed anyway), plus
the O(1/K^2) or O(1/B) terms that the first-order theory leaves out, each with its own comment.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linear_vae  # noqa: F401  (float64)
from linear_vae.data.moments import LOG_2PI
from linear_vae.theory import metrics
from linear_vae.theory.elbo import DataStats, LinearVAEParams, exact_elbo, with_optimal_encoder
from linear_vae.theory.estimators import (
    active_by_encoder_mean,
    active_unit_variances,
    distortion_mc,
    iwae_bound,
    kl_rate_mc,
    linear_model,
    mutual_information_minibatch,
)
from linear_vae.theory.optimum import beta_elbo_optimum

D_DIM, K = 6, 3


def gaussian_problem(sigma2=0.5, seed=0):
    """Population ``N(mu, S)``, a decoder with non-orthogonal columns and its optimal encoder at beta = 1
    (so ``q(z|x)`` has the true posterior's mean but not its covariance: the ELBO has a gap)."""
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((D_DIM, D_DIM)) * rng.uniform(0.3, 2.0, D_DIM)
    S = L @ L.T / D_DIM + 0.05 * np.eye(D_DIM)
    mu = rng.standard_normal(D_DIM)
    W = 0.8 * rng.standard_normal((D_DIM, K))
    return with_optimal_encoder(W, mu, sigma2, 1.0), mu, S


def draw(key, mu, S, n):
    return mu + jax.random.normal(key, (n, len(mu))) @ jnp.asarray(np.linalg.cholesky(S)).T


def ppca_log_density(X, params, sigma2):
    """``log N(x; mu, W W^T + sigma2 I)`` of each row, dense (the linear VAE's exact ``log p(x)``)."""
    C = params.W @ params.W.T + sigma2 * np.eye(D_DIM)
    Xc = np.asarray(X) - np.asarray(params.mu)
    return -0.5 * (D_DIM * LOG_2PI + np.linalg.slogdet(C)[1] + np.sum(Xc @ np.linalg.inv(C) * Xc, axis=1))


@pytest.fixture(scope="module")
def rows():
    params, mu, S = gaussian_problem()
    X = draw(jax.random.key(0), mu, S, 2000)
    mean, cov = np.asarray(X).mean(0), np.cov(np.asarray(X).T, bias=True)
    return params, X, mean, cov


@pytest.mark.slow  # ~5 s; the quick metric_calibration run checks the same claims by default
def test_mc_rate_and_distortion_are_unbiased_and_converge_as_inverse_sqrt_samples(rows):
    params, X, mean, cov = rows
    encode, decode, _ = linear_model(params, 0.5)
    m, log_var = encode(X)
    keys = jax.random.split(jax.random.key(1), 48)
    exact = {"rate": metrics.rate(params, mean, cov), "distortion": metrics.distortion(params, mean, cov)}
    spread = {}
    for samples in (1, 16):

        @jax.jit
        def rate_and_distortion(key):
            return {
                "rate": kl_rate_mc(key, m, log_var, samples),  # noqa: B023  (called in this iteration)
                "distortion": distortion_mc(key, X, m, log_var, decode, samples),  # noqa: B023
            }

        estimates = jax.vmap(rate_and_distortion)(keys)
        for name, values in estimates.items():
            values = np.asarray(values)
            se = values.std(ddof=1) / np.sqrt(len(values))
            # Unbiased: the mean of 48 independent estimates lies within 4 of its standard errors.
            assert abs(values.mean() - exact[name]) < 4 * se, (name, samples, values.mean(), exact[name], se)
            spread[name, samples] = values.std(ddof=1)
    for name in exact:
        # n^(-1/2): 16x the samples -> 1/4 the spread; a 48-seed sd is within ~10% of its truth, so the
        # ratio of two lies in [2.9, 5.5] with room (and a non-converging estimator would give ~1).
        assert 2.9 < spread[name, 1] / spread[name, 16] < 5.5, (name, spread)


def test_active_unit_variances_on_rows_equal_the_exact_moment_values(rows):
    params, X, mean, cov = rows
    m, _ = linear_model(params, 0.5)[0](X)
    exact = metrics.au_variances(params, cov)
    # The encoder mean is linear in x, so the 1/N sample variance of the means is (V S V^T)_ii exactly.
    np.testing.assert_allclose(active_unit_variances(m), exact, rtol=1e-11)
    for tau in (0.01, float(np.sort(exact)[:2].mean())):  # 0.01, and a threshold between two units
        assert int(active_by_encoder_mean(m, tau)) == metrics.active_by_unit_variance(exact, tau)


@pytest.mark.slow  # compilation; the quick metric_calibration run checks the same claim by default
def test_active_unit_variances_of_fresh_rows_converge_to_the_population_value():
    params, mu, S = gaussian_problem()
    population = metrics.au_variances(params, S)
    encode = linear_model(params, 0.5)[0]
    for n in (500, 8000):
        m, _ = encode(draw(jax.random.key(n), mu, S, n))
        # The sample variance of N Gaussian values has sd var * sqrt(2 / N) (bias var / N, far smaller).
        assert np.all(np.abs(np.asarray(active_unit_variances(m)) - population) < 4 * population * np.sqrt(2 / n))


def test_iwae_bound_is_exact_when_q_is_the_true_posterior():
    # Orthogonal decoder columns: the optimal diagonal q(z|x) is the posterior, every weight is p(x).
    params, mu, S = gaussian_problem()
    Q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((D_DIM, K)))
    params = with_optimal_encoder(Q * np.array([2.0, 1.0, 0.5]), mu, 0.5, 1.0)
    X = draw(jax.random.key(4), mu, S, 50)
    encode, decode, sigma2 = linear_model(params, 0.5)
    bound = jax.jit(lambda key: iwae_bound(key, X, encode, decode, sigma2, samples=7, chunk=3))(jax.random.key(5))
    np.testing.assert_allclose(bound, ppca_log_density(X, params, 0.5), rtol=0, atol=1e-10)


@pytest.mark.slow  # ~3 s of compilation
def test_iwae_bound_does_not_depend_on_the_chunk_size(rows):
    params, X, _, _ = rows
    encode, decode, sigma2 = linear_model(params, 0.5)
    bound = jax.jit(iwae_bound, static_argnames=("encode", "decode", "samples", "chunk"))
    a = bound(jax.random.key(6), X[:100], encode, decode, sigma2, samples=10, chunk=3)  # a padded last chunk
    b = bound(jax.random.key(6), X[:100], encode, decode, sigma2, samples=10, chunk=16)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def chi_square_to_posterior(params, sigma2):
    """``chi2(p(z|x) || q(z|x))`` for the optimal encoder (shared mean, covariances ``P`` and ``Q``):
    ``int p^2 / q - 1 = |Q|^(1/2) / (|P| |2 P^-1 - Q^-1|^(1/2)) - 1``, the same for every ``x``."""
    W = np.asarray(params.W)
    P = sigma2 * np.linalg.inv(W.T @ W + sigma2 * np.eye(K))
    Q = np.diag(np.exp(np.asarray(params.log_D)))
    det = np.linalg.det
    return np.sqrt(det(Q)) / (det(P) * np.sqrt(det(2 * np.linalg.inv(P) - np.linalg.inv(Q)))) - 1


@pytest.mark.slow  # ~5 s; the quick metric_calibration run checks the same claims by default
def test_iwae_bias_is_the_elbo_gap_at_one_sample_and_falls_as_chi2_over_2k():
    sigma2 = 0.5
    params, mu, S = gaussian_problem(sigma2)
    X = draw(jax.random.key(7), mu, S, 32000)
    log_p = ppca_log_density(X, params, sigma2)
    encode, decode, _ = linear_model(params, sigma2)
    chi2 = chi_square_to_posterior(params, sigma2)  # 0.165 here
    # Same x, same q shape: log p(x) - L_K(x) has one law for every row, so rows are replications.
    for samples in (1, 8, 32):
        bound = jax.jit(lambda key: iwae_bound(key, X, encode, decode, sigma2, samples))  # noqa: B023
        gap = log_p - np.asarray(bound(jax.random.key(samples)))
        se = gap.std(ddof=1) / np.sqrt(len(gap))
        if samples == 1:
            stats = DataStats.from_moments(np.asarray(X).mean(0), np.cov(np.asarray(X).T, bias=True))
            kl_gap = np.mean(log_p) - float(exact_elbo(params, sigma2, 1.0, stats))  # E KL(q || p(z|x)), (T3.3)
            assert abs(gap.mean() - kl_gap) < 4 * se, (gap.mean(), kl_gap, se)
        else:
            # Delta method: bias = chi2 / (2K) + O(K^-2); the O(K^-2) term measured 4% at K = 16, so allow
            # 15% on top of 4 standard errors.
            assert abs(samples * gap.mean() - chi2 / 2) < 0.15 * chi2 / 2 + 4 * samples * se, (samples, gap.mean())


@pytest.mark.parametrize(  # I = 1.52 and 0.43 nats: both below 2, where the forms are usable
    "sigma2", [pytest.param(0.5, marks=pytest.mark.slow), pytest.param(2.0, marks=pytest.mark.slow)]
)  # ~5 s each; the quick metric_calibration run checks the bracket and the log B ceiling by default
def test_minibatch_mi_forms_bracket_the_exact_information_and_converge(sigma2):
    params, mu, S = gaussian_problem(sigma2)
    exact = metrics.mutual_information_gaussian(params, S)
    encode = linear_model(params, sigma2)[0]

    def both(key, batch):
        data_key, z_key = jax.random.split(key)
        m, log_var = encode(draw(data_key, mu, S, batch))
        return jnp.stack([mutual_information_minibatch(z_key, m, log_var, flag) for flag in (True, False)])

    for batch, seeds in ((64, 64), (512, 16)):
        grid = jax.jit(jax.vmap(lambda key: both(key, batch)))  # noqa: B023  (called at once)
        low, high = np.asarray(grid(jax.random.split(jax.random.key(batch), seeds))).T
        se = max(low.std(ddof=1), high.std(ddof=1)) / np.sqrt(seeds)
        # InfoNCE (include_self) is biased low, leave-one-out (exclude) high: in expectation, so 3 SE slack.
        assert low.mean() < exact + 3 * se and high.mean() > exact - 3 * se, (batch, low.mean(), high.mean(), exact)
        assert np.all(low <= np.log(batch) + 1e-12)
        if batch == 512:
            # Both biases measured below 0.025 nats at B = 256 for I <= 1.5: allow 0.03 plus 3 SE at B = 512.
            assert abs(low.mean() - exact) < 0.03 + 3 * se and abs(high.mean() - exact) < 0.03 + 3 * se


@pytest.mark.slow  # compilation; the quick metric_calibration run checks the same claim by default
def test_include_self_form_never_exceeds_log_batch_even_when_information_is_large():
    params, mu, S = gaussian_problem(sigma2=1e-3)  # I ~ 10 nats, far above log 16
    assert metrics.mutual_information_gaussian(params, S) > 3 * np.log(16)
    encode = linear_model(params, 1e-3)[0]
    m, log_var = encode(draw(jax.random.key(8), mu, S, 16))
    values = jax.vmap(lambda key: mutual_information_minibatch(key, m, log_var, True))(
        jax.random.split(jax.random.key(9), 32)
    )
    assert np.all(np.asarray(values) <= np.log(16) + 1e-12)
    assert np.asarray(values).mean() > np.log(16) - 0.05  # saturated at the ceiling
    # In float32 too (the deep VAE's precision): the self term is the one inside the sum, so the ceiling
    # holds to float32 rounding of log 16 (one ulp, 2.4e-7), not to a Monte-Carlo tolerance.
    m32, log_var32 = jnp.asarray(m, jnp.float32), jnp.asarray(log_var, jnp.float32)
    values32 = jax.vmap(lambda key: mutual_information_minibatch(key, m32, log_var32, True))(
        jax.random.split(jax.random.key(9), 32)
    )
    assert values32.dtype == jnp.float32 and np.all(np.asarray(values32, np.float64) <= np.log(16) + 5e-7)


def test_estimators_compute_in_the_dtype_of_their_inputs(rows):
    params, X, _, _ = rows
    params32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    encode, decode, sigma2 = linear_model(params32, jnp.float32(0.5))

    @jax.jit
    def all_estimators(key, X32):
        m, log_var = encode(X32)
        return [
            kl_rate_mc(key, m, log_var, 2),
            distortion_mc(key, X32, m, log_var, decode, 2),
            active_unit_variances(m),
            mutual_information_minibatch(key, m, log_var, True),
            iwae_bound(key, X32, encode, decode, sigma2, 5, chunk=2),
        ]

    outputs = all_estimators(jax.random.key(0), jnp.asarray(X[:64], jnp.float32))
    assert [o.dtype for o in outputs] == [jnp.float32] * len(outputs)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, lv: kl_rate_mc(jax.random.key(0), m, lv, samples=0), "`samples`"),
        (lambda m, lv: mutual_information_minibatch(jax.random.key(0), m[:1], lv[:1], True), "`mean`"),
        (lambda m, lv: mutual_information_minibatch(jax.random.key(0), m, lv[:, :2], True), "`mean` and `log_var`"),
    ],
)
def test_bad_sample_counts_and_shapes_are_refused_with_the_parameter_named(call, match):
    m, log_var = jnp.zeros((4, 3)), jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=match):
        call(m, log_var)


# --- the rate-distortion frontier of linear_vae.theory.metrics (docs/theory.md (T11.5)) --------------------
def frontier_problem(seed=0, d=7):
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((d, d))
    S = L @ L.T / d + 0.02 * np.eye(d)
    lam, U = np.linalg.eigh(S)
    return S, lam[::-1], U[:, ::-1], rng.standard_normal(d)


@pytest.mark.parametrize("k", [2, 4, 7])
def test_frontier_is_the_rate_and_distortion_of_the_optimum_by_the_general_formulas(k):
    S, lam, U, mean = frontier_problem()
    thetas = np.concatenate([np.geomspace(lam[-1] / 3, lam[0] * 2, 9), lam[:k]])  # kinks included
    R, D = metrics.rate_distortion_frontier(lam, k, thetas)
    for theta, r, dist in zip(thetas, R, D):
        params = beta_elbo_optimum(lam, k, 1.0, theta).parameters(mean, U)  # beta = 1, sigma2 = theta
        # The dense (T11.1) formulas on the optimum's parameters: an independent path to the same numbers.
        assert (
            abs(metrics.rate(params, mean, S) - r) < 1e-10 and abs(metrics.distortion(params, mean, S) - dist) < 1e-10
        )


def test_frontier_inverse_and_slope():
    _, lam, _, _ = frontier_problem()
    k = 4
    thetas = np.geomspace(lam[k - 1] / 5, lam[0] * 0.999, 25)
    R, D = metrics.rate_distortion_frontier(lam, k, thetas)
    np.testing.assert_allclose(metrics.frontier_water_level(lam, k, R), thetas, rtol=1e-10)
    np.testing.assert_allclose(metrics.frontier_distortion(lam, k, R), D, rtol=1e-12)
    # dD/dR = -2 theta (central differences in theta, away from the kinks).
    h = 1e-6
    R_plus, D_plus = metrics.rate_distortion_frontier(lam, k, thetas * (1 + h))
    R_minus, D_minus = metrics.rate_distortion_frontier(lam, k, thetas * (1 - h))
    smooth = np.min(np.abs(np.log(thetas[:, None] / lam[None, :k])), axis=1) > 1e-3
    np.testing.assert_allclose(((D_plus - D_minus) / (R_plus - R_minus))[smooth], -2 * thetas[smooth], rtol=1e-5)
    assert metrics.frontier_water_level(lam, k, [0.0])[0] == lam[0]  # R = 0: total collapse starts at lambda_1


def test_no_linear_vae_lies_below_the_frontier():
    S, lam, _, mean = frontier_problem(seed=1)
    rng = np.random.default_rng(2)
    k = 3
    for _ in range(300):
        params = LinearVAEParams(
            W=rng.standard_normal((len(lam), k)) * rng.uniform(0.05, 2.0),
            mu=mean + 0.1 * rng.standard_normal(len(lam)),
            V=rng.standard_normal((k, len(lam))) * rng.uniform(0.05, 2.0),
            log_D=np.log(rng.uniform(0.01, 1.5, k)),
        )
        r, dist = metrics.rate(params, mean, S), metrics.distortion(params, mean, S)
        below_sup = r < metrics.rate_distortion_frontier(lam, k, [lam[k - 1] * 1e-9])[0][0]
        if below_sup:
            assert dist >= metrics.frontier_distortion(lam, k, [r])[0] - 1e-9
