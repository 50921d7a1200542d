"""Theorem 1, numerically: the ELBO adds no local maximum to the pPCA likelihood.

Claim (Lucas et al. 2019, Section 4.2, Theorem 1 and Appendix C; docs/theory.md (T15)): at a fixed
``sigma2`` the linear VAE's ELBO, in all its parameters ``(W, mu, V, log D)``, has no local maximum
that the pPCA marginal likelihood lacks: its only local maximum is the global one.

Set-up.  Two problems with a known, distinct spectrum along a random orthonormal basis, beta = 1,
``sigma2`` fixed away from every eigenvalue; the data enter only through their covariance, which is
built from that spectrum exactly:

* d = 6, eigenvalues 5, 3.5, 2.2, 1.5, 0.6, 0.3, k = 3, ``sigma2 = 1`` (four eigenvalues above it,
  none within 0.4 of it);
* d = 8, eigenvalues 6, 4.3, 3.1, 2.2, 1.6, 0.7, 0.45, 0.2, k = 4, ``sigma2 = 1.1`` (five above it,
  none within 0.4 of it).

beta != 1 needs no problem of its own: at fixed ``sigma2`` the beta-ELBO is beta times the ELBO at
``beta sigma2`` plus a constant (T13), so its stationary points are those of another fixed-``sigma2``
problem.

On each:

1. Every stationary point of the MLL (T2.4) with its optimal encoder, classified by the autodiff
   Hessian of the MLL in ``W`` and of the ELBO in all parameters (float64), against the predicted
   inertia (T15.2).
2. The whole tied-column family of the ELBO's stationary points (T15.3), enumerated in closed form (T15.4)
   (:func:`linear_vae.training.stationary.tied_family`, the MLL's points among them), each checked stationary
   by the autodiff gradient and classified by the autodiff Hessian: saddle (an ascent direction),
   local maximum (none, and no zero direction) or degenerate (no ascent direction, some zero ones).
3. A direct search: Levenberg-Marquardt on ``grad ELBO = 0`` in all parameters from random starts
   (blind to the sign of the curvature, so it finds saddles as readily as maxima).  Each converged
   endpoint is identified (T15.3) and matched to an enumerated point (same groups, same ELBO to
   1e-9): an endpoint that matches none would be a stationary point outside the family.  Search
   *endpoints* (starts) and the *distinct* points they reach are counted apart.

Figure, one row per problem: the ascent directions of each MLL stationary point (predicted, and
autodiff for the MLL and the ELBO); every enumerated point's ELBO against its ascent directions,
filled where the search reached it; enumerated points, distinct points reached and endpoints.
"""

from __future__ import annotations

from collections import Counter

import jax
import numpy as np
from jax.flatten_util import ravel_pytree
from matplotlib.ticker import MaxNLocator

from linear_vae.data.moments import eigen_decomposition
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, TRAINED_STYLE, new_figure
from linear_vae.theory.elbo import DataStats, exact_elbo
from linear_vae.theory.ppca import log_marginal_likelihood, stationary_points
from linear_vae.training import stationary

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
    # The second, larger problem: these keys replace the ones above (search settings are shared).
    # Distinct eigenvalues, sigma2 = 1.1 between 1.6 and 0.7; chosen so that no enumerated point is
    # degenerate beyond its predicted zero directions (round values such as 3.2 with sigma2 = 1.2
    # put a tied point on a bifurcation, with one more zero eigenvalue).
    "larger_example": {
        "eigenvalues": [6.0, 4.3, 3.1, 2.2, 1.6, 0.7, 0.45, 0.2],
        "rotation_seed": 1,
        "latent_dim": 4,
        "sigma2": 1.1,
        "starts": 1000,  # 436 points to reach: more starts than the first problem's 75 need
    },
}
# The quick run: the problem of tests/test_stationary_points.py (same shapes, so that one pytest
# process compiles the search and the Hessians once for both), and a second one just larger.
QUICK = {
    "eigenvalues": [4.0, 2.0, 1.4, 0.5],
    "latent_dim": 2,
    "starts": 12,
    "iterations": 200,
    "larger_example": {"eigenvalues": [4.0, 2.5, 1.6, 0.7, 0.3], "rotation_seed": 1, "latent_dim": 3, "sigma2": 1.0},
}


def examples(config: dict) -> list[dict]:
    """The configuration of each problem: the top-level one, then ``larger_example`` over it."""
    first = {key: value for key, value in config.items() if key != "larger_example"}
    return [first, {**first, **config["larger_example"]}]


def covariance(config: dict) -> np.ndarray:
    """``S = Q diag(eigenvalues) Q^T`` with ``Q`` orthonormal from ``rotation_seed``."""
    lam = np.asarray(config["eigenvalues"], dtype=np.float64)
    Q, _ = np.linalg.qr(np.random.default_rng(config["rotation_seed"]).standard_normal((len(lam), len(lam))))
    return (Q * lam) @ Q.T


def smallest_relative_curvature(hessian: np.ndarray, skip: int = 0) -> float:
    """The ``skip``-th smallest ``|eigenvalue| / max |eigenvalue|`` (``skip = 0``: the flattest
    direction; ``skip`` = the number of predicted zero directions: the flattest of the others)."""
    magnitudes = np.sort(np.abs(np.linalg.eigvalsh(hessian)))
    return float(magnitudes[skip] / magnitudes[-1])


def label(directions) -> str:
    """``{1,3}``: the used directions, 1-based."""
    return "{" + ",".join(str(j + 1) for j in directions) + "}"


def kind(inertia: stationary.Inertia) -> str:
    """What a Hessian's inertia makes a stationary point: ``saddle`` (an ascent direction),
    ``local max`` (only descent directions) or ``degenerate`` (no ascent, some zero directions:
    undecided at second order)."""
    if inertia.positive:
        return "saddle"
    return "degenerate" if inertia.zero else "local max"


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    first, larger = (run_example(example, progress) for example in examples(config))
    return {**first, "larger_example": larger}


def run_example(config: dict, progress=None) -> dict:
    """Steps 1-3 of the module's docstring on one problem."""
    S = covariance(config)
    d, k, s2 = S.shape[0], config["latent_dim"], config["sigma2"]
    spectrum = eigen_decomposition(S)
    lam, U = spectrum.eigenvalues, spectrum.eigenvectors
    mean = np.zeros(d)
    stats = DataStats.from_moments(mean, S)
    points = list(stationary_points(lam, k, s2))
    family = stationary.tied_family(lam, k, s2)
    if progress is not None:
        progress.task(f"{NAME}: d = {d}, K = {k}: searching for stationary points from {config['starts']} starts")
    starts = stationary.random_starts(config["search_seed"], config["starts"], d, k, mean)
    found = stationary.search_stationary_points(starts, s2, stats, iterations=config["iterations"])

    if progress is not None:
        progress.task(f"{NAME}: d = {d}, K = {k}: Hessians")
    # The MLL's points, the family's, then the search's endpoints: one batch, one compiled program each.
    enumerated_batch = stationary.stationary_vaes(np.stack([p.weights(U) for p in points]), mean, s2)
    family_batch = stationary.stationary_vaes(np.stack([p.weights(U, k) for p in family]), mean, s2)
    batches = (enumerated_batch, family_batch, found.params)
    both = jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *batches)
    all_hessians = np.asarray(stationary.batched_elbo_hessians(both, s2, stats))
    all_elbos = np.asarray(jax.jit(jax.vmap(lambda p: exact_elbo(p, s2, 1.0, stats)))(both))
    gradient_of = jax.vmap(lambda p: ravel_pytree(jax.grad(lambda q: exact_elbo(q, s2, 1.0, stats))(p))[0])
    all_gradient_norms = np.linalg.norm(np.asarray(jax.jit(gradient_of)(both)), axis=1)
    split = np.cumsum([len(points), len(family)])
    elbo_hessians, family_hessians, hessians = np.split(all_hessians, split)
    elbos, family_elbos, values = np.split(all_elbos, split)
    gradient_norms, family_gradient_norms, _ = np.split(all_gradient_norms, split)
    mll_hessians = np.asarray(stationary.batched_mll_hessians(enumerated_batch.W, s2, stats))
    mlls = np.asarray(jax.jit(jax.vmap(lambda W: log_marginal_likelihood(W, s2, S)))(enumerated_batch.W))
    enumerated = [
        mll_point_record(lam, p, s2, mlls[i], elbos[i], gradient_norms[i], mll_hessians[i], elbo_hessians[i])
        for i, p in enumerate(points)
    ]
    index = {tuple(p.directions): i for i, p in enumerate(points)}
    family_index = {p.groups: i for i, p in enumerate(family)}
    endpoints = []
    for i in range(config["starts"]):
        converged = bool(found.gradient_norm[i] <= config["gradient_tol"])
        groups = (
            stationary.identify_stationary_point(found.params.W[i], U, lam, s2, tol=config["match_tol"])
            if converged
            else None
        )
        mll_point = groups is not None and stationary.is_mll_point(groups)
        j = family_index.get(groups) if groups is not None else None
        # Matched: the same groups as an enumerated point, and its ELBO (float64 round-off ~1e-12).
        matched = j is not None and abs(values[i] - family_elbos[j]) <= 1e-9
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
                "family_index": j if matched else None,
                "elbo": float(values[i]),
                "elbo_inertia": list(stationary.inertia(hessians[i])),
                "max_off_diagonal_wtw": float(np.max(np.abs(W.T @ W - np.diag(np.diag(W.T @ W))))),
            }
        )
    converged = [e for e in endpoints if e["converged"]]
    at_family = Counter(e["family_index"] for e in converged if e["family_index"] is not None)
    tied = [
        family_point_record(p, family_elbos[i], family_gradient_norms[i], family_hessians[i], at_family.get(i, 0))
        for i, p in enumerate(family)
    ]
    return {
        "eigenvalues": lam.tolist(),
        "d": d,
        "latent_dim": k,
        "sigma2": s2,
        "enumerated": enumerated,
        "family": tied,
        "global_max_mll": max(e["mll"] for e in enumerated),
        "endpoints": endpoints,
        "summary": summarise(enumerated, tied, endpoints),
    }


def mll_point_record(lam, point, s2, mll, elbo, gradient_norm, mll_hessian, elbo_hessian) -> dict:
    """One MLL stationary point (T2.4): its values, gradient and inertia, measured and predicted (T15.2)."""
    predicted_mll, predicted_elbo = stationary.predicted_inertia(lam, point, s2)
    return {
        "directions": list(point.directions),
        "is_global_max": point.is_global_max,
        "column_norms_sq": point.column_variances.tolist(),
        "mll": float(mll),
        "elbo": float(elbo),
        "elbo_gradient_norm": float(gradient_norm),
        "mll_inertia": list(stationary.inertia(mll_hessian)),
        "elbo_inertia": list(stationary.inertia(elbo_hessian)),
        "predicted_mll_inertia": list(predicted_mll),
        "predicted_elbo_inertia": list(predicted_elbo),
        "elbo_smallest_relative_curvature": smallest_relative_curvature(elbo_hessian),
    }


def family_point_record(point: stationary.TiedPoint, elbo, gradient_norm, hessian, endpoints: int) -> dict:
    """One enumerated tied-column point (T15.3): groups, ELBO, gradient, Hessian inertia and kind,
    and how many search endpoints matched it."""
    inertia = stationary.inertia(hessian)
    zeros = stationary.tied_zero_directions(point.groups)
    return {
        "groups": [[g.size, list(g.directions)] for g in point.groups],
        "direction_norms_sq": [x.tolist() for x in point.norms],
        "is_mll_point": point.is_mll_point,
        "elbo": float(elbo),
        "elbo_gradient_norm": float(gradient_norm),
        "elbo_inertia": list(inertia),
        "predicted_zero_directions": zeros,
        "kind": kind(inertia),
        # The flattest direction past the predicted zero ones: how far the inertia is from its 1e-9 tolerance.
        "smallest_nonzero_relative_curvature": smallest_relative_curvature(hessian, skip=zeros),
        "search_endpoints": endpoints,
    }


def summarise(enumerated: list[dict], family: list[dict], endpoints: list[dict]) -> dict:
    """Counts of enumerated points, of search endpoints (starts) and of the distinct points they reached.

    ``at_mll_points`` and ``at_elbo_only_points`` count endpoints; ``enumerated_points_reached``
    (MLL points) and ``distinct_elbo_only_points`` count distinct points, as identified (T15.3);
    ``*_reached`` count the enumerated points that at least one endpoint matched."""
    converged = [e for e in endpoints if e["converged"]]
    reached = Counter(e["enumerated_index"] for e in converged if e["is_mll_point"])
    maxima = [e for e in converged if e["elbo_inertia"][0] == 0]
    elbo_only = [p for p in family if not p["is_mll_point"]]
    matched = [e for e in converged if e["family_index"] is not None]
    return {
        "starts": len(endpoints),
        "converged": len(converged),
        "identified": sum(e["identified"] for e in converged),
        "at_mll_points": sum(e["is_mll_point"] for e in converged),
        "at_elbo_only_points": sum(e["identified"] and not e["is_mll_point"] for e in converged),
        "enumerated_points_reached": len(reached),
        "starts_per_enumerated_point": [reached.get(i, 0) for i in range(len(enumerated))],
        "local_maxima_found": len(maxima),
        "local_maxima_at_global_max": sum(
            e["is_mll_point"] and enumerated[e["enumerated_index"]]["is_global_max"] for e in maxima
        ),
        "distinct_elbo_only_points": len(
            {str(e["groups"]) for e in converged if e["identified"] and not e["is_mll_point"]}
        ),
        # The enumerated family (T15.3) and the search against it.
        "family_points": len(family),
        "family_mll_points": len(family) - len(elbo_only),
        "family_elbo_only_points": len(elbo_only),
        "family_saddles": sum(p["kind"] == "saddle" for p in family),
        "family_local_maxima": sum(p["kind"] == "local max" for p in family),
        "family_degenerate": sum(p["kind"] == "degenerate" for p in family),
        "elbo_only_saddles": sum(p["kind"] == "saddle" for p in elbo_only),
        "endpoints_matched": len(matched),
        "endpoints_unmatched": len(converged) - len(matched),
        "endpoints_at_elbo_only_points": sum(not family[e["family_index"]]["is_mll_point"] for e in matched),
        "family_points_reached": sum(p["search_endpoints"] > 0 for p in family),
        "elbo_only_points_reached": sum(p["search_endpoints"] > 0 for p in elbo_only),
        "mll_points_reached": sum(p["search_endpoints"] > 0 for p in family if p["is_mll_point"]),
    }


# --- figure --------------------------------------------------------------------------------------
def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=3, nrows=2, width=5.2, height=4.0)
    for row, example in enumerate((results, results["larger_example"])):
        name = f"d = {example['d']}, K = {example['latent_dim']}, $\\sigma^2$ = {example['sigma2']:g}"
        plot_inertia(axes[row, 0], example, name)
        plot_family(axes[row, 1], example, name)
        plot_counts(axes[row, 2], example, name)
    for column, where in enumerate(("outside lower left", "outside lower center", "outside lower right")):
        handles, labels = axes[0, column].get_legend_handles_labels()
        fig.legend(handles, labels, loc=where, fontsize=9)
    lams = [", ".join(f"{v:g}" for v in e["eigenvalues"]) for e in (results, results["larger_example"])]
    fig.suptitle(
        f"Theorem 1 at a fixed $\\sigma^2$, $\\beta$ = 1, float64: eigenvalues {lams[0]} (top) and {lams[1]} (bottom)",
        fontsize=11,
    )
    return fig


def plot_inertia(ax, example: dict, name: str) -> None:
    """Ascent (and the MLL's zero) directions of every MLL stationary point: predicted and autodiff."""
    enumerated = example["enumerated"]
    order = np.argsort([e["mll"] for e in enumerated])
    x = np.arange(len(order))
    series = (
        ("predicted_elbo_inertia", 0, {"color": "0.2", **PREDICTION_STYLE}, "ascent directions, predicted (T15.2)"),
        ("mll_inertia", 0, {"color": COLORS[0], **TRAINED_STYLE}, "ascent, autodiff Hessian of the MLL in $W$"),
        (
            "elbo_inertia",
            0,
            {"color": COLORS[1], "linestyle": "none", "marker": "x", "markersize": 6},
            "ascent, autodiff Hessian of the ELBO in $(W, \\mu, V, \\log D)$",
        ),
        (
            "predicted_mll_inertia",
            1,
            {"color": "0.5", "linestyle": "--", "linewidth": 1.5},
            "zero directions of the MLL, predicted: rotations $W R$",
        ),
        (
            "mll_inertia",
            1,
            {"color": COLORS[2], "linestyle": "none", "marker": "^", "markerfacecolor": "none", "markersize": 5},
            "zero directions of the MLL, autodiff (ELBO: none)",
        ),
    )
    for key, column, style, text in series:
        ax.plot(x, [enumerated[i][key][column] for i in order], label=text, **style)
    if len(x) <= 16:
        labels = [label(enumerated[i]["directions"]) + (" *" if enumerated[i]["is_global_max"] else "") for i in order]
        ax.set_xticks(x, labels, rotation=90, fontsize=7.5)
        ax.set_xlabel("MLL stationary point: its eigen-directions (* global max), by MLL")
    else:  # too many to name legibly: numbered, the last is the global max
        ax.set_xticks(x[::5])
        ax.set_xlabel("MLL stationary point, numbered by MLL (the last: global max)")
    ax.set_ylabel("Hessian eigenvalues > 0 (or = 0)")
    ax.set_title(
        f"{name}: the {len(x)} MLL stationary points,\nsaddles for MLL and ELBO but the global max", fontsize=10
    )


def plot_family(ax, example: dict, name: str) -> None:
    """Every enumerated tied-column point (T15.3): ELBO below the global max against its ascent
    directions, filled where a search endpoint matched it."""
    family, best = example["family"], example["global_max_mll"]
    # Side by side within each count of ascent directions: MLL points reached, not reached, then ELBO-only.
    for is_mll, color, marker, offset, what in (
        (True, COLORS[0], "o", -0.3, "MLL point"),
        (False, COLORS[3], "s", 0.1, "ELBO-only point (T15.3)"),
    ):
        for reached in (True, False):
            chosen = [p for p in family if p["is_mll_point"] == is_mll and (p["search_endpoints"] > 0) == reached]
            ax.scatter(
                [p["elbo_inertia"][0] + offset + (0 if reached else 0.2) for p in chosen],
                [p["elbo"] - best for p in chosen],
                s=22,
                marker=marker,
                facecolors=color if reached else "none",
                edgecolors=color,
                linewidths=0.9,
                alpha=0.8,
                label=f"{what}, {'reached' if reached else 'not reached'} by the search",
            )
    ax.scatter(
        [-0.3], [0], s=260, marker="*", facecolors="none", edgecolors=COLORS[2], linewidths=1.3, label="the global max"
    )
    counts = example["summary"]
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("ascent directions of the ELBO's autodiff Hessian")
    ax.set_ylabel("ELBO $-$ global max (nats per datapoint)")
    ax.set_title(
        f"{name}: all {counts['family_points']} enumerated points,\n{counts['family_saddles']} saddles, "
        f"{counts['family_local_maxima']} local max, {counts['family_degenerate']} degenerate",
        fontsize=10,
    )


def plot_counts(ax, example: dict, name: str) -> None:
    """Enumerated points, the distinct ones the search reached, and the endpoints at them (MLL / ELBO-only)."""
    s = example["summary"]
    kinds = ("MLL points", "ELBO-only points")
    bars = (
        ("enumerated (closed form)", [s["family_mll_points"], s["family_elbo_only_points"]], "0.6"),
        ("distinct points the search reached", [s["mll_points_reached"], s["elbo_only_points_reached"]], COLORS[0]),
        (
            "search endpoints there (starts)",
            [s["endpoints_matched"] - s["endpoints_at_elbo_only_points"], s["endpoints_at_elbo_only_points"]],
            COLORS[1],
        ),
    )
    width = 0.27
    for i, (text, heights, color) in enumerate(bars):
        drawn = ax.bar(np.arange(2) + (i - 1) * width, heights, width, color=color, label=text)
        ax.bar_label(drawn, fontsize=8.5, padding=1)
    ax.set_xticks(np.arange(2), kinds)
    ax.set_ylabel("count")
    ax.set_ylim(0, 1.12 * max(max(h) for _, h, _ in bars))
    ax.set_title(
        f"{name}: {s['starts']} starts, {s['converged']} converged,\n"
        f"{s['endpoints_matched']} matched an enumerated point, {s['endpoints_unmatched']} none",
        fontsize=10,
    )
