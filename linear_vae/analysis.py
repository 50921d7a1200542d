"""Closed-form analysis of a data set: what the theory predicts for a linear VAE trained on it.

This is what ``linear-vae analyze`` prints; it is built only from the functions of
:mod:`linear_vae.data.moments`, :mod:`linear_vae.theory.ppca` and :mod:`linear_vae.theory.optimum`.  The closed form
needs of ``S`` only its top ``k + 1`` eigenpairs, ``tr S`` and ``d``
(:func:`linear_vae.data.moments.spectrum_totals`), so data with many features (``d > N``) are analysed
from the data matrix without forming the d x d ``S`` (:func:`linear_vae.data.moments.top_eigenpairs`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from linear_vae.core.validation import check_latent_dim, check_positive, validate_data
from linear_vae.data.joint_moments import JointMoments
from linear_vae.data.problem import Problem
from linear_vae.theory.conditional import cvae_optimum, scaled_prior_optimum
from linear_vae.theory.hierarchical import hvae_optimum
from linear_vae.theory.metrics import optimum_collapse_metrics
from linear_vae.theory.optimum import (
    BetaElboOptimum,
    beta_elbo_optimum,
    collapse_thresholds,
    learned_sigma2,
    threshold_distance,
)


class Analysis(NamedTuple):
    """The closed-form optimum of the beta-ELBO on one data set (a :class:`~linear_vae.data.problem.Problem`).

    The problem carries all ``d`` eigenpairs of ``S`` (solver ``"full"``) or its top
    ``min(k + 1, d)`` with ``tr S`` and ``d`` (solver ``"top"``); both give the same report.
    """

    problem: Problem
    latent_dim: int
    sigma2_learned: bool
    optimum: BetaElboOptimum

    def nearest_threshold_distance(self) -> float:
        """See :func:`linear_vae.theory.optimum.threshold_distance`.

        >>> X = np.random.default_rng(0).normal(size=(500, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5])
        >>> round(analyze(X, 2, beta=1.0, sigma2=1.5).nearest_threshold_distance(), 4)  # lambda_2 = 1.759
        0.1726
        """
        return threshold_distance(self.problem.eigenvalues, self.latent_dim, self.optimum.beta, self.optimum.sigma2)

    def to_dict(self) -> dict:
        """The JSON report of ``linear-vae analyze``.

        Its last keys are the optimum's collapse metrics (rate, distortion, Gaussian mutual
        information and marginal KL, active units), from the eigenvalues, ``tr S`` and ``d`` only
        (:func:`linear_vae.theory.metrics.optimum_collapse_metrics`; docs/theory.md (T11.4)).

        >>> X = np.random.default_rng(0).normal(size=(500, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5])
        >>> report = analyze(X, 2, beta=1.0, sigma2=1.5).to_dict()
        >>> report["active_dims"], [round(v, 3) for v in report["spectrum"]], report["threshold"]
        (2, [4.172, 1.759], 1.5)
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
            "model": "vae",
            "spectrum": eigenvalues[: self.latent_dim].tolist(),
            "spectrum_units": SPECTRUM_UNITS,
            "threshold": opt.beta * opt.sigma2,
        }


SOLVERS = ("auto", "full", "top")
#: The models ``analyze_pairs`` knows (docs/theory.md (T4, T17)).
MODELS = ("vae", "cvae", "hvae")
#: Every spectrum of every model is reported as variances (docs/theory.md (T17.1)).
SPECTRUM_UNITS = "variance (squared data units)"


def analyze(
    X: np.ndarray, latent_dim: int, beta: float = 1.0, sigma2: float | None = None, *, solver: str = "auto"
) -> Analysis:
    """Closed-form optimum of the beta-ELBO of a linear VAE with ``latent_dim`` latents on ``X``.

    ``sigma2=None`` means sigma2 is learned: its closed-form optimum
    (:func:`linear_vae.theory.optimum.learned_sigma2`; the pPCA MLE at beta = 1).

    ``solver``: ``"full"`` forms the d x d ``S`` and all its eigenpairs; ``"top"`` takes the top
    ``k + 1`` eigenpairs and ``tr S`` from the data matrix (the N x N Gram matrix when ``d > N``);
    ``"auto"`` (the default) is ``"top"`` iff ``d > N``, i.e. ``S`` is formed only when it is no
    larger than ``X`` (costs in :meth:`linear_vae.data.problem.Problem.from_dataset`).  The two agree
    to float64 round-off (measured <= 1e-11 relative on every number of the report).  Raises
    ``ValueError`` for bad arguments (see :mod:`linear_vae.core.validation`).

    >>> X = np.random.default_rng(0).normal(size=(500, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5])
    >>> analysis = analyze(X, latent_dim=2)  # sigma2 learned: the mean of the two smallest eigenvalues
    >>> analysis.sigma2_learned, round(analysis.optimum.sigma2, 4), analysis.optimum.active_dims
    (True, 0.7733, 2)
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
    """:func:`analyze` for a :class:`~linear_vae.data.problem.Problem` (valid arguments assumed).

    >>> X = np.random.default_rng(0).normal(size=(500, 4)) * np.sqrt([4.0, 2.0, 1.0, 0.5])
    >>> round(analyze_problem(Problem.from_data(X), 2, 1.0, None).optimum.sigma2, 4)
    0.7733
    """
    learned = sigma2 is None
    totals = {"trace": problem.trace, "dim": problem.d}
    if learned:
        sigma2 = learned_sigma2(problem.eigenvalues, latent_dim, beta, **totals)
    optimum = beta_elbo_optimum(problem.eigenvalues, latent_dim, beta, sigma2, **totals)
    return Analysis(problem, latent_dim, learned, optimum)


def analyze_pairs(
    X: np.ndarray,
    Y: np.ndarray,
    model: str,
    sigma2: float,
    *,
    latent_dim: int | None = None,
    latent_dims: tuple[int, int] | None = None,
    beta: float = 1.0,
    beta1: float = 1.0,
    beta2: float = 1.0,
    prior_variance: float = 1.0,
    z1_variance: float | None = None,
    z2_variance: float | None = None,
    bias: bool = True,
) -> dict:
    """The closed-form optimum of a model of ``y`` given ``x`` (rows of ``X`` and ``Y`` are pairs), as
    the JSON report of ``linear-vae analyze --model``.

    ``model``: ``"vae"``, the linear VAE with prior ``N(0, prior_variance I)`` predicting ``y`` from
    ``x`` (Wang & Ziyin; ``Y = X`` is the VAE, docs/theory.md (T17.2)); ``"cvae"``, the linear
    conditional VAE (T17.3); ``"hvae"``, the two-level linear HVAE with ``latent_dims = (d1, d2)``, a
    fixed ``z1_variance`` and a learned ``z2`` variance (T17.4), or one fixed to ``z2_variance`` (T17.5).
    ``sigma2`` is the decoder variance ``eta_dec^2`` in every model, fixed.  ``bias=False`` uses raw (uncentred) moments, a model
    without biases.  Keys as :meth:`Analysis.to_dict` where they mean the same (``elbo``, the
    optimum's beta-ELBO per datapoint, constants included; ``active_dims``; ``kl_per_dim``), plus
    ``spectrum`` (variance units, as ``spectrum_units`` says) and ``threshold``; for the HVAE,
    ``active_z1``/``active_z2`` (counts), ``z1_thresholds`` and ``z2_threshold``.

    >>> rng = np.random.default_rng(0)
    >>> Y = rng.normal(size=(2000, 3)) * [3.0, 1.0, 0.2]
    >>> X = Y[:, :1] + 0.1 * rng.normal(size=(2000, 1))  # x knows y's first coordinate only
    >>> report = analyze_pairs(X, Y, "cvae", sigma2=0.5, latent_dim=3)
    >>> [round(v, 2) for v in report["spectrum"]]  # residual variances: x explains y_1, not y_2 or y_3
    [0.96, 0.04, 0.01]
    >>> report["threshold"], report["active_dims"]  # only y_2's residual exceeds beta sigma2
    (0.5, 1)

    References: docs/theory.md (T17); Dang et al. 2024; Wang & Ziyin 2022.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")
    sigma2 = check_positive("sigma2", sigma2)
    moments = JointMoments.from_data(X, Y, centred=bias)
    report = {
        "model": model,
        "n": int(moments.n),
        "d_x": moments.d_x,
        "d_y": moments.d_y,
        "bias": bias,
        "sigma2": sigma2,
        "prior_variance": check_positive("prior_variance", prior_variance),
        "spectrum_units": SPECTRUM_UNITS,
    }
    if model == "hvae":
        if latent_dims is None or z1_variance is None:
            raise ValueError("--model hvae needs --latent-dims D1 D2 and --z1-variance")
        optimum = hvae_optimum(
            moments, tuple(latent_dims), beta1, beta2, z1_variance, sigma2, prior_variance, z2_variance
        )
        return report | {
            "latent_dims": [int(d) for d in latent_dims],
            "beta1": float(beta1),
            "beta2": float(beta2),
            "z1_variance": float(z1_variance),
            "z2_variance": None if z2_variance is None else float(z2_variance),
            "elbo": -optimum.value,
            "spectrum": optimum.spectrum.tolist(),
            "z1_thresholds": optimum.z1_thresholds.tolist(),
            "z2_threshold": float(optimum.z2_threshold),
            "z2_models_z1_noise": bool(optimum.z2_models_z1_noise),
            "active_z1": optimum.active_z1_dims,
            "active_z2": optimum.active_z2_dims,
            "active_dims": optimum.active_z1_dims,
            "z2_kl_per_dim": optimum.z2_kl_per_mode.tolist(),
        }
    if latent_dim is None:
        raise ValueError(f"--model {model} needs --latent-dim")
    solve = cvae_optimum if model == "cvae" else scaled_prior_optimum
    optimum = solve(moments, latent_dim, beta, sigma2, prior_variance)
    modes = optimum.modes
    return report | {
        "latent_dim": int(latent_dim),
        "beta": float(beta),
        "elbo": -optimum.value,
        "spectrum": modes.spectrum.tolist(),
        "threshold": float(modes.threshold),
        "active_dims": modes.active_dims,
        "kl_per_dim": modes.kl_per_mode.tolist(),
        "encoder_variances": modes.encoder_variances.tolist(),
        "total_variance": float(np.trace(moments.yy)),
    }
