"""Independent numpy references for the tests: the formulas of the linear VAE and of pPCA written
out once, from their sources, without importing :mod:`linear_vae`.

Sources: Tipping & Bishop, *Probabilistic Principal Component Analysis*, JRSS-B 61(3), 1999
(pPCA: the log-likelihood and its maximum-likelihood solution); Lucas, Tucker, Grosse & Norouzi,
*Don't Blame the ELBO! A Linear VAE Perspective on Posterior Collapse*, NeurIPS 2019 (the linear
VAE's ELBO, Section 4.2 and Appendix C); and the project's own account of both, docs/theory.md,
sections (T1) to (T4).  Conventions (T1): ``S`` is the 1/N covariance, eigenvalues descending,
``t = beta sigma2``, results are averages per datapoint in nats.

Every function here is deliberately the plainest route to its number (dense d x d matrices,
per-datapoint sums, formulas term by term), so that agreement with the library's structured
computations (Woodbury identities, eigenbasis sums, trace identities, JAX) is evidence, not a
tautology.  Tests import them with ``from reference import ...`` (``tests/`` is on ``sys.path``
under pytest's default import mode, being the directory of the root ``conftest.py``).
"""

from __future__ import annotations

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


def dense_mll(W, sigma2, S, offset=None):
    """Average pPCA log marginal likelihood with the d x d covariance formed explicitly:

    ``MLL = -1/2 [d log 2pi + log det C + tr(C^-1 S) + delta^T C^-1 delta]``,  ``C = W W^T + sigma2 I``,

    where ``delta`` (``offset``) is the sample mean minus the model's mean (omitted: ``mu`` at the
    sample mean).  Tipping & Bishop 1999, the log-likelihood of ``x ~ N(mu, C)`` divided by N;
    docs/theory.md (T2).  numpy ``slogdet``/``solve`` of ``C``: no Woodbury, no determinant lemma.
    """
    W = np.asarray(W, dtype=np.float64)
    d = W.shape[0]
    C = W @ W.T + sigma2 * np.eye(d)
    sign, logdet = np.linalg.slogdet(C)
    assert sign > 0
    quad = np.trace(np.linalg.solve(C, S))
    if offset is not None:
        offset = np.asarray(offset, dtype=np.float64)
        quad += offset @ np.linalg.solve(C, offset)
    return -0.5 * (d * LOG_2PI + logdet + quad)


def ppca_mle(eigenvalues, k, trace=None, dim=None):
    """Tipping & Bishop's maximum-likelihood ``(sigma2*, MLL*)`` for ``k`` latent dimensions.

    ``sigma2* = (tr S - sum_{i<=k} lambda_i) / (d - k)`` (the mean of the discarded eigenvalues
    ``lambda_{k+1..d}``), ``W* = U_k (Lambda_k - sigma2* I)^{1/2} R``; substituted into the
    log-likelihood (``log det C = sum_{i<=k} log lambda_i + (d - k) log sigma2*`` and
    ``tr(C^-1 S) = d``) this gives

    ``MLL* = -1/2 [d log 2pi + sum_{i<=k} log lambda_i + (d - k) log sigma2* + d]``.

    Tipping & Bishop 1999 (the maximum-likelihood estimators W_ML and sigma2_ML); docs/theory.md (T2).  ``eigenvalues``
    is the whole spectrum, or only its top (at least ``k``) with ``trace = tr S`` and ``dim = d``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if trace is None:
        trace, dim = float(lam.sum()), lam.size
    sigma2 = (trace - lam[:k].sum()) / (dim - k)
    mll = -0.5 * (dim * LOG_2PI + np.sum(np.log(lam[:k])) + (dim - k) * np.log(sigma2) + dim)
    return float(sigma2), float(mll)


def optimal_beta_elbo(eigenvalues, k, beta, sigma2):
    """Value of the beta-ELBO's global maximum at fixed ``sigma2``, with ``t = beta sigma2`` and the
    ``m`` active dimensions ``{i <= k: lambda_i > t}``:

    ``-d/2 log(2 pi sigma2) - beta m/2 - sum_{i not active} lambda_i / (2 sigma2)
    - beta/2 sum_{i active} log(lambda_i / t)``.

    Lucas et al. 2019, Appendix C (the linear VAE's optimum, ``w_i = u_i sqrt((lambda_i - t)_+)``);
    docs/theory.md (T4).  At beta = 1 it is also the MLL of the optimal decoder.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    d = lam.size
    t = beta * sigma2
    active = np.zeros(d, bool)
    active[:k] = lam[:k] > t
    m = int(active.sum())
    return float(
        -0.5 * d * np.log(2 * np.pi * sigma2)
        - 0.5 * beta * m
        - lam[~active].sum() / (2 * sigma2)
        - 0.5 * beta * np.sum(np.log(lam[active] / t))
    )


def optimal_decoder(eigenvalues, eigenvectors, k, beta, sigma2):
    """The optimal decoder's columns ``w_i = u_i sqrt((lambda_i - beta sigma2)_+)``, ``i <= k`` (d x k).

    Lucas et al. 2019, Appendix C; at beta = 1 Tipping & Bishop's ``W_ML`` with ``R = I``;
    docs/theory.md (T4).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)[:k]
    return np.asarray(eigenvectors, dtype=np.float64)[:, :k] * np.sqrt(np.maximum(lam - beta * sigma2, 0.0))


def optimal_kl_per_dim(eigenvalues, k, beta, sigma2):
    """Data-averaged KL of each latent dimension at the optimum: ``1/2 log(lambda_i / t)`` when
    ``lambda_i > t = beta sigma2``, else 0 (the dimension is collapsed, ``q(z_i|x) = p(z_i)``).

    Lucas et al. 2019, Section 4.2 / Appendix C; docs/theory.md (T4) and (T5).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)[:k]
    t = beta * sigma2
    return np.where(lam > t, 0.5 * np.log(np.where(lam > t, lam, 1.0) / t), 0.0)


def dense_elbo_terms(params, sigma2, X):
    """``(E_q log p(x|z), KL(q(z|x) || p(z)) per latent dimension)``, each averaged over the rows of X,
    computed datapoint by datapoint with ``A = I - W V`` formed explicitly.

    Model (docs/theory.md (T1)): decoder ``N(W z + mu, sigma2 I)``, encoder ``N(V (x - mu), diag D)``,
    prior ``N(0, I)``.  With ``y = x - mu`` and ``z ~ q``:
    ``E_q ||y - W z||^2 = ||A y||^2 + tr(W diag(D) W^T)``, so
    ``E_q log p(x|z) = -d/2 log(2 pi sigma2) - E_q ||y - W z||^2 / (2 sigma2)``, and the Gaussian KL
    ``KL_j = 1/2 [D_j + (v_j^T y)^2 - 1 - log D_j]``.  Lucas et al. 2019, Appendix C; docs/theory.md (T3).
    Uses no covariance identity: ``X`` itself, not ``(mean, S)``.

    ``params`` is ``(W, mu, V, log_D)`` (a ``LinearVAEParams`` or any 4-sequence).
    """
    W, mu, V, log_D = (np.asarray(p, dtype=np.float64) for p in params)
    X = np.asarray(X, dtype=np.float64)
    d = W.shape[0]
    D = np.exp(log_D)
    A = np.eye(d) - W @ V
    Y = X - mu  # (N, d)
    sq = np.sum((Y @ A.T) ** 2, axis=1) + np.trace(W @ np.diag(D) @ W.T)
    log_lik = -0.5 * d * np.log(2 * np.pi * sigma2) - sq / (2 * sigma2)
    m = Y @ V.T  # (N, k) posterior means
    kl = 0.5 * (D[None, :] + m**2 - 1.0 - log_D[None, :])
    return float(log_lik.mean()), kl.mean(axis=0)


def dense_beta_elbo(params, sigma2, beta, X):
    """beta-ELBO ``E_q log p(x|z) - beta sum_j KL_j`` averaged over the rows of X, from
    :func:`dense_elbo_terms` (per datapoint, dense; the beta-ELBO of Lucas et al. 2019;
    docs/theory.md (T1), (T3))."""
    log_lik, kl = dense_elbo_terms(params, sigma2, X)
    return float(log_lik - beta * kl.sum())


def optimal_learned_sigma2(eigenvalues, k, beta):
    """The sigma2 that maximises the optimal beta-ELBO (:func:`optimal_beta_elbo`) over sigma2.

    On each stretch of sigma2 with a fixed active set of ``m`` dimensions the optimal value is
    smooth in sigma2 with derivative ``[sum_{i not active} lambda_i - (d - beta m) sigma2] / (2 sigma2^2)``,
    so its stationary point is ``sigma2_m = sum_{i not active} lambda_i / (d - beta m)`` (when
    ``d > beta m``; otherwise the value increases throughout the stretch).  The value is C^1 in
    sigma2 across thresholds, so the maximum is one of the ``sigma2_m`` whose active set is
    consistent (``lambda_i > beta sigma2_m`` exactly for ``i <= m``, among ``i <= k``); this returns
    the best of them.  Lucas et al. 2019, Appendix C; docs/theory.md (T4).  At beta = 1 with all
    ``k`` active it is Tipping & Bishop's ``sigma2* = mean(lambda_{k+1..d})`` (:func:`ppca_mle`).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    d = lam.size
    best = None
    for m in range(k + 1):
        if d <= beta * m:
            continue
        sigma2 = lam[m:].sum() / (d - beta * m)
        if sigma2 <= 0:
            continue
        t = beta * sigma2
        if np.all(lam[:m] > t) and np.all(lam[m:k] <= t):
            value = optimal_beta_elbo(lam, k, beta, sigma2)
            if best is None or value > best[0]:
                best = (value, float(sigma2))
    assert best is not None, "no consistent active set"
    return best[1]
