"""Claims of docs/theory.md (T17.1, T17.2, T17.3): the closed-form optima of the scaled-prior linear VAE
(Wang & Ziyin 2022) and of the linear CVAE (Dang et al. 2024) are the minima of their exact objectives.

References are independent of the code under test: the objectives of tests/reference.py, written from
the models' definitions on the data rows (never through ``A, C, B``), a Monte-Carlo estimate sampled from
the model, and multi-start saddle-free Newton minimisation of those objectives (tests/multistart.py).

Tolerance of the value comparisons, 1e-10 nats: the minimiser converges quadratically, so its value is
the minimum up to float64 round-off in summing O(10) terms of size O(10) (about 1e-14).  A wrong closed
form would show far above it: a mode at the grids' 10% margin from its threshold moves the value by
``(beta/2) g(1.1) = 2.3e-3 beta`` nats, at least 2e-6 nats since every grid keeps beta >= 1e-3.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from multistart import exact_data, newton_minimiser, random_starts, singular_values
from reference import cvae_objective, scaled_prior_objective

import linear_vae  # noqa: F401  (float64)
from linear_vae.data.joint_moments import JointMoments, residual_moment
from linear_vae.data.moments import compute_moments, eigen_decomposition
from linear_vae.theory.conditional import cvae_optimum, mode_gain, scaled_prior_optimum
from linear_vae.theory.optimum import beta_elbo_optimum

STARTS = 6
VALUE_TOLERANCE = 1e-10  # see the module docstring
MARGIN = 0.1  # every grid point keeps the spectrum at least 10% from its threshold
ACTIVE_GAIN = 1e-4  # a decoder singular value above this is an active mode (active ones are >= 0.2 here)

# -- shapes of the multi-start problems (one compiled minimiser per model) ---------------------------
WZ_DX, WZ_DY, WZ_K = 3, 2, 2
CVAE_DX, CVAE_DY, CVAE_K = 2, 4, 3
N = 16


def _wz_objective(p, data):
    X, Y, beta, eta2, prior, use_bias = data
    W, b, log_s2, U, c = p
    return scaled_prior_objective((W, b * use_bias, log_s2, U, c * use_bias), X, Y, beta, eta2, prior, xp=jnp)


def _cvae_objective(p, data):
    X, Y, beta, eta2, prior, use_bias = data
    W1, W2, b, log_s2, U1, U2, c = p
    return cvae_objective((W1, W2, b * use_bias, log_s2, U1, U2, c * use_bias), X, Y, beta, eta2, prior, xp=jnp)


@pytest.fixture(scope="module")
def wz_minimiser():
    k, dx, dy = WZ_K, WZ_DX, WZ_DY
    return newton_minimiser(
        _wz_objective, (np.zeros((k, dx)), np.zeros(k), np.zeros(k), np.zeros((dy, k)), np.zeros(dy))
    )


@pytest.fixture(scope="module")
def cvae_minimiser():
    k, dx, dy = CVAE_K, CVAE_DX, CVAE_DY
    template = (
        np.zeros((k, dx)),
        np.zeros((k, dy)),
        np.zeros(k),
        np.zeros(k),
        np.zeros((dy, k)),
        np.zeros((dy, dx)),
        np.zeros(dy),
    )
    return newton_minimiser(_cvae_objective, template)


def _data(X, Y, beta, eta2, prior, use_bias=True):
    return (jnp.asarray(X), jnp.asarray(Y), beta, eta2, prior, 1.0 if use_bias else 0.0)


def _paired_rows(rng, dx, dy, mean_shift=0.0, singular=False):
    """Random pairs with non-zero means; ``singular``: the last x column is the sum of the others (A singular)."""
    X = rng.standard_normal((N, dx)) * np.linspace(1.5, 0.6, dx) + mean_shift
    if singular:
        X[:, -1] = X[:, :-1].sum(axis=1)
    Y = X @ rng.standard_normal((dx, dy)) * 0.6 + rng.standard_normal((N, dy)) * np.linspace(1.6, 0.4, dy)
    return X, Y + 2.0 * mean_shift


def _water_levels(spectrum):
    """Water levels between consecutive spectrum entries and beyond both ends: every count from 0 to k."""
    s = np.sort(spectrum)[::-1]
    inner = np.sqrt(s[:-1] * s[1:])
    return np.concatenate([[2.0 * s[0]], inner, [0.5 * s[-1]]])


def _assert_margin(spectrum, threshold):
    distance = np.min(np.abs(np.asarray(spectrum) / threshold - 1.0))
    assert distance >= MARGIN, f"grid point within {distance:.3f} of a threshold; the comparison would be ill-posed"


# -- (T17.1) moments ---------------------------------------------------------------------------------


def test_residual_moment_is_the_covariance_of_the_least_squares_residual():
    rng = np.random.default_rng(1)
    X, Y = _paired_rows(rng, 3, 2, mean_shift=1.0, singular=True)
    coefficients, *_ = np.linalg.lstsq(X - X.mean(0), Y - Y.mean(0), rcond=None)
    residual = (Y - Y.mean(0)) - (X - X.mean(0)) @ coefficients
    S = residual_moment(JointMoments.from_data(X, Y))
    np.testing.assert_allclose(S, residual.T @ residual / N, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: scaled_prior_optimum(m, 1, 0.0, 1.0), "`beta` must be finite and > 0"),
        (lambda m: cvae_optimum(m, 1, 1.0, -1.0), "`decoder_variance` must be finite and > 0"),
        (lambda m: cvae_optimum(m, 1, 1.0, 1.0, prior_variance=0.0), "`prior_variance` must be finite and > 0"),
        (lambda m: scaled_prior_optimum(m, 3, 1.0, 1.0), r"`latent_dim` = 3 is out of range.*min\(d_x, d_y\)"),
        (lambda m: cvae_optimum(m, 3, 1.0, 1.0), r"`latent_dim` = 3 is out of range.*d_y"),
        (lambda m: cvae_optimum(m, 1.5, 1.0, 1.0), "`latent_dim` must be an integer"),
    ],
)
def test_invalid_arguments_raise_one_line_errors(call, match):
    rng = np.random.default_rng(2)
    moments = JointMoments.from_data(rng.standard_normal((10, 3)), rng.standard_normal((10, 2)))
    with pytest.raises(ValueError, match=match) as error:
        call(moments)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda r: JointMoments.from_data(r.standard_normal((10, 3)), r.standard_normal((9, 2))), "the same samples"),
        (
            lambda r: JointMoments.from_data(np.full((10, 2), np.nan), r.standard_normal((10, 2))),
            "x: data contains .* NaN",
        ),
        (
            lambda r: JointMoments.from_data(r.standard_normal((10, 2)), np.ones((10, 2))),
            "y: all samples are identical",
        ),
        (lambda r: JointMoments.from_matrices(np.eye(2), np.zeros((3, 2)), np.eye(2)), r"`xy` has shape \(3, 2\)"),
        (lambda r: JointMoments.from_matrices(np.eye(2), np.full((2, 2), np.nan), np.eye(2)), "NaN or inf"),
        (lambda r: JointMoments.from_matrices(np.eye(2), np.zeros((2, 2)), np.ones((2, 3))), "must be square"),
        (lambda r: JointMoments.from_matrices([[1.0, 0.5], [0.0, 1.0]], np.zeros((2, 1)), [[1.0]]), "not symmetric"),
    ],
)
def test_invalid_moments_raise_one_line_errors(build, match):
    with pytest.raises(ValueError, match=match) as error:
        build(np.random.default_rng(3))
    assert "\n" not in str(error.value)


# -- (T17.2) scaled prior, (T17.3) CVAE: exact values ---------------------------------------------------


@pytest.mark.parametrize("centred", [True, False])
def test_closed_form_parameters_attain_the_closed_form_minimum(centred):
    """The reference objective at the returned parameters equals the returned value (both models, with
    and without biases, singular A): value and parameters are one consistent optimum candidate."""
    rng = np.random.default_rng(4)
    for singular in (False, True):
        X, Y = _paired_rows(rng, 3, 4, mean_shift=1.5, singular=singular)
        moments = JointMoments.from_data(X, Y, centred=centred)
        for beta, eta2, prior in [(0.4, 0.8, 1.0), (1.7, 0.5, 3.0)]:
            wz = scaled_prior_optimum(moments, 3, beta, eta2, prior)
            p = wz.parameters()
            reference = scaled_prior_objective(
                (p.encoder, p.encoder_bias, np.log(p.encoder_variances), p.decoder, p.decoder_bias),
                X,
                Y,
                beta,
                eta2,
                prior,
            )
            assert reference == pytest.approx(wz.value, abs=1e-12)
            cvae = cvae_optimum(moments, 3, beta, eta2, prior)
            p = cvae.parameters()
            reference = cvae_objective(
                (p.W1, p.W2, p.encoder_bias, np.log(p.encoder_variances), p.U1, p.U2, p.decoder_bias),
                X,
                Y,
                beta,
                eta2,
                prior,
            )
            assert reference == pytest.approx(cvae.value, abs=1e-12)


def test_cvae_reference_objective_matches_sampling_from_the_model():
    """Monte Carlo: -log p(y|z,x) + beta [log q(z|x,y) - log p(z)] with z drawn from q, averaged over the
    rows and 20,000 draws each, agrees with the analytic reference within 4 standard errors."""
    rng = np.random.default_rng(5)
    X, Y = _paired_rows(rng, 2, 3, mean_shift=0.7)
    k, beta, eta2, prior = 2, 0.8, 0.6, 2.0
    W1, W2, U1, U2 = (0.5 * rng.standard_normal(s) for s in [(k, 2), (k, 3), (3, k), (3, 2)])
    b, c, log_s2 = 0.3 * rng.standard_normal(k), 0.3 * rng.standard_normal(3), 0.5 * rng.standard_normal(k)
    exact = cvae_objective((W1, W2, b, log_s2, U1, U2, c), X, Y, beta, eta2, prior)
    draws = 20_000
    mean = X @ W1.T + Y @ W2.T + b  # (N, k)
    z = mean[:, None, :] + np.exp(log_s2 / 2) * rng.standard_normal((N, draws, k))
    y_mean = z @ U1.T + (X @ U2.T + c)[:, None, :]
    log_p_y = -0.5 * np.sum((Y[:, None, :] - y_mean) ** 2, axis=-1) / eta2 - 1.5 * np.log(2 * np.pi * eta2)
    log_q = -0.5 * np.sum((z - mean[:, None, :]) ** 2 / np.exp(log_s2) + log_s2 + np.log(2 * np.pi), axis=-1)
    log_p_z = -0.5 * np.sum(z**2 / prior + np.log(2 * np.pi * prior), axis=-1)
    samples = (-log_p_y + beta * (log_q - log_p_z)).ravel()
    standard_error = samples.std() / np.sqrt(samples.size)
    assert standard_error < 0.01 * abs(exact)  # the check has power
    assert abs(samples.mean() - exact) < 4 * standard_error


def test_scaled_prior_with_y_equal_x_is_the_linear_vae_optimum():
    """y = x with centred moments and a unit prior: zeta_i^2 = lambda_i, and active set, KL, encoder
    variances and value are those of optimum.beta_elbo_optimum (T4.1), at every water level, with a
    constant coordinate making A singular."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 5)) @ rng.standard_normal((5, 5)) + 3.0
    X[:, 2] = 7.0  # a constant coordinate (as MNIST's border pixels): A is singular, zeta_i^2 on its range
    moments = JointMoments.from_data(X, X)
    eigenvalues = eigen_decomposition(compute_moments(X).cov).eigenvalues
    for t in _water_levels(eigenvalues[:3]):
        for sigma2 in (0.5, 2.0):
            beta = t / sigma2
            ours = scaled_prior_optimum(moments, 3, beta, sigma2)
            theirs = beta_elbo_optimum(eigenvalues, 3, beta, sigma2)
            np.testing.assert_allclose(ours.modes.spectrum, eigenvalues[:3], rtol=1e-12)
            np.testing.assert_array_equal(ours.modes.active, theirs.active)
            np.testing.assert_allclose(ours.modes.kl_per_mode, theirs.kl_per_dim, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(ours.modes.encoder_variances, theirs.encoder_variances, rtol=1e-12)
            np.testing.assert_allclose(ours.modes.decoder_gains**2, theirs.column_variances, rtol=1e-11, atol=1e-14)
            assert ours.value == pytest.approx(-theirs.elbo, abs=1e-11)


def test_cvae_collapse_threshold_ignores_prior_variance():
    """Active modes, KL and value do not depend on eta_enc; s_i and the gains scale with it (T17.2)."""
    rng = np.random.default_rng(7)
    moments = JointMoments.from_data(*_paired_rows(rng, 2, 4, mean_shift=0.5))
    base = cvae_optimum(moments, 3, 0.7, 0.9, prior_variance=1.0)
    assert 0 < base.active_dims < 3
    for prior in (0.25, 4.0):
        other = cvae_optimum(moments, 3, 0.7, 0.9, prior_variance=prior)
        np.testing.assert_array_equal(other.modes.active, base.modes.active)
        np.testing.assert_allclose(other.modes.kl_per_mode, base.modes.kl_per_mode, rtol=1e-12)
        assert other.value == pytest.approx(base.value, abs=1e-12)
        np.testing.assert_allclose(other.modes.encoder_variances, prior * base.modes.encoder_variances, rtol=1e-12)
        np.testing.assert_allclose(other.modes.decoder_gains, base.modes.decoder_gains / np.sqrt(prior), rtol=1e-12)


def test_cvae_is_the_vae_on_y_when_x_says_nothing_and_collapses_when_x_says_everything():
    """C = 0 (x uncorrelated with y): S = B and the CVAE is the linear VAE on y (T4.1); y a linear function
    of x: S = 0 and every mode collapses, with s_i = eta_enc and value (d_y/2) log(2 pi eta_dec^2) (T17.3)."""
    rng = np.random.default_rng(13)
    Y = rng.standard_normal((30, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
    B = compute_moments(Y).cov
    uninformative = JointMoments.from_matrices(np.eye(2), np.zeros((2, 4)), B)
    eigenvalues = eigen_decomposition(B).eigenvalues
    for beta, eta2 in [(0.5, 1.0), (1.0, 0.3)]:
        ours = cvae_optimum(uninformative, 3, beta, eta2)
        theirs = beta_elbo_optimum(eigenvalues, 3, beta, eta2)
        np.testing.assert_array_equal(ours.modes.active, theirs.active)
        assert ours.value == pytest.approx(-theirs.elbo, abs=1e-12)
    X = rng.standard_normal((30, 4))
    determined = cvae_optimum(JointMoments.from_data(X, X @ rng.standard_normal((4, 4))), 3, 0.01, 0.5, 2.0)
    assert determined.active_dims == 0
    np.testing.assert_allclose(determined.modes.encoder_variances, 2.0)
    assert determined.value == pytest.approx(2.0 * np.log(2 * np.pi * 0.5), abs=1e-10)


# -- multi-start minimisation of the reference objectives -------------------------------------------------


def _check_against_multistart(minimiser, optimum, X, Y, beta, eta2, prior, use_bias, decoder_of, rng):
    assert beta >= 1e-3, "beta so small that a wrong active set would move the value by less than 2e-6 nats"
    minimum = minimiser(random_starts(rng, STARTS, minimiser.size), _data(X, Y, beta, eta2, prior, use_bias))
    # converged: at a gradient of 1e-6 and curvature >= 1e-2 the value is within 1e-10 of the minimum
    # (the gradient does not reach 1e-8 where A is singular: round-off of X v, v a null vector of A)
    assert minimum.gradient_norm < 1e-6
    assert minimum.value == pytest.approx(optimum.value, abs=VALUE_TOLERANCE)
    assert int(np.sum(singular_values(decoder_of(minimum.params)) > ACTIVE_GAIN)) == optimum.active_dims
    return minimum


#: ``(singular A, biases, which water levels)``: the default grid crosses every threshold with biases and
#: regular A, and takes one level each with singular A and without biases; ``slow`` takes every level.
GRID_DEFAULT = [(False, True, slice(None)), (True, True, slice(1, 2)), (False, False, slice(1, 2))]
GRID_FULL = [(False, True, slice(None)), (True, True, slice(None)), (False, False, slice(None))]


def _scaled_prior_grid(wz_minimiser, grid, seed):
    rng = np.random.default_rng(seed)
    counts = set()
    for singular, use_bias, levels in grid:
        X, Y = _paired_rows(rng, WZ_DX, WZ_DY, mean_shift=1.0, singular=singular)
        moments = JointMoments.from_data(X, Y, centred=use_bias)
        spectrum = scaled_prior_optimum(moments, WZ_K, 1.0, 1.0).modes.spectrum
        for i, t in enumerate(_water_levels(spectrum)[levels]):
            eta2, prior = (0.6, 2.0) if i % 2 else (1.4, 0.5)
            optimum = scaled_prior_optimum(moments, WZ_K, t / eta2, eta2, prior)
            _assert_margin(optimum.modes.spectrum, optimum.modes.threshold)
            _check_against_multistart(wz_minimiser, optimum, X, Y, t / eta2, eta2, prior, use_bias, lambda p: p[3], rng)
            counts.add(optimum.active_dims)
    assert counts == set(range(WZ_K + 1))


def test_scaled_prior_multistart_minimum_matches_closed_form(wz_minimiser):
    """Water levels that cross every threshold (0 to k active), two decoder and two prior variances, regular
    and singular A, with and without biases."""
    _scaled_prior_grid(wz_minimiser, GRID_DEFAULT, seed=8)


@pytest.mark.slow
def test_scaled_prior_multistart_minimum_matches_closed_form_full_grid(wz_minimiser):
    for seed in (80, 81, 82):
        _scaled_prior_grid(wz_minimiser, GRID_FULL, seed)


def _cvae_grid(cvae_minimiser, grid, seed):
    rng = np.random.default_rng(seed)
    counts = set()
    for singular, use_bias, levels in grid:
        X, Y = _paired_rows(rng, CVAE_DX, CVAE_DY, mean_shift=1.0, singular=singular)
        moments = JointMoments.from_data(X, Y, centred=use_bias)
        spectrum = cvae_optimum(moments, CVAE_K, 1.0, 1.0).modes.spectrum
        for i, t in enumerate(_water_levels(spectrum)[levels]):
            eta2, prior = (0.7, 1.8) if i % 2 else (1.3, 0.6)
            optimum = cvae_optimum(moments, CVAE_K, t / eta2, eta2, prior)
            _assert_margin(optimum.modes.spectrum, optimum.modes.threshold)
            minimum = _check_against_multistart(
                cvae_minimiser, optimum, X, Y, t / eta2, eta2, prior, use_bias, lambda p: p[4], rng
            )
            np.testing.assert_allclose(
                np.sort(np.exp(np.asarray(minimum.params[3]))), np.sort(optimum.modes.encoder_variances), rtol=1e-6
            )
            counts.add(optimum.active_dims)
    assert counts == set(range(CVAE_K + 1))


def test_cvae_multistart_minimum_matches_closed_form(cvae_minimiser):
    """Water levels that cross every threshold, with and without biases, regular and singular A; at the
    minimum, the s_i^2 of the minimiser equal the closed form's (sorted: latents are exchangeable)."""
    _cvae_grid(cvae_minimiser, GRID_DEFAULT, seed=9)


@pytest.mark.slow
def test_cvae_multistart_minimum_matches_closed_form_full_grid(cvae_minimiser):
    for seed in (90, 91, 92):
        _cvae_grid(cvae_minimiser, GRID_FULL, seed)


# -- the public code's errors (docs/theory.md (T17.6)) ----------------------------------------------------


def _cvae_data_with_residual_spectrum(theta, rng):
    """Rows (x, y), d_x = 2, whose residual second moment S = B - C^T A^+ C has eigenvalues ``theta`` exactly."""
    dx, dy = CVAE_DX, len(theta)
    A = np.array([[1.5, 0.4], [0.4, 0.8]])
    C = rng.standard_normal((dx, dy))
    Q, _ = np.linalg.qr(rng.standard_normal((dy, dy)))
    B = C.T @ np.linalg.solve(A, C) + (Q * theta) @ Q.T
    joint = np.block([[A, C], [C.T, B]])
    rows = exact_data(joint, N, rng, mean=rng.standard_normal(dx + dy))
    return rows[:, :dx], rows[:, dx:]


def published_cvae_encoder_std(theta, beta, eta_dec, eta_enc):
    """The public code's rule: ``s = sqrt(beta) eta_enc eta_dec / sqrt(theta)`` if ``theta >= sqrt(beta) eta_dec``
    else ``eta_enc``, a comparison of the variance ``theta`` with a standard deviation (error 1 of (T17.6))."""
    return np.where(theta >= np.sqrt(beta) * eta_dec, np.sqrt(beta) * eta_enc * eta_dec / np.sqrt(theta), eta_enc)


@pytest.mark.parametrize(
    "theta, beta, eta_dec, mode, published, exact",
    [
        # beta eta_dec^2 = 4.9 > theta_1 = 2.6: every mode collapsed, s_1 = eta_enc; the published rule gives 1.37
        ([2.6, 1.2, 0.5, 0.1], 2.5, 1.4, 0, 1.373, 1.0),
        # theta_3 = 0.62 > beta eta_dec^2 = 0.6: active, s_3 = sqrt(0.6 / 0.62) = 0.984; published: collapsed
        ([3.0, 1.5, 0.62, 0.2], 0.6, 1.0, 2, 1.0, 0.984),
    ],
)
def test_cvae_encoder_std_follows_the_exact_optimum_not_the_published_rule(
    cvae_minimiser, theta, beta, eta_dec, mode, published, exact
):
    rng = np.random.default_rng(10)
    eta_enc = 1.3
    X, Y = _cvae_data_with_residual_spectrum(np.array(theta), rng)
    optimum = cvae_optimum(JointMoments.from_data(X, Y), CVAE_K, beta, eta_dec**2, eta_enc**2)
    np.testing.assert_allclose(optimum.modes.spectrum, theta[:CVAE_K], rtol=1e-10)
    ours = np.sqrt(optimum.modes.encoder_variances) / eta_enc
    theirs = published_cvae_encoder_std(np.array(theta[:CVAE_K]), beta, eta_dec, eta_enc) / eta_enc
    assert ours[mode] == pytest.approx(exact, abs=1e-3)
    assert theirs[mode] == pytest.approx(published, abs=1e-3)
    minimum = cvae_minimiser(random_starts(rng, STARTS, cvae_minimiser.size), _data(X, Y, beta, eta_dec**2, eta_enc**2))
    assert minimum.value == pytest.approx(optimum.value, abs=VALUE_TOLERANCE)
    trained = np.sort(np.sqrt(np.exp(np.asarray(minimum.params[3]))))[::-1] / eta_enc
    np.testing.assert_allclose(trained, np.sort(ours)[::-1], rtol=1e-6)
    assert np.max(np.abs(np.sort(theirs) - np.sort(trained))) > 0.01


def test_cvae_prior_scale_enters_as_eta_enc_not_eta_dec_squared_over_eta_enc(cvae_minimiser):
    """Error 2 of (T17.6): the public code scales the KL's trace terms by c^2 / eta_dec^2 with c = eta_enc /
    eta_dec, i.e. trains the model whose prior variance is eta_dec^4 / eta_enc^2.  The exact objective's
    minimiser has the decoder singular values sqrt(theta_i - t) / eta_enc of the closed form; the published
    objective's minimiser has those of the closed form at the wrong prior, so they differ unless
    eta_enc = eta_dec (active counts agree: the threshold ignores the prior)."""
    rng = np.random.default_rng(11)
    X, Y = _cvae_data_with_residual_spectrum(np.array([3.0, 1.5, 0.3, 0.1]), rng)
    moments = JointMoments.from_data(X, Y)
    beta, eta2 = 0.5, 1.0
    for eta_enc2, differs in [(2.5, True), (1.0, False)]:
        published_prior = eta2**2 / eta_enc2
        exact = cvae_optimum(moments, CVAE_K, beta, eta2, eta_enc2)
        wrong = cvae_optimum(moments, CVAE_K, beta, eta2, published_prior)
        starts = random_starts(rng, STARTS, cvae_minimiser.size)
        trained_exact = cvae_minimiser(starts, _data(X, Y, beta, eta2, eta_enc2))
        trained_published = cvae_minimiser(starts, _data(X, Y, beta, eta2, published_prior))
        gains_exact = singular_values(trained_exact.params[4])
        gains_published = singular_values(trained_published.params[4])
        np.testing.assert_allclose(gains_exact, exact.modes.decoder_gains, atol=1e-7)
        np.testing.assert_allclose(gains_published, wrong.modes.decoder_gains, atol=1e-7)
        assert exact.active_dims == wrong.active_dims == 2
        assert (np.max(np.abs(gains_exact - gains_published)) > 0.1) == differs


# -- biases matter (docs/theory.md (T17.1)) -----------------------------------------------------------------


def test_biases_matter_centred_closed_form_is_the_minimum_with_biases(cvae_minimiser):
    """On data with non-zero means the model with biases has the centred closed form as its minimum; the
    uncentred closed form (the no-bias model's minimum, also checked) is above it by more than a nat and
    counts one more active mode: the mean of y is a direction a no-bias model must encode."""
    rng = np.random.default_rng(12)
    X, Y = _paired_rows(rng, CVAE_DX, CVAE_DY)
    Y = Y + np.array([3.0, -2.0, 1.0, 0.5])  # x has mean ~0: the mean of y is not explained by x
    beta, eta2, prior = 1.0, 1.0, 1.0
    centred = cvae_optimum(JointMoments.from_data(X, Y, centred=True), CVAE_K, beta, eta2, prior)
    raw = cvae_optimum(JointMoments.from_data(X, Y, centred=False), CVAE_K, beta, eta2, prior)
    for optimum, use_bias in [(centred, True), (raw, False)]:
        _assert_margin(optimum.modes.spectrum, optimum.modes.threshold)
        _check_against_multistart(cvae_minimiser, optimum, X, Y, beta, eta2, prior, use_bias, lambda p: p[4], rng)
    assert raw.value - centred.value > 1.0
    assert raw.active_dims == centred.active_dims + 1


def test_mode_gain_is_zero_up_to_one_and_smooth_there():
    r = np.array([0.0, 0.5, 1.0, 1.0 + 1e-6, 2.0])
    np.testing.assert_allclose(mode_gain(r), [0.0, 0.0, 0.0, 5e-13, 1.0 - np.log(2.0)], atol=1e-17, rtol=1e-5)
