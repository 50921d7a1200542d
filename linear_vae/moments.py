"""Sample moments and the eigen-decomposition of the data covariance (THEORY.md, "Conventions").

The covariance is the maximum-likelihood one, ``S = (1/N) sum_n (x_n - mu)(x_n - mu)^T``
(not ``np.cov``'s 1/(N-1)): every objective is averaged over the same data, and the 1/(N-1)
normalisation shifts its optimum by about ``d/(2N)`` nats.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Moments(NamedTuple):
    """First and second sample moments: everything the exact ELBO and the MLL need of the data.

    Attributes
    ----------
    mean : (d,) sample mean ``mu``.
    cov : (d, d) covariance ``S`` with the 1/N normalisation.
    n : number of samples ``N``.
    """

    mean: np.ndarray
    cov: np.ndarray
    n: int


class Spectrum(NamedTuple):
    """Eigen-decomposition ``S = U diag(lambda) U^T``.

    Attributes
    ----------
    eigenvalues : (d,) ``lambda_1 >= ... >= lambda_d >= 0`` (round-off below 0 clipped to 0).
    eigenvectors : (d, d) columns ``u_i``, each with the canonical sign: its entry of largest
        absolute value is positive (ties: the first such entry), as scikit-learn's ``svd_flip``.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray


def compute_moments(X: np.ndarray) -> Moments:
    """Sample mean and ``S = (1/N) (X - mu)^T (X - mu)`` in float64 (THEORY.md, "Conventions")."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    centred = X - mean
    cov = centred.T @ centred / X.shape[0]
    return Moments(mean=mean, cov=(cov + cov.T) / 2, n=X.shape[0])


def canonical_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest absolute value is positive.

    Makes eigenvectors (defined only up to sign) deterministic across runs and machines.
    """
    rows = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def eigen_decomposition(cov: np.ndarray) -> Spectrum:
    """Eigenvalues in descending order, clipped at 0, with canonically signed eigenvectors.

    ``S`` is positive semi-definite, so negative eigenvalues are round-off (on MNIST, 121
    constant pixels give 121 zero eigenvalues that LAPACK returns as about +-1e-17); they are
    clipped to exactly 0.  Repeated eigenvalues have eigenvectors defined only up to a rotation
    within their eigenspace; every quantity this package reports is invariant to that choice.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    order = np.argsort(eigenvalues, kind="stable")[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    return Spectrum(eigenvalues=eigenvalues, eigenvectors=canonical_signs(eigenvectors[:, order]))
