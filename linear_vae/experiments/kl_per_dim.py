"""Figure 2: KL of every latent dimension against beta.

Claim (Lucas et al. Section 4.2, docs/theory.md (T4)): at the global optimum the KL of latent dimension
``i`` is ``1/2 log(lambda_i / (beta sigma2))`` while ``lambda_i > beta sigma2`` and exactly 0 after,
so each curve hits zero at its collapse threshold ``beta_i* = lambda_i / sigma2``.  Trained linear
VAEs (exact ELBO, trust-region Newton, one vmapped sweep) are drawn as markers; their dimensions come out in
arbitrary order, so both are sorted by KL (the closed form is decreasing in ``i``).
"""

from __future__ import annotations

import numpy as np

from linear_vae.experiments.common import data_description, data_name, load_problem, newton_config, train
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.theory.optimum import optimal_kl_per_dim

NAME = "kl_per_dim"
TITLE = "Per-dimension KL against beta: closed-form curves and trained linear VAEs"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,
    "latent_dim": 6,
    "sigma2": 0.1,
    "betas": [4.0, 80.0, 12],  # log-spaced START, STOP, NUM
    "optimizer": "newton",
    "steps": 500,
    "seed": 0,  # Newton stops once converged (at most 500 iterations)
    "gain_tol": 1e-12,  # converged: predicted gain <= 1e-12 nats (round-off)
    "basis": "eigen",  # O(d k^2) steps; the objective is rotation invariant
}
QUICK = {"betas": [4.0, 80.0, 5]}


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    """The closed-form KL of each latent dimension against beta, and that of the linear VAEs trained
    at each of ``config['betas']`` (one Newton sweep), sorted by KL.

    >>> config = {**CONFIG, "data": "synthetic", "n": 200, "latent_dim": 2, "sigma2": 0.5, "betas": [1.0, 30.0, 3]}  # tiny
    >>> results = run(config)
    >>> np.round(results["thresholds"], 6).tolist()  # beta_i* = lambda_i / sigma2 (eigenvalues 8, 6)
    [16.0, 12.0]
    >>> round(results["betas"][1], 6), (np.round(results["trained_kl_per_dim"], 6) + 0.0).tolist()  # 0 past the threshold
    (5.477226, [[1.386294, 1.242453], [0.535995, 0.392154], [0.0, 0.0]])
    >>> bool(np.allclose(results["trained_kl_per_dim"], results["predicted_kl_per_dim"], atol=1e-9))
    True
    """
    problem = load_problem(config)
    k, sigma2 = config["latent_dim"], config["sigma2"]
    betas = np.geomspace(*config["betas"][:2], int(config["betas"][2]))
    train_config = newton_config(config, k)
    result, reports = train(
        problem,
        train_config,
        betas,
        np.full(len(betas), sigma2),
        [config["seed"]] * len(betas),
        basis=config["basis"],
        progress=progress,
        label=NAME,
    )
    trained_kl = np.sort(result.history.kl_per_dim[:, -1, :], axis=1)[:, ::-1]
    beta_grid = np.geomspace(betas[0], betas[-1], 400)
    return {
        **data_description(problem, config),
        "betas": betas.tolist(),
        "thresholds": (problem.eigenvalues[:k] / sigma2).tolist(),
        "trained_kl_per_dim": trained_kl.tolist(),
        "predicted_kl_per_dim": optimal_kl_per_dim(problem.eigenvalues, k, betas * sigma2).tolist(),
        "nearest_threshold_distance": [r["nearest_threshold_distance"] for r in reports],
        "gap": [r["gap"] for r in reports],
        "curve_betas": beta_grid.tolist(),
        "curve_kl_per_dim": optimal_kl_per_dim(problem.eigenvalues, k, beta_grid * sigma2).tolist(),
    }


# --- figure --------------------------------------------------------------------------------------
def plot(results: dict, config: dict):
    """One closed-form curve per latent dimension against beta (log scale), the trained ones as markers.

    >>> config = {**CONFIG, "data": "synthetic", "n": 200, "latent_dim": 2, "sigma2": 0.5, "betas": [1.0, 30.0, 3]}  # tiny
    >>> figure = plot(run(config), config)
    >>> len(figure.axes[0].lines), figure.axes[0].lines[-1].get_label()  # a curve and markers per dimension, a legend entry
    (5, 'trained (exact ELBO, Newton)')
    """
    fig, axes = new_figure(width=6.4, height=4.2)
    ax = axes[0, 0]
    curves = np.array(results["curve_kl_per_dim"])
    trained = np.array(results["trained_kl_per_dim"])
    for i in range(curves.shape[1]):
        color = COLORS[i % len(COLORS)]
        ax.plot(
            results["curve_betas"],
            curves[:, i],
            color=color,
            **PREDICTION_STYLE,
            label=rf"$i$ = {i + 1}: $\frac{{1}}{{2}}\log(\lambda_{{{i + 1}}} / \beta\sigma^2)$",
        )
        ax.plot(results["betas"], trained[:, i], "o", color=color, markerfacecolor="none", markeredgewidth=1.4)
    ax.plot([], [], "o", color="0.3", markerfacecolor="none", label="trained (exact ELBO, Newton)")
    log_axis(ax, "x")
    ax.set_xlabel(r"KL weight $\beta$ (log scale)")
    ax.set_ylabel("KL of latent dimension $i$ (nats per datapoint)")
    ax.set_title(
        f"Per-dimension KL: {data_name(config)} ({results['n']} datapoints), $\\sigma^2$ = {config['sigma2']}, K = {config['latent_dim']}"
    )
    ax.legend(loc="upper right", ncols=1)
    return fig
