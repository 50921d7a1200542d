"""Theorem 1, numerically: the ELBO adds no local maximum to the pPCA likelihood.

Claim (Lucas et al. 2019, Section 4.2, Theorem 1 and Appendix C; docs/theory.md (T15)): at a fixed
``sigma2`` the linear VAE's ELBO, in all its parameters ``(W, mu, V, log D)``, has no local maximum
that the pPCA marginal likelihood lacks: its only local maximum is the global one.

Set-up.  A small problem with a known, distinct spectrum (d = 6, eigenvalues 5, 3.5, 2.2, 1.5,
0.6, 0.3 along a random orthonormal basis), k = 3, ``sigma2 = 1`` (four eigenvalues above it, two
below, none within 0.4 of it).  The data enter only through their covariance, which is built from
that spectrum exactly.

1. Every stationary point of the MLL (one per subset of at most k of the four usable
   directions: 15) with its optimal encoder, classified by the autodiff Hessian of the MLL in
   ``W`` and of the ELBO in all 45 parameters (float64), against the predicted inertia (T15.2).
2. A direct search: Levenberg-Marquardt on ``grad ELBO = 0`` in all parameters from random starts
   (blind to the sign of the curvature, so it finds saddles as readily as maxima), each endpoint
   identified (T15.3) and classified by its own autodiff Hessian.

Figure: the number of ascent directions of each MLL stationary point (predicted, and autodiff for
the MLL and the ELBO); every search endpoint's ELBO against its number of ascent directions;
where the starts ended.
"""

from __future__ import annotations

from collections import Counter

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from linear_vae import stationary
from linear_vae.elbo import DataStats, exact_elbo
from linear_vae.moments import eigen_decomposition
from linear_vae.plotting import COLORS, PREDICTION_STYLE, TRAINED_STYLE, new_figure
from linear_vae.ppca import log_marginal_likelihood, stationary_points

NAME = "stationary_points"
TITLE = "Theorem 1: the ELBO's only local maximum is the MLL's global one"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "eigenvalues": [5.0, 3.5, 2.2, 1.5, 0.6, 0.3],  # distinct; sigma2 = 1 sits between 1.5 and 0.6
    "rotation_seed": 0,  # eigenvectors: Q of the QR factorisation of a seeded Gaussian matrix
    "latent_dim": 3,
    "sigma2": 1.0,
    "starts": 400,
    "search_seed": 0,
    "iterations": 500,  # Levenberg-Marquardt steps per start
    "gradient_tol": 1e-8,  # ||grad ELBO|| at which an endpoint counts as stationary
    "match_tol": 1e-6,  # tolerance of stationary.identify_stationary_point
}
# The quick run: the problem of tests/test_stationary_points.py (same shapes, so that one pytest
# process compiles the search and the Hessians once for both).
QUICK = {"eigenvalues": [4.0, 2.0, 1.4, 0.5], "latent_dim": 2, "starts": 12, "iterations": 200}


def covariance(config: dict) -> np.ndarray:
    """``S = Q diag(eigenvalues) Q^T`` with ``Q`` orthonormal from ``rotation_seed``."""
    lam = np.asarray(config["eigenvalues"], dtype=np.float64)
    Q, _ = np.linalg.qr(np.random.default_rng(config["rotation_seed"]).standard_normal((len(lam), len(lam))))
    return (Q * lam) @ Q.T


def smallest_relative_curvature(hessian: np.ndarray) -> float:
    """``min |eigenvalue| / max |eigenvalue|``: how far from zero the flattest direction is."""
    magnitudes = np.abs(np.linalg.eigvalsh(hessian))
    return float(magnitudes.min() / magnitudes.max())


def label(directions) -> str:
    """``{1,3}``: the used directions, 1-based."""
    return "{" + ",".join(str(j + 1) for j in directions) + "}"


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    S = covariance(config)
    d, k, s2 = S.shape[0], config["latent_dim"], config["sigma2"]
    spectrum = eigen_decomposition(S)
    lam, U = spectrum.eigenvalues, spectrum.eigenvectors
    mean = np.zeros(d)
    stats = DataStats.from_moments(mean, S)
    points = list(stationary_points(lam, k, s2))
    enumerated_batch = stationary.stationary_vaes(np.stack([p.weights(U) for p in points]), mean, s2)
    if progress is not None:
        progress.task(f"{NAME}: searching for stationary points from {config['starts']} starts")
    starts = stationary.random_starts(config["search_seed"], config["starts"], d, k, mean)
    found = stationary.search_stationary_points(starts, s2, stats, iterations=config["iterations"])

    if progress is not None:
        progress.task(f"{NAME}: Hessians")
    # The enumerated points, then the search's endpoints: one batch, one compiled program each.
    both = jax.tree.map(lambda a, b: np.concatenate([np.asarray(a), b]), enumerated_batch, found.params)
    n_points = len(points)
    all_hessians = np.asarray(stationary.batched_elbo_hessians(both, s2, stats))
    all_elbos = np.asarray(jax.jit(jax.vmap(lambda p: exact_elbo(p, s2, 1.0, stats)))(both))
    elbo_hessians, hessians = all_hessians[:n_points], all_hessians[n_points:]
    elbos, values = all_elbos[:n_points], all_elbos[n_points:]
    mll_hessians = np.asarray(stationary.batched_mll_hessians(enumerated_batch.W, s2, stats))
    gradient_of = jax.vmap(lambda p: ravel_pytree(jax.grad(lambda q: exact_elbo(q, s2, 1.0, stats))(p))[0])
    gradient_norms = np.linalg.norm(np.asarray(jax.jit(gradient_of)(enumerated_batch)), axis=1)
    mlls = np.asarray(jax.jit(jax.vmap(lambda W: log_marginal_likelihood(W, s2, S)))(enumerated_batch.W))
    enumerated = []
    for i, p in enumerate(points):
        predicted_mll, predicted_elbo = stationary.predicted_inertia(lam, p, s2)
        enumerated.append(
            {
                "directions": list(p.directions),
                "is_global_max": p.is_global_max,
                "column_norms_sq": p.column_variances.tolist(),
                "mll": float(mlls[i]),
                "elbo": float(elbos[i]),
                "elbo_gradient_norm": float(gradient_norms[i]),
                "mll_inertia": list(stationary.inertia(mll_hessians[i])),
                "elbo_inertia": list(stationary.inertia(elbo_hessians[i])),
                "predicted_mll_inertia": list(predicted_mll),
                "predicted_elbo_inertia": list(predicted_elbo),
                "elbo_smallest_relative_curvature": smallest_relative_curvature(elbo_hessians[i]),
            }
        )

    index = {tuple(p.directions): i for i, p in enumerate(points)}
    endpoints = []
    for i in range(config["starts"]):
        converged = bool(found.gradient_norm[i] <= config["gradient_tol"])
        groups = (
            stationary.identify_stationary_point(found.params.W[i], U, lam, s2, tol=config["match_tol"])
            if converged
            else None
        )
        mll_point = groups is not None and stationary.is_mll_point(groups)
        W = found.params.W[i]
        endpoints.append(
            {
                "gradient_norm": float(found.gradient_norm[i]),
                "initial_gradient_norm": float(found.initial_gradient_norm[i]),
                "converged": converged,
                "identified": groups is not None,
                "groups": None if groups is None else [[g.size, list(g.directions)] for g in groups],
                "is_mll_point": mll_point,
                "enumerated_index": index[tuple(sorted(g.directions[0] for g in groups))] if mll_point else None,
                "elbo": float(values[i]),
                "elbo_inertia": list(stationary.inertia(hessians[i])),
                "max_off_diagonal_wtw": float(np.max(np.abs(W.T @ W - np.diag(np.diag(W.T @ W))))),
            }
        )
    converged = [e for e in endpoints if e["converged"]]
    reached = Counter(e["enumerated_index"] for e in converged if e["is_mll_point"])
    maxima = [e for e in converged if e["elbo_inertia"][0] == 0]
    return {
        "eigenvalues": lam.tolist(),
        "d": d,
        "enumerated": enumerated,
        "global_max_mll": max(e["mll"] for e in enumerated),
        "endpoints": endpoints,
        "summary": {
            "starts": len(endpoints),
            "converged": len(converged),
            "identified": sum(e["identified"] for e in converged),
            "at_mll_points": sum(e["is_mll_point"] for e in converged),
            "at_elbo_only_points": sum(e["identified"] and not e["is_mll_point"] for e in converged),
            "enumerated_points_reached": len(reached),
            "starts_per_enumerated_point": [reached.get(i, 0) for i in range(len(points))],
            "local_maxima_found": len(maxima),
            "local_maxima_at_global_max": sum(
                e["is_mll_point"] and enumerated[e["enumerated_index"]]["is_global_max"] for e in maxima
            ),
            "distinct_elbo_only_points": len(
                {str(e["groups"]) for e in converged if e["identified"] and not e["is_mll_point"]}
            ),
        },
    }


# --- figure --------------------------------------------------------------------------------------
def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=3, width=5.0, height=4.2)
    enumerated = results["enumerated"]
    order = np.argsort([e["mll"] for e in enumerated])
    x = np.arange(len(order))
    labels = [label(enumerated[i]["directions"]) + (" *" if enumerated[i]["is_global_max"] else "") for i in order]

    ax = axes[0, 0]
    ax.plot(
        x,
        [enumerated[i]["predicted_elbo_inertia"][0] for i in order],
        color="0.2",
        **PREDICTION_STYLE,
        label="predicted (T15.2)",
    )
    ax.plot(
        x,
        [enumerated[i]["mll_inertia"][0] for i in order],
        color=COLORS[0],
        **TRAINED_STYLE,
        label="autodiff Hessian of the MLL in $W$",
    )
    ax.plot(
        x,
        [enumerated[i]["elbo_inertia"][0] for i in order],
        color=COLORS[1],
        linestyle="none",
        marker="x",
        markersize=7,
        label="autodiff Hessian of the ELBO in $(W, \\mu, V, \\log D)$",
    )
    ax.plot(
        x,
        [enumerated[i]["predicted_mll_inertia"][1] for i in order],
        color="0.5",
        linestyle="--",
        linewidth=1.5,
        label="predicted zero directions of the MLL: rotations $W R$",
    )
    ax.plot(
        x,
        [enumerated[i]["mll_inertia"][1] for i in order],
        color=COLORS[2],
        linestyle="none",
        marker="^",
        markerfacecolor="none",
        markersize=6,
        label="autodiff: MLL zero eigenvalues (ELBO: none)",
    )
    ax.set_xticks(x, labels, rotation=60, fontsize=8)
    ax.set_xlabel("MLL stationary point: used eigen-directions (* global max), by MLL")
    ax.set_ylabel("number of Hessian eigenvalues > 0 (or = 0)")
    ax.set_title("Every MLL stationary point but the global max is a saddle,\nfor the ELBO too")
    ax.legend(fontsize=7.5)

    ax = axes[0, 1]
    conv = [e for e in results["endpoints"] if e["converged"]]
    for subset, color, marker, name in (
        ([e for e in conv if e["is_mll_point"]], COLORS[0], "o", "at an MLL stationary point"),
        (
            [e for e in conv if e["identified"] and not e["is_mll_point"]],
            COLORS[3],
            "s",
            "ELBO-only (tied, T15.3)",
        ),
    ):
        # Endpoints at one stationary point coincide: one marker per distinct point, its area the count.
        points: dict = {}
        for e in subset:
            key = (e["elbo_inertia"][0], round(e["elbo"], 6))
            points[key] = points.get(key, 0) + 1
        ax.scatter(
            [k[0] for k in points],
            [k[1] for k in points],
            s=[12 * n for n in points.values()],
            marker=marker,
            facecolors="none",
            edgecolors=color,
            linewidths=1.1,
            label=f"{name}: {len(subset)} endpoints at {len(points)} points",
        )
    ax.axhline(results["global_max_mll"], color="0.2", **PREDICTION_STYLE, label="global max of the MLL (closed form)")
    ax.set_xlabel("ascent directions of the ELBO's Hessian at the endpoint")
    ax.set_ylabel("ELBO at the endpoint (nats per datapoint)")
    ax.set_title("Search endpoints: only the global max has\nno ascent direction (marker area: endpoints)")
    low, high = ax.get_ylim()
    ax.set_ylim(low - 0.4 * (high - low), high)  # room for the legend below the points
    ax.legend(fontsize=7.5, loc="lower left", markerscale=0.6)

    ax = axes[0, 2]
    s = results["summary"]
    counts = [s["starts_per_enumerated_point"][i] for i in order]
    ax.bar(x, counts, color=[COLORS[2] if enumerated[i]["is_global_max"] else COLORS[0] for i in order])
    ax.set_xticks(x, labels, rotation=60, fontsize=8)
    ax.set_xlabel("MLL stationary point (* global max)")
    ax.set_ylabel("search endpoints (starts)")
    ax.set_title(
        f"{s['starts']} starts: {s['at_mll_points']} at MLL points ({s['enumerated_points_reached']} of "
        f"{len(enumerated)}),\n{s['at_elbo_only_points']} at ELBO-only saddles ({s['distinct_elbo_only_points']} distinct), "
        f"{s['starts'] - s['converged']} not converged",
        fontsize=9.5,
    )
    lam = ", ".join(f"{v:g}" for v in config["eigenvalues"])
    fig.suptitle(
        f"Theorem 1: d = {results['d']}, eigenvalues {lam}, K = {config['latent_dim']}, "
        f"$\\sigma^2$ = {config['sigma2']:g} fixed; float64"
    )
    return fig
