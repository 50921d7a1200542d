"""Figure 8: the (epsilon, delta)-collapse fraction against epsilon, for several sigma2.

Claim (Lucas et al. Section 6, docs/theory.md (T5)): latent dimension
``i`` is (epsilon, delta)-collapsed when ``P_x[KL_i(x) < epsilon] >= 1 - delta``.  At the
linear VAE's global optimum (beta = 1) the ``k - m`` dimensions with ``lambda_i <= sigma2`` are
exactly collapsed (``KL_i(x) = 0`` for every x, so they count for every epsilon > 0), and an
active dimension has ``KL_i(x) = 1/2 [D_i + (lambda_i - sigma2)/lambda_i^2 (u_i^T (x - mu))^2 - 1
- log D_i]`` with ``D_i = sigma2 / lambda_i``: it too counts as collapsed once epsilon exceeds the
``1 - delta`` quantile of that, so the measured fraction rises from ``(k - m) / k`` at small
epsilon to 1 at large epsilon, the sooner the closer ``lambda_i`` is to sigma2.

Closed form (lines): the same measure on the closed-form optimal encoder
(``beta_elbo_optimum(...).parameters`` -> ``encoder_kl_matrix`` on the data ->
``collapsed_fraction_curve``), and the closed-form count of collapsed dimensions
``(k - #{lambda_i > sigma2}) / k`` (dashed).  Trained (markers): linear VAEs on the exact ELBO
(trust-region Newton, eigenbasis, one vmapped sweep over sigma2) measured the same way on the same data.
Data: MNIST, seeded random 1,000 digits; sigma2 chosen between eigenvalues of its spectrum.
"""

from __future__ import annotations

import numpy as np

from linear_vae.experiments.common import data_description, load_problem, newton_config, train
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.theory.collapse import collapsed_fraction_curve, encoder_kl_matrix
from linear_vae.theory.elbo import LinearVAEParams
from linear_vae.theory.optimum import beta_elbo_optimum

NAME = "collapse_fraction"
TITLE = "(epsilon, delta)-collapsed fraction of the latent dimensions against epsilon: closed form and trained"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,  # seeded random 1,000 of the shipped digits
    "latent_dim": 16,
    # Between eigenvalues of MNIST-1000 (lambda_1..17 = 5.28 3.80 3.39 2.80 2.59 2.26 1.70 1.64
    # 1.40 1.29 1.14 1.09 0.92 0.86 0.84 0.83 0.72), >= 7% from the nearest: 16, 12, 6, 1 active.
    "sigma2s": [0.6, 1.0, 2.0, 4.5],
    "delta": 0.01,
    "epsilons": [1e-4, 10.0, 21],  # log-spaced START, STOP, NUM (trained markers)
    "optimizer": "newton",
    "steps": 500,
    "seed": 0,  # Newton stops once converged (at most 500 iterations)
    "gain_tol": 1e-12,  # converged: predicted gain <= 1e-12 nats (round-off)
    "basis": "eigen",  # O(d k^2) steps; the objective is rotation invariant
}
QUICK = {"sigma2s": [1.0, 2.0, 4.5]}
MARKERS = ["o", "s", "^", "D", "v"]


def kl_quantiles(kl_matrix: np.ndarray, delta: float) -> np.ndarray:
    """Per-dimension ``1 - delta`` quantile of ``KL_i(x)`` over the data, ascending: dimension ``i``
    is (epsilon, delta)-collapsed roughly once epsilon exceeds it."""
    return np.sort(np.quantile(kl_matrix, 1.0 - delta, axis=0))


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    problem = load_problem(config)
    k, delta = config["latent_dim"], config["delta"]
    sigma2s = np.asarray(config["sigma2s"], dtype=np.float64)
    n = len(sigma2s)
    epsilons = np.geomspace(*config["epsilons"][:2], int(config["epsilons"][2]))
    curve_epsilons = np.geomspace(epsilons[0], epsilons[-1], 400)
    train_config = newton_config(config, k)
    result, reports = train(
        problem,
        train_config,
        np.ones(n),
        sigma2s,
        [config["seed"]] * n,
        basis=config["basis"],
        progress=progress,
        label=NAME,
    )
    X = problem.dataset.X
    panels = []
    for i, sigma2 in enumerate(sigma2s):
        optimum = beta_elbo_optimum(problem.eigenvalues, k, 1.0, sigma2)
        kl_closed = encoder_kl_matrix(optimum.parameters(problem.mean, problem.eigenvectors), X)
        kl_trained = encoder_kl_matrix(LinearVAEParams(*(p[i] for p in result.params)), X)
        closed = collapsed_fraction_curve(kl_closed, epsilons, delta)
        trained = collapsed_fraction_curve(kl_trained, epsilons, delta)
        panels.append(
            {
                "sigma2": float(sigma2),
                "predicted_active_dims": optimum.active_dims,
                "predicted_collapsed_fraction": (k - optimum.active_dims) / k,
                "closed_form_fraction": closed.tolist(),
                "trained_fraction": trained.tolist(),
                "max_abs_difference": float(np.max(np.abs(trained - closed))),
                "curve_closed_form_fraction": collapsed_fraction_curve(kl_closed, curve_epsilons, delta).tolist(),
                "closed_form_kl_quantiles": kl_quantiles(kl_closed, delta).tolist(),
                "trained_kl_quantiles": kl_quantiles(kl_trained, delta).tolist(),
                "closed_form_mean_kl_per_dim": np.sort(kl_closed.mean(axis=0)).tolist(),
                "trained_mean_kl_per_dim": np.sort(kl_trained.mean(axis=0)).tolist(),
                "trained_active_dims": reports[i]["active_dims"],
                "gap": reports[i]["gap"],
                "nearest_threshold_distance": reports[i]["nearest_threshold_distance"],
            }
        )
    return {
        **data_description(problem, config),
        "latent_dim": k,
        "delta": delta,
        "epsilons": epsilons.tolist(),
        "curve_epsilons": curve_epsilons.tolist(),
        "panels": panels,
        "max_abs_difference": max(p["max_abs_difference"] for p in panels),
    }


# --- figure --------------------------------------------------------------------------------------
def plot(results: dict, config: dict):
    fig, axes = new_figure(width=7.4, height=4.6)
    ax = axes[0, 0]
    k = results["latent_dim"]
    for i, panel in enumerate(results["panels"]):
        color, marker = COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]
        ax.step(
            results["curve_epsilons"],
            panel["curve_closed_form_fraction"],
            where="post",
            color=color,
            **PREDICTION_STYLE,
        )
        ax.axhline(panel["predicted_collapsed_fraction"], color=color, linestyle="--", linewidth=1.0, alpha=0.8)
        ax.plot(
            results["epsilons"],
            panel["trained_fraction"],
            marker,
            color=color,
            markersize=7,
            markerfacecolor="none",
            markeredgewidth=1.4,
            label=f"$\\sigma^2$ = {panel['sigma2']:g}: {panel['predicted_active_dims']} of {k} active",
        )
    ax.plot([], [], color="0.3", **PREDICTION_STYLE, label="closed form (optimal encoder on the data)")
    ax.plot(
        [],
        [],
        color="0.3",
        linestyle="--",
        linewidth=1.0,
        label=r"closed-form count $(K - \#\{\lambda_i > \sigma^2\}) / K$",
    )
    ax.plot([], [], "o", color="0.3", markerfacecolor="none", label="trained (exact ELBO, Newton)")
    log_axis(ax, "x", subs=(1.0,))  # decades only: 5 decades of labels fit
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel(r"$\epsilon$ (nats, log scale)")
    ax.set_ylabel(rf"fraction of the K = {k} latent dimensions $(\epsilon, \delta)$-collapsed")
    ax.set_title(
        f"$(\\epsilon, \\delta)$-collapse, $\\delta$ = {results['delta']:g}, $\\beta$ = 1: "
        f"MNIST ({results['n']} digits)"
    )
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center")
    return fig
