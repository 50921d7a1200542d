"""The rate-distortion frontier of the linear VAE on MNIST, with trained models on it.

Claim (docs/theory.md (T11.4, T11.5)): at the beta-ELBO optimum with water level ``theta = beta sigma2``
the rate and distortion are ``R = sum_{i<=k} 1/2 log(lambda_i / theta)_+`` and
``D = sum_{i<=k} min(lambda_i, theta) + sum_{i>k} lambda_i``: reverse water-filling on the spectrum,
cut at ``k`` components.  As beta grows the point slides along the frontier towards ``R = 0``; a
latent unit collapses where the water level crosses its eigenvalue (a kink of the frontier).  Every
linear VAE lies on or above the frontier, one whose beta-ELBO is ``gap`` below the optimum at most
``2 sigma2 gap`` above it.

Frontiers for several ``k`` (``k = d`` is the Gaussian rate-distortion function of the digits'
covariance) are drawn as lines with their collapse thresholds marked; linear VAEs trained on
MNIST-1000 with the exact ELBO (trust-region Newton, one vmapped sweep over beta per ``k``) are
drawn as markers, with their height above the frontier in a second panel.  The water levels are
chosen between consecutive eigenvalues (the geometric mean of ``lambda_c`` and ``lambda_{c+1}``, so
that ``c`` units are active for ``k >= c``), as far from every threshold as the spectrum allows.
:func:`linear_vae.experiments.plotting.draw_frontier` draws a frontier on any axes (the deep-VAE study puts its estimated points
beside it).
"""

from __future__ import annotations

import numpy as np

from linear_vae.experiments.common import data_description, load_problem, newton_config, train
from linear_vae.experiments.plotting import (
    COLORS,
    PREDICTION_STYLE,
    TRAINED_STYLE,
    frontier_curve,
    log_axis,
    new_figure,
)
from linear_vae.theory.metrics import frontier_distortion, rate_distortion_frontier

NAME = "rate_distortion"
TITLE = "The rate-distortion frontier of the linear VAE on MNIST: reverse water-filling, and trained models on it"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,
    "latent_dims": [8, 32, 128, 784],  # frontiers; 784 = d: the Gaussian rate-distortion function
    "trained_latent_dims": [8, 32],  # one compiled Newton sweep over beta each
    "sigma2": 0.1,
    # Water levels between lambda_c and lambda_{c+1} for these c (c active units when k >= c); 0: above
    # lambda_1 (total collapse, theta = 1.5 lambda_1).
    "active_counts": [0, 1, 2, 3, 5, 7, 12, 20, 30, 60, 120],
    "frontier_theta_min": 1e-5,  # the frontiers are drawn for water levels down to this (squared pixel units)
    "optimizer": "newton",
    "steps": 500,
    "seed": 0,  # Newton stops once converged (at most 500 iterations)
    "gain_tol": 1e-12,  # converged: predicted gain <= 1e-12 nats (round-off)
    "basis": "eigen",  # O(d k^2) steps; the objective is rotation invariant
}
# The quick run draws the frontiers only: Newton's compilation alone takes ~10 s, and the quick runs of
# kl_per_dim and collapse_threshold exercise the same trainer; the committed figure's check covers the
# trained models.
QUICK = {"trained_latent_dims": [], "active_counts": [0, 2, 5, 12]}


def water_levels_between(eigenvalues, active_counts) -> np.ndarray:
    """``theta_c = sqrt(lambda_c lambda_{c+1})`` (1-based ``lambda``), ``1.5 lambda_1`` for ``c = 0``."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return np.array([1.5 * lam[0] if c == 0 else np.sqrt(lam[c - 1] * lam[c]) for c in active_counts])


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    problem = load_problem(config)
    lam, sigma2 = problem.eigenvalues, float(config["sigma2"])
    totals = {"trace": problem.trace, "dim": problem.d}
    theta = water_levels_between(lam, config["active_counts"])
    betas = theta / sigma2
    theta_min = min(config["frontier_theta_min"], theta.min() / 3)
    frontiers = []
    for k in config["latent_dims"]:
        curve_theta, rate, distortion = frontier_curve(lam, k, theta_min, lam[0], **totals)
        kinks = lam[:k][lam[:k] >= theta_min]
        kink_rate, kink_distortion = rate_distortion_frontier(lam, k, kinks, **totals)
        frontiers.append(
            {
                "latent_dim": k,
                "water_levels": curve_theta.tolist(),
                "rate": rate.tolist(),
                "distortion": distortion.tolist(),
                "thresholds": {
                    "water_levels": kinks.tolist(),
                    "rate": kink_rate.tolist(),
                    "distortion": kink_distortion.tolist(),
                },
            }
        )
    trained = []
    for k in config["trained_latent_dims"]:
        train_config = newton_config(config, k)
        _, reports = train(
            problem,
            train_config,
            betas,
            np.full(len(betas), sigma2),
            [config["seed"]] * len(betas),
            basis=config["basis"],
            progress=progress,
            label=f"{NAME} K={k}",
        )
        rate = np.array([r["rate"] for r in reports])
        distortion = np.array([r["distortion"] for r in reports])
        predicted_rate, predicted_distortion = rate_distortion_frontier(lam, k, theta, **totals)
        trained.append(
            {
                "latent_dim": k,
                "betas": betas.tolist(),
                "water_levels": theta.tolist(),
                "rate": rate.tolist(),
                "distortion": distortion.tolist(),
                "predicted_rate": predicted_rate.tolist(),
                "predicted_distortion": predicted_distortion.tolist(),
                "frontier_distortion_at_rate": frontier_distortion(lam, k, rate, **totals).tolist(),
                "gap": [r["gap"] for r in reports],
                "converged": [r["converged"] for r in reports],
                "verdict": [r["verdict"] for r in reports],
                "nearest_threshold_distance": [r["nearest_threshold_distance"] for r in reports],
                "active_units": [r["active_units"] for r in reports],
                "predicted_active_dims": [r["predicted_active_dims"] for r in reports],
            }
        )
    return {
        **data_description(problem, {**config, "latent_dim": max(config["trained_latent_dims"], default=1)}),
        "trace": problem.trace,
        "sigma2": sigma2,
        "frontiers": frontiers,
        "trained": trained,
    }


# --- figure --------------------------------------------------------------------------------------
def _frontier_panel(ax, results, color_of, thresholds_from: float, max_latent_dim: int | None = None):
    """Frontiers (larger K first, so that smaller K are drawn on top; the K = d curve, the Gaussian
    R(D), last and dashed, so that it shows where it coincides with a smaller K), with their collapse
    thresholds ``theta = lambda_i >= thresholds_from`` for ``K <= max_latent_dim``."""
    d = results["d"]
    for f in sorted(results["frontiers"], key=lambda f: (f["latent_dim"] == d, -f["latent_dim"])):
        k = f["latent_dim"]
        name = f"K = {k}" + (" = d: Gaussian R(D) of the digits' covariance" if k == d else "")
        style = {**PREDICTION_STYLE, "linestyle": (0, (4, 3)), "zorder": 4} if k == d else PREDICTION_STYLE
        ax.plot(f["rate"], f["distortion"], color=color_of[k], **style, label=f"frontier, {name}")
        th = f["thresholds"]
        show = np.asarray(th["water_levels"]) >= thresholds_from
        if max_latent_dim is None or k <= max_latent_dim:
            ax.plot(np.asarray(th["rate"])[show], np.asarray(th["distortion"])[show], "o", color=color_of[k], ms=2.8)


def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=3, width=5.4, height=4.6)
    sigma2 = results["sigma2"]
    color_of = {f["latent_dim"]: COLORS[i % len(COLORS)] for i, f in enumerate(results["frontiers"])}
    trained_k = [t["latent_dim"] for t in results["trained"]]
    lowest_theta = min((min(t["water_levels"]) for t in results["trained"]), default=results["eigenvalues"][0])
    max_rate = max((max(t["rate"]) for t in results["trained"]), default=20.0)

    # (a) the frontiers where the trained models are, with the collapse thresholds of the trained K.
    ax = axes[0, 0]
    _frontier_panel(ax, results, color_of, lowest_theta / 3, max(trained_k, default=None))
    ax.plot([], [], "o", color="0.3", ms=2.8, label=r"collapse threshold $\beta\sigma^2 = \lambda_i$")
    for t in results["trained"]:
        style = {**TRAINED_STYLE, "markersize": 8}
        ax.plot(
            t["rate"],
            t["distortion"],
            color=color_of[t["latent_dim"]],
            **style,
            label=f"trained, K = {t['latent_dim']}",
        )
    ax.set_xlim(-0.03 * 1.2 * max_rate, 1.2 * max_rate)
    visible = [
        d for f in results["frontiers"] for r, d in zip(f["rate"], f["distortion"]) if r <= 1.2 * max_rate
    ]  # the y range of what lies inside the x range
    log_axis(ax, "y", subs=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0))
    ax.set_ylim(0.9 * min(visible), 1.1 * max(visible))
    ax.set_xlabel(r"rate $R = E\,\mathrm{KL}(q(z|x)\,\|\,p(z))$ (nats per datapoint)")
    ax.set_ylabel(r"distortion $E\,\|x - Wz - \mu\|^2$ (squared pixel units, log scale)")
    ax.set_title(f"MNIST ({results['n']} digits), $\\sigma^2$ = {sigma2:g}: trained models on the frontier")
    ax.legend(loc="lower left", fontsize=7.5)

    # (b) every frontier over its whole range (log-log): K = 128 leaves K = d only at small water levels.
    ax = axes[0, 1]
    _frontier_panel(ax, results, color_of, np.inf)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(left=0.05)
    ax.set_xlabel("rate R (nats per datapoint, log scale)")
    ax.set_ylabel("distortion (squared pixel units, log scale)")
    ax.set_title(f"Frontiers down to $\\beta\\sigma^2$ = {config['frontier_theta_min']:g}")
    ax.legend(loc="lower left", fontsize=7.5)

    # (c) the height of each trained model above its frontier, against the bound 2 sigma2 gap.
    ax = axes[0, 2]
    floor = 1e-16
    for t in results["trained"]:
        k, color = t["latent_dim"], color_of[t["latent_dim"]]
        height = np.asarray(t["distortion"]) - np.asarray(t["frontier_distortion_at_rate"])
        ax.plot(
            t["water_levels"],
            np.maximum(np.abs(height), floor),
            color=color,
            **TRAINED_STYLE,
            label=f"|D - D_K(R)|, K = {k}",
        )
        bound = 2 * sigma2 * np.maximum(np.asarray(t["gap"]), 0)
        ax.plot(
            t["water_levels"],
            np.maximum(bound, floor),
            "x",
            color=color,
            label=rf"$2\sigma^2 \times$ ELBO gap, K = {k}",
        )
    ax.axhline(
        2 * sigma2 * 1e-6,
        color="0.2",
        **PREDICTION_STYLE,
        label=r"$2\sigma^2 \times 10^{-6}$ (the trainer's gap contract)",
    )
    log_axis(ax, "x", subs=(1.0,))
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, 1e-4)
    ax.set_xlabel(r"water level $\theta = \beta\sigma^2$ (squared pixel units, log scale)")
    ax.set_ylabel(r"height $|D - D_K(R)|$ (squared pixel units, log scale)")
    ax.set_title(f"Height above the frontier (0 drawn at {floor:g})")
    ax.legend(loc="upper left", fontsize=7.5)
    return fig
