"""Trained versus analytic: how close a gradient-trained linear VAE lands to the closed form.

For each trained configuration :func:`compare_sweep` reports the final exact beta-ELBO, the
closed-form optimum at the same ``(beta, sigma2)`` (at the closed-form learned ``sigma2`` when
sigma2 was learned), their gap ``optimal - trained`` in nats per datapoint, the active
dimensions measured two ways against the prediction, the largest principal angle between the
trained and the predicted active subspace, and the distance of ``beta sigma2`` to the nearest
eigenvalue (near a threshold the saddle is flat and convergence slow).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from linear_vae.collapse import (DEFAULT_DELTA, DEFAULT_EPSILON, active_by_column_norm, encoder_kl_matrix,
                                 epsilon_delta_collapsed)
from linear_vae.datasets import Dataset
from linear_vae.elbo import LinearVAE
from linear_vae.moments import Moments, Spectrum, compute_moments, eigen_decomposition
from linear_vae.optimum import beta_elbo_optimum, learned_sigma2, threshold_distance
from linear_vae.train import SweepResult, TrainConfig, TrainData, train_sweep


class Problem(NamedTuple):
    """A data set with its moments and eigen-decomposition, computed once and shared by training and
    the closed form."""

    dataset: Dataset
    moments: Moments
    spectrum: Spectrum

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "Problem":
        moments = compute_moments(dataset.X)
        return cls(dataset, moments, eigen_decomposition(moments.cov))

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.spectrum.eigenvalues


def max_principal_angle_deg(A: np.ndarray, B: np.ndarray) -> float:
    """Largest principal angle (degrees) between the column spans of ``A`` and ``B`` (same rank).

    Björck & Golub (1973): with orthonormal bases ``Q_A``, ``Q_B`` the cosines of the principal
    angles are the singular values of ``Q_A^T Q_B``.
    """
    Q_a, _ = np.linalg.qr(A)
    Q_b, _ = np.linalg.qr(B)
    cosines = np.linalg.svd(Q_a.T @ Q_b, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def off_diagonal_ratio(W: np.ndarray) -> float:
    """``max_{i != j} |(W^T W)_ij| / max_i (W^T W)_ii``: 0 when the columns are orthogonal (identifiable).

    Taken over the predicted-active columns only: collapsed columns are ~0 and would make the
    ratio meaningless.
    """
    WtW = W.T @ W
    return float(np.max(np.abs(WtW - np.diag(np.diag(WtW)))) / np.max(np.diag(WtW)))


def compare_one(params: LinearVAE, sigma2: float, beta: float, sigma2_learned: bool, final_elbo: float,
                spectrum: Spectrum, moments: Moments, X: np.ndarray,
                epsilon: float = DEFAULT_EPSILON, delta: float = DEFAULT_DELTA) -> dict:
    """The trained-versus-analytic report of one trained model (see the module docstring)."""
    eigenvalues = spectrum.eigenvalues
    k = params.W.shape[1]
    analytic_sigma2 = learned_sigma2(eigenvalues, k, beta) if sigma2_learned else sigma2
    optimum = beta_elbo_optimum(eigenvalues, k, beta, analytic_sigma2)
    column_norms_sq = np.sum(params.W**2, axis=0)
    m = optimum.active_dims
    strongest = np.argsort(column_norms_sq)[::-1][:m]
    angle = max_principal_angle_deg(params.W[:, strongest], spectrum.eigenvectors[:, :m]) if m else None
    return {
        "beta": float(beta),
        "sigma2": float(sigma2),
        "sigma2_learned": bool(sigma2_learned),
        "optimal_sigma2": float(analytic_sigma2),
        "elbo": float(final_elbo),
        "optimal_elbo": optimum.elbo,
        "gap": optimum.elbo - float(final_elbo),
        "active_dims": int(active_by_column_norm(column_norms_sq, beta, sigma2).sum()),
        "active_dims_epsilon_delta": int(k - epsilon_delta_collapsed(encoder_kl_matrix(params, X), epsilon, delta).sum()),
        "predicted_active_dims": m,
        "max_principal_angle_deg": angle,
        "nearest_threshold_distance": threshold_distance(eigenvalues, k, beta, analytic_sigma2),
        "bias_error": float(np.max(np.abs(params.mu - moments.mean))),
        "off_diagonal_wtw": off_diagonal_ratio(params.W[:, strongest]) if m > 1 else None,
        "column_norms_sq": column_norms_sq.tolist(),
    }


def compare_sweep(result: SweepResult, spectrum: Spectrum, moments: Moments, X: np.ndarray,
                  epsilon: float = DEFAULT_EPSILON, delta: float = DEFAULT_DELTA) -> list[dict]:
    """:func:`compare_one` for every configuration of a sweep, with its seed, steps and timings."""
    reports = []
    n_configs = len(result.sigma2)
    for i in range(n_configs):
        params = LinearVAE(*(p[i] for p in result.params))
        report = compare_one(params, result.sigma2[i], result.hyper.beta[i], result.config.learn_sigma2,
                             result.history.elbo[i, -1], spectrum, moments, X, epsilon, delta)
        report.update(seed=int(result.hyper.seed[i]), steps=result.config.steps,
                      objective=result.config.objective, seconds=result.seconds / n_configs,
                      sweep_seconds=result.seconds, compile_seconds=result.compile_seconds)
        reports.append(report)
    return reports


def train_and_compare(problem: Problem, config: TrainConfig, betas, sigma2s, seeds,
                      progress: Callable[[int, int], None] | None = None) -> tuple[SweepResult, list[dict]]:
    """Train one sweep (one compiled call, in ``config.basis``) and compare every configuration
    with the closed form: the one path from data to trained-versus-analytic reports."""
    config = config.validate(problem.dataset.d, problem.dataset.n)
    data = TrainData.build(problem.dataset.X, problem.moments, problem.spectrum, config.basis)
    result = train_sweep(data, config, betas, sigma2s, seeds, progress=progress)
    return result, compare_sweep(result, problem.spectrum, problem.moments, problem.dataset.X)
