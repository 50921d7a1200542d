"""Tests of the exact collapse metrics of :mod:`linear_vae.theory.metrics` (docs/theory.md (T11)).

Each general formula is checked against an independent computation: dense algebra with the full
d x d ``A = I - W V``, Monte Carlo on Gaussian data (``x ~ N(mean, S)``, ``z ~ q(z|x)``, fixed seeds,
tolerance 5 Monte-Carlo standard errors), and the mutual information of the jointly Gaussian
``(x, z)`` from the determinant of their joint covariance.  At the optimum the general formulas
must equal the eigenvalue formulas to round-off, and the ELBO must split into distortion and rate.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import linear_vae  # noqa: F401  (float64)
from linear_vae.analysis import analyze
from linear_vae.cli import main
from linear_vae.data.datasets import load_data
from linear_vae.data.moments import LOG_2PI, eigen_decomposition
from linear_vae.theory.elbo import DataStats, LinearVAEParams, exact_elbo, with_optimal_encoder
from linear_vae.theory.metrics import (
    METRIC_KEYS,
    active_by_unit_variance,
    aggregate_posterior_gaussian,
    au_variances,
    collapse_metrics,
    distortion,
    marginal_kl_gaussian,
    mutual_information_gaussian,
    optimum_collapse_metrics,
    rate,
)
from linear_vae.theory.optimum import beta_elbo_optimum

D_DIM, K = 6, 3


def random_problem(seed=0, d=D_DIM, k=K):
    """Random SPD ``S``, nonzero mean, and generic parameters with ``mu != mean``."""
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((d, d)) * rng.uniform(0.3, 2.0, d)
    S = L @ L.T / d + 0.05 * np.eye(d)
    mean = rng.standard_normal(d)
    params = LinearVAEParams(
        W=rng.standard_normal((d, k)),
        mu=mean + 0.3 * rng.standard_normal(d),
        V=0.5 * rng.standard_normal((k, d)),
        log_D=np.log(rng.uniform(0.1, 1.5, k)),
    )
    return params, mean, S


def log_det(M):
    sign, value = np.linalg.slogdet(M)
    assert sign > 0
    return value


# --------------------------------------------------------------------------------------------
# The general formulas against independent computations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_general_formulas_match_dense_algebra(seed):
    params, mean, S = random_problem(seed)
    W, mu, V, log_D = params
    D = np.exp(log_D)
    delta = mean - mu
    A = np.eye(D_DIM) - W @ V  # the d x d matrix the library avoids
    dense_distortion = np.trace(A @ S @ A.T) + delta @ A.T @ A @ delta + np.trace(W @ np.diag(D) @ W.T)
    VSVt = V @ S @ V.T
    m = V @ delta
    dense_rate = sum(0.5 * (D[j] + VSVt[j, j] + m[j] ** 2 - 1.0 - np.log(D[j])) for j in range(K))
    # Rounding of O(10)-sized sums of products: agreement to 1e-12 relative is ~1e3 eps.
    assert distortion(params, mean, S) == pytest.approx(dense_distortion, rel=1e-12)
    assert rate(params, mean, S) == pytest.approx(dense_rate, rel=1e-12)
    np.testing.assert_allclose(au_variances(params, S), np.diag(VSVt), rtol=1e-12)
    q_mean, Sigma = aggregate_posterior_gaussian(params, mean, S)
    np.testing.assert_allclose(q_mean, m, rtol=1e-12)
    np.testing.assert_allclose(Sigma, VSVt + np.diag(D), rtol=1e-12)
    # The eigenbasis view (S given as its diagonal) gives the same numbers: every metric is invariant
    # under the rotation x -> U^T x of the data with W -> U^T W, V -> V U, mu -> U^T mu.
    spectrum = eigen_decomposition(S)
    U = spectrum.eigenvectors
    rotated = LinearVAEParams(U.T @ W, U.T @ mu, V @ U, log_D)
    full, eigen = collapse_metrics(params, mean, S), collapse_metrics(rotated, U.T @ mean, spectrum.eigenvalues)
    for key in METRIC_KEYS:
        np.testing.assert_allclose(eigen[key], full[key], rtol=1e-10, err_msg=key)


def test_rate_and_distortion_match_monte_carlo_on_gaussian_data():
    """``x ~ N(mean, S)``, ``z ~ q(z|x)``: the sample means of ``||x - mu - W z||^2`` and of
    ``log q(z|x) - log p(z)`` (a sampled KL, not the analytic one) estimate the distortion and the
    rate; each must lie within 5 of its own standard errors (two-sided p ~ 6e-7 per check)."""
    params, mean, S = random_problem(3)
    W, mu, V, log_D = params
    D = np.exp(log_D)
    rng = np.random.default_rng(12345)
    n = 400_000
    x = rng.multivariate_normal(mean, S, size=n)
    z_mean = (x - mu) @ V.T
    eps = rng.standard_normal((n, K))
    z = z_mean + np.sqrt(D) * eps
    squared_error = np.sum((x - mu - z @ W.T) ** 2, axis=1)
    log_q = -0.5 * np.sum(LOG_2PI + log_D + eps**2, axis=1)
    log_p = -0.5 * np.sum(LOG_2PI + z**2, axis=1)
    sampled_kl = log_q - log_p
    for estimate, exact in ((squared_error, distortion(params, mean, S)), (sampled_kl, rate(params, mean, S))):
        standard_error = estimate.std(ddof=1) / np.sqrt(n)
        assert abs(estimate.mean() - exact) < 5.0 * standard_error, (estimate.mean(), exact, standard_error)
    # Active-unit variances: the sample variance of E_q[z_i] = v_i^T (x - mu); its standard error
    # for Gaussian data is sqrt(2 / (n - 1)) var.
    exact_var = au_variances(params, S)
    np.testing.assert_array_less(
        np.abs(z_mean.var(axis=0, ddof=1) - exact_var), 5.0 * np.sqrt(2.0 / (n - 1)) * exact_var
    )


@pytest.mark.parametrize("seed", [0, 4])
def test_mutual_information_matches_the_joint_gaussian(seed):
    """``I(x; z)`` of the jointly Gaussian ``(x, z)`` two independent ways, from entropies:
    ``H(x) + H(z) - H(x, z)`` (the joint covariance) and ``H(x) - H(x|z)`` (the Gaussian conditional)."""
    params, mean, S = random_problem(seed)
    _, _, V, log_D = params
    Sz = V @ S @ V.T + np.diag(np.exp(log_D))
    Sxz = S @ V.T
    joint = np.block([[S, Sxz], [Sxz.T, Sz]])
    from_joint = 0.5 * (log_det(S) + log_det(Sz) - log_det(joint))
    from_conditional = 0.5 * (log_det(S) - log_det(S - Sxz @ np.linalg.solve(Sz, Sxz.T)))
    value = mutual_information_gaussian(params, S)
    assert value > 0
    # Determinants of 9 x 9 matrices with condition ~1e3: round-off ~1e-13 nats.
    assert value == pytest.approx(from_joint, rel=1e-10)
    assert value == pytest.approx(from_conditional, rel=1e-10)
    # Marginal KL: KL(N(m, Sigma) || N(0, I)) from the eigenvalues of Sigma.
    m, Sigma = aggregate_posterior_gaussian(params, mean, S)
    s = np.linalg.eigvalsh(Sigma)
    expected_kl = 0.5 * (np.sum(s - 1.0 - np.log(s)) + m @ m)
    assert marginal_kl_gaussian(params, mean, S) == pytest.approx(expected_kl, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_rate_is_mutual_information_plus_marginal_kl(seed):
    """ELBO surgery (Hoffman & Johnson 2016): ``R = I + KL(q(z) || p(z))`` is an identity (the
    ``log det Sigma`` terms cancel), so it holds to round-off: 1e-12 relative."""
    params, mean, S = random_problem(seed)
    R = rate(params, mean, S)
    total = mutual_information_gaussian(params, S) + marginal_kl_gaussian(params, mean, S)
    assert total == pytest.approx(R, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_elbo_is_minus_distortion_over_2_sigma2_minus_beta_rate(seed, beta):
    params, mean, S = random_problem(seed)
    sigma2 = 0.7
    elbo = float(exact_elbo(LinearVAEParams(*map(jnp.asarray, params)), sigma2, beta, DataStats.from_moments(mean, S)))
    split = (
        -0.5 * D_DIM * (LOG_2PI + np.log(sigma2))
        - distortion(params, mean, S) / (2 * sigma2)
        - beta * rate(params, mean, S)
    )
    # Two float64 evaluations of the same O(10) terms in a different order: ~1e-15 relative.
    assert split == pytest.approx(elbo, rel=1e-10)


def test_active_units_counts_variances_above_tau():
    variances = np.array([0.5, 0.011, 0.01, 0.0, 2.0])
    assert active_by_unit_variance(variances) == 3  # 0.5, 0.011 and 2.0; 0.01 is not above 0.01
    assert active_by_unit_variance(variances, tau=0.6) == 1


# --------------------------------------------------------------------------------------------
# The optimum: the general formulas equal the eigenvalue formulas
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("tau", [0.01, 0.42])  # 0.42 leaves, with seed 0, an active dimension that is no active unit
def test_optimum_metrics_match_the_general_formulas_at_the_optimal_parameters(seed, beta, tau):
    _, mean, S = random_problem(seed)
    spectrum = eigen_decomposition(S)
    lam = spectrum.eigenvalues
    sigma2 = float(np.sqrt(lam[1] * lam[2])) / beta  # water level between lambda_2 and lambda_3: dimension 3 collapses
    t = beta * sigma2
    opt = beta_elbo_optimum(lam, K, beta, sigma2)
    assert opt.active_dims == 2
    params = opt.parameters(mean, spectrum.eigenvectors)
    closed = optimum_collapse_metrics(lam, K, t, tau=tau)
    # The top k + 1 eigenvalues with tr S and d give the same report (docs/theory.md (T8.3)).
    from_top = optimum_collapse_metrics(lam[: K + 1], K, t, trace=spectrum.trace, dim=D_DIM, tau=tau)
    for key in METRIC_KEYS:
        np.testing.assert_allclose(from_top[key], closed[key], rtol=1e-12, err_msg=key)
    # The optimal encoder of the optimal decoder (docs/theory.md (T3.2)) is the same encoder.
    recomputed = with_optimal_encoder(params.W, params.mu, sigma2, beta)
    for candidate in (params, LinearVAEParams(*map(np.asarray, recomputed))):
        general = collapse_metrics(candidate, mean, S, tau=tau)
        for key in ("rate", "distortion", "mutual_information_gaussian"):
            assert general[key] == pytest.approx(closed[key], rel=1e-10), key
        # The marginal KL is 0 at the optimum: only round-off of log det(I) remains.
        assert abs(general["marginal_kl_gaussian"]) < 1e-12
        np.testing.assert_allclose(general["au_variances"], closed["au_variances"], rtol=1e-10, atol=1e-12)
        assert general["active_units"] == closed["active_units"]
        _, Sigma = aggregate_posterior_gaussian(candidate, mean, S)
        np.testing.assert_allclose(Sigma, np.eye(K), rtol=0, atol=1e-12)
    # The eigenvalue formulas themselves.
    top = lam[:K]
    assert closed["rate"] == pytest.approx(0.5 * np.sum(np.log(top[:2] / t)), rel=1e-14)
    assert closed["mutual_information_gaussian"] == closed["rate"]
    assert closed["rate"] == pytest.approx(float(np.sum(opt.kl_per_dim)), rel=1e-14)
    assert closed["distortion"] == pytest.approx(2 * t + np.sum(lam[2:]), rel=1e-12)
    assert closed["active_units"] == int(np.sum(top > t / (1 - tau)))
    assert closed["active_units"] == (1 if (tau, seed) == (0.42, 0) else 2)
    # ELBO* = -d/2 log(2 pi sigma2) - distortion / (2 sigma2) - beta R.
    split = -0.5 * D_DIM * (LOG_2PI + np.log(sigma2)) - closed["distortion"] / (2 * sigma2) - beta * closed["rate"]
    assert split == pytest.approx(opt.elbo, rel=1e-12)


def test_optimum_with_every_dimension_collapsed_has_zero_rate():
    lam = np.array([3.0, 2.0, 1.0, 0.5])
    m = optimum_collapse_metrics(lam, 2, 4.0)
    assert m["rate"] == 0.0 and m["mutual_information_gaussian"] == 0.0 and m["marginal_kl_gaussian"] == 0.0
    assert m["active_units"] == 0 and m["au_variances"] == [0.0, 0.0]
    assert m["distortion"] == pytest.approx(lam.sum(), rel=1e-15)


# --------------------------------------------------------------------------------------------
# The report of `linear-vae analyze`
# --------------------------------------------------------------------------------------------


def test_analyze_json_reports_the_collapse_metrics(capsys):
    code = main(["analyze", "--data", "synthetic", "-k", "4", "--sigma2", "0.5", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert set(METRIC_KEYS) <= set(report)
    assert isinstance(report["active_units"], int) and len(report["au_variances"]) == 4
    # The same numbers from the general formulas at the optimal parameters of the same data.
    X = load_data("synthetic").X
    analysis = analyze(X, 4, 1.0, 0.5, solver="full")
    problem = analysis.problem
    params = analysis.optimum.parameters(problem.mean, problem.eigenvectors)
    general = collapse_metrics(params, problem.mean, problem.cov)
    for key in ("rate", "distortion", "mutual_information_gaussian"):
        assert report[key] == pytest.approx(general[key], rel=1e-10), key
    assert report["marginal_kl_gaussian"] == 0.0 and abs(general["marginal_kl_gaussian"]) < 1e-12
    assert report["active_units"] == general["active_units"]
    np.testing.assert_allclose(report["au_variances"], general["au_variances"], rtol=1e-10, atol=1e-12)
    assert report["rate"] == pytest.approx(sum(report["kl_per_dim"]), rel=1e-12)


def test_a_trained_model_reports_its_metrics_on_the_rate_distortion_identity():
    """The train report's rate and distortion are the trained model's own: they reassemble its
    exact beta-ELBO through ELBO = -d/2 log(2 pi sigma2) - D / (2 sigma2) - beta R (T11.1) to
    1e-10 relative, and a converged Newton run (gap <= 1e-6 nats) sits at the optimum's (R, D):
    each can be off by about the square root of the gap, so 1e-3 is a generous bound."""
    from linear_vae.data.datasets import load_data
    from linear_vae.data.problem import Problem
    from linear_vae.training.train import TrainConfig
    from linear_vae.verification.compare import train_and_compare_zipped

    problem = Problem.from_dataset(load_data("synthetic"))
    beta, sigma2 = 1.5, 0.5
    _, [report] = train_and_compare_zipped(problem, TrainConfig(latent_dim=4), beta, sigma2)
    assert report["verdict"] == "agrees"
    d = problem.d
    reassembled = -0.5 * d * np.log(2 * np.pi * sigma2) - report["distortion"] / (2 * sigma2) - beta * report["rate"]
    assert reassembled == pytest.approx(report["elbo"], rel=1e-10)
    optimum = optimum_collapse_metrics(problem.eigenvalues, 4, beta * sigma2, trace=problem.trace, dim=d)
    assert abs(report["rate"] - optimum["rate"]) < 1e-3
    assert abs(report["distortion"] - optimum["distortion"]) < 1e-3
    assert report["active_units"] == optimum["active_units"]
    assert report["marginal_kl_gaussian"] < 1e-6
