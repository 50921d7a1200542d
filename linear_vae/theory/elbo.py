"""The linear VAE and its beta-ELBO: exact (from the data moments) and Monte Carlo.

Lucas et al. 2019, Section 4.2 and Appendix C; docs/theory.md (T3).
Decoder ``p(x|z) = N(W z + mu, sigma2 I_d)``, encoder ``q(z|x) = N(V (x - mu), diag(D))``,
prior ``N(0, I_k)``; ``mu`` is the decoder bias, shared with the encoder.  All values are
averages over the data in nats per datapoint.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from linear_vae.core import spd
from linear_vae.data.moments import LOG_2PI
from linear_vae.theory.ppca import covariance_times, covariance_trace


class LinearVAEParams(NamedTuple):
    """Parameters of the linear VAE (a JAX pytree).

    Attributes
    ----------
    W : (d, k) decoder weights.
    mu : (d,) decoder bias (its optimum is the sample mean); the encoder centres with it too.
    V : (k, d) encoder weights.
    log_D : (k,) log of the encoder's diagonal variances (the log keeps ``D > 0``).
    """

    W: jax.Array
    mu: jax.Array
    V: jax.Array
    log_D: jax.Array


class DataStats(NamedTuple):
    """What the exact ELBO needs of the data: mean, 1/N covariance ``S``, ``tr S`` and ``d`` (a pytree).

    ``cov`` is either the (d, d) matrix ``S`` or, for data rotated into the eigenbasis of ``S``,
    the vector of its eigenvalues (``S`` diagonal); :func:`covariance_times` handles both.  In the
    eigenbasis the coordinates may be only the top ``r < d`` eigenvectors when the others have
    eigenvalue 0 (data with ``d > N``: ``S`` has rank below ``N``): the data then vary in those
    ``r`` directions only, and ``dim`` keeps the true ``d``, which enters the likelihood through
    ``-d/2 log(2 pi sigma2)`` (docs/theory.md (T3)).

    References: docs/theory.md (T3.1, T8.2, T8.4).
    """

    mean: jax.Array
    cov: jax.Array
    trace: jax.Array
    dim: jax.Array

    @classmethod
    def from_moments(cls, mean, cov, dim: int | None = None) -> "DataStats":
        """``dim`` defaults to the length of ``mean`` (coordinates in every direction).

        >>> import numpy as np
        >>> DataStats.from_moments(np.zeros(2), np.diag([4.0, 2.0])).trace
        Array(6., dtype=float64)
        """
        cov = jnp.asarray(cov, dtype=jnp.float64)
        mean = jnp.asarray(mean, dtype=jnp.float64)
        return cls(mean, cov, covariance_trace(cov), jnp.asarray(mean.shape[0] if dim is None else dim, jnp.float64))


def elbo_terms(params: LinearVAEParams, sigma2, stats: DataStats):
    """Expected log-likelihood and per-dimension KL, averaged over the data, in closed form.

    With ``A = I - W V`` and ``delta = mean - mu`` (docs/theory.md (T3); Lucas et al. Appendix C):

    ``E log p(x|z) = -d/2 log(2 pi sigma2)
                     - 1/(2 sigma2) [ tr(A S A^T) + ||A delta||^2 + sum_j D_j ||w_j||^2 ]``

    ``KL_j = 1/2 [ D_j + (V S V^T)_jj + (V delta)_j^2 - 1 - log D_j ]``.

    ``A`` (d x d) is never formed: with ``P = V S`` (k x d),
    ``tr(A S A^T) = tr S - 2 tr(W P) + tr((W^T W)(P V^T))``, so a step costs O(d^2 k) for ``P``
    plus O(d k^2), instead of O(d^3).

    Returns
    -------
    expected_log_lik : scalar.
    kl_per_dim : (k,) average KL of each latent dimension.

    Examples
    --------
    At the closed-form optimum (eigenvalues 4, 2, 1, 0.5; beta = 1, sigma2 = 1.5) the KL of each
    dimension is ``1/2 log(lambda_i / sigma2)`` where active (T4.1):

    >>> import numpy as np
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=3, beta=1.0, sigma2=1.5)
    >>> params = optimum.parameters(mean=np.zeros(4), eigenvectors=np.eye(4))
    >>> stats = DataStats.from_moments(np.zeros(4), np.diag([4.0, 2.0, 1.0, 0.5]))
    >>> expected_log_lik, kl_per_dim = elbo_terms(params, 1.5, stats)
    >>> np.asarray(kl_per_dim).round(4)
    array([0.4904, 0.1438, 0.    ])


    References: docs/theory.md (T3.1, T8.1); Lucas et al. 2019, Section 4.2 and Appendix C.
    """
    W, mu, V, log_D = params
    d = stats.dim
    D = jnp.exp(log_D)
    delta = stats.mean - mu
    P = covariance_times(stats.cov, V.T).T  # (k, d) = V S: the only O(d^2 k) product (O(dk) if S is diagonal)
    PVt = P @ V.T  # (k, k) = V S V^T
    WtW = W.T @ W  # (k, k)
    trace_ASA = stats.trace - 2.0 * jnp.sum(W * P.T) + jnp.sum(WtW * PVt)
    V_delta = V @ delta
    A_delta = delta - W @ V_delta
    reconstruction_error = trace_ASA + A_delta @ A_delta + jnp.sum(D * jnp.diag(WtW))
    expected_log_lik = -0.5 * d * (LOG_2PI + jnp.log(sigma2)) - reconstruction_error / (2.0 * sigma2)
    kl_per_dim = standard_normal_kl(jnp.diag(PVt) + V_delta**2, D, log_D)  # E_x of the mean^2 term
    return expected_log_lik, kl_per_dim


def standard_normal_kl(mean_sq, variance, log_variance):
    """``KL(N(m, v) || N(0, 1)) = 1/2 (v + m^2 - 1 - log v)`` elementwise, from ``m^2``, ``v`` and
    ``log v`` (the log passed in, so that a log-parameterised variance is not exponentiated and
    logged back).  The one diagonal-Gaussian KL of the package: the linear VAE's per-datapoint and
    data-averaged KL and the deep VAE's.

    >>> float(standard_normal_kl(mean_sq=1.0, variance=1.0, log_variance=0.0))
    0.5

    References: docs/theory.md (T3); Kingma & Welling 2013, Appendix B.
    """
    return 0.5 * (variance + mean_sq - 1.0 - log_variance)


def diagonal_gaussian_kl(mean, log_var):
    """``KL(N(mean, exp(log_var)) || N(0, 1))`` elementwise (per row and latent dimension) of an encoder
    that gives its mean and log variance, as a deep VAE's does.

    >>> import numpy as np
    >>> diagonal_gaussian_kl(jnp.array([0.0, 1.0]), jnp.array([0.0, 0.0]))
    Array([0. , 0.5], dtype=float64)

    References: docs/theory.md (T3); Kingma & Welling 2013, Appendix B.
    """
    return standard_normal_kl(mean**2, jnp.exp(log_var), log_var)


def exact_elbo(params: LinearVAEParams, sigma2, beta, stats: DataStats):
    """The beta-ELBO ``E_q log p(x|z) - beta KL(q(z|x) || p(z))``, exact, per datapoint (nats).

    At the closed-form optimum it is the optimum's value (T4.1):

    >>> import numpy as np
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=3, beta=1.0, sigma2=1.5)
    >>> params = optimum.parameters(mean=np.zeros(4), eigenvectors=np.eye(4))
    >>> stats = DataStats.from_moments(np.zeros(4), np.diag([4.0, 2.0, 1.0, 0.5]))
    >>> round(float(exact_elbo(params, 1.5, 1.0, stats)), 4), round(optimum.elbo, 4)
    (-6.6209, -6.6209)


    References: docs/theory.md (T3.1); Lucas et al. 2019, Section 4.2 and Appendix C.
    """
    expected_log_lik, kl_per_dim = elbo_terms(params, sigma2, stats)
    return expected_log_lik - beta * jnp.sum(kl_per_dim)


def kl_per_datapoint(params: LinearVAEParams, X):
    """``KL_i(x) = 1/2 [ D_i + (v_i^T (x - mu))^2 - 1 - log D_i ]`` for every sample: (N, k).

    The per-example, per-dimension KL that the (epsilon, delta)-collapse measure thresholds
    (Lucas et al. Section 6, docs/theory.md (T5)).

    The third dimension of the optimum at sigma2 = 1.5 is collapsed: no datapoint moves it.

    >>> import numpy as np
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=3, beta=1.0, sigma2=1.5)
    >>> params = optimum.parameters(mean=np.zeros(4), eigenvectors=np.eye(4))
    >>> stats = DataStats.from_moments(np.zeros(4), np.diag([4.0, 2.0, 1.0, 0.5]))
    >>> np.asarray(kl_per_datapoint(params, np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))).round(4)
    array([[0.256 , 0.0188, 0.    ],
           [0.1779, 0.0813, 0.    ]])


    References: docs/theory.md (T5.1); Lucas et al. 2019, Section 6.
    """
    D = jnp.exp(params.log_D)
    means = (X - params.mu) @ params.V.T
    return standard_normal_kl(means**2, D, params.log_D)


def monte_carlo_elbo(params: LinearVAEParams, sigma2, beta, X, key, n_samples: int = 1, dim=None):
    """Reparameterised Monte-Carlo estimate of the beta-ELBO on the rows of ``X``.

    ``z = V (x - mu) + sqrt(D) * eps``, ``eps ~ N(0, I_k)`` (the standard deviation, not the
    variance, multiplies ``eps``; Kingma & Welling 2013, Section 2.4), ``n_samples`` draws per
    datapoint; the reconstruction term is estimated, the Gaussian KL is analytic (the estimator
    of Kingma & Welling eq. 10).  Unbiased for :func:`exact_elbo` on the same data.  ``dim`` is
    the data's ``d`` when ``X`` holds only its top-``r`` eigen-coordinates (see :class:`DataStats`).

    On 20,000 draws from N(0, diag(4, 2, 1, 0.5)), four samples each, it lands within Monte-Carlo
    error of the exact value on the same data:

    >>> import numpy as np
    >>> from linear_vae.data.moments import compute_moments
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> X = np.random.default_rng(0).normal(size=(20000, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5])
    >>> moments = compute_moments(X)
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(moments.mean, np.eye(4))
    >>> exact = exact_elbo(params, 1.5, 1.0, DataStats.from_moments(moments.mean, moments.cov))
    >>> estimate = monte_carlo_elbo(params, 1.5, 1.0, jnp.asarray(X), jax.random.key(0), n_samples=4)
    >>> bool(abs(estimate - exact) < 0.01)
    True


    References: docs/theory.md (T3.4); Kingma & Welling 2013, Section 2.4 and eq. 10.
    """
    W, mu, V, log_D = params
    d = W.shape[0] if dim is None else dim
    centred = X - mu
    means = centred @ V.T  # (N, k)
    eps = jax.random.normal(key, (n_samples,) + means.shape, dtype=means.dtype)
    z = means + jnp.exp(0.5 * log_D) * eps  # (S, N, k)
    residual = centred - z @ W.T  # (S, N, d)
    log_lik = -0.5 * d * (LOG_2PI + jnp.log(sigma2)) - jnp.sum(residual**2, axis=-1) / (2.0 * sigma2)
    kl = jnp.sum(kl_per_datapoint(params, X), axis=-1)  # (N,)
    return jnp.mean(log_lik) - beta * jnp.mean(kl)


def optimal_encoder(W, sigma2, beta):
    """The encoder maximising the beta-ELBO for a fixed decoder ``W``.

    ``M = W^T W + beta sigma2 I``, ``V = M^{-1} W^T``, ``D_j = beta sigma2 / (||w_j||^2 + beta sigma2)``
    (docs/theory.md (T3); Lucas et al. Appendix C, setting the gradients in ``V`` and ``D`` to zero).
    With beta = 1 the ELBO then equals ``MLL(W) - E KL(q || p(z|x))``, and equals the MLL iff
    ``W^T W`` is diagonal.  Returns ``(V, D)``.

    >>> import numpy as np
    >>> V, D = optimal_encoder(np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), sigma2=1.0, beta=1.0)
    >>> np.asarray(V), np.asarray(D)
    (array([[0.5, 0. , 0. ],
           [0. , 0.4, 0. ]]), array([0.5, 0.2]))

    References: docs/theory.md (T3.2); Lucas et al. 2019, Appendix C.
    """
    W = jnp.asarray(W)
    t = beta * sigma2
    M = W.T @ W + t * jnp.eye(W.shape[1], dtype=W.dtype)
    V = spd.solve(spd.cholesky(M), W.T)
    D = t / (jnp.sum(W**2, axis=0) + t)
    return V, D


def with_optimal_encoder(W, mu, sigma2, beta) -> LinearVAEParams:
    """A :class:`LinearVAEParams` with decoder ``(W, mu)`` and its :func:`optimal_encoder`.

    >>> import numpy as np
    >>> with_optimal_encoder(np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), np.zeros(3), 1.0, 1.0).log_D
    Array([-0.69314718, -1.60943791], dtype=float64)

    References: docs/theory.md (T3.2); Lucas et al. 2019, Appendix C.
    """
    V, D = optimal_encoder(W, sigma2, beta)
    return LinearVAEParams(jnp.asarray(W), jnp.asarray(mu), V, jnp.log(D))


def elbo_gap_optimal_encoder(W, sigma2):
    """``MLL(W) - ELBO(W, optimal encoder)`` at beta = 1: ``1/2 [sum_j log M_jj - log det M]``.

    ``M = W^T W + sigma2 I`` (docs/theory.md (T3); Hadamard's inequality makes it
    >= 0, with equality iff ``W^T W`` is diagonal).

    >>> import numpy as np
    >>> float(elbo_gap_optimal_encoder(np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]), sigma2=1.0))  # W^T W not diagonal
    0.09116077839697723

    References: docs/theory.md (T3.3); Lucas et al. 2019, Section 4.2 and Appendix C.
    """
    W = jnp.asarray(W)
    M = W.T @ W + sigma2 * jnp.eye(W.shape[1], dtype=W.dtype)
    return 0.5 * (jnp.sum(jnp.log(jnp.diag(M))) - spd.log_det(spd.cholesky(M)))
