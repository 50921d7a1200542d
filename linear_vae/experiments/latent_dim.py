"""Figure 5: marginal likelihood and ELBO against the number of latent dimensions K.

Claim (Lucas et al. Section 4.2; docs/theory.md (T4)): at a fixed
``sigma2`` (beta = 1) the optimal ELBO equals the optimal pPCA marginal likelihood, and latent
dimension ``i`` is active iff ``lambda_i > sigma2``.  So adding latent dimensions helps only up to
``K = #{lambda_i > sigma2}``: every dimension beyond it collapses (``w_i = 0``, ``q(z_i|x) = p(z_i)``)
and the ELBO and MLL stop improving.  With ``sigma2`` learned (``sigma2* = mean(lambda_{K+1..d})``
shrinks as K grows) every dimension stays active and both keep improving.

The closed form (:func:`linear_vae.theory.optimum.beta_elbo_optimum` at every K from 1 to 64,
:func:`linear_vae.theory.optimum.learned_sigma2` for learned sigma2) is drawn as lines; linear VAEs
trained on MNIST-1000 with the exact ELBO (trust-region Newton, random initialisation) are drawn as markers at a
few K, one vmapped sweep over the fixed sigma2 per K plus one learned-sigma2 run per K.  The fixed
``sigma2`` are read off the MNIST spectrum so that they cut it at 6, 12 and 26 eigenvalues, each
at least 5% away from the nearest eigenvalue (a flat saddle converges slowly, docs/theory.md (T4)).
Values are shown absolute (nats per datapoint: a fixed ``sigma2`` far above the learned one costs
hundreds of nats at every K) and as the gain over the model with no latent variables (K = 0:
``x ~ N(mu, sigma2 I)``), where curves whose absolute levels differ by a thousand nats share one
log axis.  ``mle_sigma2_latent_dims`` adds curves at ``sigma2`` fixed to the learned (MLE) value of a
smaller K, as the paper's Figure 2 does; :mod:`linear_vae.experiments.latent_dim_paper` is the
paper's setting (K up to 300), with only ``CONFIG`` changed.
"""

from __future__ import annotations

import numpy as np

from linear_vae.experiments.common import data_description, load_problem, newton_config, train
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, new_figure
from linear_vae.theory.optimum import beta_elbo_optimum, learned_sigma2

NAME = "latent_dim"
TITLE = "ELBO and marginal likelihood against the number of latent dimensions: extra dimensions collapse"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,  # seeded random 1,000 of the shipped digits
    "max_latent_dim": 64,  # closed form at every K = 1..64
    "trained_latent_dims": [4, 16, 32],  # one compiled sweep per K (x2: fixed and learned sigma2)
    "sigma2s": [2.0, 1.0, 0.43],  # #{lambda > sigma2} = 6, 12, 26 on MNIST-1000
    "mle_sigma2_latent_dims": [],  # also sigma2 fixed at the MLE sigma2* of these K
    "initial_sigma2": 1.0,  # start of the learned-sigma2 runs
    "optimizer": "newton",
    "steps": 500,
    "seed": 0,  # Newton stops once converged (at most 500 iterations)
    "gain_tol": 1e-12,  # converged: predicted gain <= 1e-12 nats (round-off)
    "basis": "eigen",  # O(d k^2) steps; the ELBO is rotation invariant
    "k_axis": "log2",  # "log2" or "linear"
}
QUICK = {"trained_latent_dims": [16]}


def closed_form(eigenvalues, latent_dims, sigma2):
    """ELBO*, MLL*, active count and sigma2 at every K (``sigma2=None``: learned, closed form).

    K = 0 is the model without latent variables, ``x ~ N(mu, sigma2 I)``: every eigenvalue is
    "not active", so ELBO = MLL = ``-d/2 log(2 pi sigma2) - tr S / (2 sigma2)``.
    """
    rows = []
    for k in latent_dims:
        s = learned_sigma2(eigenvalues, k) if sigma2 is None else sigma2
        if k == 0:
            value = float(-0.5 * len(eigenvalues) * np.log(2 * np.pi * s) - eigenvalues.sum() / (2 * s))
            rows.append({"sigma2": float(s), "elbo": value, "mll": value, "active_dims": 0})
        else:
            optimum = beta_elbo_optimum(eigenvalues, k, 1.0, s)
            rows.append(
                {"sigma2": float(s), "elbo": optimum.elbo, "mll": optimum.mll, "active_dims": optimum.active_dims}
            )
    return {key: [r[key] for r in rows] for key in rows[0]}


def train_label(k: int, fixed_sigma2s=None) -> str:
    """Progress label of one training sweep at ``K = k``: the fixed sigma2 values, or learned sigma2
    when ``fixed_sigma2s`` is None (every sweep of a run gets its own label)."""
    if fixed_sigma2s is None:
        return f"{NAME} K={k}, sigma2 learned"
    return f"{NAME} K={k}, sigma2 fixed at " + ", ".join(f"{s:g}" for s in fixed_sigma2s)


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    problem = load_problem(config)
    eigenvalues = problem.eigenvalues
    latent_dims = list(range(0, config["max_latent_dim"] + 1))
    trained_dims = list(config["trained_latent_dims"])
    mle_dims = list(config["mle_sigma2_latent_dims"])
    fixed = [float(s) for s in config["sigma2s"]] + [learned_sigma2(eigenvalues, k) for k in mle_dims]
    sources = [None] * len(config["sigma2s"]) + mle_dims + [None]  # the K whose MLE sigma2 is used
    settings = [*fixed, None]  # None: learned sigma2
    curves = [closed_form(eigenvalues, latent_dims, s) for s in settings]

    keys = (
        "elbo",
        "mll",
        "sigma2",
        "active_dims",
        "active_dims_epsilon_delta",
        "predicted_elbo",
        "predicted_sigma2",
        "predicted_active_dims",
        "gap",
        "nearest_threshold_distance",
    )
    trained = [{"latent_dims": trained_dims, **{key: [] for key in keys}} for _ in settings]
    for k in trained_dims:
        base = newton_config(config, k)
        sweeps = [
            (base, [1.0] * len(fixed), fixed, train_label(k, fixed)),  # fixed sigma2, vmapped
            (base._replace(learn_sigma2=True), [1.0], [config["initial_sigma2"]], train_label(k)),
        ]  # learned
        reports, histories = [], []
        for train_config, betas, sigma2s, label in sweeps:
            result, rows = train(
                problem,
                train_config,
                betas,
                sigma2s,
                [config["seed"]] * len(betas),
                basis=config["basis"],
                progress=progress,
                label=label,
            )
            reports += rows
            histories += [
                (result.history.elbo[i, -1], result.history.mll[i, -1], result.sigma2[i]) for i in range(len(betas))
            ]
        for fit, report, (elbo, mll, sigma2) in zip(trained, reports, histories):
            fit["elbo"].append(float(elbo))  # final exact ELBO
            fit["mll"].append(float(mll))  # final MLL of the trained decoder
            fit["sigma2"].append(float(sigma2))  # fixed, or the final learned value
            fit["active_dims"].append(report["active_dims"])  # ||w_i||^2 > 1e-3 sigma2
            fit["active_dims_epsilon_delta"].append(report["active_dims_epsilon_delta"])
            fit["predicted_elbo"].append(report["optimal_elbo"])
            fit["predicted_sigma2"].append(report["optimal_sigma2"])
            fit["predicted_active_dims"].append(report["predicted_active_dims"])
            fit["gap"].append(report["gap"])  # predicted_elbo - elbo
            fit["nearest_threshold_distance"].append(report["nearest_threshold_distance"])

    series = []
    learned_curve = np.array(curves[-1]["elbo"])
    for s, source, curve, fit in zip(settings, sources, curves, trained):
        below_learned = learned_curve - np.array(curve["elbo"])
        series.append(
            {
                "sigma2": s,  # None: learned
                "sigma2_learned": s is None,
                "mle_of_latent_dim": source,  # sigma2 is the MLE sigma2* at this K (None: given)
                # learned optimum minus this one, over K = 0..max (nats per datapoint)
                "below_learned_min": float(below_learned.min()),
                "below_learned_max": float(below_learned.max()),
                "usable_dims": None if s is None else int(np.sum(eigenvalues > s)),  # #{lambda_i > sigma2}
                "closed_form": {**curve, "latent_dims": latent_dims},
                "baseline_k0": curve["elbo"][0],  # ELBO = MLL with no latent variables
                "trained": fit,
            }
        )
    gaps = [abs(g) for entry in series for g in entry["trained"]["gap"]] or [0.0]
    mismatches = [
        abs(a - b)
        for entry in series
        for a, b in zip(entry["trained"]["active_dims"], entry["trained"]["predicted_active_dims"])
    ] or [0]
    return {
        **data_description(problem, config),
        "series": series,
        "max_abs_elbo_gap": max(gaps),  # |closed-form optimum - trained ELBO|, nats per datapoint
        "max_active_dims_mismatch": max(mismatches),
    }


# --- figure --------------------------------------------------------------------------------------
def _label(entry):
    if entry["sigma2"] is None:
        return r"learned $\sigma^2$"
    usable = rf"#{{$\lambda_i > \sigma^2$}} = {entry['usable_dims']}"
    if entry.get("mle_of_latent_dim") is not None:
        return rf"$\sigma^2$ = {entry['sigma2']:.3g}, the MLE at K = {entry['mle_of_latent_dim']} ({usable})"
    return rf"$\sigma^2$ = {entry['sigma2']:g} ({usable})"


def _k_axis(ax, config, max_k, which="x"):
    """K on a log2 axis with power-of-two ticks, or linear."""
    if config["k_axis"] == "linear":
        return
    ticks = [2**i for i in range(int(np.log2(max_k)) + 1)]
    (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=2)
    (ax.set_xticks if which == "x" else ax.set_yticks)(ticks, [str(t) for t in ticks])


def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=3, width=4.9, height=4.4)
    ax_absolute, ax_value, ax_active = axes[0]
    colors = [COLORS[0], COLORS[2], COLORS[3], COLORS[1], COLORS[5], COLORS[4]]
    colors = colors[: len(results["series"]) - 1] + [COLORS[4]]  # learned sigma2 always the same colour
    n_series = len(results["series"])
    max_k = config["max_latent_dim"]
    linear = config["k_axis"] == "linear"
    for j, (entry, color) in enumerate(zip(results["series"], colors)):
        curve, fit = entry["closed_form"], entry["trained"]
        ks = np.array(curve["latent_dims"])
        base = entry["baseline_k0"]
        tk = np.array(fit["latent_dims"])
        trained_style = dict(color=color, markersize=8, markerfacecolor="none", markeredgewidth=1.5)
        first = 0 if linear else 1  # K = 0 has no place on a log axis
        ax_absolute.plot(ks[first:], curve["elbo"][first:], color=color, **PREDICTION_STYLE, label=_label(entry))
        ax_absolute.plot(tk, fit["elbo"], "o", **trained_style)
        ax_absolute.plot(tk, fit["mll"], "x", color=color, markersize=5, markeredgewidth=1.2)
        ax_value.plot(ks[1:], np.array(curve["elbo"][1:]) - base, color=color, **PREDICTION_STYLE)
        ax_value.plot(tk, np.array(fit["elbo"]) - base, "o", **trained_style)
        ax_value.plot(tk, np.array(fit["mll"]) - base, "x", color=color, markersize=5, markeredgewidth=1.2)
        # the closed-form lines coincide up to their plateaus: draw them as nested bands, widest underneath,
        # and offset the trained markers slightly in K so that coinciding ones stay visible
        ax_active.plot(
            ks[1:],
            curve["active_dims"][1:],
            color=color,
            linestyle="-",
            linewidth=1.6 + 1.6 * j,
            zorder=2 + n_series - j,
            solid_capstyle="butt",
        )
        offset = 2.0 ** (0.07 * (j - (n_series - 1) / 2)) if not linear else 1.0 + 0.02 * (j - (n_series - 1) / 2)
        ax_active.plot(
            tk * offset,
            fit["active_dims"],
            "o",
            color=color,
            markersize=7,
            markerfacecolor="white",
            markeredgewidth=1.5,
            zorder=10,
        )
    from matplotlib.lines import Line2D

    style_handles = [
        Line2D([], [], color="0.3", **PREDICTION_STYLE),
        Line2D(
            [], [], color="0.3", marker="o", linestyle="none", markersize=8, markerfacecolor="none", markeredgewidth=1.5
        ),
        Line2D([], [], color="0.3", marker="x", linestyle="none", markersize=5, markeredgewidth=1.2),
    ]
    ax_value.legend(
        style_handles,
        ["closed form (ELBO* = MLL*)", "trained ELBO (exact, Newton)", "trained MLL of its W"],
        loc="center right" if linear else "upper left",  # off the curves
        title="colours as in the legend below",
    )
    for ax in axes[0]:
        _k_axis(ax, config, max_k)
        ax.set_xlabel("latent dimensions K" + ("" if linear else " (log scale)"))
    ax_absolute.set_ylabel("optimal ELBO = MLL (nats per datapoint)")
    ax_absolute.set_title(
        "absolute values: σ² fixed far above the MLE costs hundreds\nof nats at every K; "
        "fixed at the MLE of one K, it meets learned σ² there",
        fontsize=10,
    )
    _k_axis(ax_active, config, max_k, which="y")
    ax_value.set_yscale("log")
    top = max(max(e["closed_form"]["elbo"]) - e["baseline_k0"] for e in results["series"])
    ax_value.set_ylim(None, 12 * top)  # room for the legend above the curves
    ax_value.set_ylabel("ELBO or MLL − its value at K = 0 (nats)")
    ax_value.set_title("gain over no latent variables:\nflat once K > #{λᵢ > σ²}")
    ax_active.set_ylabel("active latent dimensions" + ("" if linear else " (log scale)"))
    ax_active.set_title(
        "active dimensions: min(K, #{λᵢ > σ²}), the rest collapse;\ncoinciding lines drawn as nested bands "
        "(circles nudged in K)",
        fontsize=10,
    )
    ax_active.set_ylim(0.8 if not linear else 0, 1.5 * max_k if not linear else 1.05 * max_k)
    fig.legend(
        *ax_absolute.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=min(3, n_series),
        title="lines: closed form; markers: trained linear VAEs",
    )
    fig.suptitle(
        f"Latent dimension K, MNIST ({results['n']} digits), β = 1: lines closed form, markers trained "
        f"linear VAEs (exact ELBO, Newton)"
    )
    return fig
