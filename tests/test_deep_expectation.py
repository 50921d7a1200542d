"""The deep trainer's configuration of objective and precision (docs/theory.md (T3.1)): the
analytic expectation of a linear decoder's reconstruction term, float64 training, and the refusal
of an analytic expectation under a non-linear decoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linear_vae.data.datasets import make_synthetic
from linear_vae.deep.deep import DeepConfig, DeepHyper, init_params, one_sample_elbo_terms, train_grid


def test_the_analytic_expectation_is_the_mean_of_the_one_sample_term():
    X = jnp.asarray(make_synthetic().X[:50], jnp.float64)
    sample = DeepConfig(latent_dim=3, hidden=(16,), decoder_hidden=(), precision="float64")
    analytic = sample._replace(expectation="analytic")
    hyper = DeepHyper(0.7, 1.0, 0.0, 3)
    params = init_params(sample, X.shape[1], hyper)
    # a non-trivial encoder variance, so that the variance term matters
    (w, b), (w2, b2) = params.encoder
    params = params._replace(encoder=[(w, b), (w2, b2 + 0.3)])
    exact, kl_exact = one_sample_elbo_terms(params, X, jax.random.key(0), analytic)
    samples = 4000
    terms = jax.vmap(lambda key: one_sample_elbo_terms(params, X, key, sample))(
        jax.random.split(jax.random.key(1), samples)
    )
    estimates = np.asarray(jnp.mean(terms[0], axis=1))  # one per draw, averaged over the rows
    np.testing.assert_allclose(np.asarray(terms[1][0]), np.asarray(kl_exact), rtol=1e-12)  # KL is analytic in both
    # 5 standard errors of the Monte-Carlo mean: a false failure about once in 3 million runs.
    assert abs(estimates.mean() - float(jnp.mean(exact))) < 5 * estimates.std() / np.sqrt(samples)
    # ... and the analytic value does not depend on the key
    again, _ = one_sample_elbo_terms(params, X, jax.random.key(5), analytic)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(exact))


def test_float64_training_keeps_float64_parameters_and_records():
    X = make_synthetic().X
    config = DeepConfig(
        latent_dim=2, hidden=(8,), decoder_hidden=(), steps=40, log_every=20, batch_size=50,
        expectation="analytic", precision="float64",
    )  # fmt: skip
    result = train_grid(config, DeepHyper(np.ones(2), np.ones(2), np.zeros(2), np.arange(2)), X, X[:100])
    for leaf in jax.tree.leaves((result.params, result.best_params)):
        assert leaf.dtype == np.float64
    assert result.history.heldout_objective.dtype == np.float64 and result.history.sigma2.dtype == np.float64


def test_an_analytic_expectation_needs_a_linear_decoder():
    X = make_synthetic().X
    for config in (
        DeepConfig(latent_dim=2, hidden=(8,), expectation="analytic"),  # the decoder mirrors the encoder
        DeepConfig(latent_dim=2, hidden=(), decoder_hidden=(8,), expectation="analytic"),
    ):
        with pytest.raises(ValueError, match=r"^`expectation` 'analytic' needs a linear decoder"):
            config.validate(X.shape[1], X.shape[0])
    DeepConfig(latent_dim=2, hidden=(), expectation="analytic").validate(X.shape[1], X.shape[0])  # linear: fine
    with pytest.raises(ValueError, match="precision"):
        DeepConfig(precision="float16").validate(X.shape[1], X.shape[0])
