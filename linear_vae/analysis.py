"""Closed-form analysis of a data set: what the theory predicts for a linear VAE trained on it.

This is what ``linear-vae analyze`` prints; it is built only from the functions of
:mod:`linear_vae.moments`, :mod:`linear_vae.ppca` and :mod:`linear_vae.optimum`.  The closed form
needs of ``S`` only its top ``k + 1`` eigenpairs, ``tr S`` and ``d``
(:func:`linear_vae.moments.spectrum_totals`), so data with many features (``d > N``) are analysed
from the data matrix without forming the d x d ``S`` (:func:`linear_vae.moments.top_eigenpairs`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from linear_vae.metrics import optimum_collapse_metrics
from linear_vae.optimum import (
    BetaElboOptimum,
    beta_elbo_optimum,
    collapse_thresholds,
    learned_sigma2,
    threshold_distance,
)
from linear_vae.problem import Problem
from linear_vae.validation import check_latent_dim, check_positive, validate_data


class Analysis(NamedTuple):
    """The closed-form optimum of the beta-ELBO on one data set (a :class:`~linear_vae.problem.Problem`).

    The problem carries all ``d`` eigenpairs of ``S`` (solver ``"full"``) or its top
    ``min(k + 1, d)`` with ``tr S`` and ``d`` (solver ``"top"``); both give the same report.
    """

    problem: Problem
    latent_dim: int
    sigma2_learned: bool
    optimum: BetaElboOptimum

    def nearest_threshold_distance(self) -> float:
        """See :func:`linear_vae.optimum.threshold_distance`."""
        return threshold_distance(self.problem.eigenvalues, self.latent_dim, self.optimum.beta, self.optimum.sigma2)

    def to_dict(self) -> dict:
        """The JSON report of ``linear-vae analyze``.

        Its last keys are the optimum's collapse metrics (rate, distortion, Gaussian mutual
        information and marginal KL, active units), from the eigenvalues, ``tr S`` and ``d`` only
        (:func:`linear_vae.metrics.optimum_collapse_metrics`; docs/theory.md (T11.4)).
        """
        opt = self.optimum
        eigenvalues = self.problem.eigenvalues
        metrics = optimum_collapse_metrics(
            eigenvalues, self.latent_dim, opt.beta * opt.sigma2, trace=self.problem.trace, dim=self.problem.d
        )
        return {
            "n": int(self.problem.n),
            "d": int(self.problem.d),
            "latent_dim": self.latent_dim,
            "beta": opt.beta,
            "sigma2": opt.sigma2,
            "sigma2_learned": self.sigma2_learned,
            "eigenvalues": eigenvalues[: self.latent_dim + 1].tolist(),
            "total_variance": float(self.problem.trace),
            "elbo": opt.elbo,
            "mll": opt.mll,
            "active_dims": opt.active_dims,
            "collapse_thresholds": collapse_thresholds(eigenvalues, self.latent_dim, opt.sigma2).tolist(),
            "kl_per_dim": opt.kl_per_dim.tolist(),
            "column_norms_sq": opt.column_variances.tolist(),
            "nearest_threshold_distance": self.nearest_threshold_distance(),
            **metrics,
        }


SOLVERS = ("auto", "full", "top")


def analyze(
    X: np.ndarray, latent_dim: int, beta: float = 1.0, sigma2: float | None = None, *, solver: str = "auto"
) -> Analysis:
    """Closed-form optimum of the beta-ELBO of a linear VAE with ``latent_dim`` latents on ``X``.

    ``sigma2=None`` means sigma2 is learned: its closed-form optimum
    (:func:`linear_vae.optimum.learned_sigma2`; the pPCA MLE at beta = 1).

    ``solver``: ``"full"`` forms the d x d ``S`` and all its eigenpairs; ``"top"`` takes the top
    ``k + 1`` eigenpairs and ``tr S`` from the data matrix (the N x N Gram matrix when ``d > N``);
    ``"auto"`` (the default) is ``"top"`` iff ``d > N``, i.e. ``S`` is formed only when it is no
    larger than ``X`` (costs in :meth:`linear_vae.problem.Problem.from_dataset`).  The two agree
    to float64 round-off (measured <= 1e-11 relative on every number of the report).  Raises
    ``ValueError`` for bad arguments (see :mod:`linear_vae.validation`).
    """
    validate_data(X)
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    latent_dim = check_latent_dim(latent_dim, d)
    beta = check_positive("beta", beta)
    if sigma2 is not None:
        sigma2 = check_positive("sigma2", sigma2)
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    full = solver == "full" or solver == "auto" and d <= n
    problem = Problem.from_data(X, form_covariance=full, eigenpairs=min(latent_dim + 1, d))
    return analyze_problem(problem, latent_dim, beta, sigma2)


def analyze_problem(problem: Problem, latent_dim: int, beta: float, sigma2: float | None) -> Analysis:
    """:func:`analyze` for a :class:`~linear_vae.problem.Problem` (valid arguments assumed)."""
    learned = sigma2 is None
    totals = {"trace": problem.trace, "dim": problem.d}
    if learned:
        sigma2 = learned_sigma2(problem.eigenvalues, latent_dim, beta, **totals)
    optimum = beta_elbo_optimum(problem.eigenvalues, latent_dim, beta, sigma2, **totals)
    return Analysis(problem, latent_dim, learned, optimum)
