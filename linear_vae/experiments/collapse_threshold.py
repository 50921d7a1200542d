"""Figure 1: the collapse threshold.  Active latent dimensions against beta and against sigma2.

Claim (Lucas et al. Section 4.2, docs/theory.md (T4)): latent dimension ``i`` is active iff
``lambda_i > beta sigma2``, so the number of active dimensions is a staircase in beta with a step
down at every ``beta_i* = lambda_i / sigma2`` (and, at beta = 1, in sigma2 with a step at every
``lambda_i``).  Trained linear VAEs (exact ELBO, trust-region Newton, one vmapped sweep per panel) are drawn as
markers on the closed-form staircase; configurations within 2% of a threshold are drawn hollow
grey (the saddle is flat there, see docs/theory.md (T4)).  The two measures of a trained model,
column norms (docs/theory.md (T5.2)) and (epsilon, delta)-collapse (T5.1), can differ on a dimension
that is barely active; every point where they do is listed in the JSON (``measure_disagreements``)
and annotated on the figure.
"""

from __future__ import annotations

import numpy as np

from linear_vae.experiments.common import data_description, load_problem, newton_config, train
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.theory.optimum import active_by_threshold, beta_elbo_optimum

NAME = "collapse_threshold"
TITLE = "Active latent dimensions against beta and sigma2: closed-form staircase and trained linear VAEs"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,  # seeded random 1,000 of the shipped digits
    "latent_dim": 8,
    "sigma2": 0.1,  # fixed sigma2 of the beta panel
    "betas": [8.0, 100.0, 14],  # log-spaced START, STOP, NUM
    "sigma2s": [0.4, 8.0, 14],  # beta = 1 panel
    "optimizer": "newton",
    "steps": 500,
    "seed": 0,  # Newton stops once converged (at most 500 iterations)
    "gain_tol": 1e-12,  # converged: predicted gain <= 1e-12 nats (round-off)
    "basis": "eigen",  # O(d k^2) steps; the objective is rotation invariant
}
QUICK = {"betas": [8.0, 100.0, 6], "sigma2s": [0.4, 8.0, 6]}
NEAR = 0.02


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    problem = load_problem(config)
    k = config["latent_dim"]
    train_config = newton_config(config, k)
    betas = np.geomspace(*config["betas"][:2], int(config["betas"][2]))
    sigma2s = np.geomspace(*config["sigma2s"][:2], int(config["sigma2s"][2]))
    n_beta = len(betas)
    # One sweep over both panels: (beta, sigma2) pairs for the beta panel, then (1, sigma2) pairs.
    all_betas = np.concatenate([betas, np.ones_like(sigma2s)])
    all_sigma2s = np.concatenate([np.full(n_beta, config["sigma2"]), sigma2s])
    _, reports = train(
        problem,
        train_config,
        all_betas,
        all_sigma2s,
        [config["seed"]] * len(all_betas),
        basis=config["basis"],
        progress=progress,
        label=NAME,
    )

    def panel(rows, x):
        return {
            "x": x.tolist(),
            "trained_active_dims": [r["active_dims"] for r in rows],
            "trained_active_dims_epsilon_delta": [r["active_dims_epsilon_delta"] for r in rows],
            "predicted_active_dims": [r["predicted_active_dims"] for r in rows],
            "gap": [r["gap"] for r in rows],
            "nearest_threshold_distance": [r["nearest_threshold_distance"] for r in rows],
            # points where the column-norm count and the (epsilon, delta)-count differ
            "measure_disagreements": [
                {"x": float(v), "column_norm": r["active_dims"], "epsilon_delta": r["active_dims_epsilon_delta"]}
                for v, r in zip(x, rows)
                if r["active_dims"] != r["active_dims_epsilon_delta"]
            ],
        }

    eigenvalues = problem.eigenvalues
    beta_grid = np.geomspace(betas[0], betas[-1], 400)
    sigma2_grid = np.geomspace(sigma2s[0], sigma2s[-1], 400)
    return {
        **data_description(problem, config),
        "beta_panel": {
            **panel(reports[:n_beta], betas),
            "sigma2": config["sigma2"],
            "thresholds": (eigenvalues[:k] / config["sigma2"]).tolist(),
            "curve_x": beta_grid.tolist(),
            "curve_active_dims": active_by_threshold(eigenvalues, k, beta_grid * config["sigma2"]).tolist(),
        },
        "sigma2_panel": {
            **panel(reports[n_beta:], sigma2s),
            "beta": 1.0,
            "thresholds": eigenvalues[:k].tolist(),
            "curve_x": sigma2_grid.tolist(),
            "curve_active_dims": active_by_threshold(eigenvalues, k, sigma2_grid).tolist(),
        },
        "optimal_elbo_check": [beta_elbo_optimum(eigenvalues, k, b, s).elbo for b, s in zip(all_betas, all_sigma2s)],
    }


# --- figure --------------------------------------------------------------------------------------
def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=2, width=4.6, height=3.6)
    panels = [
        (results["beta_panel"], r"KL weight $\beta$ (log scale)", rf"fixed $\sigma^2$ = {config['sigma2']}"),
        (results["sigma2_panel"], r"observation noise $\sigma^2$ (log scale)", r"$\beta$ = 1"),
    ]
    for ax, (panel, xlabel, title) in zip(axes[0], panels):
        ax.step(
            panel["curve_x"],
            panel["curve_active_dims"],
            where="post",
            color=COLORS[0],
            label=r"closed form $\#\{\lambda_i > \beta\sigma^2\}$",
            **PREDICTION_STYLE,
        )
        x = np.array(panel["x"])
        near = np.array(panel["nearest_threshold_distance"]) < NEAR
        trained = np.array(panel["trained_active_dims"])
        ax.plot(
            x[~near],
            trained[~near],
            "o",
            color=COLORS[3],
            markersize=6,
            markerfacecolor="none",
            markeredgewidth=1.5,
            label="trained (exact ELBO, Newton)",
        )
        if near.any():
            ax.plot(
                x[near],
                trained[near],
                "o",
                color="0.55",
                markersize=6,
                markerfacecolor="none",
                label=f"trained, within {NEAR:.0%} of a threshold",
            )
        symbol = "β" if panel is results["beta_panel"] else "σ²"
        for point in panel["measure_disagreements"]:
            ax.annotate(
                f"{symbol} = {point['x']:.2f}: {point['column_norm']} active by column norm,\n"
                f"{point['epsilon_delta']} by (ε, δ) = (0.01, 0.01)",
                xy=(point["x"], point["column_norm"]),
                xytext=(0.97, 0.93),
                textcoords="axes fraction",
                ha="right",
                va="top",
                fontsize=8,
                arrowprops={"arrowstyle": "->", "color": "0.3", "linewidth": 0.8},
            )
        log_axis(ax, "x")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("active latent dimensions")
        ax.set_title(title)
        ax.set_ylim(-0.5, config["latent_dim"] + 0.5)
        ax.legend(loc="lower left")
    fig.suptitle(f"Posterior collapse threshold: MNIST ({results['n']} digits), K = {config['latent_dim']}")
    return fig
