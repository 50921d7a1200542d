"""The exact ELBO of a linear decoder under any Gaussian encoder (experiment `encoders`), against the
moment form of (T3.1), Monte Carlo, and the bound by the decoder's MLL (docs/theory.md (T3.1, T3.3))."""

from __future__ import annotations

import numpy as np
from reference import dense_mll

from linear_vae.data.moments import compute_moments
from linear_vae.experiments.encoders import exact_elbo_linear_decoder, heldout_mll
from linear_vae.theory.elbo import DataStats, LinearVAEParams, exact_elbo, optimal_encoder


def data(n=400, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)


def test_with_a_linear_encoder_it_is_the_moment_form_of_the_exact_elbo():
    X = data()
    rng = np.random.default_rng(1)
    params = LinearVAEParams(
        rng.standard_normal((5, 2)),
        X.mean(0) + 0.1 * rng.standard_normal(5),
        rng.standard_normal((2, 5)),
        rng.standard_normal(2),
    )
    moments = compute_moments(X)
    expected = float(exact_elbo(params, 0.7, 1.0, DataStats.from_moments(moments.mean, moments.cov)))
    centred = X - np.asarray(params.mu)
    log_var = np.broadcast_to(np.asarray(params.log_D), (len(X), 2))
    got = exact_elbo_linear_decoder(
        X, centred @ np.asarray(params.V).T, log_var, np.asarray(params.W), np.asarray(params.mu), 0.7
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)  # two float64 routes to one number


def test_with_a_nonlinear_encoder_it_is_the_mean_of_the_reparameterised_estimate():
    X = data(n=50)
    rng = np.random.default_rng(2)
    W, b, sigma2 = rng.standard_normal((5, 3)), X.mean(0), 0.5
    mean = np.tanh(X @ rng.standard_normal((5, 3)))  # an encoder no linear map represents
    log_var = np.sin(X @ rng.standard_normal((5, 3)))
    exact = exact_elbo_linear_decoder(X, mean, log_var, W, b, sigma2)
    samples = 4000
    eps = rng.standard_normal((samples,) + mean.shape)
    z = mean + np.exp(0.5 * log_var) * eps
    log_lik = -0.5 * 5 * np.log(2 * np.pi * sigma2) - np.sum((X - b - z @ W.T) ** 2, axis=-1) / (2 * sigma2)
    kl = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var, axis=1)
    estimates = np.mean(log_lik, axis=1) - np.mean(kl)  # one per sample of eps, averaged over the rows
    # 5 standard errors of the Monte-Carlo mean: a false failure about once in 3 million runs.
    assert abs(estimates.mean() - exact) < 5 * estimates.std() / np.sqrt(samples)


def test_it_is_below_the_decoders_mll_with_equality_at_the_optimal_encoder_for_orthogonal_columns():
    X = data()
    moments = compute_moments(X)
    eigenvalues, U = np.linalg.eigh(moments.cov)
    sigma2 = 0.3
    W = U[:, ::-1][:, :2] * np.sqrt(eigenvalues[::-1][:2] - sigma2)  # orthogonal columns: the bound is tight
    mll = dense_mll(W, sigma2, moments.cov)
    V, D = (np.asarray(a) for a in optimal_encoder(W, sigma2, 1.0))
    centred = X - moments.mean
    log_var = np.broadcast_to(np.log(D), (len(X), 2))
    np.testing.assert_allclose(
        exact_elbo_linear_decoder(X, centred @ V.T, log_var, W, moments.mean, sigma2), mll, rtol=1e-12
    )
    rng = np.random.default_rng(3)
    for _ in range(5):  # any other encoder, linear or not, is below
        mean = centred @ V.T + 0.3 * np.tanh(X @ rng.standard_normal((5, 2)))
        assert exact_elbo_linear_decoder(X, mean, log_var + rng.normal(0, 0.3, 2), W, moments.mean, sigma2) < mll
    # The decoder's held-out MLL is the dense Gaussian log-density of other rows.
    Y = data(n=300, seed=9)
    expected = np.mean(
        [
            -0.5 * (5 * np.log(2 * np.pi) + np.linalg.slogdet(C)[1] + r @ np.linalg.solve(C, r))
            for C in [W @ W.T + sigma2 * np.eye(5)]
            for r in Y - moments.mean
        ]
    )
    np.testing.assert_allclose(heldout_mll(W, moments.mean, sigma2, Y), expected, rtol=1e-10)
