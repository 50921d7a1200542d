"""The global optimum of the linear VAE's beta-ELBO in closed form, and when each dimension collapses.

Lucas et al. 2019, Section 4.2 and Appendix C; docs/theory.md (T4).
Everything depends on the data only through the eigenvalues ``lambda_1 >= ... >= lambda_d`` of
``S`` (and the eigenvectors, for the parameters), and on ``(beta, sigma2)`` only through
``t = beta * sigma2`` for the location of the optimum.  Of the eigenvalues beyond the top ``k`` only
their sum and number enter, so every function takes either the full spectrum or the top ``m >= k``
eigenvalues with ``trace = tr S`` and ``dim = d`` (:func:`linear_vae.data.moments.spectrum_totals`; from
:func:`linear_vae.data.moments.top_eigenpairs` when ``d`` is too large to form ``S``).

Ties.  Latent dimension ``i`` is *active* iff ``lambda_i > beta sigma2`` strictly.  At
``lambda_i == beta sigma2`` the optimal column has norm ``sqrt(lambda_i - t) = 0`` either way, so
the value and parameters are continuous there and the dimension counts as collapsed.  Repeated
eigenvalues give a continuum of optima (any rotation within the eigenspace); we return the one
aligned with the canonically signed eigenvectors of :func:`linear_vae.data.moments.eigen_decomposition`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from linear_vae.data.moments import LOG_2PI, rank_tolerance, spectrum_totals
from linear_vae.theory.elbo import LinearVAEParams
from linear_vae.theory.ppca import mll_in_eigenbasis


class BetaElboOptimum(NamedTuple):
    """The global maximum of the beta-ELBO at fixed ``(beta, sigma2)`` (per datapoint, nats).

    Attributes
    ----------
    beta, sigma2 : the KL weight and observation variance it was computed for.
    active : (k,) bool, ``lambda_i > beta sigma2``.
    column_variances : (k,) ``||w_i||^2 = max(lambda_i - beta sigma2, 0)``.
    encoder_variances : (k,) ``D_i = min(beta sigma2 / lambda_i, 1)`` (1 when collapsed).
    kl_per_dim : (k,) ``1/2 log(lambda_i / (beta sigma2))`` if active, else 0.
    elbo : the optimal beta-ELBO.
    mll : log marginal likelihood of the optimal decoder, ``N(mu, W W^T + sigma2 I)``, with the
        same ``sigma2``; equals ``elbo`` at beta = 1 (the bound is tight).
    """

    beta: float
    sigma2: float
    active: np.ndarray
    column_variances: np.ndarray
    encoder_variances: np.ndarray
    kl_per_dim: np.ndarray
    elbo: float
    mll: float

    @property
    def active_dims(self) -> int:
        """``#{i <= k : lambda_i > beta sigma2}``.

        >>> beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=3, beta=1.0, sigma2=1.5).active_dims
        2
        """
        return int(np.sum(self.active))

    def parameters(self, mean: np.ndarray, eigenvectors: np.ndarray) -> LinearVAEParams:
        """Optimal ``(W, mu, V, log D)``: ``w_i = u_i sqrt(max(lambda_i - t, 0))``, ``mu`` = sample mean,
        ``v_i = u_i sqrt(l_i) / (l_i + t)`` (the optimal encoder, diagonal ``M``), ``D`` as above.

        >>> optimum = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=3, beta=1.0, sigma2=1.5)
        >>> optimum.parameters(mean=np.zeros(4), eigenvectors=np.eye(4)).W.round(4)
        array([[1.5811, 0.    , 0.    ],
               [0.    , 0.7071, 0.    ],
               [0.    , 0.    , 0.    ],
               [0.    , 0.    , 0.    ]])

        References: docs/theory.md (T4.1); Lucas et al. 2019, Section 4.2 and Appendix C.
        """
        k = len(self.active)
        t = self.beta * self.sigma2
        U = eigenvectors[:, :k]
        W = U * np.sqrt(self.column_variances)
        V = (U * (np.sqrt(self.column_variances) / (self.column_variances + t))).T
        return LinearVAEParams(W, np.asarray(mean, dtype=np.float64), V, np.log(self.encoder_variances))


def collapse_thresholds(eigenvalues, latent_dim: int, sigma2: float) -> np.ndarray:
    """``beta_i* = lambda_i / sigma2`` for ``i <= k``: latent dimension ``i`` collapses once
    ``beta >= beta_i*`` (docs/theory.md (T4); Lucas et al. Section 4.2).

    >>> collapse_thresholds([4.0, 2.0, 1.0, 0.5], latent_dim=3, sigma2=0.5)
    array([8., 4., 2.])

    References: docs/theory.md (T4.2); Lucas et al. 2019, Section 4.2.
    """
    return np.asarray(eigenvalues[:latent_dim], dtype=np.float64) / sigma2


def beta_elbo_optimum(
    eigenvalues, latent_dim: int, beta: float, sigma2: float, *, trace=None, dim=None
) -> BetaElboOptimum:
    """Closed-form global maximum of the beta-ELBO at fixed ``sigma2``.

    With ``t = beta sigma2`` and ``m`` active dimensions (Lucas et al. Appendix C; docs/theory.md (T4)):

    ``ELBO* = -d/2 log(2 pi sigma2) - beta m / 2 - sum_{i not active} lambda_i / (2 sigma2)
              - beta/2 sum_{i active} log(lambda_i / t)``,

    where "not active" runs over all ``d`` eigenvalues, ``i > k`` included: their sum is
    ``tr S - sum_{i active} lambda_i`` (active dimensions are a prefix of ``1..k``).  ``eigenvalues``:
    the full spectrum, or its top ``m >= k`` with ``trace`` and ``dim`` (:func:`linear_vae.data.moments.spectrum_totals`).

    >>> optimum = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=3, beta=1.0, sigma2=1.5)
    >>> optimum.active, optimum.active_dims  # lambda_3 = 1 <= beta sigma2 = 1.5: collapsed
    (array([ True,  True, False]), 2)
    >>> optimum.column_variances  # max(lambda_i - beta sigma2, 0)
    array([2.5, 0.5, 0. ])
    >>> round(optimum.elbo, 4), round(optimum.mll, 4)  # equal at beta = 1: the bound is tight
    (-6.6209, -6.6209)

    References: docs/theory.md (T4.1, T4.2); Lucas et al. 2019, Section 4.2 and Appendix C.
    """
    eigenvalues, trace, d = spectrum_totals(eigenvalues, trace, dim, latent_dim)
    t = beta * sigma2
    top = eigenvalues[:latent_dim]
    active = top / sigma2 > beta  # the same float expression as collapse_thresholds, so beta = threshold collapses
    m = int(active.sum())
    kl_per_dim = np.where(active, 0.5 * np.log(np.where(active, top, t) / t), 0.0)
    not_active_sum = trace - top[active].sum()
    elbo = (
        -0.5 * d * (LOG_2PI + np.log(sigma2))
        - 0.5 * beta * m
        - not_active_sum / (2.0 * sigma2)
        - beta * kl_per_dim.sum()
    )
    column_variances = np.where(active, np.maximum(top - t, 0.0), 0.0)
    encoder_variances = np.where(active, t / np.where(active, top, 1.0), 1.0)
    mll = mll_in_eigenbasis(eigenvalues, column_variances, sigma2, trace=trace, dim=d)
    return BetaElboOptimum(beta, sigma2, active, column_variances, encoder_variances, kl_per_dim, float(elbo), mll)


def learned_sigma2(eigenvalues, latent_dim: int, beta: float = 1.0, *, trace=None, dim=None) -> float:
    """The ``sigma2`` maximising the optimal beta-ELBO: ``sum_{i not active} lambda_i / (d - beta m)``.

    Setting the derivative of :func:`beta_elbo_optimum`'s value in ``sigma2`` to zero with the
    active set held fixed (docs/theory.md (T4)); the active set must be
    consistent with the ``sigma2`` it produces (``lambda_m > beta sigma2 >= lambda_{m+1}``) and
    ``d > beta m``.  The value is continuously differentiable in ``sigma2`` (at a breakpoint
    ``sigma2 = lambda_m / beta`` the one-sided derivatives agree) and tends to -inf at both ends,
    so its maximiser is a stationary point of one segment: we evaluate every consistent ``m``
    and keep the best.
    At beta = 1 with all ``k`` active this is the pPCA MLE ``mean(lambda_{k+1..d})``.
    ``eigenvalues``: the full spectrum, or its top ``m >= k`` with ``trace`` and ``dim``
    (:func:`linear_vae.data.moments.spectrum_totals`).

    Raises ``ValueError`` when the candidate is 0 (the data have rank <= k), up to round-off
    (:func:`linear_vae.data.moments.rank_tolerance`).

    >>> learned_sigma2([4.0, 2.0, 1.0, 0.5], latent_dim=2)  # mean of the two discarded eigenvalues
    0.75
    >>> learned_sigma2([4.0, 2.0, 1.0, 0.5], latent_dim=2, beta=4.0)  # all collapse: the mean eigenvalue
    1.875

    References: docs/theory.md (T4.3); Tipping & Bishop 1999, eq. 8 (beta = 1).
    """
    eigenvalues, total, d = spectrum_totals(eigenvalues, trace, dim, latent_dim)
    top = eigenvalues[:latent_dim]
    tolerance = rank_tolerance(eigenvalues, d)
    best = None
    for m in range(latent_dim + 1):
        if d - beta * m <= 0:
            break
        sigma2 = (total - top[:m].sum()) / (d - beta * m)
        if not sigma2 > tolerance:
            raise ValueError(
                f"the learned sigma2 is 0: the data have rank <= {latent_dim} (the latent dimension), "
                "so the likelihood is unbounded; fix `sigma2` or choose a smaller `latent_dim`"
            )
        consistent = (m == 0 or top[m - 1] / sigma2 > beta) and (m == latent_dim or top[m] / sigma2 <= beta)
        if consistent:
            value = beta_elbo_optimum(eigenvalues, latent_dim, beta, sigma2, trace=total, dim=d).elbo
            if best is None or value > best[0]:
                best = (value, sigma2)
    if best is None:  # unreachable: some segment always holds the maximiser (see above)
        raise ValueError(f"no learned sigma2 exists with beta = {beta} and d = {d}; fix `sigma2`")
    return float(best[1])


def threshold_distance(eigenvalues, latent_dim: int, beta: float, sigma2: float) -> float:
    """Relative distance ``min_{i<=k} |lambda_i - beta sigma2| / (beta sigma2)`` to the nearest threshold.

    Near 0 the collapsed saddle is almost flat (curvature ``beta (lambda_i - t)/t^2``), so gradient
    training converges slowly there (docs/theory.md (T4)); it is reported
    beside every trained-versus-analytic comparison.

    >>> threshold_distance([4.0, 2.0, 1.0, 0.5], latent_dim=3, beta=1.0, sigma2=1.5)  # |2 - 1.5| / 1.5
    0.3333333333333333

    References: docs/theory.md (T4.4); Lucas et al. 2019, Section 4.1.
    """
    t = beta * sigma2
    return float(np.min(np.abs(np.asarray(eigenvalues[:latent_dim]) - t)) / t)


def active_by_threshold(eigenvalues, latent_dim: int, water_level) -> np.ndarray | int:
    """``#{i <= k : lambda_i > t}``, the active dimensions of the optimum at water level
    ``t = beta sigma2`` (one count per entry of an array ``t``), for curves drawn on a grid of ``t``.
    The package's other counts of "active" (column norms, unit variances, encoder means) and when
    each applies: docs/theory.md (T5.3).

    >>> active_by_threshold([4.0, 2.0, 1.0, 0.5], latent_dim=3, water_level=1.5)
    2
    >>> active_by_threshold([4.0, 2.0, 1.0, 0.5], latent_dim=3, water_level=[0.5, 1.5, 5.0])
    array([3, 2, 0])

    References: docs/theory.md (T4, T5.3); Lucas et al. 2019, Section 4.2.
    """
    top = np.asarray(eigenvalues[:latent_dim])
    counts = np.sum(top[None, :] > np.atleast_1d(water_level)[:, None], axis=1)
    return counts.astype(int) if np.ndim(water_level) else int(counts[0])


def optimal_kl_per_dim(eigenvalues, latent_dim: int, water_level) -> np.ndarray:
    """``1/2 log(lambda_i / t)`` where ``lambda_i > t``, else 0, for ``i <= k``: the KL of each latent
    dimension at the optimum (one row per entry of ``t = beta sigma2``).

    >>> optimal_kl_per_dim([4.0, 2.0, 1.0, 0.5], latent_dim=3, water_level=1.5).round(4)
    array([[0.4904, 0.1438, 0.    ]])

    References: docs/theory.md (T4); Lucas et al. 2019, Section 4.2.
    """
    ratio = np.asarray(eigenvalues[:latent_dim])[None, :] / np.atleast_1d(water_level)[:, None]
    return np.where(ratio > 1, 0.5 * np.log(np.maximum(ratio, 1.0)), 0.0)
