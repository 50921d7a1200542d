"""Figure 6: how long plain gradient ascent takes to leave a collapsed saddle, against lambda_1 - sigma2.

Claim (Lucas et al. Section 4.1, docs/theory.md (T2.4, T9)): a zero ("collapsed") column of ``W`` is a
saddle of the pPCA marginal likelihood while an unused ``lambda_i > sigma2``, with curvature
``c = (lambda_i - sigma2) / sigma2^2`` along ``u_i``; near the threshold the saddle is flat, so
gradient methods escape it slowly, in a time that grows like ``1 / (lambda_i - sigma2)``.

Set-up.  Synthetic data (d = 20, eigenvalues exactly ``8 * 0.75**i``), k = 1, the column started
at zero (``init="collapsed"``, column 0) plus a fixed Gaussian perturbation (``init_scale``,
seed 0: the same perturbation for every sigma2), and sigma2 just below ``lambda_1`` (log-spaced
``lambda_1 - sigma2``, kept above ``lambda_2`` so that ``u_1`` is the only ascent direction).
Plain gradient ascent (``optimizer="sgd"``, constant step ``lr``) on the MLL (pPCA alone,
``objective="mll"``) and on the exact ELBO, one vmapped sweep over sigma2 each.  The escape time
is the step at which ``||w||^2`` first reaches ``fraction * (lambda_1 - sigma2)`` (a fraction of its
optimal value), interpolated between records.

Prediction (drawn as lines; computed by :mod:`linear_vae.theory.escape`).  Along ``w = eps u_1`` the MLL is
``-1/2 [log(sigma2 + u) + lambda_1 / (sigma2 + u)]`` with ``u = eps^2``, so gradient flow gives
``du/dt = 2 lr u (a - u) / (sigma2 + u)^2`` with ``a = lambda_1 - sigma2``.  Integrating from the
initial ``u_0 = (u_1^T w_0)^2`` to the target ``u_T = fraction * a`` (partial fractions),

``lr T = 1/2 [ (sigma2^2 / a) log(u_T / u_0) + (lambda_1^2 / a) log((a - u_0) / (a - u_T)) - (u_T - u_0) ]``,

whose leading term is ``log(sqrt(u_T / u_0)) / c``: the linear-saddle law ``log(target / initial) /
(lr * curvature)``, slope -1 in ``a`` up to the slowly varying logarithm.  For the ELBO the column
``w = a u_1`` is coupled to the encoder row ``v = b u_1^T``: at the collapsed point
(``W = 0, V = 0, D = 1``) the Hessian of the ELBO in ``(a, b)`` is
``[[-1/sigma2, lambda_1/sigma2], [lambda_1/sigma2, -lambda_1]]``, whose positive eigenvalue ``mu_+``
(checked against ``jax.hessian`` of the full ELBO in ``(W, V)``) is the growth rate; it is below
``c`` by the factor ``~ lambda_1 sigma2 / (1 + lambda_1 sigma2)`` (the encoder lags the decoder).
Once the encoder has caught up the ELBO with the optimal encoder equals the MLL for k = 1, so the
ELBO's predicted time is the MLL's, rescaled by ``c / mu_+``, from the initial amplitude along
the unstable eigenvector.  Both laws are drawn as lines; trained escape times are markers.

Adam (same initialisation, its own step size, the same sweep shape) is added on the same axes: it
divides each gradient coordinate by its running RMS, so its step along the escape direction does
not shrink with the curvature.  Its escape time is not a power law in ``lambda_1 - sigma2``: it
stays within a factor of about 3 over two decades (against about 100 for gradient ascent), and it
is U-shaped, falling near the threshold and rising at large gaps roughly like the distance to
travel, ``sqrt(fraction * (lambda_1 - sigma2))``.  A fitted slope would mean nothing, so for Adam
we report what the curve shows: its minimum (steps and where), and its ends relative to each other
and to the minimum.  No closed form is claimed for Adam.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.experiments.common import data_description, load_problem, train
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.theory.elbo import DataStats, LinearVAEParams, elbo_terms
from linear_vae.theory.escape import elbo_growth_rate, initial_amplitude_sq, predicted_escape_steps
from linear_vae.theory.ppca import collapsed_curvature
from linear_vae.training.train import Hyper, TrainConfig, TrainData, init_state

NAME = "escape_time"
TITLE = "Steps to escape a collapsed saddle against lambda_1 - sigma2: gradient ascent (ELBO, MLL) and Adam"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "synthetic",
    "n": 2000,  # d = 20, eigenvalues exactly 8 * 0.75**i
    "latent_dim": 1,
    "collapsed_columns": [0],  # the column along the top direction starts at zero
    "gaps": [0.02, 2.0, 10],  # lambda_1 - sigma2: log-spaced START, STOP, NUM
    "fraction": 0.5,  # escaped when ||w||^2 >= fraction * (lambda_1 - sigma2)
    "init_scale": 1e-3,
    "seed": 0,  # the same perturbation for every sigma2
    "sgd_learning_rate": 0.1,
    "sgd_steps": 200000,  # plain gradient ascent, constant step
    "adam_learning_rate": 1e-4,
    "adam_steps": 5000,
    "adam_objectives": ["exact", "mll"],
    "log_every": 10,
    "basis": "data",  # Adam is not rotation invariant: train on the data as given
}
QUICK = {"gaps": [0.3, 2.0, 5], "sgd_steps": 15000, "adam_steps": 4000, "adam_objectives": ["exact"]}
OBJECTIVE_LABELS = {"exact": "ELBO", "mll": "MLL"}


# --- closed form (the prediction itself lives in linear_vae.theory.escape, docs/theory.md (T9)) ----------
def elbo_hessian_rates(problem, sigma2s):
    """Largest eigenvalue of ``jax.hessian`` of the exact ELBO in ``(W, V)`` (k = 1, all ``2 d``
    parameters) at the collapsed point ``W = 0, V = 0, D = 1, mu = mean``, for each sigma2: the
    numerical check of :func:`elbo_growth_rate` (and that no other direction grows faster).
    ``D`` and ``mu`` decouple from ``(W, V)`` there (their mixed second derivatives vanish at W = V = 0)."""
    d = problem.dataset.d
    stats = DataStats.from_moments(problem.mean, problem.cov)

    def elbo(flat, sigma2):
        W, V = flat[:d, None], flat[None, d:]
        expected_log_lik, kl = elbo_terms(LinearVAEParams(W, stats.mean, V, jnp.zeros(1)), sigma2, stats)
        return expected_log_lik - jnp.sum(kl)

    hessian = jax.jit(jax.hessian(elbo))
    return np.array([np.linalg.eigvalsh(np.asarray(hessian(jnp.zeros(2 * d), s)))[-1] for s in sigma2s])


def crossing_step(steps, norms, initial_norm, target):
    """First step at which ``norms`` reaches ``target``, interpolated linearly in ``log ||w||^2``
    between records (``initial_norm`` at step 0); ``nan`` if never reached."""
    steps = np.concatenate([[0], steps])
    norms = np.concatenate([[initial_norm], norms])
    above = np.nonzero(norms >= target)[0]
    if not above.size:
        return float("nan")
    j = int(above[0])
    if j == 0:
        return 0.0
    lo, hi = np.log(norms[j - 1]), np.log(norms[j])
    return float(steps[j - 1] + (steps[j] - steps[j - 1]) * (np.log(target) - lo) / (hi - lo))


def power_law_fit(x, y):
    """Least-squares ``log y = slope log x + intercept`` over the finite points: ``(slope, intercept)``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y) & (y > 0)
    slope, intercept = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(intercept)


def _finite_or_none(values) -> list:
    """A JSON-safe list: ``None`` where a configuration never escaped (``nan``)."""
    return [float(v) if np.isfinite(v) else None for v in values]


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    problem = load_problem(config)
    lam = problem.eigenvalues
    lam1 = float(lam[0])
    gaps = np.geomspace(*config["gaps"][:2], int(config["gaps"][2]))
    if gaps[-1] > lam1 - lam[1]:
        raise ValueError(
            f"lambda_1 - sigma2 up to {gaps[-1]:g} puts sigma2 below lambda_2 = {lam[1]:g}: "
            "u_2 would also be an ascent direction; lower the largest gap"
        )
    sigma2s = lam1 - gaps
    n = len(gaps)
    fraction = config["fraction"]
    targets = fraction * gaps

    def train_config(objective, optimizer):
        sgd = optimizer == "sgd"
        return TrainConfig(
            latent_dim=config["latent_dim"],
            objective=objective,
            optimizer=optimizer,
            steps=config["sgd_steps" if sgd else "adam_steps"],
            log_every=config["log_every"],
            learning_rate=config["sgd_learning_rate" if sgd else "adam_learning_rate"],
            schedule="constant",
            init="collapsed",
            init_scale=config["init_scale"],
            collapsed_columns=tuple(config["collapsed_columns"]),
            basis=config["basis"],
            stop_when_converged=False,
        )

    # The initial decoder is the same for every sigma2 (the perturbation depends on the seed only).
    data = TrainData.build(problem, config["basis"])
    first = jax.jit(lambda hyper, data: init_state(train_config("mll", "sgd"), hyper, data).trainable.params.W)
    w0 = np.asarray(first(Hyper(jnp.float64(1.0), jnp.float64(sigma2s[0]), jnp.uint32(config["seed"])), data))[:, 0]
    if config["basis"] == "eigen":
        w0 = problem.eigenvectors @ w0
    a0 = float(problem.eigenvectors[:, 0] @ w0)  # amplitude along u_1
    w0_norm_sq = float(w0 @ w0)

    def predicted(sigma2, objective):
        return predicted_escape_steps(lam1, sigma2, a0, w0_norm_sq, fraction, config["sgd_learning_rate"], objective)

    runs = {}
    for objective, optimizer in [("mll", "sgd"), ("exact", "sgd")] + [(o, "adam") for o in config["adam_objectives"]]:
        label = f"{optimizer}_{objective}"
        result, _ = train(
            problem,
            train_config(objective, optimizer),
            np.ones(n),
            sigma2s,
            [config["seed"]] * n,
            basis=config["basis"],
            progress=progress,
            label=f"{NAME} {label}",
        )
        norms = result.history.column_norms_sq[:, :, 0]
        steps = result.history.step[0]
        escape = np.array([crossing_step(steps, norms[i], w0_norm_sq, targets[i]) for i in range(n)])
        if np.sum(np.isfinite(escape)) < 2:
            raise ValueError(
                f"{label}: fewer than 2 of {n} configurations escaped in {result.config.steps} steps; "
                "raise the step budget"
            )
        entry = {
            "objective": objective,
            "optimizer": optimizer,
            "learning_rate": result.config.learning_rate,
            "steps": result.config.steps,
            "escape_steps": _finite_or_none(escape),
            "escaped": bool(np.all(np.isfinite(escape))),
            "max_to_min_escape_ratio": float(np.nanmax(escape) / np.nanmin(escape)),
            "final_column_norm_sq": norms[:, -1].tolist(),
        }
        if optimizer == "adam":  # U-shaped: describe the curve, fit nothing
            lowest = int(np.nanargmin(escape))
            entry.update(
                min_escape_steps=float(escape[lowest]),
                gap_at_min_escape=float(gaps[lowest]),
                u_shaped=bool(0 < lowest < n - 1),  # the minimum lies strictly inside the range
                ends_ratio=float(escape[-1] / escape[0]),  # at the largest gap / at the smallest
                first_to_min_ratio=float(escape[0] / escape[lowest]),
                last_to_min_ratio=float(escape[-1] / escape[lowest]),
            )
        if optimizer == "sgd":
            slope, intercept = power_law_fit(gaps, escape)
            prediction = predicted(sigma2s, objective)
            entry.update(
                fitted_slope=slope,
                fitted_intercept=intercept,
                predicted_escape_steps=prediction.tolist(),
                predicted_slope=power_law_fit(gaps, prediction)[0],
                ratio_trained_to_predicted=_finite_or_none(escape / prediction),
                max_relative_error=float(np.nanmax(np.abs(escape / prediction - 1.0))),
            )
        runs[label] = entry

    mll_rate = collapsed_curvature(lam1, sigma2s)
    elbo_rate, _ = elbo_growth_rate(lam1, sigma2s)
    grid = np.geomspace(gaps[0], gaps[-1], 200)
    return {
        **data_description(problem, config),
        "lambda_1": lam1,
        "gaps": gaps.tolist(),
        "sigma2s": sigma2s.tolist(),
        "fraction": fraction,
        "target_column_norm_sq": targets.tolist(),
        "initial_amplitude": a0,
        "initial_column_norm_sq": w0_norm_sq,
        "initial_amplitude_sq_mll": float(a0**2),
        "initial_amplitude_sq_elbo": initial_amplitude_sq(lam1, sigma2s, a0, w0_norm_sq, "exact").tolist(),
        "mll_curvature": mll_rate.tolist(),
        "elbo_growth_rate": elbo_rate.tolist(),
        "elbo_growth_rate_hessian": elbo_hessian_rates(problem, sigma2s).tolist(),
        "runs": runs,
        "curve_gaps": grid.tolist(),
        "curve_escape_steps_mll": predicted(lam1 - grid, "mll").tolist(),
        "curve_escape_steps_elbo": predicted(lam1 - grid, "exact").tolist(),
    }


# --- figure --------------------------------------------------------------------------------------
STYLES = {  # colour, marker, size of each trained run
    "sgd_mll": (COLORS[0], "o", 7),
    "sgd_exact": (COLORS[3], "s", 5),
    "adam_mll": (COLORS[2], "^", 7),
    "adam_exact": (COLORS[4], "D", 5),
}


def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=2, width=4.9, height=4.6)
    ax, ax_ratio = axes[0]
    gaps = np.array(results["gaps"])
    runs = results["runs"]
    lr_sgd, lr_adam = config["sgd_learning_rate"], config["adam_learning_rate"]
    for objective, curve, style in (("mll", "curve_escape_steps_mll", "-"), ("exact", "curve_escape_steps_elbo", "--")):
        run_ = runs[f"sgd_{objective}"]
        ax.plot(
            results["curve_gaps"],
            results[curve],
            color=STYLES[f"sgd_{objective}"][0],
            **{**PREDICTION_STYLE, "linestyle": style},
            label=f"predicted, {OBJECTIVE_LABELS[objective]} (slope {run_['predicted_slope']:.2f})",
        )
    for key, run_ in runs.items():
        color, marker, size = STYLES[key]
        escape = np.array([np.nan if e is None else e for e in run_["escape_steps"]], dtype=float)
        optimizer = "gradient ascent" if run_["optimizer"] == "sgd" else "Adam"
        lr = lr_sgd if run_["optimizer"] == "sgd" else lr_adam
        if run_["optimizer"] == "sgd":
            shape = f"slope {run_['fitted_slope']:.2f}"
        else:
            shape = (
                f"U-shaped, min {run_['min_escape_steps']:.0f} steps at {run_['gap_at_min_escape']:.2g}, "
                f"ends {run_['first_to_min_ratio']:.1f}x and {run_['last_to_min_ratio']:.1f}x the min"
            )
        label = f"{optimizer} (lr {lr:g}), {OBJECTIVE_LABELS[run_['objective']]}: {shape}"
        ax.plot(
            gaps, escape, marker, color=color, markersize=size, markerfacecolor="none", markeredgewidth=1.4, label=label
        )
        if run_["optimizer"] == "adam":  # no closed form: a thin line guides the eye
            ax.plot(gaps, escape, ":", color=color, linewidth=1.0)
    mll_curve = np.array(results["curve_escape_steps_mll"])
    ax.plot(
        results["curve_gaps"],
        mll_curve[0] * results["curve_gaps"][0] / np.array(results["curve_gaps"]),
        color="0.5",
        linestyle=(0, (1, 3)),
        linewidth=1.0,
        label=r"slope $-1$ reference",
    )
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set_xlabel(r"distance to the threshold $\lambda_1 - \sigma^2$ (log scale)")
    ax.set_ylabel(rf"escape time (steps to $\|w\|^2 = {results['fraction']:g}\,(\lambda_1 - \sigma^2)$)")
    ax.set_title("Escape from the collapsed saddle")
    top = max(max(results["curve_escape_steps_mll"]), max(results["curve_escape_steps_elbo"]))
    low = min(min(e for e in r["escape_steps"] if e is not None) for r in runs.values())
    ax.set_ylim(low / 2, top * 1.6)

    for objective in ("mll", "exact"):
        run_ = runs[f"sgd_{objective}"]
        color, marker, size = STYLES[f"sgd_{objective}"]
        ratio = np.array([np.nan if v is None else v for v in run_["ratio_trained_to_predicted"]], dtype=float)
        ax_ratio.plot(
            gaps,
            ratio,
            marker,
            color=color,
            markersize=size,
            markerfacecolor="none",
            markeredgewidth=1.4,
            label=f"{OBJECTIVE_LABELS[objective]} (max error {run_['max_relative_error']:.1%})",
        )
    ax_ratio.axhline(1.0, color="0.3", **PREDICTION_STYLE, label="prediction")
    log_axis(ax_ratio, "x")
    ratios = np.array(
        [np.nan if v is None else v for o in ("mll", "exact") for v in runs[f"sgd_{o}"]["ratio_trained_to_predicted"]],
        dtype=float,
    )
    spread = max(0.02, 1.5 * float(np.nanmax(np.abs(ratios - 1.0))))
    ax_ratio.set_ylim(1.0 - spread, 1.0 + spread)
    ax_ratio.set_xlabel(r"distance to the threshold $\lambda_1 - \sigma^2$ (log scale)")
    ax_ratio.set_ylabel("trained / predicted escape time")
    ax_ratio.set_title(f"Gradient ascent (lr {lr_sgd:g}) against the closed form")
    ax_ratio.legend(loc="upper left")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2)  # below the panels, off the data
    fig.suptitle(
        f"Synthetic data (d = {results['d']}, $\\lambda_1$ = {results['lambda_1']:g}, "
        f"$\\lambda_2$ = {results['eigenvalues'][1]:g}), K = {config['latent_dim']}, "
        f"collapsed start + perturbation of std {config['init_scale']:g}"
    )
    return fig
