"""Exact posterior-collapse metrics of the linear VAE: rate, distortion, mutual information, active units.

docs/theory.md (T11).  For a linear VAE ``(W, mu, V, log D)`` (:class:`linear_vae.theory.elbo.LinearVAEParams`) every
metric is an exact function of the data's mean and 1/N covariance ``S`` (no sampling); at the
beta-ELBO optimum (:func:`linear_vae.theory.optimum.beta_elbo_optimum`) each has a closed form in the
eigenvalues of ``S``, ``tr S`` and the water level ``t = beta sigma2`` alone.  ``cov`` is the (d, d)
matrix ``S`` or, in the eigenbasis, the (d,) vector of its diagonal (as in
:class:`linear_vae.theory.elbo.DataStats`).  Rates and informations are in nats per datapoint; the
distortion is a squared error in data units.  The exact values are numpy, float64.

This module is the one entry point for metrics: it also re-exports the sampling estimators of
:mod:`linear_vae.theory.estimators` (docs/theory.md (T12)), which measure any Gaussian VAE, deep ones included,
from its encoder and decoder: :func:`kl_rate_mc`, :func:`distortion_mc`, :func:`active_unit_variances`,
:func:`active_by_encoder_mean` (a count from encoder means), :func:`mutual_information_minibatch`,
:func:`iwae_bound` and the adapter :func:`linear_model`.  The exact count from unit variances is
:func:`active_by_unit_variance`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.data.moments import LOG_2PI, spectrum_totals
from linear_vae.theory.elbo import LinearVAEParams, diagonal_gaussian_kl
from linear_vae.theory.estimators import (
    AU_THRESHOLD,
    active_by_encoder_mean,
    active_unit_variances,
    distortion_mc,
    iwae_bound,
    kl_rate_mc,
    linear_model,
    mutual_information_minibatch,
)

__all__ = [
    "AU_THRESHOLD",
    "METRIC_KEYS",
    "active_by_unit_variance",
    "active_unit_variances",
    "active_by_encoder_mean",
    "aggregate_posterior_gaussian",
    "au_variances",
    "collapse_metrics",
    "distortion",
    "distortion_mc",
    "frontier_distortion",
    "frontier_water_level",
    "iwae_bound",
    "kl_rate_mc",
    "linear_model",
    "marginal_kl_gaussian",
    "mutual_information_gaussian",
    "mutual_information_minibatch",
    "optimum_collapse_metrics",
    "rate",
    "rate_distortion_frontier",
]

METRIC_KEYS = (
    "rate",
    "distortion",
    "mutual_information_gaussian",
    "marginal_kl_gaussian",
    "active_units",
    "au_variances",
)


def _unpack(params: LinearVAEParams, mean, cov):
    W, mu, V, log_D = (np.asarray(p, dtype=np.float64) for p in params)
    mean, cov = np.asarray(mean, dtype=np.float64), np.asarray(cov, dtype=np.float64)
    return W, mu, V, log_D, mean, cov


def _v_s(V, cov):
    """``P = V S`` (k, d) for ``S`` as a matrix or as its diagonal."""
    return V * cov if cov.ndim == 1 else V @ cov


def _trace(cov) -> float:
    return float(np.sum(cov) if cov.ndim == 1 else np.trace(cov))


def rate(params: LinearVAEParams, mean, cov) -> float:
    """The rate ``R = E_x KL(q(z|x) || p(z))`` in nats per datapoint, exact from the moments.

    ``R = 1/2 [tr D + tr(V S V^T) + ||V (mean - mu)||^2 - k - sum_i log D_i]``; the offset term
    vanishes when the bias is the sample mean.  It is the (unweighted) KL term of the beta-ELBO.

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> S = np.diag([4.0, 2.0, 1.0, 0.5])  # the optimum at beta = 1, sigma2 = 1.5: two units active
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> round(rate(params, np.zeros(4), S), 4)  # sum of 1/2 log(lambda_i / sigma2) over the active
    0.6343

    References: docs/theory.md (T11.1); Alemi et al. 2018; Lucas et al. 2019, Appendix C.
    """
    _, mu, V, log_D, mean, cov = _unpack(params, mean, cov)
    V_delta = V @ (mean - mu)
    tr_VSVt = float(np.sum(_v_s(V, cov) * V))
    return 0.5 * float(np.sum(np.exp(log_D)) + tr_VSVt + V_delta @ V_delta - len(log_D) - np.sum(log_D))


def distortion(params: LinearVAEParams, mean, cov) -> float:
    """The distortion ``E_x E_q(z|x) ||x - mu - W z||^2``: a squared error in data units, not nats.

    ``= tr(A S A^T) + ||A (mean - mu)||^2 + sum_i D_i ||w_i||^2`` with ``A = I - W V``, evaluated
    without the d x d ``A``: ``tr(A S A^T) = tr S - 2 tr(W V S) + tr(W^T W V S V^T)``.  The
    reconstruction term of the ELBO is ``-d/2 log(2 pi sigma2) - distortion / (2 sigma2)``.

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> S = np.diag([4.0, 2.0, 1.0, 0.5])  # the optimum at beta = 1, sigma2 = 1.5: two units active
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> distortion(params, np.zeros(4), S)  # min(lambda_i, 1.5) over the 3 latents, plus lambda_4
    4.5

    References: docs/theory.md (T11.1, T3.1); Alemi et al. 2018; Lucas et al. 2019, Appendix C.
    """
    W, mu, V, log_D, mean, cov = _unpack(params, mean, cov)
    P = _v_s(V, cov)  # V S, (k, d)
    WtW = W.T @ W
    trace_ASA = _trace(cov) - 2.0 * np.sum(W * P.T) + np.sum(WtW * (P @ V.T))
    delta = mean - mu
    A_delta = delta - W @ (V @ delta)
    return float(trace_ASA + A_delta @ A_delta + np.sum(np.exp(log_D) * np.diag(WtW)))


def au_variances(params: LinearVAEParams, cov) -> np.ndarray:
    """Activity of each latent unit, ``Var_x E_q[z_i] = (V S V^T)_ii``, (k,).

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> S = np.diag([4.0, 2.0, 1.0, 0.5])  # the optimum at beta = 1, sigma2 = 1.5: two units active
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> au_variances(params, S).round(4)  # 1 - sigma2 / lambda_i where active
    array([0.625, 0.25 , 0.   ])

    References: docs/theory.md (T11.2); Burda et al. 2016.
    """
    _, _, V, _, _, cov = _unpack(params, np.zeros(0), cov)
    return np.sum(_v_s(V, cov) * V, axis=1)


def active_by_unit_variance(variances, tau: float = AU_THRESHOLD) -> int:
    """``#{i : Var_x E_q[z_i] > tau}``, the active-unit count (``tau = 0.01`` by default) from the (k,)
    unit variances (exact ones from :func:`au_variances`, or :func:`active_unit_variances` of encoder
    means; :func:`active_by_encoder_mean` counts from the encoder means directly).

    >>> active_by_unit_variance([0.625, 0.25, 0.0])
    2

    References: docs/theory.md (T11.2); Burda et al. 2016.
    """
    return int(np.sum(np.asarray(variances) > tau))


def aggregate_posterior_gaussian(params: LinearVAEParams, mean, cov) -> tuple[np.ndarray, np.ndarray]:
    """``q(z) = N(V (mean - mu), V S V^T + diag D)`` for Gaussian data ``x ~ N(mean, S)``: ``(m, Sigma)``.

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> S = np.diag([4.0, 2.0, 1.0, 0.5])  # the optimum at beta = 1, sigma2 = 1.5: two units active
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> m, Sigma = aggregate_posterior_gaussian(params, np.zeros(4), S)
    >>> m, Sigma.round(4)  # the optimum's aggregate posterior is the prior
    (array([0., 0., 0.]), array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]]))

    References: docs/theory.md (T11.3); Hoffman & Johnson 2016.
    """
    _, mu, V, log_D, mean, cov = _unpack(params, mean, cov)
    return V @ (mean - mu), _v_s(V, cov) @ V.T + np.diag(np.exp(log_D))


def _log_det_spd(M) -> float:
    L = np.linalg.cholesky(M)
    return 2.0 * float(np.sum(np.log(np.diag(L))))


def mutual_information_gaussian(params: LinearVAEParams, cov) -> float:
    """``I(x; z) = 1/2 log det(V S V^T + D) - 1/2 sum_i log D_i`` for Gaussian data ``x ~ N(mean, S)``.

    ``H(z) - H(z|x)`` of the jointly Gaussian ``(x, z)``, in nats.  For a finite sample ``q(z)`` is a
    mixture: the value is that of Gaussian data with the same moments (an upper bound for any data
    with covariance ``S``), and the sample's own information is at most ``log N``.

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> S = np.diag([4.0, 2.0, 1.0, 0.5])  # the optimum at beta = 1, sigma2 = 1.5: two units active
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> round(mutual_information_gaussian(params, S), 4)  # = the rate: q(z) = p(z) at the optimum
    0.6343

    References: docs/theory.md (T11.3); Hoffman & Johnson 2016.
    """
    _, Sigma = aggregate_posterior_gaussian(params, np.zeros(np.shape(params.mu)), cov)
    return 0.5 * (_log_det_spd(Sigma) - float(np.sum(np.asarray(params.log_D, dtype=np.float64))))


def marginal_kl_gaussian(params: LinearVAEParams, mean, cov) -> float:
    """``KL(q(z) || p(z))`` with ``q(z) = N(m, Sigma)`` of :func:`aggregate_posterior_gaussian`:
    ``1/2 [tr Sigma + ||m||^2 - k - log det Sigma]``.  ``rate = mutual_information_gaussian + marginal_kl_gaussian``
    exactly (ELBO surgery).

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> S = np.diag([4.0, 2.0, 1.0, 0.5])  # the optimum at beta = 1, sigma2 = 1.5: two units active
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> marginal_kl_gaussian(params, np.zeros(4), S)
    0.0

    References: docs/theory.md (T11.3); Hoffman & Johnson 2016.
    """
    m, Sigma = aggregate_posterior_gaussian(params, mean, cov)
    return 0.5 * float(np.trace(Sigma) + m @ m - len(m) - _log_det_spd(Sigma))


def collapse_metrics(params: LinearVAEParams, mean, cov, tau: float = AU_THRESHOLD) -> dict:
    """Every metric of (T11) for the parameters ``params`` on data with moments ``(mean, S)``, as a
    JSON-ready dict with the keys of :data:`METRIC_KEYS` (floats, an int, a list).

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> S = np.diag([4.0, 2.0, 1.0, 0.5])  # the optimum at beta = 1, sigma2 = 1.5: two units active
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> metrics = collapse_metrics(params, np.zeros(4), S)
    >>> metrics["active_units"], metrics["distortion"], round(metrics["rate"], 4)
    (2, 4.5, 0.6343)

    References: docs/theory.md (T11.1, T11.2, T11.3); Lucas et al. 2019, Section 4.2.
    """
    variances = au_variances(params, cov)
    return {
        "rate": rate(params, mean, cov),
        "distortion": distortion(params, mean, cov),
        "mutual_information_gaussian": mutual_information_gaussian(params, cov),
        "marginal_kl_gaussian": marginal_kl_gaussian(params, mean, cov),
        "active_units": active_by_unit_variance(variances, tau),
        "au_variances": variances.tolist(),
    }


def optimum_collapse_metrics(
    eigenvalues, latent_dim: int, water_level: float, *, trace=None, dim=None, tau: float = AU_THRESHOLD
) -> dict:
    """The metrics of (T11) at the beta-ELBO optimum with water level ``t = beta sigma2``, from the
    eigenvalues alone (the full spectrum, or its top ``m >= k`` with ``trace`` and ``dim``):

    ``distortion = sum_{i<=k} min(lambda_i, t) + sum_{i>k} lambda_i`` (the tail as ``tr S - sum_{i<=k} lambda_i``),
    ``R = I = sum_{i<=k} 1/2 log(lambda_i / t)_+``, ``marginal KL = 0`` (``V S V^T + D = I``),
    AU variances ``(1 - t / lambda_i)_+`` and AU count ``#{i <= k : lambda_i > t / (1 - tau)}``.

    Same keys as :func:`collapse_metrics`.

    >>> metrics = optimum_collapse_metrics([4.0, 2.0, 1.0, 0.5], latent_dim=3, water_level=1.5)
    >>> metrics["active_units"], metrics["distortion"], round(metrics["rate"], 4), metrics["au_variances"]
    (2, 4.5, 0.6343, [0.625, 0.25, 0.0])

    References: docs/theory.md (T11.4); Lucas et al. 2019, Section 4.2 and Appendix C.
    """
    eigenvalues, trace, _ = spectrum_totals(eigenvalues, trace, dim, latent_dim)
    t = float(water_level)
    top = eigenvalues[:latent_dim]
    active = top > t
    safe = np.where(active, top, 1.0)
    rate_value = float(np.sum(np.where(active, 0.5 * np.log(safe / t), 0.0)))
    variances = np.where(active, 1.0 - t / safe, 0.0)
    return {
        "rate": rate_value,
        "distortion": float(np.sum(np.minimum(top, t)) + (trace - np.sum(top))),
        "mutual_information_gaussian": rate_value,
        "marginal_kl_gaussian": 0.0,
        "active_units": int(np.sum(top > t / (1.0 - tau))),
        "au_variances": variances.tolist(),
    }


def rate_distortion_frontier(eigenvalues, latent_dim: int, water_levels, *, trace=None, dim=None):
    """The linear VAE's rate-distortion frontier with ``k`` latents at water levels ``theta``: arrays ``(R, D)``.

    Reverse water-filling on the spectrum, cut at ``k`` components (the optimum of (T11.4) for every
    ``theta = beta sigma2``): ``R(theta) = sum_{i<=k} 1/2 log(lambda_i / theta)_+`` (nats per datapoint) and
    ``D(theta) = sum_{i<=k} min(lambda_i, theta) + sum_{i>k} lambda_i`` (squared data units).  The optimum
    minimises ``D + 2 theta R``, so the frontier is convex with slope ``dD/dR = -2 theta``, no linear VAE
    with ``k`` latents lies below it, and a model whose beta-ELBO is ``gap`` nats below the optimum lies
    at most ``2 sigma2 gap`` above it.  Its kinks (collapse thresholds) are at ``theta = lambda_i``,
    ``i <= k``.  For Gaussian data it is the Gaussian rate-distortion function restricted to ``k``
    components; at ``k >= rank S`` the unrestricted one.

    >>> rates, distortions = rate_distortion_frontier([4.0, 2.0, 1.0, 0.5], 3, water_levels=[0.5, 1.5, 5.0])
    >>> rates.round(4), distortions
    (array([2.0794, 0.6343, 0.    ]), array([2. , 4.5, 7.5]))

    References: docs/theory.md (T11.5, T11.4); Lucas et al. 2019, Section 4.2; Alemi et al. 2018.
    """
    eigenvalues, trace, _ = spectrum_totals(eigenvalues, trace, dim, latent_dim)
    top = eigenvalues[:latent_dim][None, :]
    theta = np.atleast_1d(np.asarray(water_levels, dtype=np.float64))[:, None]
    if not np.all(theta > 0):
        raise ValueError("`water_levels` must be positive (theta = beta sigma2 > 0)")
    active = top > theta
    rate_values = np.sum(np.where(active, 0.5 * np.log(np.where(active, top, 1.0) / theta), 0.0), axis=1)
    distortion_values = np.sum(np.minimum(top, theta), axis=1) + (trace - np.sum(top))
    return rate_values, distortion_values


def frontier_water_level(eigenvalues, latent_dim: int, rates, *, trace=None, dim=None) -> np.ndarray:
    """The water level ``theta`` at which the frontier of :func:`rate_distortion_frontier` has rate ``R``.

    On the segment with ``m`` active units, ``R = 1/2 sum_{i<=m} log lambda_i - m/2 log theta``, so
    ``theta_m = exp((sum_{i<=m} log lambda_i - 2R) / m)``; the answer is the ``theta_m`` that lies in
    ``[lambda_{m+1}, lambda_m)`` (``lambda_{k+1} = 0``).  ``R = 0`` gives ``lambda_1`` (the start of
    total collapse).  Rates above the frontier's supremum (``k`` units at ``theta -> 0``) have no answer.

    >>> frontier_water_level([4.0, 2.0, 1.0, 0.5], 3, rates=[0.0, 0.5 * np.log(4.0 * 2.0 / 1.5**2)])
    array([4. , 1.5])

    References: docs/theory.md (T11.5); Alemi et al. 2018.
    """
    eigenvalues, _, _ = spectrum_totals(eigenvalues, trace, dim, latent_dim)
    top = eigenvalues[:latent_dim]
    top = top[top > 0]
    rates = np.atleast_1d(np.asarray(rates, dtype=np.float64))
    if np.any(rates < 0):
        raise ValueError("`rates` must be non-negative (nats per datapoint)")
    m = np.arange(1, len(top) + 1)
    theta_m = np.exp((np.cumsum(np.log(top))[None, :] - 2.0 * rates[:, None]) / m[None, :])  # (rates, m)
    lower = np.append(top[1:], 0.0)[None, :]
    inside = (theta_m >= lower) & (theta_m < top[None, :])
    found = inside.any(axis=1)
    return np.where(rates == 0, top[0], np.where(found, theta_m[np.arange(len(rates)), inside.argmax(axis=1)], np.nan))


def frontier_distortion(eigenvalues, latent_dim: int, rates, *, trace=None, dim=None) -> np.ndarray:
    """``D_k(R)``: the least distortion (squared data units) a linear VAE with ``k`` latents reaches at
    rate ``R`` (nats per datapoint), on the frontier of :func:`rate_distortion_frontier`.  A model's
    ``D - D_k(R)`` is its height above the frontier (``<= 2 sigma2 gap``; a deep model's may be < 0).

    >>> frontier_distortion([4.0, 2.0, 1.0, 0.5], 3, rates=[0.5 * np.log(4.0 * 2.0 / 1.5**2)])
    array([4.5])

    References: docs/theory.md (T11.5); Alemi et al. 2018.
    """
    theta = frontier_water_level(eigenvalues, latent_dim, rates, trace=trace, dim=dim)
    return rate_distortion_frontier(eigenvalues, latent_dim, theta, trace=trace, dim=dim)[1]


class HeldoutMeasures(NamedTuple):
    """What :func:`heldout_measures` reports of one model on held-out data (nats per datapoint, except
    the distortion, a squared error in data units).  Leading axis [configuration,] when batched."""

    kl: jax.Array  # (N, k) analytic KL(q(z|x_n) || p(z)) per row and latent dimension
    au_variances: jax.Array  # (k,) Var_n E_q[z_i | x_n] (1/N), the active-unit statistic
    rate: jax.Array  # the rows' average of the analytic total KL (the total KL)
    distortion: jax.Array  # Monte-Carlo E_n E_q ||x_n - decode(z)||^2
    elbo: jax.Array  # -d/2 log(2 pi sigma2) - distortion / (2 sigma2) - rate: the ELBO at beta = 1
    iwae: jax.Array  # the rows' average of the importance-weighted bound
    mi_batch: jax.Array  # minibatch MI, log q(z) over the whole batch including z's own row (low)
    mi_leave_one_out: jax.Array  # minibatch MI, log q(z) over the other rows only (high)


def heldout_measures(key, X, model, iwae_samples: int, distortion_samples: int) -> HeldoutMeasures:
    """Every collapse measure of one model ``(encode, decode, sigma2)`` on the rows of ``X``, by the
    estimators of this module (so the deep and the linear VAE are measured by the same
    code): the analytic KL per row and dimension, active-unit variances, the rate (the analytic KL
    averaged over the rows: exact for these rows, no sampling), the Monte-Carlo distortion with
    ``distortion_samples`` draws per row, the ELBO from them through
    ``ELBO = -d/2 log(2 pi sigma2) - D / (2 sigma2) - R``, the IWAE bound with ``iwae_samples``, and
    both minibatch forms of the mutual information with all rows of ``X`` as the batch (so the
    whole-batch form is at most ``log N``).

    For the linear VAE the encoder is the exact posterior, so the IWAE bound is the exact
    log-likelihood of the rows whatever the number of samples:

    >>> from linear_vae.data.moments import compute_moments
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> from linear_vae.theory.ppca import log_marginal_likelihood
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> X = np.random.default_rng(0).normal(size=(200, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5])
    >>> measures = heldout_measures(jax.random.key(0), X, linear_model(params, 1.5), iwae_samples=16, distortion_samples=2)
    >>> moments = compute_moments(X)
    >>> exact = log_marginal_likelihood(params.W, 1.5, moments.cov, mean_offset=moments.mean - params.mu)
    >>> measures.kl.shape, bool(np.isclose(measures.iwae, exact, rtol=1e-12, atol=0))
    ((200, 3), True)


    References: docs/theory.md (T11.1, T12); Burda et al. 2016; Alemi et al. 2018; Hoffman & Johnson 2016.
    """
    encode_fn, decode_fn, sigma2 = model
    key_distortion, key_iwae, key_mi = jax.random.split(key, 3)
    mean, log_var = encode_fn(X)
    kl = diagonal_gaussian_kl(mean, log_var)
    rate = jnp.mean(jnp.sum(kl, axis=-1))
    distortion = distortion_mc(key_distortion, X, mean, log_var, decode_fn, distortion_samples)
    d = X.shape[-1]
    elbo = -0.5 * d * (LOG_2PI + jnp.log(sigma2)) - distortion / (2.0 * sigma2) - rate
    return HeldoutMeasures(
        kl,
        active_unit_variances(mean),
        rate,
        distortion,
        elbo,
        jnp.mean(iwae_bound(key_iwae, X, encode_fn, decode_fn, sigma2, iwae_samples)),
        mutual_information_minibatch(key_mi, mean, log_var, include_self=True),
        mutual_information_minibatch(key_mi, mean, log_var, include_self=False),
    )
