"""Closed-form optima of the scaled-prior linear VAE (Wang & Ziyin) and of the linear conditional VAE.

Both models have a Gaussian latent with prior ``N(0, eta_enc^2 I)``, a learned data-independent
diagonal encoder variance, and a decoder with fixed noise ``eta_dec^2`` (``decoder_variance``; the
``sigma2`` of the plain linear VAE).  After the reductions of docs/theory.md (T17.2, T17.3) each is a
plain linear VAE on a spectrum of *variances* ``lambda_1 >= lambda_2 >= ...``, with water level
``t = beta eta_dec^2``:

* the scaled-prior model (y any target of x; y = x is the VAE): the squared singular values of
  ``C^T A^{-1/2}`` (:func:`scaled_prior_optimum`);
* the CVAE: the eigenvalues of the residual second moment ``S = B - C^T A^+ C`` (:func:`cvae_optimum`).

Mode ``i`` is active iff ``lambda_i > t`` (strictly, as in (T4.2)), whatever the prior variance is:
``eta_enc`` only rescales the latent (docs/theory.md (T17.2)).  Values are the minimum of the exact
negative beta-ELBO per datapoint, in nats, constants included.

References: docs/theory.md (T17); Wang & Ziyin 2022 (arXiv:2205.04009); Dang et al. 2024 (arXiv:2306.05023), Sections 3 and 4.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from linear_vae.core.validation import check_count, check_positive
from linear_vae.data.joint_moments import (
    JointMoments,
    cross_spectrum,
    inverse_sqrt_xx,
    regression_map,
    residual_moment,
)
from linear_vae.data.moments import LOG_2PI, eigen_decomposition


def mode_gain(ratio) -> np.ndarray:
    """``g(r) = (r - 1 - log r) 1{r > 1}``: how much an active mode with ``lambda_i / t = r`` lowers
    ``2 eta_dec^2 L / t``, the negative beta-ELBO in units of the water level.

    >>> mode_gain([0.5, 1.0, np.e]).round(6)  # collapsed modes gain nothing
    array([0.      , 0.      , 0.718282])

    References: docs/theory.md (T17.2).
    """
    r = np.asarray(ratio, dtype=np.float64)
    safe = np.where(r > 1, r, 1.0)
    return np.where(r > 1, safe - 1.0 - np.log(safe), 0.0)


class GaussianModes(NamedTuple):
    """The optimum of a linear VAE with prior ``N(0, prior_variance I)`` mode by mode, in variance units.

    Attributes
    ----------
    spectrum : (k,) ``lambda_i`` of the modes the ``k`` latents take (descending; 0 beyond the data's rank).
    threshold : ``t = beta eta_dec^2``: mode ``i`` is active iff ``lambda_i > t``.
    active : (k,) bool.
    decoder_gains : (k,) singular values of the decoder, ``sqrt((lambda_i - t)_+) / eta_enc``.
    encoder_gains : (k,) singular values of the encoder mean map on whitened input,
        ``eta_enc sqrt((lambda_i - t)_+ / lambda_i)``.
    encoder_variances : (k,) ``s_i^2 = eta_enc^2 min(1, t / lambda_i)``.
    kl_per_mode : (k,) ``1/2 log(lambda_i / t)`` if active, else 0.
    """

    spectrum: np.ndarray
    threshold: float
    active: np.ndarray
    decoder_gains: np.ndarray
    encoder_gains: np.ndarray
    encoder_variances: np.ndarray
    kl_per_mode: np.ndarray

    @property
    def active_dims(self) -> int:
        """The number of active modes, ``#{i : lambda_i > t}``.

        >>> gaussian_modes([4.0, 1.0, 0.25], beta=1.0, decoder_variance=0.5, prior_variance=1.0).active_dims
        2
        """
        return int(np.sum(self.active))


def gaussian_modes(spectrum, beta: float, decoder_variance: float, prior_variance: float) -> GaussianModes:
    """Per-mode optimum of the linear VAE on a spectrum of variances, with prior ``N(0, eta_enc^2 I)``.

    With ``t = beta eta_dec^2``: active iff ``lambda_i > t``; decoder gain ``sqrt((lambda_i - t)_+) / eta_enc``,
    whitened encoder gain ``eta_enc sqrt((lambda_i - t)_+ / lambda_i)``, ``s_i^2 = eta_enc^2 min(1, t / lambda_i)``
    and KL ``1/2 log(lambda_i / t)`` on active modes.  At ``eta_enc = 1`` these are (T4.1)'s column norms,
    encoder and ``D_i``.

    >>> modes = gaussian_modes([4.0, 1.0, 0.25], beta=1.0, decoder_variance=0.5, prior_variance=1.0)
    >>> modes.threshold, modes.active, modes.kl_per_mode.round(6)
    (0.5, array([ True,  True, False]), array([1.039721, 0.346574, 0.      ]))

    References: docs/theory.md (T4.1, T17.2); Wang & Ziyin 2022; Dang et al. 2024, Section 3.
    """
    lam = np.asarray(spectrum, dtype=np.float64)
    t = beta * decoder_variance
    active = lam / decoder_variance > beta  # the same float expression as optimum.beta_elbo_optimum
    excess = np.where(active, lam - t, 0.0)
    safe = np.where(active, lam, 1.0)
    return GaussianModes(
        spectrum=lam,
        threshold=float(t),
        active=active,
        decoder_gains=np.sqrt(excess / prior_variance),
        encoder_gains=np.sqrt(prior_variance * excess / safe),
        encoder_variances=prior_variance * np.where(active, t / safe, 1.0),
        kl_per_mode=np.where(active, 0.5 * np.log(safe / t), 0.0),
    )


def gaussian_minimum(total: float, modes: GaussianModes, decoder_variance: float, d_y: int) -> float:
    """``(d_y/2) log(2 pi eta_dec^2) + [total - t sum_i g(lambda_i / t)] / (2 eta_dec^2)``: the minimum of the
    negative beta-ELBO, where ``total`` is ``E||y||^2`` left to explain (``tr B``, or ``tr S`` for the CVAE).

    >>> modes = gaussian_modes([4.0, 1.0, 0.25], beta=1.0, decoder_variance=0.5, prior_variance=1.0)
    >>> round(gaussian_minimum(5.25, modes, decoder_variance=0.5, d_y=3), 6)
    4.353389

    References: docs/theory.md (T17.2, T17.3).
    """
    t = modes.threshold
    gain = t * float(np.sum(mode_gain(modes.spectrum / t)))
    return float(0.5 * d_y * (LOG_2PI + np.log(decoder_variance)) + (total - gain) / (2.0 * decoder_variance))


def _check_scalars(beta: float, decoder_variance: float, prior_variance: float) -> tuple[float, float, float]:
    return (
        check_positive("beta", beta),
        check_positive("decoder_variance", decoder_variance),
        check_positive("prior_variance", prior_variance),
    )


def _padded(values: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` entries of ``values`` along the last axis, zeros past its end."""
    out = np.zeros(values.shape[:-1] + (count,))
    m = min(count, values.shape[-1])
    out[..., :m] = values[..., :m]
    return out


_ACTIVE_DIMS = property(
    lambda optimum: optimum.modes.active_dims,
    doc="The number of active modes, ``modes.active_dims`` (:attr:`GaussianModes.active_dims`).",
)  # shared by ScaledPriorOptimum and CVAEOptimum


class ScaledPriorParams(NamedTuple):
    """Parameters of the scaled-prior model: ``q(z|x) = N(encoder x + encoder_bias, diag(encoder_variances))``,
    ``p(y|z) = N(decoder z + decoder_bias, eta_dec^2 I)``."""

    encoder: np.ndarray
    encoder_bias: np.ndarray
    encoder_variances: np.ndarray
    decoder: np.ndarray
    decoder_bias: np.ndarray


class ScaledPriorOptimum(NamedTuple):
    """The global minimum of the scaled-prior model's negative beta-ELBO (Wang & Ziyin's linear VAE).

    Attributes
    ----------
    modes : the per-mode optimum (:class:`GaussianModes`); ``modes.spectrum`` are ``zeta_i^2``, the
        squared singular values of ``C^T A^{-1/2}`` (variance units), ``modes.threshold`` is ``beta eta_dec^2``.
    value : the minimum negative beta-ELBO per datapoint (nats, constants included).
    moments : the moments it was computed from (for :meth:`parameters`).
    """

    modes: GaussianModes
    value: float
    moments: JointMoments

    active_dims = _ACTIVE_DIMS

    def parameters(self) -> ScaledPriorParams:
        """``decoder = P_k diag(decoder_gains)``, ``encoder = diag(encoder_gains) R_k^T A^{-1/2}``, with
        ``C^T A^{-1/2} = P diag(zeta) R^T``; the biases centre both sides (zero without biases).

        >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
        >>> params = scaled_prior_optimum(moments, latent_dim=2, beta=1.0, decoder_variance=0.5).parameters()
        >>> params.decoder.round(6), params.encoder_variances
        (array([[0.707107, 0.      ],
               [0.      , 0.      ]]), array([0.5, 1. ]))

        References: docs/theory.md (T17.2); Wang & Ziyin 2022.
        """
        m, modes = self.moments, self.modes
        k = len(modes.spectrum)
        spectrum = cross_spectrum(m)
        P, R = _padded(spectrum.left, k), _padded(spectrum.right, k)
        encoder = (R * modes.encoder_gains).T @ inverse_sqrt_xx(m)
        decoder = P * modes.decoder_gains
        if m.centred:
            return ScaledPriorParams(encoder, -encoder @ m.mean_x, modes.encoder_variances, decoder, m.mean_y.copy())
        return ScaledPriorParams(encoder, np.zeros(k), modes.encoder_variances, decoder, np.zeros(m.d_y))


def scaled_prior_optimum(
    moments: JointMoments, latent_dim: int, beta: float, decoder_variance: float, prior_variance: float = 1.0
) -> ScaledPriorOptimum:
    """Closed-form minimum of the negative beta-ELBO of the linear VAE with prior ``N(0, eta_enc^2 I)``,
    encoder ``q(z|x) = N(W x, diag(s^2))`` (``s`` learned), decoder ``p(y|z) = N(U z, eta_dec^2 I)``.

    ``zeta_i^2`` are the squared singular values of ``C^T A^{-1/2}``; mode ``i`` collapses iff
    ``zeta_i^2 <= beta eta_dec^2``, and
    ``min L = (d_y/2) log(2 pi eta_dec^2) + [tr B - t sum_{i<=k} g(zeta_i^2 / t)] / (2 eta_dec^2)``
    with ``t = beta eta_dec^2`` and ``g`` of :func:`mode_gain`.  Neither depends on ``eta_enc``.  With
    ``y = x`` and centred moments, ``zeta_i^2 = lambda_i`` and this is (T4.1).

    >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
    >>> optimum = scaled_prior_optimum(moments, latent_dim=2, beta=1.0, decoder_variance=0.5)
    >>> optimum.modes.spectrum, optimum.active_dims, round(optimum.value, 6)  # zeta^2 = 0.25 <= t = 0.5 collapses
    (array([1.  , 0.25]), 1, 5.991303)

    References: docs/theory.md (T17.2); Wang & Ziyin 2022; Dang et al. 2024, Section 3.
    """
    beta, decoder_variance, prior_variance = _check_scalars(beta, decoder_variance, prior_variance)
    latent_dim = check_count("latent_dim", latent_dim, min(moments.d_x, moments.d_y), "min(d_x, d_y)")
    spectrum = _padded(cross_spectrum(moments).variances, latent_dim)
    modes = gaussian_modes(spectrum, beta, decoder_variance, prior_variance)
    total = float(np.trace(moments.yy))
    return ScaledPriorOptimum(modes, gaussian_minimum(total, modes, decoder_variance, moments.d_y), moments)


class CVAEParams(NamedTuple):
    """Parameters of the linear CVAE: ``q(z|x,y) = N(W1 x + W2 y + encoder_bias, diag(encoder_variances))``,
    ``p(y|z,x) = N(U1 z + U2 x + decoder_bias, eta_dec^2 I)``."""

    W1: np.ndarray
    W2: np.ndarray
    encoder_bias: np.ndarray
    encoder_variances: np.ndarray
    U1: np.ndarray
    U2: np.ndarray
    decoder_bias: np.ndarray


class CVAEOptimum(NamedTuple):
    """The global minimum of the linear CVAE's negative beta-ELBO.

    Attributes
    ----------
    modes : the per-mode optimum (:class:`GaussianModes`); ``modes.spectrum`` are ``theta_i``, the
        eigenvalues of ``S = B - C^T A^+ C`` (variance units); ``modes.threshold`` is ``beta eta_dec^2``.
    value : the minimum negative beta-ELBO per datapoint (nats, constants included).
    residual_trace : ``tr S``.
    moments : the moments it was computed from (for :meth:`parameters`).
    """

    modes: GaussianModes
    value: float
    residual_trace: float
    moments: JointMoments

    active_dims = _ACTIVE_DIMS

    def parameters(self) -> CVAEParams:
        """``U2 = C^T A^+``, ``U1 = P_k diag(decoder_gains)``, ``W2 = diag(encoder_gains / sqrt(theta)) P_k^T``,
        ``W1 = -W2 C^T A^+`` (the encoder sees only the residual ``y - C^T A^+ x``), with
        ``S = P diag(theta) P^T``; the biases centre both sides (zero without biases).

        >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
        >>> params = cvae_optimum(moments, latent_dim=2, beta=1.0, decoder_variance=0.5).parameters()
        >>> params.U2, params.encoder_variances.round(6)  # U2 = C^T A^+; the encoder sees y - U2 x
        (array([[0.5, 0. ],
               [0. , 0.5]]), array([0.25    , 0.285714]))

        References: docs/theory.md (T17.3); Dang et al. 2024, Section 4.
        """
        m, modes = self.moments, self.modes
        k = len(modes.spectrum)
        P = eigen_decomposition(residual_moment(m)).eigenvectors[:, :k]
        U2 = regression_map(m)
        W2 = (P * (modes.encoder_gains / np.sqrt(np.where(modes.active, modes.spectrum, 1.0)))).T
        W1 = -W2 @ U2
        U1 = P * modes.decoder_gains
        if m.centred:
            encoder_bias = -(W1 @ m.mean_x + W2 @ m.mean_y)
            decoder_bias = m.mean_y - U2 @ m.mean_x
        else:
            encoder_bias, decoder_bias = np.zeros(k), np.zeros(m.d_y)
        return CVAEParams(W1, W2, encoder_bias, modes.encoder_variances, U1, U2, decoder_bias)


def cvae_optimum(
    moments: JointMoments, latent_dim: int, beta: float, decoder_variance: float, prior_variance: float = 1.0
) -> CVAEOptimum:
    """Closed-form minimum of the linear CVAE's negative beta-ELBO: encoder ``q(z|x,y) = N(W1 x + W2 y, diag(s^2))``
    (``s`` learned), decoder ``p(y|z,x) = N(U1 z + U2 x, eta_dec^2 I)``, prior ``N(0, eta_enc^2 I)``.

    ``theta_i`` are the eigenvalues of ``S = B - C^T A^+ C``; mode ``i`` collapses iff ``theta_i <= beta eta_dec^2``
    whatever ``eta_enc`` is; on active modes ``s_i = sqrt(beta) eta_enc eta_dec / sqrt(theta_i)`` and the KL is
    ``1/2 log(theta_i / (beta eta_dec^2))``, and
    ``min L = (d_y/2) log(2 pi eta_dec^2) + [tr S - t sum_{i<=k} g(theta_i / t)] / (2 eta_dec^2)``,
    ``t = beta eta_dec^2``.

    >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
    >>> optimum = cvae_optimum(moments, latent_dim=2, beta=1.0, decoder_variance=0.5)
    >>> optimum.modes.spectrum, optimum.residual_trace, optimum.active_dims, round(optimum.value, 6)
    (array([2.  , 1.75]), 3.75, 2, 3.464259)

    References: docs/theory.md (T17.3, T17.6); Dang et al. 2024, Section 4.
    """
    beta, decoder_variance, prior_variance = _check_scalars(beta, decoder_variance, prior_variance)
    latent_dim = check_count("latent_dim", latent_dim, moments.d_y, "d_y, the dimension of y")
    S = residual_moment(moments)
    spectrum = eigen_decomposition(S).eigenvalues[:latent_dim]
    modes = gaussian_modes(spectrum, beta, decoder_variance, prior_variance)
    residual_trace = float(np.trace(S))
    value = gaussian_minimum(residual_trace, modes, decoder_variance, moments.d_y)
    return CVAEOptimum(modes, value, residual_trace, moments)
