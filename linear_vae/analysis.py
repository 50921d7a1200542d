"""Closed-form analysis of a data set: what the theory predicts for a linear VAE trained on it.

This is what ``linear-vae analyze`` prints; it is built only from the functions of
:mod:`linear_vae.moments`, :mod:`linear_vae.ppca` and :mod:`linear_vae.optimum`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from linear_vae.datasets import validate_data
from linear_vae.moments import Moments, Spectrum, compute_moments, eigen_decomposition
from linear_vae.optimum import (BetaElboOptimum, beta_elbo_optimum, collapse_thresholds, learned_sigma2,
                               threshold_distance)
from linear_vae.validation import check_latent_dim, check_positive


class Analysis(NamedTuple):
    """The closed-form optimum of the beta-ELBO on one data set, with the data's moments."""

    moments: Moments
    spectrum: Spectrum
    latent_dim: int
    sigma2_learned: bool
    optimum: BetaElboOptimum

    def nearest_threshold_distance(self) -> float:
        """See :func:`linear_vae.optimum.threshold_distance`."""
        return threshold_distance(self.spectrum.eigenvalues, self.latent_dim, self.optimum.beta, self.optimum.sigma2)

    def to_dict(self) -> dict:
        """The JSON report of ``linear-vae analyze``."""
        opt = self.optimum
        eigenvalues = self.spectrum.eigenvalues
        return {
            "n": int(self.moments.n),
            "d": int(len(eigenvalues)),
            "latent_dim": self.latent_dim,
            "beta": opt.beta,
            "sigma2": opt.sigma2,
            "sigma2_learned": self.sigma2_learned,
            "eigenvalues": eigenvalues[: self.latent_dim + 1].tolist(),
            "total_variance": float(eigenvalues.sum()),
            "elbo": opt.elbo,
            "mll": opt.mll,
            "active_dims": opt.active_dims,
            "collapse_thresholds": collapse_thresholds(eigenvalues, self.latent_dim, opt.sigma2).tolist(),
            "kl_per_dim": opt.kl_per_dim.tolist(),
            "column_norms_sq": opt.column_variances.tolist(),
            "nearest_threshold_distance": self.nearest_threshold_distance(),
        }


def analyze(X: np.ndarray, latent_dim: int, beta: float = 1.0, sigma2: float | None = None) -> Analysis:
    """Closed-form optimum of the beta-ELBO of a linear VAE with ``latent_dim`` latents on ``X``.

    ``sigma2=None`` means sigma2 is learned: its closed-form optimum
    (:func:`linear_vae.optimum.learned_sigma2`; the pPCA MLE at beta = 1).
    Raises ``ValueError`` for bad arguments (see :mod:`linear_vae.validation`).
    """
    validate_data(X)
    X = np.asarray(X, dtype=np.float64)
    latent_dim = check_latent_dim(latent_dim, X.shape[1])
    beta = check_positive("beta", beta)
    if sigma2 is not None:
        sigma2 = check_positive("sigma2", sigma2)
    moments = compute_moments(X)
    spectrum = eigen_decomposition(moments.cov)
    return analyze_spectrum(moments, spectrum, latent_dim, beta, sigma2)


def analyze_spectrum(moments: Moments, spectrum: Spectrum, latent_dim: int, beta: float,
                     sigma2: float | None) -> Analysis:
    """:func:`analyze` for precomputed moments and eigen-decomposition."""
    learned = sigma2 is None
    if learned:
        sigma2 = learned_sigma2(spectrum.eigenvalues, latent_dim, beta)
    optimum = beta_elbo_optimum(spectrum.eigenvalues, latent_dim, beta, sigma2)
    return Analysis(moments, spectrum, latent_dim, learned, optimum)
