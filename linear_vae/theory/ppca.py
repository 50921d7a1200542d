"""Probabilistic PCA: the log marginal likelihood, its optima and its stationary points.

Tipping & Bishop, *Probabilistic Principal Component Analysis*, JRSS-B 1999 (T&B), and
Lucas et al. 2019, Section 4 / Appendix A; docs/theory.md (T2).  The model is
``x ~ N(mu, C)`` with ``C = W W^T + sigma2 I_d``; every likelihood is the average over the data
in nats per datapoint.
"""

from __future__ import annotations

import itertools
from typing import Iterator, NamedTuple

import jax.numpy as jnp
import numpy as np

from linear_vae.core import spd
from linear_vae.data.moments import LOG_2PI, rank_tolerance, spectrum_totals


def covariance_times(cov, B):
    """``S B`` for a (d, d) ``S``, or ``diag(cov) B`` when ``cov`` is the (d,) diagonal of ``S``
    (data rotated into the eigenbasis of ``S``, where a product costs O(d k) instead of O(d^2 k)).

    >>> covariance_times(jnp.array([1.0, 2.0]), jnp.ones((2, 1)))  # diag(1, 2) @ ones
    Array([[1.],
           [2.]], dtype=float64)

    References: docs/theory.md (T8.2).
    """
    return cov[:, None] * B if cov.ndim == 1 else cov @ B


def covariance_trace(cov):
    """``tr S`` for ``S`` given as a (d, d) matrix or as its (d,) diagonal.

    >>> float(covariance_trace(jnp.array([1.0, 2.0]))), float(covariance_trace(jnp.eye(3)))
    (3.0, 3.0)
    """
    return jnp.sum(cov) if cov.ndim == 1 else jnp.trace(cov)


def log_marginal_likelihood(W, sigma2, cov, mean_offset=None, dim=None):
    """Average log marginal likelihood of the data under ``N(b, W W^T + sigma2 I)``.

    ``MLL = -1/2 [ d log 2pi + log|C| + tr(C^{-1} S) + delta^T C^{-1} delta ]``
    (T&B eq. 4; docs/theory.md (T2)), where ``delta = mean - b`` is ``mean_offset`` (zero when the
    bias is the sample mean).  Computed through the k x k matrix ``M = W^T W + sigma2 I`` by the
    matrix-determinant lemma and the Woodbury identity, never a d x d inverse:

    ``log|C| = (d - k) log sigma2 + log|M|``,
    ``tr(C^{-1} S) = [tr S - tr(M^{-1} W^T S W)] / sigma2``.

    Cost O(d^2 k) for ``S W``.  Differentiable in ``W`` and ``sigma2`` (JAX).

    References: docs/theory.md (T2.1, T8.1); Tipping & Bishop 1999, eq. 4; Lucas et al. 2019, Section 2.

    Parameters
    ----------
    W : (d, k) decoder weights.
    sigma2 : observation-noise variance, > 0.
    cov : (d, d) data covariance ``S`` (1/N normalisation), or its (d,) diagonal when the data
        are expressed in the eigenbasis of ``S``.
    mean_offset : optional (d,) sample mean minus decoder bias.
    dim : the data's ``d`` when ``W`` and ``cov`` hold only the top-``r`` eigen-coordinates of data
        whose other eigenvalues are 0 (see :class:`linear_vae.theory.elbo.DataStats`); default ``W``'s rows.

    Examples
    --------
    At the pPCA MLE of a diagonal covariance (eigenvalues 4, 2, 1, 0.5; k = 2, sigma2* = 0.75) the
    MLL equals its eigenbasis form (:func:`mll_in_eigenbasis`):

    >>> S = np.diag([4.0, 2.0, 1.0, 0.5])
    >>> W = np.sqrt(np.diag([3.25, 1.25, 0.0, 0.0]))[:, :2]
    >>> round(float(log_marginal_likelihood(W, 0.75, S)), 4)
    -6.4278

    """
    W = jnp.asarray(W)
    k = W.shape[1]
    d = W.shape[0] if dim is None else dim
    M = W.T @ W + sigma2 * jnp.eye(k, dtype=W.dtype)
    chol = spd.cholesky(M)
    logdet_C = (d - k) * jnp.log(sigma2) + spd.log_det(chol)
    cov = jnp.asarray(cov)
    SW = covariance_times(cov, W)
    trace_term = covariance_trace(cov) - jnp.trace(spd.solve(chol, W.T @ SW))
    if mean_offset is not None:
        Wt_delta = W.T @ mean_offset
        trace_term = trace_term + mean_offset @ mean_offset - Wt_delta @ spd.solve(chol, Wt_delta)
    return -0.5 * (d * LOG_2PI + logdet_C + trace_term / sigma2)


def mll_in_eigenbasis(eigenvalues, column_variances, sigma2, *, trace=None, dim=None) -> float:
    """MLL when the columns of ``W`` lie along eigenvectors of ``S``.

    With ``w_i = u_i sqrt(l_i)`` for ``i <= k``, ``C`` has eigenvalues ``c_i = l_i + sigma2``
    (``i <= k``) and ``sigma2`` (``i > k``) along the ``u_i``, so
    ``MLL = -1/2 [ d log 2pi + sum_i log c_i + sum_i lambda_i / c_i ]`` (T&B Section 3.2)
    ``= -1/2 [ d log 2pi + sum_{i<=k} (log c_i + lambda_i / c_i) + (d-k) log sigma2
    + (tr S - sum_{i<=k} lambda_i) / sigma2 ]``, the form computed here: ``eigenvalues`` is the full
    spectrum or its top ``m >= k`` with ``trace`` and ``dim`` (:func:`spectrum_totals`).
    At the learned-sigma2 MLE with all ``k`` columns used this is
    ``-1/2 [ d log 2pi + sum_{i<=k} log lambda_i + (d-k) log sigma2 + d ]``.

    >>> round(mll_in_eigenbasis([4.0, 2.0, 1.0, 0.5], column_variances=[3.25, 1.25], sigma2=0.75), 4)
    -6.4278

    References: docs/theory.md (T2.3); Tipping & Bishop 1999, Section 3.2.
    """
    k = len(column_variances)
    eigenvalues, trace, d = spectrum_totals(eigenvalues, trace, dim, k)
    sigma2 = float(sigma2)
    top = eigenvalues[:k]
    c = np.asarray(column_variances, dtype=np.float64) + sigma2
    log_det = np.sum(np.log(c)) + (d - k) * np.log(sigma2)
    fit = np.sum(top / c) + (trace - np.sum(top)) / sigma2
    return float(-0.5 * (d * LOG_2PI + log_det + fit))


class PPCAOptimum(NamedTuple):
    """A global maximum of the pPCA likelihood, ``W = U_k diag(sqrt(column_variances))``.

    ``column_variances[i] = max(lambda_i - sigma2, 0)``: zero means column ``i`` is collapsed.
    """

    sigma2: float
    column_variances: np.ndarray
    mll: float

    def weights(self, eigenvectors: np.ndarray) -> np.ndarray:
        """The decoder ``W`` (d, k) with the principal directions as columns (``R = I``).

        >>> ppca_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=2).weights(np.eye(4)).round(4)
        array([[1.8028, 0.    ],
               [0.    , 1.118 ],
               [0.    , 0.    ],
               [0.    , 0.    ]])
        """
        k = len(self.column_variances)
        return eigenvectors[:, :k] * np.sqrt(self.column_variances)


def mle_sigma2(eigenvalues, latent_dim: int) -> float:
    """Maximum-likelihood noise variance ``sigma2* = mean(lambda_{k+1..d})`` (T&B eq. 8).

    Raises ``ValueError`` when it is 0: the data have rank <= k, so the likelihood is unbounded.

    >>> mle_sigma2([4.0, 2.0, 1.0, 0.5], latent_dim=2)  # (1 + 0.5) / 2
    0.75

    References: docs/theory.md (T2.2); Tipping & Bishop 1999, eq. 8.
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    tail = eigenvalues[latent_dim:]
    sigma2 = float(tail.mean()) if tail.size else 0.0
    if not sigma2 > rank_tolerance(eigenvalues):
        raise ValueError(
            f"the learned sigma2 is 0: the data have rank <= {latent_dim} (the latent dimension), "
            "so the likelihood is unbounded; fix `sigma2` or choose a smaller `latent_dim`"
        )
    return sigma2


def ppca_optimum(eigenvalues, latent_dim: int, sigma2: float | None = None) -> PPCAOptimum:
    """Global maximum of the MLL over ``W`` (and over ``sigma2`` when it is ``None``).

    ``W* = U_k (Lambda_k - sigma2 I)_+^{1/2} R`` (T&B eq. 7, with the columns of eigenvalue
    ``<= sigma2`` set to zero at a fixed ``sigma2``, Lucas et al. Appendix A); with learned
    ``sigma2`` it is :func:`mle_sigma2`.  We return ``R = I``.

    >>> optimum = ppca_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=2)
    >>> optimum.sigma2, optimum.column_variances, round(optimum.mll, 4)
    (0.75, array([3.25, 1.25]), -6.4278)
    >>> ppca_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=2, sigma2=3.0).column_variances  # lambda_2 <= sigma2
    array([1., 0.])

    References: docs/theory.md (T2.2); Tipping & Bishop 1999, eqs. 7-8; Lucas et al. 2019, Appendix A.
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    if sigma2 is None:
        sigma2 = mle_sigma2(eigenvalues, latent_dim)
    column_variances = np.maximum(eigenvalues[:latent_dim] - sigma2, 0.0)
    return PPCAOptimum(float(sigma2), column_variances, mll_in_eigenbasis(eigenvalues, column_variances, sigma2))


def unbiased_covariance_mle(eigenvalues, latent_dim: int, n: int, sigma2: float | None = None) -> float:
    """The closed-form maximum of the MLL with the 1/(N - 1) covariance ``N/(N - 1) S`` in place of ``S``.

    Tipping & Bishop's ``MLL* = -1/2 [d log 2pi + sum_{i<=k} log lambda_i + (d - k) log sigma2* + d]``
    with every eigenvalue scaled by ``c = N / (N - 1)`` (at a fixed ``sigma2``, the fixed-sigma2
    maximum with scaled eigenvalues): the value a notebook reports as the MLE when it takes its
    eigenvalues from ``np.cov`` or scikit-learn.

    >>> round(unbiased_covariance_mle([4.0, 2.0, 1.0, 0.5], latent_dim=2, n=100), 4)  # below -6.4278 (1/N)
    -6.4479

    References: docs/theory.md (T14.1, T14.2); Tipping & Bishop 1999, eqs. 7-8.
    """
    scale = n / (n - 1)
    return ppca_optimum(np.asarray(eigenvalues, dtype=np.float64) * scale, latent_dim, sigma2).mll


def unbiased_covariance_shift(eigenvalues, latent_dim: int, n: int, sigma2: float | None = None) -> float:
    """``MLL*(S) - MLL*(N/(N - 1) S)`` in closed form, ``c = N / (N - 1)``.

    Learned sigma2: ``d/2 log c`` exactly, whatever the data (0.392 nats at d = 784, N = 1,000).
    Fixed sigma2 with ``m`` active dimensions, both covariances having the same active set:
    ``m/2 log c + (c - 1) / (2 sigma2) sum_{i not active} lambda_i``.

    >>> shift = unbiased_covariance_shift([4.0, 2.0, 1.0, 0.5], latent_dim=2, n=100)
    >>> bool(np.isclose(shift, 4 / 2 * np.log(100 / 99)))  # d/2 log c with learned sigma2
    True

    References: docs/theory.md (T14.1, T14.2).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    scale = n / (n - 1)
    if sigma2 is None:
        return 0.5 * len(lam) * np.log(scale)
    active = np.arange(len(lam)) < latent_dim
    active &= lam > sigma2
    if np.any(active != (np.arange(len(lam)) < latent_dim) & (scale * lam > sigma2)):
        raise ValueError(f"`sigma2` = {sigma2:g} lies between an eigenvalue and N/(N-1) times it; move it")
    return float(0.5 * active.sum() * np.log(scale) + (scale - 1) / (2 * sigma2) * lam[~active].sum())


def collapsed_curvature(eigenvalues, sigma2: float) -> np.ndarray:
    """Curvature of the MLL along a zero column moving in direction ``u_i``.

    ``d^2 MLL / d eps^2 = (lambda_i - sigma2) / sigma2^2`` for ``W = eps u_i e_c^T`` with ``u_i``
    unused (docs/theory.md (T2); derivation: along ``u_i`` the MLL is
    ``-1/2 [log(sigma2 + eps^2) + lambda_i / (sigma2 + eps^2)]``).  Positive: the collapsed point is
    a saddle that gradient ascent escapes along ``u_i``; negative: stable in that direction.

    >>> collapsed_curvature([4.0, 2.0, 1.0, 0.5], sigma2=1.5).round(4)  # saddle, saddle, stable, stable
    array([ 1.1111,  0.2222, -0.2222, -0.4444])

    References: docs/theory.md (T2.4); Lucas et al. 2019, Section 4.1.
    """
    return (np.asarray(eigenvalues, dtype=np.float64) - sigma2) / sigma2**2


class StationaryPoint(NamedTuple):
    """A stationary point of the MLL in ``W`` at fixed ``sigma2`` (up to rotation ``R``).

    Attributes
    ----------
    directions : indices (0-based, ascending) of the eigenvectors used as columns; the other
        ``k - len(directions)`` columns are zero.
    is_global_max : whether it is a global maximum (every other stationary point is a saddle:
        the MLL has no other local maxima).
    column_variances : (k,) ``||w_c||^2``: ``lambda_j - sigma2`` for the used directions, then 0.
    collapsed_curvatures : curvature of the MLL for a zero column moving along each unused
        direction (``(lambda_i - sigma2)/sigma2^2``, :func:`collapsed_curvature`); empty if no
        column is zero.
    """

    directions: tuple[int, ...]
    is_global_max: bool
    column_variances: np.ndarray
    collapsed_curvatures: np.ndarray

    def weights(self, eigenvectors: np.ndarray) -> np.ndarray:
        """``W`` (d, k): columns ``u_j sqrt(lambda_j - sigma2)`` for the used ``j``, then zeros.

        >>> saddle = next(p for p in stationary_points([4.0, 2.0, 1.0, 0.5], 2, sigma2=1.5) if p.directions == (1,))
        >>> saddle.weights(np.eye(4)).round(4)  # u_2 sqrt(2 - 1.5), then a zero column
        array([[0.    , 0.    ],
               [0.7071, 0.    ],
               [0.    , 0.    ],
               [0.    , 0.    ]])
        """
        d = eigenvectors.shape[0]
        W = np.zeros((d, len(self.column_variances)))
        for c, j in enumerate(self.directions):
            W[:, c] = eigenvectors[:, j] * np.sqrt(self.column_variances[c])
        return W


def stationary_points(eigenvalues, latent_dim: int, sigma2: float) -> Iterator[StationaryPoint]:
    """Enumerate the stationary points of the MLL in ``W`` at fixed ``sigma2``.

    T&B Appendix A / Lucas et al. Lemma 1: the columns of a stationary ``W`` (up to ``R``) are
    either zero or ``u_j sqrt(lambda_j - sigma2)`` for distinct ``j`` with ``lambda_j > sigma2``.
    There is one per subset of those usable directions of size ``<= k``, so the count grows
    combinatorially: iterate lazily.

    Classification (Lucas et al. Section 4.1).  A point is a global maximum iff its used
    eigenvalues are the ``min(k, #{lambda > sigma2})`` largest; otherwise it is a saddle:
    either a zero column has an unused ``lambda_i > sigma2`` to grow along (curvature
    ``(lambda_i - sigma2)/sigma2^2 > 0``), or a used ``u_j`` can rotate towards an unused ``u_i``
    with ``lambda_i > lambda_j``.  Ties: a direction with ``lambda_j == sigma2`` is not usable
    (its column would be zero anyway); equal eigenvalues make the global maximum a continuum
    (any rotation within the eigenspace), so the test compares eigenvalues, not indices.

    >>> [(p.directions, p.is_global_max) for p in stationary_points([4.0, 2.0, 1.0, 0.5], 2, sigma2=1.5)]
    [((), False), ((0,), False), ((1,), False), ((0, 1), True)]

    References: docs/theory.md (T2.4); Lucas et al. 2019, Section 4.1 and Appendix A; Tipping & Bishop 1999, Appendix A.
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    usable = [j for j in range(len(eigenvalues)) if eigenvalues[j] > sigma2]
    n_best = min(latent_dim, len(usable))
    best = np.sort(eigenvalues[usable])[::-1][:n_best]
    for size in range(n_best + 1):
        for directions in itertools.combinations(usable, size):
            used = eigenvalues[list(directions)]
            column_variances = np.zeros(latent_dim)
            column_variances[:size] = used - sigma2
            unused = np.setdiff1d(np.arange(len(eigenvalues)), directions)
            curvatures = collapsed_curvature(eigenvalues[unused], sigma2) if size < latent_dim else np.zeros(0)
            is_global_max = size == n_best and np.array_equal(np.sort(used)[::-1], best)
            yield StationaryPoint(tuple(directions), bool(is_global_max), column_variances, curvatures)
