"""Trained versus analytic: how close a gradient-trained linear VAE lands to the closed form.

For each trained configuration :func:`compare_sweep` reports the final exact beta-ELBO, the
closed-form optimum at the same ``(beta, sigma2)`` (at the closed-form learned ``sigma2`` when
sigma2 was learned), their gap ``optimal - trained`` in nats per datapoint, the active
dimensions measured two ways against the prediction, the largest principal angle between the
trained and the predicted active subspace, and the distance of ``beta sigma2`` to the nearest
eigenvalue (near a threshold the saddle is flat and convergence slow).

The gap splits in two (docs/theory.md (T7)), through the projected
objective ``Phi(W, sigma2)`` of :mod:`linear_vae.training.newton` (the beta-ELBO maximised over the bias,
the encoder and the latent rotation; the pPCA MLL at beta = 1): the decoder gap
``ELBO* - Phi(W, sigma2)`` (invariant to ``W -> W R``) and the inference gap
``Phi(W, sigma2) - ELBO``, which sum to ``gap``.  At beta = 1 they are the likelihood gap
``MLL* - MLL(W, sigma2)`` and ``MLL(W, sigma2) - ELBO``.

Every report carries a verdict with four outcomes, kept apart on purpose: ``"agrees"`` (the
run converged by its own closed-form-free test and lands on the closed form), ``"not
converged"`` (it cannot vouch for its end point; the report gives the measured rate and the
steps that rate would need), ``"diverged"`` (the optimiser blew up by the rule of
:mod:`linear_vae.training.divergence`, which never looks at the closed form either) and
``"disagrees"`` (it converged, yet the closed form says otherwise: a failure of the theory or
of the code).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from linear_vae.data.problem import Problem
from linear_vae.theory.collapse import (
    DEFAULT_DELTA,
    DEFAULT_EPSILON,
    active_by_column_norm,
    encoder_kl_matrix,
    epsilon_delta_collapsed,
)
from linear_vae.theory.elbo import DataStats, LinearVAEParams
from linear_vae.theory.metrics import collapse_metrics
from linear_vae.theory.optimum import beta_elbo_optimum, learned_sigma2, threshold_distance
from linear_vae.theory.ppca import log_marginal_likelihood
from linear_vae.training.convergence import GAIN_TOL
from linear_vae.training.projected import projected_elbo
from linear_vae.training.sweep import SweepResult, train_sweep
from linear_vae.training.train import TrainConfig, TrainData

#: Default largest gap (nats per datapoint) of a converged run that agrees with the closed form.
GAP_TOL = 1e-6
VERDICTS = ("agrees", "not converged", "diverged", "disagrees")


def max_principal_angle_deg(A: np.ndarray, B: np.ndarray) -> float:
    """Largest principal angle (degrees) between the column spans of ``A`` and ``B`` (same rank).

    Björck & Golub (1973): with orthonormal bases ``Q_A``, ``Q_B`` the cosines of the principal
    angles are the singular values of ``Q_A^T Q_B``.

    >>> round(max_principal_angle_deg(np.array([[1.0], [1.0], [0.0]]), np.eye(3)[:, :1]), 6)  # 45 degrees apart
    45.0
    """
    Q_a, _ = np.linalg.qr(A)
    Q_b, _ = np.linalg.qr(B)
    cosines = np.linalg.svd(Q_a.T @ Q_b, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def off_diagonal_ratio(W: np.ndarray) -> float:
    """``max_{i != j} |(W^T W)_ij| / max_i (W^T W)_ii``: 0 when the columns are orthogonal (identifiable).

    Taken over the predicted-active columns only: collapsed columns are ~0 and would make the
    ratio meaningless.

    >>> off_diagonal_ratio(np.array([[2.0, 0.0], [0.0, 1.0]])), off_diagonal_ratio(np.array([[2.0, 1.0], [0.0, 1.0]]))
    (0.0, 0.5)
    """
    WtW = W.T @ W
    return float(np.max(np.abs(WtW - np.diag(np.diag(WtW)))) / np.max(np.diag(WtW)))


def compare_one(
    params: LinearVAEParams,
    sigma2: float,
    beta: float,
    sigma2_learned: bool,
    final_elbo: float,
    problem: Problem,
    epsilon: float = DEFAULT_EPSILON,
    delta: float = DEFAULT_DELTA,
) -> dict:
    """The trained-versus-analytic report of one trained model (see the module docstring).

    The MLL and the projected objective are evaluated with ``S`` in the data basis, or on wide
    data (``S`` not formed) in the eigen-coordinates, where they are exact for a model whose
    columns lie in the span of the data, as a trained one does (docs/theory.md (T8)).

    >>> from linear_vae.data.datasets import make_synthetic
    >>> problem = Problem.from_dataset(make_synthetic([4.0, 2.0, 1.0], n=100))
    >>> optimum = beta_elbo_optimum(problem.eigenvalues, latent_dim=2, beta=1.0, sigma2=1.5)
    >>> params = optimum.parameters(problem.mean, problem.eigenvectors)  # the closed form itself
    >>> report = compare_one(params, 1.5, 1.0, False, optimum.elbo, problem)
    >>> report["gap"], report["active_dims"], report["predicted_active_dims"], round(report["decoder_gap"], 9)
    (0.0, 2, 2, 0.0)

    References: docs/theory.md (T7.4, T8.4, T4.4); Lucas et al. 2019, Section 4.2.
    """
    eigenvalues = problem.eigenvalues
    totals = {"trace": problem.trace, "dim": problem.d}
    k = params.W.shape[1]
    analytic_sigma2 = learned_sigma2(eigenvalues, k, beta, **totals) if sigma2_learned else sigma2
    optimum = beta_elbo_optimum(eigenvalues, k, beta, analytic_sigma2, **totals)
    column_norms_sq = np.sum(params.W**2, axis=0)
    m = optimum.active_dims
    strongest = np.argsort(column_norms_sq)[::-1][:m]
    angle = max_principal_angle_deg(params.W[:, strongest], problem.eigenvectors[:, :m]) if m else None
    basis = "eigen" if problem.wide else "data"
    mean, cov = problem.moments_in(basis)
    W, mu = (
        (params.W, params.mu)
        if basis == "data"
        else (problem.eigenvectors.T @ params.W, params.mu @ problem.eigenvectors)
    )
    mll = float(log_marginal_likelihood(W, sigma2, cov, mean - mu, dim=problem.d))
    projected = float(projected_elbo(W, np.log(sigma2), beta, DataStats.from_moments(mean, cov, dim=problem.d)))
    V = params.V if basis == "data" else params.V @ problem.eigenvectors
    metrics = collapse_metrics(LinearVAEParams(W, mu, V, params.log_D), mean, cov)  # exact, from the moments (T11)
    X = problem.dataset.X
    return {
        **metrics,
        "beta": float(beta),
        "sigma2": float(sigma2),
        "sigma2_learned": bool(sigma2_learned),
        "optimal_sigma2": float(analytic_sigma2),
        "elbo": float(final_elbo),
        "optimal_elbo": optimum.elbo,
        "gap": optimum.elbo - float(final_elbo),
        "mll": mll,
        "optimal_mll": optimum.mll,
        "decoder_gap": optimum.elbo - projected,
        "inference_gap": projected - float(final_elbo),
        "active_dims": int(active_by_column_norm(column_norms_sq, beta, sigma2).sum()),
        "active_dims_epsilon_delta": int(
            k - epsilon_delta_collapsed(encoder_kl_matrix(params, X), epsilon, delta).sum()
        ),
        "predicted_active_dims": m,
        "max_principal_angle_deg": angle,
        "nearest_threshold_distance": threshold_distance(eigenvalues, k, beta, analytic_sigma2),
        "bias_error": float(np.max(np.abs(params.mu - problem.mean))),
        "off_diagonal_wtw": off_diagonal_ratio(params.W[:, strongest]) if m > 1 else None,
        "column_norms_sq": column_norms_sq.tolist(),
    }


def convergence_rate(result: SweepResult, i: int, gain_tol: float = GAIN_TOL) -> tuple[float | None, int | None]:
    """``(rate, steps_needed)`` of configuration ``i``: the measured factor by which the remaining
    gain shrinks per step, and the further steps that rate would need to bring it below
    ``gain_tol`` (``None`` where it cannot be measured, or for the steps when it is not shrinking).

    From the predicted gains of the last two convergence checks where both are finite; otherwise
    (far from a maximum the Newton model is indefinite) from the last three recorded ELBOs,
    whose increments ``delta`` shrink by ``r`` per record and leave ``delta r / (1 - r)`` to gain.

    >>> from linear_vae.data.datasets import make_synthetic
    >>> problem = Problem.from_dataset(make_synthetic(n=500))
    >>> result, reports = train_and_compare_grid(problem, TrainConfig(latent_dim=3), [1.0, 4.0], [0.5], [0, 1])
    >>> rate, steps_needed = convergence_rate(result, 0)
    >>> rate < 1, steps_needed  # Newton: the gain shrinks fast, and no more steps are needed
    (True, 0)

    References: docs/theory.md (T7.5).
    """
    points = [(steps, float(gains[i])) for steps, gains in result.checks if np.isfinite(gains[i]) and gains[i] > 0]
    if len(points) >= 2 and points[-1][0] > points[-2][0]:
        (s0, g0), (s1, remaining) = points[-2], points[-1]
        rate = (remaining / g0) ** (1.0 / (s1 - s0))
    else:
        elbo = result.history.elbo[i]
        if len(elbo) < 3:
            return None, None
        step_gap = result.config.log_every
        first, second = elbo[-2] - elbo[-3], elbo[-1] - elbo[-2]
        if not (first > 0 and second > 0):
            return None, None
        per_record = second / first
        rate = per_record ** (1.0 / step_gap)
        if not per_record < 1.0:
            return float(rate), None
        remaining = second * per_record / (1.0 - per_record)
    if not rate < 1.0:
        return float(rate), None
    return float(rate), max(0, int(np.ceil(np.log(gain_tol / remaining) / np.log(rate))))


#: Relative float64 round-off of an ELBO: a trained ELBO above the optimum by at most
#: ``ROUNDOFF (1 + |ELBO*|)`` equals it (docs/theory.md (T7.5)).
ROUNDOFF = 1e-9

#: How a gap that is negative by round-off only is printed (the JSON keeps the signed value).
ROUNDOFF_GAP = "~ 0"


def roundoff(optimal_elbo: float) -> float:
    """How far below zero a gap may fall by float64 round-off alone: ``ROUNDOFF (1 + |ELBO*|)``.

    >>> round(roundoff(-99.0), 15)
    1e-07
    """
    return ROUNDOFF * (1.0 + abs(optimal_elbo))


def gap_text(gap: float, optimal_elbo: float, width: int = 10) -> str:
    """A gap (optimum minus trained, nats per datapoint) for a table: ``.2e``, or :data:`ROUNDOFF_GAP`
    where it is below zero by float64 round-off only, so that round-off is not read as the trained
    model beating the optimum.

    >>> gap_text(2.5e-7, -10.0), gap_text(-1e-12, -10.0)  # below zero by round-off only: "~ 0"
    ('  2.50e-07', '       ~ 0')
    """
    if -roundoff(optimal_elbo) <= gap < 0:
        return f"{ROUNDOFF_GAP:>{width}}"
    return f"{gap:>{width}.2e}"


def gain_text(gain: float) -> str:
    """A predicted gain for a message: its value, or why it has none (the Newton model is indefinite,
    or conjugate gradients did not solve it: far from a maximum).

    >>> gain_text(3.2e-9), gain_text(float("nan"))
    ('3.20e-09', 'not defined yet (the Newton model is indefinite: far from a maximum)')
    """
    if np.isfinite(gain):
        return f"{gain:.2e}"
    return "not defined yet (the Newton model is indefinite: far from a maximum)"


#: Step-size schedules that end at (or near) zero: a run that ends under one has stopped moving.
DECAYING = {"cosine": "decayed to 0", "exponential": "decayed to 1e-2 of its peak"}


def progress_text(report: dict) -> str:
    """How an unconverged run was moving at its end: the measured shrink of its remaining gain per
    step and the steps that rate would need, unless a decaying step-size schedule had already
    stopped it (more steps "at that rate" would then not come: the schedule is over).

    >>> progress_text({"convergence_rate": 0.5, "steps_needed": 20, "schedule": None})
    'remaining gain shrinking by 50% per step, about 20 more steps at that rate'
    >>> progress_text({"schedule": "cosine"})
    'its cosine step size had decayed to 0 by the last step, so it stopped moving; raise `steps` (the whole schedule stretches) or use the newton optimizer'
    """
    rate, needed = report.get("convergence_rate"), report.get("steps_needed")
    if report.get("schedule") in DECAYING:
        return (
            f"its {report['schedule']} step size had {DECAYING[report['schedule']]} by the last step, so it stopped "
            "moving; raise `steps` (the whole schedule stretches) or use the newton optimizer"
        )
    if rate is None:
        return "rate not measured"
    if not rate < 1.0:
        return "the remaining gain is not shrinking"
    shrinking = f"remaining gain shrinking by {100 * (1 - rate):.2g}% per step"
    return shrinking if needed is None else f"{shrinking}, about {needed:,} more steps at that rate"


def verdict(report: dict, gap_tol: float = GAP_TOL) -> tuple[str, list[str]]:
    """``(verdict, reasons)`` of one report (see the module docstring).

    ``"diverged"`` when the run blew up (``report["divergence"]`` says how), ``"not converged"``
    whenever the run's own test failed, whatever the gap; otherwise
    ``"disagrees"`` when the gap exceeds ``gap_tol``, the trained ELBO exceeds the optimum by
    more than float64 round-off (``1e-9 (1 + |ELBO*|)``), or the active count differs.

    >>> report = {"converged": True, "gap": 3e-4, "optimal_elbo": -10.0, "active_dims": 2, "predicted_active_dims": 2}
    >>> verdict(report)
    ('disagrees', ['gap 3.00e-04 > 1e-06'])
    >>> verdict({**report, "gap": 1e-9})
    ('agrees', [])

    References: docs/theory.md (T7.5, T10).
    """
    if report.get("diverged"):
        return "diverged", [report["divergence"]]
    if not report["converged"]:
        return "not converged", [
            f"predicted gain {gain_text(report['predicted_gain'])} after {report['steps_used']} steps "
            f"({progress_text(report)})"
        ]
    reasons = []
    if report["gap"] > gap_tol:
        reasons.append(f"gap {report['gap']:.2e} > {gap_tol:.0e}")
    if report["gap"] < -roundoff(report["optimal_elbo"]):
        reasons.append(f"trained ELBO exceeds the optimum by {-report['gap']:.2e}")
    if report["active_dims"] != report["predicted_active_dims"]:
        reasons.append(f"{report['active_dims']} active dimensions, predicted {report['predicted_active_dims']}")
    return ("disagrees" if reasons else "agrees"), reasons


def compare_sweep(
    result: SweepResult,
    problem: Problem,
    epsilon: float = DEFAULT_EPSILON,
    delta: float = DEFAULT_DELTA,
    gap_tol: float = GAP_TOL,
) -> list[dict]:
    """:func:`compare_one` for every configuration of a sweep, with its seed, steps, timings,
    convergence (``converged``, ``steps_used``, ``predicted_gain``, ``grad_norm`` of the projected
    objective in ``(vec W, log sigma2)``, ``ascent_curvature``, ``convergence_rate``,
    ``steps_needed``) and :func:`verdict`.

    >>> from linear_vae.data.datasets import make_synthetic
    >>> problem = Problem.from_dataset(make_synthetic(n=500))
    >>> result, _ = train_and_compare_grid(problem, TrainConfig(latent_dim=3), [1.0, 4.0], [0.5], [0, 1])
    >>> [(r["beta"], r["active_dims"], r["converged"], r["verdict"]) for r in compare_sweep(result, problem)]
    [(1.0, 3, True, 'agrees'), (1.0, 3, True, 'agrees'), (4.0, 3, True, 'agrees'), (4.0, 3, True, 'agrees')]
    """
    reports = []
    n_configs = len(result.sigma2)
    diagnosis = result.diagnosis
    for i in range(n_configs):
        params = LinearVAEParams(*(p[i] for p in result.params))
        report = compare_one(
            params,
            result.sigma2[i],
            result.hyper.beta[i],
            result.config.learn_sigma2,
            result.history.elbo[i, -1],
            problem,
            epsilon,
            delta,
        )
        rate, needed = convergence_rate(result, i, result.config.gain_tol)
        report.update(
            seed=int(result.hyper.seed[i]),
            steps=result.config.steps,
            steps_used=int(result.steps_used[i]),
            optimizer=result.config.solver.name,
            objective=result.config.objective,
            schedule=result.config.schedule if result.config.solver.has_step_size else None,
            converged=bool(diagnosis.converged[i]),
            predicted_gain=float(diagnosis.predicted_gain[i]),
            grad_norm=float(diagnosis.grad_norm[i]),
            ascent_curvature=float(diagnosis.ascent_curvature[i]),
            convergence_rate=rate,
            steps_needed=needed,
            diverged=bool(result.diverged[i]),
            divergence=result.divergence[i],
            start_objective=float(result.start_objective[i]),
            seconds=result.seconds / n_configs,
            sweep_seconds=result.seconds,
            compile_seconds=result.compile_seconds,
        )
        report["verdict"], report["reasons"] = verdict(report, gap_tol)
        reports.append(report)
    return reports


def train_and_compare_grid(
    problem: Problem,
    config: TrainConfig,
    betas=(1.0,),
    sigma2s=None,
    seeds=(0,),
    *,
    sigma2_init=None,
    progress: Callable[[int, int], None] | None = None,
    on_divergence: str = "raise",
) -> tuple[SweepResult, list[dict]]:
    """Train **every combination** of ``betas x sigma2s x seeds`` (the order of
    ``itertools.product``, as ``linear-vae sweep``) in one compiled call and compare each with the
    closed form.

    With a fixed sigma2 (``config.learn_sigma2`` False) ``sigma2s`` are its values.  With a learned
    sigma2 ``sigma2s`` must be ``None`` and ``sigma2_init`` (one value, or a list, a grid axis like
    the others) is where it starts, by default the data's mean variance ``tr S / d``.
    ``on_divergence`` as in :func:`linear_vae.training.sweep.train_sweep`.

    >>> from linear_vae.data.datasets import make_synthetic
    >>> from linear_vae.data.problem import Problem
    >>> from linear_vae.training.train import TrainConfig
    >>> problem = Problem.from_dataset(make_synthetic(n=500))
    >>> result, reports = train_and_compare_grid(problem, TrainConfig(latent_dim=3), [1.0, 4.0], [0.5], [0, 1])
    >>> [(r["beta"], r["seed"], r["verdict"]) for r in reports]
    [(1.0, 0, 'agrees'), (1.0, 1, 'agrees'), (4.0, 0, 'agrees'), (4.0, 1, 'agrees')]
    """
    import itertools

    starts = _sigma2_values(problem, config, sigma2s, sigma2_init)
    grid = list(itertools.product(_as_list(betas), starts, _as_list(seeds)))
    b, s, r = ([g[i] for g in grid] for i in range(3))
    return _train_and_compare(problem, config, b, s, r, progress, on_divergence)


def train_and_compare_zipped(
    problem: Problem,
    config: TrainConfig,
    betas,
    sigma2s=None,
    seeds=0,
    *,
    sigma2_init=None,
    progress: Callable[[int, int], None] | None = None,
    on_divergence: str = "raise",
) -> tuple[SweepResult, list[dict]]:
    """Train configuration ``i`` at ``(betas[i], sigma2s[i], seeds[i])``, **element by element**, in one
    compiled call and compare each with the closed form.  Lists must share one length; a single
    value stands for every configuration.  Learned sigma2: ``sigma2s=None`` and ``sigma2_init`` the
    starts (default ``tr S / d``), as in :func:`train_and_compare_grid`.

    >>> from linear_vae.data.datasets import make_synthetic
    >>> from linear_vae.data.problem import Problem
    >>> from linear_vae.training.train import TrainConfig
    >>> problem = Problem.from_dataset(make_synthetic(n=500))
    >>> betas, sigma2s = [1.0, 4.0, 1.0, 4.0], [0.5, 0.5, 2.0, 2.0]  # four runs, as the grid above
    >>> result, reports = train_and_compare_zipped(problem, TrainConfig(latent_dim=3), betas, sigma2s)
    >>> [(r["beta"], r["sigma2"], r["verdict"]) for r in reports]
    [(1.0, 0.5, 'agrees'), (4.0, 0.5, 'agrees'), (1.0, 2.0, 'agrees'), (4.0, 2.0, 'agrees')]
    """
    columns = {"betas": _as_list(betas), "sigma2s": _sigma2_values(problem, config, sigma2s, sigma2_init)}
    columns["seeds"] = _as_list(seeds)
    lengths = {name: len(values) for name, values in columns.items()}
    n = max(lengths.values())
    if any(length not in (1, n) for length in lengths.values()):
        given = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise ValueError(
            f"zipped lists must share one length (or hold one value), got {given}; "
            "use train_and_compare_grid for every combination"
        )
    b, s, r = ([values[0]] * n if len(values) == 1 else values for values in columns.values())
    return _train_and_compare(problem, config, b, s, r, progress, on_divergence)


def _as_list(values) -> list:
    return [v.item() if hasattr(v, "item") else v for v in np.atleast_1d(np.asarray(values)).tolist()]


def _sigma2_values(problem: Problem, config: TrainConfig, sigma2s, sigma2_init) -> list:
    """The sigma2 of each configuration (fixed), or where each starts (learned), refusing a
    ``sigma2s`` that would be misread as a start."""
    if config.learn_sigma2:
        if sigma2s is not None:
            raise ValueError(
                "the TrainConfig learns sigma2 (learn_sigma2=True), so `sigma2s` would be only its start; "
                "pass the start as `sigma2_init` and leave `sigma2s` out"
            )
        return _as_list(problem.trace / problem.d if sigma2_init is None else sigma2_init)
    if sigma2_init is not None:
        raise ValueError("`sigma2_init` starts a learned sigma2, but the TrainConfig fixes it; pass `sigma2s`")
    if sigma2s is None:
        raise ValueError("pass the fixed `sigma2s`, or learn sigma2 with TrainConfig(..., learn_sigma2=True)")
    return _as_list(sigma2s)


def _train_and_compare(problem, config, betas, sigma2s, seeds, progress, on_divergence):
    """Train one sweep (one compiled call, in ``config.basis``) from zipped lists and compare every
    configuration with the closed form: the one path from data to trained-versus-analytic reports."""
    if problem.wide and config.basis is None:  # S is not formed: only the eigenbasis view exists
        config = config._replace(basis="eigen")
    config = config.validate(problem.d, problem.n)
    problem.check_basis(config.basis)
    if config.learn_sigma2:  # fail before training, not after, when no learned sigma2 exists
        for beta in sorted(set(np.atleast_1d(betas).tolist())):
            learned_sigma2(problem.eigenvalues, config.latent_dim, beta, trace=problem.trace, dim=problem.d)
    data = TrainData.build(problem, config.basis)
    result = train_sweep(data, config, betas, sigma2s, seeds, progress=progress, on_divergence=on_divergence)
    return result, compare_sweep(result, problem)
