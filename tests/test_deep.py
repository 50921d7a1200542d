"""The deep VAE trainer: restricted to be linear it must land on the linear VAE's closed form."""

from __future__ import annotations

import numpy as np
import pytest

from linear_vae.analysis import analyze
from linear_vae.data.datasets import make_synthetic
from linear_vae.deep.deep import DTYPE, DeepConfig, DeepHyper, train_grid
from linear_vae.theory.collapse import epsilon_delta_collapsed
from linear_vae.training.divergence import DivergenceError

SIGMA2S = np.array([1.0, 3.0, 5.0])  # 5, 4 and 2 of the top eigenvalues 8 * 0.75**i above them
K = 4


@pytest.fixture(scope="module")
def linear_deep_vae():
    """One-layer, identity-activation 'deep' VAEs on synthetic data (exact spectrum), one per sigma2."""
    X = make_synthetic().X
    config = DeepConfig(
        latent_dim=K, hidden=(), activation="identity", steps=4000, log_every=1000, batch_size=200, learning_rate=3e-3
    )
    hyper = DeepHyper(SIGMA2S, np.zeros(3), np.zeros(3), np.zeros(3, int))
    return X, train_grid(config, hyper, X, X)


def monte_carlo_elbo(params, X, sigma2, n_samples=64, seed=1):
    """ELBO of a one-layer deep VAE in float64, averaged over the data and ``n_samples`` draws of z."""
    ((A, a),) = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in params.encoder]
    ((B, b),) = [(np.asarray(w, np.float64), np.asarray(c, np.float64)) for w, c in params.decoder]
    mean, log_var = X @ A[:, :K] + a[:K], X @ A[:, K:] + a[K:]
    z = mean + np.exp(0.5 * log_var) * np.random.default_rng(seed).normal(size=(n_samples,) + mean.shape)
    log_lik = -0.5 * X.shape[1] * np.log(2 * np.pi * sigma2) - ((X - (z @ B + b)) ** 2).sum(-1) / (2 * sigma2)
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(-1)
    return float((log_lik - kl).mean())


def test_linear_deep_vae_collapses_exactly_the_dimensions_the_closed_form_predicts(linear_deep_vae):
    X, result = linear_deep_vae
    for i, sigma2 in enumerate(SIGMA2S):
        predicted = analyze(X, K, 1.0, sigma2).optimum.active_dims
        active = K - int(epsilon_delta_collapsed(result.heldout_kl[i]).sum())
        assert active == predicted == int(np.sum(np.array([8 * 0.75**j for j in range(K)]) > sigma2))


def test_linear_deep_vae_reaches_the_closed_form_elbo(linear_deep_vae):
    X, result = linear_deep_vae
    for i, sigma2 in enumerate(SIGMA2S):
        import jax

        params = jax.tree.map(lambda leaf: leaf[i], result.params)
        optimum = analyze(X, K, 1.0, sigma2).optimum.elbo
        elbo = monte_carlo_elbo(params, X, sigma2)
        # Never above the optimum beyond Monte-Carlo error (64 x 2000 draws: standard error < 0.01
        # nats), and within 0.1 nats of it: float32 Adam on the one-sample stochastic ELBO at a
        # constant step size leaves measured gaps of 0.003 to 0.047 nats.
        assert -0.03 < optimum - elbo < 0.1, (sigma2, optimum, elbo)


def test_deep_vae_trains_in_float32(linear_deep_vae):
    _, result = linear_deep_vae
    assert DTYPE == np.float32
    assert result.params.decoder[0][0].dtype == np.float32 and result.history.train_elbo.dtype == np.float32


def test_deep_vae_divergence_names_step_and_configuration():
    X = make_synthetic().X
    config = DeepConfig(latent_dim=2, hidden=(8,), steps=20, log_every=10, learning_rate=1e8)
    hyper = DeepHyper(np.array([1.0, 1e-30]), np.zeros(2), np.zeros(2), np.zeros(2, int))
    with pytest.raises(DivergenceError, match=r"in configuration \d .*by step \d+"):
        train_grid(config, hyper, X, X)


BETA, SIGMA2 = 4.0, 0.25  # against beta = 1 at sigma2 = BETA * SIGMA2 = 1


@pytest.fixture(scope="module")
def equal_product_pair():
    """Two small deep VAEs from the same seed, (beta, sigma2) = (4, 0.25) and (1, 1), with a held-out split."""
    X = make_synthetic().X
    config = DeepConfig(latent_dim=3, hidden=(16,), steps=100, log_every=20, batch_size=50)
    hyper = DeepHyper(
        np.array([SIGMA2, BETA * SIGMA2]), np.zeros(2), np.zeros(2), np.zeros(2, int), np.array([BETA, 1.0])
    )
    return X[:1500], X[1500:], config, train_grid(config, hyper, X[:1500], X[1500:])


def test_equal_beta_sigma2_product_is_the_same_run(equal_product_pair):
    """docs/theory.md (T13): beta-ELBO(beta, sigma2) = beta * ELBO(1, beta sigma2) + c(beta, sigma2) for any
    encoder and decoder, sample by sample, with c = -d/2 log(2 pi sigma2) + beta d/2 log(2 pi beta sigma2);
    so the gradients differ by the factor beta, and Adam (invariant to a constant gradient scale up to
    its eps) trains the two to the same parameters."""
    import jax
    import jax.numpy as jnp

    from linear_vae.deep.deep import init_params, one_sample_elbo_terms

    X, _, config, result = equal_product_pair
    d = X.shape[1]
    params = init_params(config, d, DeepHyper(np.float32(1.0), 0.0, 0.0, np.uint32(0)))
    Xj = jnp.asarray(X[:200], DTYPE)

    @jax.jit
    def beta_elbo(params, b, s2):
        log_lik, kl = one_sample_elbo_terms(params._replace(log_sigma2=jnp.log(s2)), Xj, jax.random.key(3), config)
        return jnp.mean(log_lik) - b * jnp.mean(jnp.sum(kl, axis=-1))

    args, args_1 = (BETA, np.float32(SIGMA2)), (1.0, np.float32(BETA * SIGMA2))
    constant = -0.5 * d * np.log(2 * np.pi * SIGMA2) + BETA * 0.5 * d * np.log(2 * np.pi * BETA * SIGMA2)
    # float32 values of a few hundred nats: the identity holds to ~1e-6 relative round-off.
    np.testing.assert_allclose(
        float(beta_elbo(params, *args)), BETA * float(beta_elbo(params, *args_1)) + constant, rtol=1e-5, atol=1e-3
    )
    grads, grads_1 = jax.grad(beta_elbo)(params, *args), jax.grad(beta_elbo)(params, *args_1)
    for g, g1 in zip(
        jax.tree.leaves(grads.encoder + grads.decoder), jax.tree.leaves(grads_1.encoder + grads_1.decoder)
    ):
        scale = float(jnp.max(jnp.abs(g)))  # float32 sums: round-off relative to the largest entry
        np.testing.assert_allclose(np.asarray(g), BETA * np.asarray(g1), rtol=1e-3, atol=1e-5 * scale)
    for leaf in jax.tree.leaves(result.params.encoder + result.params.decoder):
        # 100 Adam steps of 1e-3 move each weight by up to 0.1; the two runs differ only by Adam's eps
        # (1e-8 against gradient scales of 1e-2 and more) and float32 rounding: 1e-4 absolute.
        np.testing.assert_allclose(leaf[0], leaf[1], rtol=0, atol=1e-4)


def test_best_checkpoint_is_the_best_recorded_held_out_objective(equal_product_pair):
    """The kept parameters score the recorded best held-out objective when measured again."""
    import jax
    import jax.numpy as jnp

    from linear_vae.deep.deep import OBJECTIVE_KEY, one_sample_elbo_terms

    _, held, config, result = equal_product_pair
    for i, beta in enumerate((BETA, 1.0)):
        objective = result.history.heldout_objective[i]
        assert result.best_objective[i] == objective.max()
        assert result.best_step[i] == result.history.step[i][np.argmax(objective)]
        params = jax.tree.map(lambda leaf: jnp.asarray(leaf[i]), result.best_params)
        log_lik, kl = one_sample_elbo_terms(params, jnp.asarray(held, DTYPE), jax.random.key(OBJECTIVE_KEY), config)
        # The same float32 computation as the record's (at the run's beta): equal to round-off.
        value = float(jnp.mean(log_lik) - beta * jnp.mean(jnp.sum(kl, -1)))
        np.testing.assert_allclose(value, objective.max(), rtol=1e-5)


def test_heldout_measures_of_the_linear_optimum_are_exact():
    """heldout_measures through the linear adapter at the closed-form optimum: the IWAE bound is the exact
    held-out log-likelihood (the encoder is the exact posterior, so every importance weight is p(x)), the
    rate and active-unit variances equal the moment formulas, and the Monte-Carlo distortion is within its
    standard error of the exact one."""
    import jax

    from linear_vae.data.moments import compute_moments
    from linear_vae.data.problem import Problem
    from linear_vae.theory import metrics
    from linear_vae.theory.metrics import heldout_measures
    from linear_vae.theory.optimum import beta_elbo_optimum
    from linear_vae.theory.ppca import log_marginal_likelihood

    X = make_synthetic().X
    train, held = X[:1500], X[1500:]
    problem = Problem.from_data(train)
    moments = compute_moments(held)
    sigma2 = 3.0
    params = beta_elbo_optimum(problem.eigenvalues, K, 1.0, sigma2).parameters(
        problem.mean, problem.spectrum.eigenvectors
    )
    measured = heldout_measures(jax.random.key(0), held, metrics.linear_model(params, sigma2), 50, 200)
    exact = metrics.collapse_metrics(params, moments.mean, moments.cov)
    log_likelihood = float(log_marginal_likelihood(params.W, sigma2, moments.cov, mean_offset=moments.mean - params.mu))
    np.testing.assert_allclose(float(measured.iwae), log_likelihood, rtol=1e-10)  # float64 round-off
    np.testing.assert_allclose(float(measured.rate), exact["rate"], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(measured.au_variances), exact["au_variances"], rtol=1e-10, atol=1e-14)
    # 200 draws x 500 rows of a squared error with a relative spread below 1: 1% is > 5 standard errors.
    np.testing.assert_allclose(float(measured.distortion), exact["distortion"], rtol=0.01)
    assert float(measured.mi_batch) <= np.log(len(held)) + 1e-9


def test_cosine_schedule_decays_the_step_size_from_its_base_to_zero_and_constant_keeps_it():
    from linear_vae.deep.deep import step_size

    cosine = step_size(1e-3, DeepConfig(steps=1000, schedule="cosine"))
    # optax's cosine decay: base * (1 + cos(pi t / steps)) / 2 -- 1e-3 at the start, half way at
    # steps / 2, 0 at the end (float32 schedule values, so 1e-9 absolute).
    np.testing.assert_allclose([cosine(0), cosine(500), cosine(1000)], [1e-3, 5e-4, 0.0], atol=1e-9)
    assert step_size(1e-3, DeepConfig(steps=1000)) == 1e-3
    with pytest.raises(ValueError, match="`schedule`"):
        DeepConfig(schedule="linear").validate(d=4, n=100)
