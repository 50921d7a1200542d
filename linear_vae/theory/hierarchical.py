"""Closed-form optimum of the two-level linear hierarchical VAE (HVAE), in variance units.

The model (Dang et al. 2024, Section 4): ``q(z1|x) = N(W1 x, sigma1^2 I)`` with ``sigma1^2``
(``z1_variance``) fixed, ``q(z2|z1) = N(W2 z1, Sigma2)``, ``p(y|z1) = N(U1 z1, eta_dec^2 I)``,
``p(z1|z2) = N(U2 z2, eta_dec^2 I)``, ``p(z2) = N(0, eta_enc^2 I)``, and the negative beta-ELBO
``E[-log p(y|z1)] + beta1 E[log q(z1|x) - log p(z1|z2)] + beta2 E KL(q(z2|z1) || p(z2))``.
``Sigma2 = diag(s_j^2)`` is learned (``z2_variance=None``) or fixed to ``sigma2^2 I``.

Everything is decided mode by mode along the singular vectors of ``Z = C^T A^{-1/2}``, whose squared
singular values ``theta_i^2`` are the spectrum (variance units).  Mode ``i`` of ``z1`` gets variance
``a_i`` (an eigenvalue of ``K = E[z1 z1^T]``), the minimiser of a one-dimensional function that
changes sign of slope once; the ``z2`` level is then a linear VAE on ``z1`` with spectrum ``a_i``.

Scope: ``d1 <= d_x`` and ``d2 <= d1`` (out of scope, not derived: a learned ``Sigma1``, a ``z1``
decoder variance other than ``eta_dec^2``, ``d1 > d_x``).

References: docs/theory.md (T17.4, T17.5); Dang et al. 2024 (arXiv:2306.05023), Section 4.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from linear_vae.core.validation import check_count, check_positive
from linear_vae.data.joint_moments import JointMoments, cross_spectrum, inverse_sqrt_xx
from linear_vae.data.moments import LOG_2PI
from linear_vae.theory.conditional import gaussian_modes


class HVAEParams(NamedTuple):
    """``q(z1|x) = N(W1 x + b1, sigma1^2 I)``, ``q(z2|z1) = N(W2 z1 + b2, diag(z2_variances))``,
    ``p(y|z1) = N(U1 z1 + c1, eta_dec^2 I)``, ``p(z1|z2) = N(U2 z2 + c2, eta_dec^2 I)``."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    z2_variances: np.ndarray
    U1: np.ndarray
    c1: np.ndarray
    U2: np.ndarray
    c2: np.ndarray


class HVAEOptimum(NamedTuple):
    """The global minimum of the two-level linear HVAE's negative beta-ELBO.

    Attributes
    ----------
    spectrum : (d1,) ``theta_i^2``, squared singular values of ``C^T A^{-1/2}`` (variance units; 0 past its rank).
    z1_variances : (d1,) ``a_i``, the eigenvalues of ``K = W1 A W1^T + sigma1^2 I`` along the modes.
    active_z1 : (d1,) bool, ``a_i > sigma1^2`` (``W1`` carries mode ``i``).
    z1_thresholds : (d1,) ``z1`` mode ``i`` is active iff ``theta_i^2`` exceeds this.
    active_z2 : (d2,) bool, ``U2`` and ``W2`` carry mode ``i``.
    z2_threshold : the ``theta_i^2`` above which a ``z2`` mode is active, unless ``z2_models_z1_noise``.
    z2_models_z1_noise : every ``z2`` mode is active, whatever ``theta_i``: the z2 level models z1's fixed noise.
    z2_kl_per_mode : (d2,) ``KL(q(z2_i|z1) || p(z2_i))`` averaged over the data.
    value : the minimum negative beta-ELBO per datapoint (nats, constants included).
    """

    spectrum: np.ndarray
    z1_variances: np.ndarray
    active_z1: np.ndarray
    z1_thresholds: np.ndarray
    active_z2: np.ndarray
    z2_threshold: float
    z2_models_z1_noise: bool
    z2_kl_per_mode: np.ndarray
    value: float
    params: HVAEParams

    @property
    def active_z1_dims(self) -> int:
        """The number of active ``z1`` modes.

        >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([3.0, 0.5]), np.diag([3.0, 2.0]))
        >>> hvae_optimum(moments, (2, 1), beta1=1.0, beta2=1.0, z1_variance=1.0, decoder_variance=0.5).active_z1_dims
        1
        """
        return int(np.sum(self.active_z1))

    @property
    def active_z2_dims(self) -> int:
        """The number of active ``z2`` modes.

        >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([3.0, 0.5]), np.diag([3.0, 2.0]))
        >>> hvae_optimum(moments, (2, 1), beta1=1.0, beta2=1.0, z1_variance=1.0, decoder_variance=0.5).active_z2_dims
        1
        """
        return int(np.sum(self.active_z2))


class _Z2Level(NamedTuple):
    """The ``z2`` level's optimum given the ``z1`` variances ``a`` (first ``d2`` modes)."""

    active: np.ndarray
    encoder_gains: np.ndarray  # singular values of W2 (on z1, not whitened)
    decoder_gains: np.ndarray  # singular values of U2
    variances: np.ndarray  # s_j^2
    kl_per_mode: np.ndarray
    reconstruction: np.ndarray  # E (z1_i - (U2 z2)_i)^2 + (U2 Sigma2 U2^T)_ii per mode


def _learned_z2(a, beta1, beta2, decoder_variance, prior_variance) -> _Z2Level:
    """A linear VAE on ``z1`` (spectrum ``a``) with water level ``t = (beta2 / beta1) eta_dec^2`` (T17.2):
    its reconstruction error per mode is ``min(a_i, t)``."""
    modes = gaussian_modes(a, beta2 / beta1, decoder_variance, prior_variance)
    return _Z2Level(
        modes.active,
        modes.encoder_gains / np.sqrt(np.where(modes.active, a, 1.0)),
        modes.decoder_gains,
        modes.encoder_variances,
        modes.kl_per_mode,
        np.minimum(a, modes.threshold),
    )


def _fixed_z2(a, beta1, beta2, decoder_variance, prior_variance, z2_variance) -> _Z2Level:
    """The ``z2`` level with ``Sigma2 = sigma2^2 I`` fixed (T17.5): in units of the prior, ``rho = sigma2^2 / eta_enc^2``,
    ``s_i = sqrt(beta1 a_i rho / (beta2 eta_dec^2))``, ``v_i = (s_i - rho)_+ = E (w_i z1_i)^2``; reconstruction
    error ``a_i rho / max(s_i, rho)``, KL ``(rho + v_i - 1 - log rho) / 2``."""
    rho = z2_variance / prior_variance
    s = np.sqrt(beta1 * a * rho / (beta2 * decoder_variance))
    active = s > rho
    v = np.where(active, s - rho, 0.0)
    safe_a = np.where(active, a, 1.0)
    return _Z2Level(
        active,
        np.sqrt(prior_variance * v / safe_a),
        np.sqrt(a * v) / (v + rho) / np.sqrt(prior_variance),
        np.full(len(a), float(z2_variance)),
        0.5 * (rho + v - 1.0 - np.log(rho)),
        a * rho / np.maximum(s, rho),
    )


class _Z1Level(NamedTuple):
    """The ``z1`` variances ``a_i`` and the thresholds that decide them."""

    variances: np.ndarray
    z1_thresholds: np.ndarray
    z2_threshold: float
    noise_modelled: bool


def _z1_level(theta2, d2, beta1, beta2, s1, eta2, prior, z2_variance) -> _Z1Level:
    """``a_i = max(sigma1^2, r_i)`` with ``r_i`` the stationary point of mode ``i``'s one-dimensional objective,
    on the coupled branch (z2 active) where ``theta_i^2`` reaches the z2 threshold (T17.4, T17.5)."""
    plain = np.sqrt(theta2 * s1 / beta1)  # theta sigma1 / sqrt(beta1): the stationary point with z2 collapsed
    if z2_variance is None:
        z2_threshold = beta2**2 * eta2**2 / (beta1 * s1)
        z1_pair_threshold = min(beta1 * s1, beta2 * eta2)
        noise_modelled = beta1 * s1 > beta2 * eta2
        coupled = theta2 * s1 / (beta2 * eta2)
    else:
        c2s2 = eta2 * z2_variance / prior  # c^2 sigma2^2
        z2_threshold = beta2**2 * c2s2**2 / (beta1 * s1)
        z1_pair_threshold = min(beta1 * s1, np.sqrt(beta1 * beta2 * c2s2 * s1))
        noise_modelled = beta1 * s1 > beta2 * c2s2
        coupled = (theta2 * s1 / np.sqrt(beta1 * beta2 * c2s2)) ** (2.0 / 3.0)
    paired = np.arange(len(theta2)) < d2
    a = np.maximum(s1, np.where(paired & (theta2 >= z2_threshold), coupled, plain))
    thresholds = np.where(paired, z1_pair_threshold, beta1 * s1)
    return _Z1Level(a, thresholds, float(z2_threshold), bool(noise_modelled))


def _parameters(moments: JointMoments, theta2, a, s1, level: _Z2Level) -> HVAEParams:
    """The optimum's maps along the modes (z1's basis is the modes): ``W1 = diag(sqrt(a - sigma1^2)) R^T A^{-1/2}``,
    ``U1 = P diag(theta sqrt(a - sigma1^2) / a)``, ``W2``, ``U2`` diagonal on the first ``d2`` modes (T17.4)."""
    d1, d2 = len(a), len(level.active)
    spectrum = cross_spectrum(moments)
    r = min(d1, len(spectrum.variances))
    P, R = np.zeros((moments.d_y, d1)), np.zeros((moments.d_x, d1))
    P[:, :r], R[:, :r] = spectrum.left[:, :r], spectrum.right[:, :r]
    gains = np.sqrt(a - s1)
    W1 = (R * gains).T @ inverse_sqrt_xx(moments)
    U1 = P * (np.sqrt(theta2) * gains / a)
    W2, U2 = np.zeros((d2, d1)), np.zeros((d1, d2))
    W2[:, :d2] = np.diag(level.encoder_gains)
    U2[:d2, :] = np.diag(level.decoder_gains)
    if moments.centred:
        b1, c1 = -W1 @ moments.mean_x, moments.mean_y.copy()
    else:
        b1, c1 = np.zeros(d1), np.zeros(moments.d_y)
    return HVAEParams(W1, b1, W2, np.zeros(d2), level.variances, U1, c1, U2, np.zeros(d1))


def hvae_optimum(
    moments: JointMoments,
    latent_dims: tuple[int, int],
    beta1: float,
    beta2: float,
    z1_variance: float,
    decoder_variance: float,
    prior_variance: float = 1.0,
    z2_variance: float | None = None,
) -> HVAEOptimum:
    """Closed-form minimum of the two-level linear HVAE's negative beta-ELBO (``z2_variance=None``: learned).

    With ``theta_i`` the singular values of ``C^T A^{-1/2}``, ``sigma1^2 = z1_variance``,
    ``eta^2 = decoder_variance``, each ``z1`` mode's variance is ``a_i = max(sigma1^2, r_i)`` where ``r_i`` is
    the stationary point of its one-dimensional objective:

    * learned ``Sigma2``, ``i <= d2``: ``r_i = theta_i^2 sigma1^2 / (beta2 eta^2)`` if
      ``beta1 theta_i^2 sigma1^2 >= beta2^2 eta^4``, else ``theta_i sigma1 / sqrt(beta1)`` (T17.4);
    * fixed ``Sigma2 = sigma2^2 I``, ``c = eta / eta_enc``, ``i <= d2``:
      ``r_i = (theta_i^2 sigma1^2 / (c sigma2 sqrt(beta1 beta2)))^(2/3)`` if
      ``theta_i^2 >= beta2^2 c^4 sigma2^4 / (beta1 sigma1^2)``, else ``theta_i sigma1 / sqrt(beta1)`` (T17.5);
    * ``d2 < i <= d1``: ``r_i = theta_i sigma1 / sqrt(beta1)``.

    The value is ``(d_y/2) log(2 pi eta^2) + beta1 (d1/2) (log(eta^2 / sigma1^2) - 1)
    + [tr B - sum_i theta_i^2 (1 - sigma1^2 / a_i) + beta1 sum_i rec_i] / (2 eta^2) + beta2 sum_j KL_j``, with
    ``rec_i`` the ``z2`` level's reconstruction error of ``z1`` mode ``i`` (``a_i`` for ``i > d2``).

    >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([3.0, 0.5]), np.diag([3.0, 2.0]))
    >>> optimum = hvae_optimum(moments, (2, 1), beta1=1.0, beta2=1.0, z1_variance=1.0, decoder_variance=0.5)
    >>> optimum.spectrum, optimum.active_z1, optimum.active_z2, round(optimum.value, 6)
    (array([2.25, 0.25]), array([ True, False]), array([ True]), 5.300195)

    References: docs/theory.md (T17.4, T17.5, T17.6); Dang et al. 2024, Section 4.
    """
    beta1, beta2 = check_positive("beta1", beta1), check_positive("beta2", beta2)
    s1 = check_positive("z1_variance", z1_variance)
    eta2 = check_positive("decoder_variance", decoder_variance)
    prior = check_positive("prior_variance", prior_variance)
    if z2_variance is not None:
        z2_variance = check_positive("z2_variance", z2_variance)
    if np.ndim(latent_dims) != 1 or len(latent_dims) != 2:
        raise ValueError(f"`latent_dims` must be two numbers (d1, d2), got {latent_dims!r}")
    d1 = check_count("d1", latent_dims[0], moments.d_x, "d_x, the dimension of x")
    d2 = check_count("d2", latent_dims[1], d1, "d1: z2 has no more dimensions than z1")

    variances = cross_spectrum(moments).variances
    theta2 = np.zeros(d1)
    theta2[: min(d1, len(variances))] = variances[:d1]
    z1 = _z1_level(theta2, d2, beta1, beta2, s1, eta2, prior, z2_variance)
    a = z1.variances
    if z2_variance is None:
        level = _learned_z2(a[:d2], beta1, beta2, eta2, prior)
    else:
        level = _fixed_z2(a[:d2], beta1, beta2, eta2, prior, z2_variance)
    reconstruction_z1 = np.concatenate([level.reconstruction, a[d2:]])
    fit_y = float(np.trace(moments.yy)) - float(np.sum(theta2 * (1.0 - s1 / a)))
    value = (
        0.5 * moments.d_y * (LOG_2PI + np.log(eta2))
        + 0.5 * beta1 * d1 * (np.log(eta2 / s1) - 1.0)
        + (fit_y + beta1 * float(np.sum(reconstruction_z1))) / (2.0 * eta2)
        + beta2 * float(np.sum(level.kl_per_mode))
    )
    return HVAEOptimum(
        spectrum=theta2,
        z1_variances=a,
        active_z1=a > s1,
        z1_thresholds=z1.z1_thresholds,
        active_z2=level.active,
        z2_threshold=z1.z2_threshold,
        z2_models_z1_noise=z1.noise_modelled,
        z2_kl_per_mode=level.kl_per_mode,
        value=float(value),
        params=_parameters(moments, theta2, a, s1, level),
    )
