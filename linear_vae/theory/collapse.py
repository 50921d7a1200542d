"""Measures of posterior collapse for a trained (or closed-form) encoder.

Lucas et al. 2019, Section 6, "(epsilon, delta)-collapse"; docs/theory.md (T5).  Latent dimension ``i`` is (epsilon, delta)-collapsed when
``P_x[ KL(q(z_i|x) || p(z_i)) < epsilon ] >= 1 - delta``: for all but a fraction delta of the
data its posterior is within epsilon nats of the prior.
"""

from __future__ import annotations

import numpy as np

from linear_vae.theory.elbo import LinearVAEParams, kl_per_datapoint

#: The paper's delta: a dimension may carry information on at most 1% of the data and still count as collapsed.
DEFAULT_DELTA = 0.01
#: Default epsilon in nats.
DEFAULT_EPSILON = 0.01


def collapsed_fraction_per_dim(kl_matrix: np.ndarray, epsilon: float) -> np.ndarray:
    """Fraction of datapoints with ``KL_i(x) < epsilon``, for each dimension ``i`` (input (N, k)).

    >>> kl = np.array([[0.0, 0.5], [0.001, 0.002], [0.0, 0.9], [0.0, 0.3]])  # 4 datapoints, 2 dimensions
    >>> collapsed_fraction_per_dim(kl, epsilon=0.01)
    array([1.  , 0.25])

    References: docs/theory.md (T5.1); Lucas et al. 2019, Section 6.
    """
    return np.mean(np.asarray(kl_matrix) < epsilon, axis=0)


def epsilon_delta_collapsed(
    kl_matrix: np.ndarray, epsilon: float = DEFAULT_EPSILON, delta: float = DEFAULT_DELTA
) -> np.ndarray:
    """Boolean (k,): dimension ``i`` is (epsilon, delta)-collapsed, ``P_x[KL_i(x) < epsilon] >= 1 - delta``.

    >>> kl = np.array([[0.0, 0.5], [0.001, 0.002], [0.0, 0.9], [0.0, 0.3]])
    >>> epsilon_delta_collapsed(kl, epsilon=0.01, delta=0.01)  # dimension 2 informs 3 of 4 points
    array([ True, False])

    References: docs/theory.md (T5.1); Lucas et al. 2019, Section 6.
    """
    return collapsed_fraction_per_dim(kl_matrix, epsilon) >= 1.0 - delta


def collapsed_fraction_curve(kl_matrix: np.ndarray, epsilons, delta: float = DEFAULT_DELTA) -> np.ndarray:
    """Fraction of the k latent dimensions that are (epsilon, delta)-collapsed, for each epsilon.

    >>> kl = np.array([[0.0, 0.5], [0.001, 0.002], [0.0, 0.9], [0.0, 0.3]])
    >>> collapsed_fraction_curve(kl, epsilons=[1e-4, 0.01, 1.0])
    array([0. , 0.5, 1. ])

    References: docs/theory.md (T5.1); Lucas et al. 2019, Section 6.
    """
    return np.array([epsilon_delta_collapsed(kl_matrix, e, delta).mean() for e in np.atleast_1d(epsilons)])


def encoder_kl_matrix(params: LinearVAEParams, X: np.ndarray) -> np.ndarray:
    """Per-datapoint, per-dimension KL ``(N, k)`` of a linear VAE's encoder on ``X`` (numpy float64).

    At the closed-form optimum (eigenvalues 4, 2, 1, 0.5; beta = 1, sigma2 = 1.5) the third
    dimension is collapsed, so its KL is 0 on every datapoint:

    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum([4.0, 2.0, 1.0, 0.5], latent_dim=3, beta=1.0, sigma2=1.5)
    >>> X = np.random.default_rng(0).normal(size=(5, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5])
    >>> kl = encoder_kl_matrix(optimum.parameters(X.mean(axis=0), np.eye(4)), X)
    >>> kl.shape, bool(np.all(kl[:, 2] == 0.0)), bool(np.all(kl[:, :2] > 0.0))
    ((5, 3), True, True)

    References: docs/theory.md (T5.1); Lucas et al. 2019, Section 6.
    """
    return np.asarray(kl_per_datapoint(params, np.asarray(X, dtype=np.float64)))


def active_by_column_norm(
    column_norms_sq: np.ndarray, beta: float, sigma2: float, relative_tolerance: float = 1e-3
) -> np.ndarray:
    """Boolean (k,): ``||w_i||^2 > relative_tolerance * beta * sigma2``.

    The tolerance is relative to ``t = beta sigma2`` because the optimal squared norm of an
    active column is ``lambda_i - t``: a dimension whose eigenvalue is 2% above the threshold has
    ``||w_i||^2 = 0.02 t``, twenty times the default tolerance, while a collapsed column
    decays to 0.

    >>> active_by_column_norm(np.array([2.5, 0.5, 1e-6]), beta=1.0, sigma2=1.5)
    array([ True,  True, False])

    References: docs/theory.md (T5.2); Lucas et al. 2019, Section 4.2.
    """
    return np.asarray(column_norms_sq) > relative_tolerance * beta * sigma2
