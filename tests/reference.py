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


# -- Conditional and hierarchical linear models (docs/theory.md (T17)) ------------------------------
#
# Each objective below is the model's negative beta-ELBO per datapoint, written from the model's
# definition: the expectation over the Gaussian posterior is taken analytically term by term, and the
# average over the data is a mean over the rows of ``X`` and ``Y``, never through the moments ``A, C, B``
# the closed forms use.  ``xp`` is the array module (numpy, or jax.numpy for autodiff); variances are
# parameterised by their logarithms.  Sources: Wang & Ziyin, *Posterior Collapse of a Linear Latent
# Variable Model*, NeurIPS 2022 (the scaled prior); Dang, Tran, Nguyen & Ho, *Beyond Vanilla Variational
# Autoencoders*, ICLR 2024 (the CVAE and the two-level HVAE).


def gaussian_kl_to_scaled_prior(means, log_variances, prior_variance, xp=np):
    """``KL(N(m, diag(s^2)) || N(0, p I))`` summed over dimensions and averaged over the rows of ``means``:
    ``1/2 sum_j [s_j^2 / p + m_j^2 / p - 1 - log(s_j^2 / p)]``."""
    k = means.shape[1]
    return 0.5 * (
        xp.sum(xp.exp(log_variances)) / prior_variance
        + xp.mean(xp.sum(means**2, axis=1)) / prior_variance
        - k
        - xp.sum(log_variances)
        + k * xp.log(prior_variance)
    )


def gaussian_nll(residual_sq, d, variance, xp=np):
    """``-E log N(y; mu, v I) = E||y - mu||^2 / (2 v) + (d/2) log(2 pi v)`` given ``E||y - mu||^2``."""
    return residual_sq / (2.0 * variance) + 0.5 * d * xp.log(2.0 * xp.pi * variance)


def scaled_prior_objective(params, X, Y, beta, decoder_variance, prior_variance, xp=np):
    """Negative beta-ELBO of Wang & Ziyin's linear model: ``q(z|x) = N(W x + b, diag(exp(log_s2)))``,
    ``p(y|z) = N(U z + c, eta_dec^2 I)``, ``p(z) = N(0, eta_enc^2 I)``; ``params = (W, b, log_s2, U, c)``.
    Under ``q``, ``y - U z - c`` has mean ``y - U m - c`` and covariance ``U diag(s^2) U^T``."""
    W, b, log_s2, U, c = params
    m = X @ W.T + b
    residual = Y - m @ U.T - c
    squared = xp.mean(xp.sum(residual**2, axis=1)) + xp.sum(U**2 * xp.exp(log_s2)[None, :])
    return gaussian_nll(squared, Y.shape[1], decoder_variance, xp) + beta * gaussian_kl_to_scaled_prior(
        m, log_s2, prior_variance, xp
    )


def cvae_objective(params, X, Y, beta, decoder_variance, prior_variance, xp=np):
    """Negative beta-ELBO of the linear CVAE: ``q(z|x,y) = N(W1 x + W2 y + b, diag(exp(log_s2)))``,
    ``p(y|z,x) = N(U1 z + U2 x + c, eta_dec^2 I)``, ``p(z|x) = N(0, eta_enc^2 I)``;
    ``params = (W1, W2, b, log_s2, U1, U2, c)``."""
    W1, W2, b, log_s2, U1, U2, c = params
    m = X @ W1.T + Y @ W2.T + b
    residual = Y - m @ U1.T - X @ U2.T - c
    squared = xp.mean(xp.sum(residual**2, axis=1)) + xp.sum(U1**2 * xp.exp(log_s2)[None, :])
    return gaussian_nll(squared, Y.shape[1], decoder_variance, xp) + beta * gaussian_kl_to_scaled_prior(
        m, log_s2, prior_variance, xp
    )


def hvae_objective(params, X, Y, beta1, beta2, z1_variance, decoder_variance, prior_variance, xp=np):
    """Negative beta-ELBO of the two-level linear HVAE,
    ``E[-log p(y|z1)] + beta1 E[log q(z1|x) - log p(z1|z2)] + beta2 E KL(q(z2|z1) || p(z2))``, with
    ``q(z1|x) = N(W1 x + b1, sigma1^2 I)``, ``q(z2|z1) = N(W2 z1 + b2, diag(exp(log_s2)))``,
    ``p(y|z1) = N(U1 z1 + c1, eta_dec^2 I)``, ``p(z1|z2) = N(U2 z2 + c2, eta_dec^2 I)``, ``p(z2) = N(0, eta_enc^2 I)``;
    ``params = (W1, b1, W2, b2, log_s2, U1, c1, U2, c2)``.

    With ``z1 = m1 + sigma1 e1`` and ``z2 = W2 z1 + b2 + s e2``: ``y - U1 z1 - c1`` has mean ``y - U1 m1 - c1``
    and covariance ``sigma1^2 U1 U1^T``; ``z1 - U2 z2 - c2 = (I - U2 W2) z1 - U2 b2 - c2 - U2 s e2``;
    ``E log q(z1|x) = -(d1/2) log(2 pi e sigma1^2)``; ``W2 z1 + b2`` has mean ``W2 m1 + b2`` and
    covariance ``sigma1^2 W2 W2^T``.
    """
    W1, b1, W2, b2, log_s2, U1, c1, U2, c2 = params
    d1 = W1.shape[0]
    m1 = X @ W1.T + b1
    residual_y = Y - m1 @ U1.T - c1
    squared_y = xp.mean(xp.sum(residual_y**2, axis=1)) + z1_variance * xp.sum(U1**2)
    nll_y = gaussian_nll(squared_y, Y.shape[1], decoder_variance, xp)
    I_minus = xp.eye(d1) - U2 @ W2
    residual_z1 = m1 @ I_minus.T - b2 @ U2.T - c2
    squared_z1 = (
        xp.mean(xp.sum(residual_z1**2, axis=1))
        + z1_variance * xp.sum(I_minus**2)
        + xp.sum(U2**2 * xp.exp(log_s2)[None, :])
    )
    neg_log_p_z1 = gaussian_nll(squared_z1, d1, decoder_variance, xp)
    log_q_z1 = -0.5 * d1 * (xp.log(2.0 * xp.pi * z1_variance) + 1.0)
    m2 = m1 @ W2.T + b2
    kl_z2 = (
        gaussian_kl_to_scaled_prior(m2, log_s2, prior_variance, xp) + 0.5 * z1_variance * xp.sum(W2**2) / prior_variance
    )
    return nll_y + beta1 * (log_q_z1 + neg_log_p_z1) + beta2 * kl_z2
