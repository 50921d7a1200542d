"""Claims of docs/theory.md (T17.4, T17.5): the closed-form optimum of the two-level linear HVAE (Dang et al.
2024), with ``Sigma2`` learned or fixed, is the minimum of its exact objective.

References are independent of the code under test: the objective of tests/reference.py, written from the
model's definition on the data rows, a Monte-Carlo estimate sampled from the model, and multi-start
saddle-free Newton minimisation of that objective (tests/multistart.py).  Value tolerance 1e-10 nats, for
the reason given in tests/test_conditional.py: the minimiser's round-off is about 1e-14, and the grids keep
every spectrum entry at least 10% from every threshold, so that a wrong rule moves the value by far more.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from multistart import exact_data, newton_minimiser, random_starts, singular_values
from reference import hvae_objective

import linear_vae  # noqa: F401  (float64)
from linear_vae.data.joint_moments import JointMoments
from linear_vae.theory.hierarchical import hvae_optimum

STARTS = 6
VALUE_TOLERANCE = 1e-10
MARGIN = 0.1
ACTIVE_GAIN = 1e-4
D_X = D_Y = 3
D1, D2 = 3, 2
N = 16
#: theta_i^2, the squared singular values of C^T A^{-1/2} of the grid's data (variance units)
SPECTRUM = np.array([4.0, 1.0, 0.25])


def _objective(p, data):
    """The reference objective; ``use_bias`` zeroes the biases, ``fixed`` replaces log_s2 by log(z2_variance)."""
    X, Y, beta1, beta2, s1, eta2, prior, z2_variance, fixed, use_bias = data
    W1, b1, W2, b2, log_s2, U1, c1, U2, c2 = p
    log_s2 = jnp.where(fixed, jnp.log(z2_variance), log_s2)
    b1, b2, c1, c2 = (v * use_bias for v in (b1, b2, c1, c2))
    return hvae_objective((W1, b1, W2, b2, log_s2, U1, c1, U2, c2), X, Y, beta1, beta2, s1, eta2, prior, xp=jnp)


def _template(dx, dy, d1, d2):
    """Zero parameters of the shapes ``(W1, b1, W2, b2, log_s2, U1, c1, U2, c2)``."""
    shapes = [(d1, dx), (d1,), (d2, d1), (d2,), (d2,), (dy, d1), (dy,), (d1, d2), (d1,)]
    return tuple(np.zeros(shape) for shape in shapes)


@pytest.fixture(scope="module")
def minimiser():
    return newton_minimiser(_objective, _template(D_X, D_Y, D1, D2))


def _data_with_spectrum(rng, theta2=SPECTRUM, dx=D_X, dy=D_Y, singular=False, raw=False):
    """Rows (x, y) with a non-identity ``A`` and ``C^T A^{-1/2} = P diag(theta) R^T`` exactly (P, R random
    orthonormal, ``theta^2`` of length ``min(dx, dy)``).  ``singular``: ``A`` has rank ``dx - 1`` and ``R`` is
    its eigenbasis, range first (so ``theta^2`` must end in 0).  ``raw``: these are the uncentred moments (for
    the model without biases), and the rows have non-zero means, so that the centred moments differ."""
    M = rng.standard_normal((dx, dx - 1 if singular else dx))
    A = M @ M.T + (0.0 if singular else 0.5) * np.eye(dx)
    values, vectors = np.linalg.eigh(A)
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    root = (vectors * np.sqrt(values)) @ vectors.T
    r = min(dx, dy)
    P = np.linalg.qr(rng.standard_normal((dy, dy)))[0][:, :r]
    R = vectors[:, :r] if singular else np.linalg.qr(rng.standard_normal((dx, dx)))[0][:, :r]
    Z = (P * np.sqrt(theta2)) @ R.T  # C^T A^{-1/2}
    C = (Z @ root).T
    B = Z @ Z.T + np.diag(np.linspace(0.3, 0.1, dy))
    joint = np.block([[A, C], [C.T, B]])
    rows = exact_data(joint, N, rng, raw=True) if raw else exact_data(joint, N, rng, rng.standard_normal(dx + dy))
    return rows[:, :dx], rows[:, dx:]


def _data(X, Y, beta1, beta2, s1, eta2, prior, z2_variance=None, use_bias=True):
    fixed = z2_variance is not None
    return (
        jnp.asarray(X),
        jnp.asarray(Y),
        beta1,
        beta2,
        s1,
        eta2,
        prior,
        z2_variance if fixed else 1.0,
        fixed,
        1.0 if use_bias else 0.0,
    )


def _margins(optimum, beta1, beta2, s1, eta2, prior, z2_variance):
    """Smallest relative distance of theta_i^2 to every threshold of (T17.4, T17.5), and of the noise rule."""
    theta2 = optimum.spectrum
    noise_other = beta2 * eta2 * (1.0 if z2_variance is None else z2_variance / prior)
    return min(
        np.min(np.abs(theta2 / optimum.z1_thresholds - 1.0)),
        np.min(np.abs(theta2[: len(optimum.active_z2)] / optimum.z2_threshold - 1.0)),
        abs(beta1 * s1 / noise_other - 1.0),
    )


def _check(minimiser, X, Y, point, rng, use_bias=True, dims=(D1, D2)):
    beta1, beta2, s1, eta2, prior, z2_variance = point
    moments = JointMoments.from_data(X, Y, centred=use_bias)
    optimum = hvae_optimum(moments, dims, beta1, beta2, s1, eta2, prior, z2_variance)
    assert _margins(optimum, *point) >= MARGIN, "grid point too close to a threshold"
    minimum = minimiser(random_starts(rng, STARTS, minimiser.size), _data(X, Y, *point, use_bias=use_bias))
    # converged: at a gradient of 1e-6 and curvature >= 1e-2 the value is within 1e-10 of the minimum
    assert minimum.gradient_norm < 1e-6
    assert minimum.value == pytest.approx(optimum.value, abs=VALUE_TOLERANCE)
    W1, U2 = np.asarray(minimum.params[0]), np.asarray(minimum.params[7])
    Xc = X - X.mean(axis=0) if use_bias else X
    z1_gains = singular_values(Xc @ W1.T / np.sqrt(N))  # singular values of W1 A^{1/2}
    assert int(np.sum(z1_gains > ACTIVE_GAIN)) == optimum.active_z1_dims
    assert int(np.sum(singular_values(U2) > ACTIVE_GAIN)) == optimum.active_z2_dims
    np.testing.assert_allclose(np.sort(z1_gains**2), np.sort(optimum.z1_variances - s1), atol=1e-7)
    return optimum


#: (beta1, beta2, sigma1^2, eta_dec^2, eta_enc^2, None): learned Sigma2.  Against SPECTRUM = (4, 1, 0.25):
#: z1 thresholds min(beta1 sigma1^2, beta2 eta^2) (i <= d2) and beta1 sigma1^2 (i = 3); z2 active for all
#: when beta1 sigma1^2 > beta2 eta^2, else iff theta^2 > beta2^2 eta^4 / (beta1 sigma1^2).
LEARNED = [
    (1.0, 1.0, 0.5, 1.0, 1.0, None),  # z1: 2 active; z2: theta-ruled, 1 active
    (2.0, 0.5, 0.6, 1.0, 2.0, None),  # z2 models the z1 noise: 2 active
    (0.5, 3.0, 0.4, 0.8, 0.7, None),  # z1: all 3 active; z2: none
    (4.0, 2.0, 1.5, 1.5, 1.0, None),  # z1: 1 active; z2 models the noise: 2 active
    (1.0, 0.5, 0.3, 1.0, 1.5, None),  # z2 theta-ruled, both active
]
#: (beta1, beta2, sigma1^2, eta_dec^2, eta_enc^2, sigma2^2): fixed Sigma2 = sigma2^2 I, c^2 = eta_dec^2 / eta_enc^2.
FIXED = [
    (1.0, 1.0, 0.5, 1.0, 1.0, 0.8),  # z2 theta-ruled: 1 active
    (2.0, 0.5, 0.6, 1.0, 2.0, 0.4),  # z2 models the noise
    (0.5, 2.0, 0.2, 1.0, 0.5, 0.3),  # z1: all 3; z2: none
    (3.0, 1.0, 0.5, 1.0, 1.0, 1.0),  # z1: 1 active; z2 models the noise
    (2.0, 1.0, 0.25, 1.0, 1.0, 0.6),  # beta1 != 1, z2 theta-ruled: both active
]


@pytest.mark.parametrize("grid", ["learned", "fixed"])
def test_hvae_multistart_minimum_matches_closed_form(minimiser, grid):
    """Every grid point's active z1 and z2 counts and value agree with the best of 6 minimisations; together
    the points cross every threshold (each count takes several values, the noise rule both ways)."""
    rng = np.random.default_rng(20 if grid == "learned" else 21)
    X, Y = _data_with_spectrum(rng)
    z1_counts, z2_counts, noise = set(), set(), set()
    for point in LEARNED if grid == "learned" else FIXED:
        optimum = _check(minimiser, X, Y, point, rng)
        np.testing.assert_allclose(optimum.spectrum, SPECTRUM, rtol=1e-10)
        z1_counts.add(optimum.active_z1_dims)
        z2_counts.add(optimum.active_z2_dims)
        noise.add(optimum.z2_models_z1_noise)
    assert z1_counts == {1, 2, 3} and z2_counts == {0, 1, 2} and noise == {True, False}


def test_hvae_without_biases_uses_raw_moments(minimiser):
    """Without biases the minimum is the closed form on uncentred moments (one learned and one fixed point),
    on rows whose means are not 0: the centred closed form is not the minimum there."""
    rng = np.random.default_rng(22)
    X, Y = _data_with_spectrum(rng, raw=True)
    assert np.min(np.abs(X.mean(axis=0))) > 0.05
    for point in (LEARNED[0], FIXED[4]):
        optimum = _check(minimiser, X, Y, point, rng, use_bias=False)
        centred = hvae_optimum(JointMoments.from_data(X, Y), (D1, D2), *point)
        assert optimum.value - centred.value > 1e-3


def test_hvae_with_singular_A_works_on_its_range(minimiser):
    """A of rank 2 (a constant direction of x): theta^2 = (4, 1, 0), and the closed form on the range of A is
    the minimum (one learned, one fixed point)."""
    rng = np.random.default_rng(30)
    X, Y = _data_with_spectrum(rng, np.array([4.0, 1.0, 0.0]), singular=True)
    for point in (LEARNED[1], FIXED[0]):
        optimum = _check(minimiser, X, Y, point, rng)
        np.testing.assert_allclose(optimum.spectrum, [4.0, 1.0, 0.0], atol=1e-10)


@pytest.mark.slow
def test_hvae_multistart_minimum_matches_closed_form_without_biases_full_grid(minimiser):
    rng = np.random.default_rng(23)
    X, Y = _data_with_spectrum(rng, raw=True)
    for point in LEARNED + FIXED:
        _check(minimiser, X, Y, point, rng, use_bias=False)


@pytest.mark.slow
def test_hvae_with_more_z1_than_signal_dimensions_and_d2_equal_d1():
    """d_y = 2 < d1 = d2 = 3: the third z1 mode has theta = 0 (no signal), so it stays at sigma1^2, and its z2
    partner is active exactly when the z2 level models z1's noise (beta1 sigma1^2 > beta2 c^2 sigma2^2)."""
    rng = np.random.default_rng(29)
    dims = (3, 3)
    wide = newton_minimiser(_objective, _template(3, 2, *dims))
    X, Y = _data_with_spectrum(rng, np.array([4.0, 0.8]), dx=3, dy=2)
    for point, z2_count in [
        ((2.0, 0.5, 0.6, 1.0, 2.0, None), 3),
        ((1.0, 1.0, 0.5, 1.0, 1.0, None), 1),
        ((2.0, 0.5, 0.6, 1.0, 2.0, 0.4), 3),
        ((1.0, 1.0, 0.5, 1.0, 1.0, 0.8), 1),
    ]:
        optimum = _check(wide, X, Y, point, rng, dims=dims)
        assert optimum.active_z1_dims == 2 and optimum.active_z2_dims == z2_count


@pytest.mark.parametrize("z2_variance", [None, 0.7])
@pytest.mark.parametrize("centred", [True, False])
def test_hvae_closed_form_parameters_attain_the_closed_form_minimum(z2_variance, centred):
    rng = np.random.default_rng(24)
    X, Y = _data_with_spectrum(rng)
    moments = JointMoments.from_data(X, Y, centred=centred)
    for point in LEARNED + FIXED:
        beta1, beta2, s1, eta2, prior, _ = point
        optimum = hvae_optimum(moments, (D1, D2), beta1, beta2, s1, eta2, prior, z2_variance)
        p = optimum.params
        params = (p.W1, p.b1, p.W2, p.b2, np.log(p.z2_variances), p.U1, p.c1, p.U2, p.c2)
        assert hvae_objective(params, X, Y, beta1, beta2, s1, eta2, prior) == pytest.approx(optimum.value, abs=1e-12)


def test_hvae_reference_objective_matches_sampling_from_the_model():
    """Monte Carlo: -log p(y|z1) + beta1 [log q(z1|x) - log p(z1|z2)] + beta2 [log q(z2|z1) - log p(z2)], with
    z1 and z2 drawn from q, averaged over the rows and 20,000 draws each, agrees with the analytic
    reference within 4 standard errors."""
    rng = np.random.default_rng(25)
    X, Y = _data_with_spectrum(rng)
    beta1, beta2, s1, eta2, prior = 0.7, 1.6, 0.4, 0.8, 1.5
    W1, W2, U1, U2 = (0.6 * rng.standard_normal(s) for s in [(D1, D_X), (D2, D1), (D_Y, D1), (D1, D2)])
    b1, b2, c1, c2 = (0.3 * rng.standard_normal(d) for d in (D1, D2, D_Y, D1))
    log_s2 = 0.5 * rng.standard_normal(D2)
    exact = hvae_objective((W1, b1, W2, b2, log_s2, U1, c1, U2, c2), X, Y, beta1, beta2, s1, eta2, prior)
    draws = 20_000

    def log_normal(v, mean, var):
        return -0.5 * np.sum((v - mean) ** 2 / var + np.log(2 * np.pi * var), axis=-1)

    m1 = (X @ W1.T + b1)[:, None, :]
    z1 = m1 + np.sqrt(s1) * rng.standard_normal((N, draws, D1))
    m2 = z1 @ W2.T + b2
    z2 = m2 + np.exp(log_s2 / 2) * rng.standard_normal((N, draws, D2))
    samples = (
        -log_normal(Y[:, None, :], z1 @ U1.T + c1, eta2)
        + beta1 * (log_normal(z1, m1, s1) - log_normal(z1, z2 @ U2.T + c2, eta2))
        + beta2 * (log_normal(z2, m2, np.exp(log_s2)) - log_normal(z2, 0.0, prior))
    ).ravel()
    standard_error = samples.std() / np.sqrt(samples.size)
    assert standard_error < 0.01 * abs(exact)
    assert abs(samples.mean() - exact) < 4 * standard_error


def test_hvae_active_sets_follow_the_stated_thresholds():
    """On random spectra and settings, a z1 mode is active iff theta_i^2 exceeds its threshold, and a z2 mode
    iff the noise rule holds or theta_i^2 exceeds the z2 threshold (the rules of (T17.4, T17.5))."""
    rng = np.random.default_rng(26)
    X, Y = _data_with_spectrum(rng)
    moments = JointMoments.from_data(X, Y)
    for _ in range(200):
        beta1, beta2, s1, eta2, prior = np.exp(rng.uniform(-1.5, 1.5, 5))
        z2_variance = None if rng.random() < 0.5 else float(np.exp(rng.uniform(-1.5, 1.5)))
        o = hvae_optimum(moments, (D1, D2), beta1, beta2, s1, eta2, prior, z2_variance)
        np.testing.assert_array_equal(o.active_z1, o.spectrum > o.z1_thresholds)
        np.testing.assert_array_equal(o.active_z2, o.z2_models_z1_noise | (o.spectrum[:D2] > o.z2_threshold))


# -- the public code's error 3 (docs/theory.md (T17.6)) -------------------------------------------------------


def published_z2_active(theta, beta1, beta2, s1, c2s2):
    """The public code's rule for the fixed-Sigma2 HVAE's z2 mode, as the issue states it: active iff
    ``theta >= sqrt(beta1) beta2 c^2 sigma2^2 / sigma1`` (and ``theta^2 >= sqrt(beta1 beta2) c sigma1 sigma2``),
    or ``beta1 sigma1^2 > beta2 c^2 sigma2^2``; ``theta`` a singular value (std units)."""
    sigma1 = np.sqrt(s1)
    first = (theta >= np.sqrt(beta1) * beta2 * c2s2 / sigma1) & (theta**2 >= np.sqrt(beta1 * beta2 * c2s2 * s1))
    return first | (beta1 * s1 > beta2 * c2s2)


def published_z2_omega_squared(theta, beta1, beta2, s1, c2s2):
    """The public code's U2 singular value squared on its first branch, up to a positive factor:
    ``theta^(2/3) - (beta2^2 c^4 sigma2^4 / (beta1 sigma1^2))^(1/3)``, negative (its square root NaN) wherever
    the branch is taken below the exact threshold."""
    return theta ** (2.0 / 3.0) - (beta2**2 * c2s2**2 / (beta1 * s1)) ** (1.0 / 3.0)


@pytest.mark.parametrize(
    "point, published_count, exact_count",
    [
        # beta1 = 2 > 1: published threshold on theta is beta1 = 2 times the exact one; theta_2 = 1 lies between
        ((2.0, 1.0, 0.25, 1.0, 1.0, 0.6), 1, 2),
        # beta1 = 0.5 < 1: published threshold is half the exact one; theta_2 = 1 is declared active, with NaN gain
        ((0.5, 1.0, 1.0, 1.0, 1.0, 0.8), 2, 1),
    ],
)
def test_hvae_fixed_z2_rule_follows_the_exact_optimum_not_the_published_one(
    minimiser, point, published_count, exact_count
):
    rng = np.random.default_rng(27)
    X, Y = _data_with_spectrum(rng)
    beta1, beta2, s1, eta2, prior, z2_variance = point
    optimum = _check(minimiser, X, Y, point, rng)  # the library equals the multi-start minimum
    theta = np.sqrt(optimum.spectrum[:D2])
    c2s2 = eta2 * z2_variance / prior
    published = published_z2_active(theta, beta1, beta2, s1, c2s2)
    assert optimum.active_z2_dims == exact_count
    assert int(np.sum(published)) == published_count
    if beta1 < 1:
        omega2 = published_z2_omega_squared(theta, beta1, beta2, s1, c2s2)
        assert np.any(published & (omega2 < 0))  # the published gain is sqrt(negative) = NaN there


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta1": 0.0}, "`beta1` must be finite and > 0"),
        ({"beta2": -1.0}, "`beta2` must be finite and > 0"),
        ({"z1_variance": 0.0}, "`z1_variance` must be finite and > 0"),
        ({"decoder_variance": float("nan")}, "`decoder_variance` must be finite and > 0"),
        ({"z2_variance": 0.0}, "`z2_variance` must be finite and > 0"),
        ({"latent_dims": (4, 2)}, r"`d1` = 4 is out of range.*d_x"),
        ({"latent_dims": (2, 3)}, r"`d2` = 3 is out of range.*no more dimensions than z1"),
        ({"latent_dims": (2,)}, "`latent_dims` must be two numbers"),
        ({"latent_dims": 3}, "`latent_dims` must be two numbers"),
    ],
)
def test_hvae_invalid_arguments_raise_one_line_errors(kwargs, match):
    rng = np.random.default_rng(28)
    moments = JointMoments.from_data(*_data_with_spectrum(rng))
    arguments = dict(latent_dims=(D1, D2), beta1=1.0, beta2=1.0, z1_variance=0.5, decoder_variance=1.0)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match) as error:
        hvae_optimum(moments, **arguments)
    assert "\n" not in str(error.value)
