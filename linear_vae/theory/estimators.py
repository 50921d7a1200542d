"""Sampling estimators of the collapse metrics for any Gaussian VAE: rate, distortion, active units,
minibatch mutual information and the importance-weighted bound.

docs/theory.md (T12).  A model is given as functions, so the same code measures the linear VAE
(:func:`linear_model`) and the deep one (:mod:`linear_vae.deep.deep`):

* ``encode(x) -> (mean, log_var)``: the diagonal Gaussian ``q(z|x)``, arrays of shape (..., k);
* ``decode(z) -> reconstruction mean`` of shape (..., d), for ``z`` with any leading axes;
* ``sigma2``: the scalar variance of ``p(x|z) = N(decode(z), sigma2 I_d)``; the prior is ``N(0, I_k)``.

Every estimator is a pure JAX function of an explicit PRNG ``key`` (``jit``- and ``vmap``-friendly;
sample counts and chunk sizes are Python ints, static under ``jit``), computes in the dtype of its
inputs (float64 for the linear VAE, float32 for the deep networks), and is calibrated against the
exact values of :mod:`linear_vae.theory.metrics` by ``linear-vae reproduce --only metric_calibration``.
Rates and informations are in nats per datapoint; the distortion is a squared error in data units.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.data.moments import LOG_2PI

#: Default activity threshold of an active unit (Burda et al. 2016); the same as
#: :data:`linear_vae.theory.metrics.AU_THRESHOLD`.
AU_THRESHOLD = 0.01

#: Importance samples per step of :func:`iwae_bound`'s scan (memory grows with this, not with ``samples``).
IWAE_CHUNK = 16

#: Rows of the pairwise densities ``q(z_i|x_j)`` formed at once by :func:`mutual_information_minibatch`
#: (memory ``MI_ROW_BLOCK x B x k``).
MI_ROW_BLOCK = 64


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive Python int (static under jit), got {value!r}")
    return value


def _sample_posterior(key, mean, log_var, samples: int):
    """``z = mean + exp(log_var / 2) * eps`` with ``eps ~ N(0, I)``, shape (samples, ..., k), and ``eps``."""
    eps = jax.random.normal(key, (samples,) + mean.shape, dtype=mean.dtype)
    return mean + jnp.exp(0.5 * log_var) * eps, eps


def diagonal_gaussian_log_density(z, mean, log_var):
    """``log N(z; mean, diag(exp(log_var)))`` summed over the last axis (broadcasting), in nats.

    >>> float(diagonal_gaussian_log_density(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2)))  # -log(2 pi)
    -1.8378770664093453

    References: docs/theory.md (T12.1); Kingma & Welling 2013, Appendix B.
    """
    return -0.5 * jnp.sum(LOG_2PI + log_var + (z - mean) ** 2 * jnp.exp(-log_var), axis=-1)


def standard_normal_log_density(z):
    """``log N(z; 0, I)`` summed over the last axis, in nats (the prior of every model here).

    >>> float(standard_normal_log_density(jnp.zeros(2)))
    -1.8378770664093453

    References: docs/theory.md (T12.1); Kingma & Welling 2013, Appendix B.
    """
    return -0.5 * jnp.sum(LOG_2PI + z**2, axis=-1)


def kl_rate_mc(key, mean, log_var, samples: int = 1):
    """Monte-Carlo rate ``R = E_x E_q(z|x) [log q(z|x) - log p(z)]``, averaged over the rows, in nats.

    ``R_hat = 1/(N S) sum_n sum_s [log q(z_ns|x_n) - log p(z_ns)]``, ``z_ns ~ q(z|x_n)`` reparameterised
    (``samples = S`` draws per row).  Unbiased for the rows' average KL (the analytic KL of
    :func:`linear_vae.theory.elbo.standard_normal_kl`, which a deep-VAE paper may report instead); its
    standard error falls as ``(N S)^(-1/2)``.  ``mean``, ``log_var``: (..., k), every leading axis a row.

    >>> mean, log_var = jnp.array([[0.0, 1.0], [2.0, -1.0]]), jnp.zeros((2, 2))  # analytic rate: 1.5 nats
    >>> bool(abs(kl_rate_mc(jax.random.key(0), mean, log_var, samples=100_000) - 1.5) < 0.01)
    True

    References: docs/theory.md (T12.1, T11.1); Alemi et al. 2018; Kingma & Welling 2013, Section 2.4.
    """
    samples = _positive_int(samples, "samples")
    z, eps = _sample_posterior(key, mean, log_var, samples)
    log_q = -0.5 * jnp.sum(LOG_2PI + log_var + eps**2, axis=-1)  # (z - mean)^2 / var = eps^2, exactly
    return jnp.mean(log_q - standard_normal_log_density(z))


def distortion_mc(key, x, mean, log_var, decode, samples: int = 1):
    """Monte-Carlo distortion ``E_x E_q(z|x) ||x - decode(z)||^2``, a squared error in data units (not nats).

    ``D_hat = 1/(N S) sum_n sum_s ||x_n - decode(z_ns)||^2``, ``z_ns ~ q(z|x_n)``; unbiased, standard
    error ``O((N S)^(-1/2))``.  The samples are drawn one at a time in a ``lax.scan`` (the ``s``-th from
    ``fold_in(key, s)``), so memory does not grow with ``samples``.  ``x``: (..., d); ``mean``,
    ``log_var``: (..., k) with the same leading axes.

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> encode, decode, sigma2 = linear_model(params, 1.5)
    >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(100, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5]))
    >>> from linear_vae.theory.metrics import distortion
    >>> moments = np.mean(np.asarray(x), axis=0), np.cov(np.asarray(x).T, bias=True)
    >>> estimate = distortion_mc(jax.random.key(0), x, *encode(x), decode, samples=200)
    >>> bool(abs(estimate / distortion(params, *moments) - 1) < 0.02)  # exact from the rows' moments
    True

    References: docs/theory.md (T12.1, T11.1); Alemi et al. 2018.
    """
    samples = _positive_int(samples, "samples")

    def one_sample(total, s):
        z, _ = _sample_posterior(jax.random.fold_in(key, s), mean, log_var, 1)
        return total + jnp.mean(jnp.sum((x - decode(z[0])) ** 2, axis=-1)), None

    total, _ = jax.lax.scan(one_sample, jnp.zeros((), x.dtype), jnp.arange(samples))
    return total / samples


def active_unit_variances(mean):
    """``A_i = Var_n E_q[z_i | x_n]``, the sample variance (normalised by 1/N) of the encoder means, (k,).

    With the encoder means of ``N`` rows drawn from the data this is unbiased up to the factor
    ``(N - 1)/N`` for the population ``Var_x E_q[z_i]``, with standard error ``O(N^(-1/2))``; on the
    rows of a data set it equals the exact moment value of :func:`linear_vae.theory.metrics.au_variances`
    for the linear VAE.  ``mean``: (..., k), every leading axis a row.

    >>> active_unit_variances(jnp.array([[0.0, 1.0], [2.0, -1.0]]))
    Array([1., 1.], dtype=float64)

    References: docs/theory.md (T12.2, T11.2); Burda et al. 2016, Section 5.2.
    """
    return jnp.var(jnp.reshape(mean, (-1, mean.shape[-1])), axis=0)


def active_by_encoder_mean(mean, threshold: float = AU_THRESHOLD):
    """``#{i : Var_n E_q[z_i | x_n] > threshold}`` from :func:`active_unit_variances` (an int array).

    >>> int(active_by_encoder_mean(jnp.array([[0.0, 1.0], [2.0, 1.0]])))  # the second unit never moves
    1

    References: docs/theory.md (T12.2, T11.2); Burda et al. 2016, Section 5.2.
    """
    return jnp.sum(active_unit_variances(mean) > threshold)


def _log_marginal_estimates(z, mean, log_var):
    """For every row ``i``: ``log q(z_i|x_i)`` and ``log sum_j q(z_i|x_j)`` over all ``j`` and over ``j != i``,
    three (B,) arrays.  The first is the very term the full sum contains, so ``sum - self >= 0`` holds in
    floating point too (the include-self estimate never exceeds ``log B``, in float32 as well).

    Row ``i``'s densities under the ``B`` posteriors are formed ``MI_ROW_BLOCK`` rows at a time, so the
    memory is ``MI_ROW_BLOCK x B x k``, never the whole ``B x B`` matrix."""
    B = z.shape[0]

    def one_row(args):
        z_i, i = args
        log_q = diagonal_gaussian_log_density(z_i, mean, log_var)  # (B,): z_i under every posterior
        is_self = jnp.arange(B) == i
        others = jnp.where(is_self, -jnp.inf, log_q)
        return jnp.sum(jnp.where(is_self, log_q, 0.0)), jax.nn.logsumexp(log_q), jax.nn.logsumexp(others)

    return jax.lax.map(one_row, (z, jnp.arange(B)), batch_size=min(MI_ROW_BLOCK, B))


def mutual_information_minibatch(key, mean, log_var, include_self: bool):
    """Minibatch estimate of the encoder's mutual information ``I(x; z)``, in nats, in one of two forms.

    One ``z_i ~ q(z|x_i)`` per row of a batch of ``B``; ``I_hat = 1/B sum_i [log q(z_i|x_i) - log q_hat(z_i)]``
    with the aggregate posterior ``q(z) = E_x q(z|x)`` estimated from the batch:

    * ``include_self=True`` -- **the whole batch** (the common form, e.g. He et al. 2019's ``calc_mi``):
      ``log q_hat(z_i) = log 1/B sum_{j=1..B} q(z_i|x_j)``.  This is the InfoNCE bound with critic
      ``q(z|x)`` (van den Oord et al. 2018; Poole et al. 2019): biased **low** in expectation, and never
      above ``log B``, since ``sum_j q(z_i|x_j) >= q(z_i|x_i)``; at ``I`` near or above ``log B`` it
      saturates.  (He et al. 2019 use the analytic ``-H(q(z|x))`` for ``log q(z_i|x_i)``: the same
      expectation, but without the ``log B`` ceiling.)
    * ``include_self=False`` -- **the other points only** (leave-one-out):
      ``log q_hat(z_i) = log 1/(B-1) sum_{j != i} q(z_i|x_j)``.  The L1Out bound of Poole et al. 2019:
      biased **high** in expectation (unbounded when a ``z_i`` falls far from every other posterior).

    Both converge to ``I`` as ``B`` grows, at a rate that worsens exponentially with ``I``: trust them
    only where ``I`` is well below ``log B`` (see the calibration figure).  ``mean``, ``log_var``: (B, k);
    memory ``MI_ROW_BLOCK x B x k`` (the ``B x B`` densities are reduced a block of rows at a time).

    Two rows whose posteriors do not overlap carry one bit, ``log 2`` nats, the ceiling ``log B``
    of the whole-batch form:

    >>> mean, log_var = jnp.array([[-5.0], [5.0]]), jnp.full((2, 1), -4.0)
    >>> round(float(mutual_information_minibatch(jax.random.key(0), mean, log_var, include_self=True)), 6)
    0.693147

    References: docs/theory.md (T12.3, T11.3); Hoffman & Johnson 2016; Poole et al. 2019, Section 2.
    """
    if mean.ndim != 2 or mean.shape != log_var.shape:
        raise ValueError(f"`mean` and `log_var` must both be (B, k) arrays, got {mean.shape} and {log_var.shape}")
    B = mean.shape[0]
    if B < 2:
        raise ValueError(f"`mean` must hold a batch of at least 2 rows, got {B}")
    z, _ = _sample_posterior(key, mean, log_var, 1)
    log_q_self, log_sum_all, log_sum_others = _log_marginal_estimates(z[0], mean, log_var)
    if include_self:
        log_q_marginal = log_sum_all - jnp.log(B)
    else:
        log_q_marginal = log_sum_others - jnp.log(B - 1)
    return jnp.mean(log_q_self - log_q_marginal)


def log_importance_weights(key, x, mean, log_var, decode, sigma2, samples: int):
    """``log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x)`` for ``z_s ~ q(z|x)``: (samples, ...), in nats.

    ``log p(x|z) = -d/2 log(2 pi sigma2) - ||x - decode(z)||^2 / (2 sigma2)``.  The building block of
    :func:`iwae_bound`; ``E_q w = p(x)``, and ``E_q log w`` is the ELBO.

    The linear VAE's optimal encoder at beta = 1 is the exact posterior, so every weight is ``p(x)``:

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> encode, decode, sigma2 = linear_model(params, 1.5)
    >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(100, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5]))
    >>> log_w = log_importance_weights(jax.random.key(0), x, *encode(x), decode, sigma2, samples=8)
    >>> log_w.shape, bool(np.max(np.ptp(np.asarray(log_w), axis=0)) < 1e-12)
    ((8, 100), True)

    References: docs/theory.md (T12.4); Burda et al. 2016, Section 3.
    """
    z, eps = _sample_posterior(key, mean, log_var, samples)
    d = x.shape[-1]
    sigma2 = jnp.asarray(sigma2, x.dtype)
    log_lik = -0.5 * d * (LOG_2PI + jnp.log(sigma2)) - jnp.sum((x - decode(z)) ** 2, axis=-1) / (2.0 * sigma2)
    log_q = -0.5 * jnp.sum(LOG_2PI + log_var + eps**2, axis=-1)
    return log_lik + standard_normal_log_density(z) - log_q


def iwae_bound(key, x, encode, decode, sigma2, samples: int, chunk: int = IWAE_CHUNK):
    """The importance-weighted bound of every row, ``L_K(x) = log 1/K sum_k p(x, z_k) / q(z_k|x)``, (N,), nats.

    ``z_k ~ q(z|x)`` independently, ``K = samples``.  ``E L_K <= E L_{K+1} <= log p(x)``, ``L_1`` is the
    ELBO (beta = 1) and the bias ``log p(x) - E L_K = chi2(p(z|x) || q) / (2K) + O(K^-2)`` (the delta
    method; ``chi2`` the chi-square divergence of the true posterior from ``q``), so it falls as ``1/K``
    once ``K`` exceeds ``chi2``, which grows quickly with the dimension of ``z``.

    The ``K`` samples are drawn ``chunk`` at a time in a ``lax.scan`` with an online log-sum-exp, so the
    memory is ``chunk x N x d`` whatever ``K``; sample ``k`` comes from ``fold_in(key, k)``, so the value
    does not depend on ``chunk`` (up to round-off).  ``x``: (N, d) (or any leading axes).

    With the exact posterior as ``q`` (the linear VAE at its optimum, beta = 1) the bound is tight:

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> encode, decode, sigma2 = linear_model(params, 1.5)
    >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(100, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5]))
    >>> from linear_vae.theory.ppca import log_marginal_likelihood
    >>> bound = jnp.mean(iwae_bound(jax.random.key(0), x, encode, decode, sigma2, samples=4))
    >>> X = np.asarray(x)
    >>> exact = log_marginal_likelihood(params.W, 1.5, np.cov(X.T, bias=True), mean_offset=X.mean(axis=0))
    >>> bool(np.isclose(bound, exact, rtol=1e-12, atol=0))
    True

    References: docs/theory.md (T12.4); Burda et al. 2016, Section 3 and Theorem 1.
    """
    samples = _positive_int(samples, "samples")
    chunk = min(_positive_int(chunk, "chunk"), samples)
    mean, log_var = encode(x)
    n_chunks = math.ceil(samples / chunk)
    index = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)

    def chunk_log_weights(indices):
        def one(i):
            w = log_importance_weights(jax.random.fold_in(key, i), x, mean, log_var, decode, sigma2, 1)[0]
            return jnp.where(i < samples, w, -jnp.inf)  # the padding of the last chunk weighs nothing

        return jax.vmap(one)(indices)  # (chunk, N)

    def step(carry, indices):
        running_max, running_sum = carry
        log_w = chunk_log_weights(indices)
        new_max = jnp.maximum(running_max, jnp.max(log_w, axis=0))
        new_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(log_w - new_max), axis=0)
        return (new_max, new_sum), None

    first = chunk_log_weights(index[0])  # the first chunk is full, so the running maximum is finite
    first_max = jnp.max(first, axis=0)
    init = (first_max, jnp.sum(jnp.exp(first - first_max), axis=0))
    (running_max, running_sum), _ = jax.lax.scan(step, init, index[1:])
    return running_max + jnp.log(running_sum) - jnp.log(jnp.asarray(samples, x.dtype))


def linear_model(params, sigma2):
    """The linear VAE ``(W, mu, V, log D)`` of :class:`linear_vae.theory.elbo.LinearVAEParams` as a model for these
    estimators: ``(encode, decode, sigma2)`` with ``encode(x) = (V (x - mu), log D)`` (the variance the
    same for every row) and ``decode(z) = W z + mu``; ``sigma2`` is passed through.

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> params = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], 3, 1.0, 1.5).parameters(np.zeros(4), np.eye(4))
    >>> encode, decode, sigma2 = linear_model(params, 1.5)
    >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(100, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5]))
    >>> mean, log_var = encode(x)
    >>> mean.shape, log_var.shape, decode(mean).shape
    ((100, 3), (100, 3), (100, 4))

    References: docs/theory.md (T12, T3); Lucas et al. 2019, Section 4.2.
    """
    W, mu, V, log_D = params

    def encode(x):
        mean = (x - mu) @ V.T
        return mean, jnp.broadcast_to(log_D, mean.shape)

    def decode(z):
        return z @ W.T + mu

    return encode, decode, sigma2


def posterior_chi2_at_optimum(eigenvalues, k: int, beta: float, sigma2: float) -> float:
    """``E_x chi2(p(z|x) || q(z|x))`` at the beta-ELBO optimum for ``x ~ N(mu, diag(eigenvalues))``.

    Per active unit ``i`` (``lambda_i > t``, ``t = beta sigma2``, ``w_i = sqrt(lambda_i - t) e_i``) the
    posterior is ``N(a_i x_i, P_i)`` with ``P_i = sigma2 / (lambda_i - t + sigma2)``,
    ``a_i = sqrt(lambda_i - t) / (lambda_i - t + sigma2)``, and ``q`` is ``N(b_i x_i, Q_i)`` with
    ``Q_i = t / lambda_i``, ``b_i = sqrt(lambda_i - t) / lambda_i``; collapsed units have ``q`` = posterior
    = prior.  For one unit ``int p^2 / q = Q / (sqrt(P) sqrt(2Q - P)) exp(delta^2 / (2Q - P))`` with
    ``delta = (a - b) x_i ~ N(0, s^2)``, ``s^2 = (a - b)^2 lambda_i``, whose mean over ``x`` is
    ``Q / (sqrt(P) sqrt(2Q - P)) / sqrt(1 - 2 s^2 / (2Q - P))``; the units are independent, so the
    product over them, minus 1, is ``E_x chi2``, and the IWAE bias is ``chi2 / (2K) + O(K^-2)``.

    >>> round(posterior_chi2_at_optimum([4.0, 2.0, 1.0, 0.5], 3, beta=1.0, sigma2=1.5), 12)  # q is exact
    0.0
    >>> round(posterior_chi2_at_optimum([4.0, 2.0, 1.0, 0.5], 3, beta=0.5, sigma2=1.5), 4)
    3.0479

    References: docs/theory.md (T12.4); Burda et al. 2016, Section 3.
    """
    lam = np.asarray(eigenvalues[:k], dtype=np.float64)
    t = beta * sigma2
    lam = lam[lam > t]
    P = sigma2 / (lam - t + sigma2)
    Q = t / lam
    a = np.sqrt(lam - t) / (lam - t + sigma2)
    b = np.sqrt(lam - t) / lam
    s2 = (a - b) ** 2 * lam
    spread = 2 * Q - P
    if np.any(spread <= 0) or np.any(2 * s2 >= spread):
        return float("inf")  # the importance weights have infinite variance
    return float(np.prod(Q / (np.sqrt(P) * np.sqrt(spread)) / np.sqrt(1 - 2 * s2 / spread)) - 1.0)
