"""Beyond the paper: collapse of the linear conditional VAE on MNIST (x = the bottom-left quarter of
each digit, y = the other three), in closed form and trained.

Claim (docs/theory.md (T17.3)): with ``theta_i`` the eigenvalues of the residual second moment
``S = B - C^T A^+ C`` of ``y`` given ``x`` (variance units), latent mode ``i`` is active iff
``theta_i > beta eta_dec^2`` whatever the prior variance ``eta_enc^2``, so the active count is a
staircase in ``beta`` with a step at every ``theta_i / eta_dec^2``, shifted along ``beta`` by the
decoder variance.  On active modes the encoder std is ``s_i = sqrt(beta) eta_enc eta_dec / sqrt(theta_i)``,
``eta_enc`` on collapsed ones.  The public code of Dang et al. tests ``theta_i >= sqrt(beta) eta_dec``
instead (a variance against a standard deviation, error 1 of (T17.6)), which gives the wrong ``s_i``
between the two thresholds; the right panel draws both rules and shades where they differ.

Trained CVAEs (the exact objective, trust-region Newton, :func:`linear_vae.verification.model_verify.train_and_compare`,
docs/theory.md (T7.2, T7.3)) are drawn as markers: their active counts on the staircase, and the std
of their encoder's latents (sorted, smallest first, which is the modes' order at the optimum) on
the exact rule.  Configurations within 2% of a threshold would be drawn hollow grey.
"""

from __future__ import annotations

import numpy as np

from linear_vae.data.joint_moments import residual_moment
from linear_vae.experiments.pairs import image_pairs, one_blas_thread, summary
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.verification.model_verify import train_and_compare

NAME = "cvae_collapse"
TITLE = "Linear CVAE on MNIST quarters: active modes and encoder std against beta, closed form and trained"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,  # seeded random 1,000 of the shipped digits
    "split": "quarter",  # x: bottom-left 14 x 14 quarter; y: the other three (Dang et al., Section 5)
    "latent_dim": 64,
    "prior_variance": 1.0,  # eta_enc^2
    "sigma2s": [0.05, 0.2, 0.8],  # decoder variances eta_dec^2 of the staircase panel
    "betas": [0.02, 100.0, 500],  # log-spaced START, STOP, NUM of the closed-form curves
    # (eta_dec^2, beta) trained: beta eta_dec^2 between two residual eigenvalues, at least 5% from each
    "trained": [[0.05, 0.8], [0.2, 2.1], [0.2, 5.4], [0.8, 0.91], [0.8, 3.125]],
    "std_sigma2": 0.2,  # eta_dec^2 of the encoder-std panel
    "std_modes": [1, 4, 16],  # modes (1-based) whose s_i the right panel draws
    "optimizer": "newton",
    "seed": 0,
}
QUICK = {"latent_dim": 16, "trained": [[0.2, 5.4]], "std_modes": [1, 4]}
NEAR = 0.02


def published_std(theta, beta, eta_dec, eta_enc=1.0):
    """The public code's encoder std: ``sqrt(beta) eta_enc eta_dec / sqrt(theta)`` if
    ``theta >= sqrt(beta) eta_dec`` (``theta`` a variance, compared with a standard deviation), else ``eta_enc``
    (docs/theory.md (T17.6), error 1)."""
    theta = np.asarray(theta, dtype=np.float64)
    safe = np.where(theta > 0, theta, 1.0)
    return np.where(theta >= np.sqrt(beta) * eta_dec, np.sqrt(beta) * eta_enc * eta_dec / np.sqrt(safe), eta_enc)


def exact_std(theta, beta, eta_dec, eta_enc=1.0):
    """The optimum's encoder std: ``sqrt(beta) eta_enc eta_dec / sqrt(theta)`` if ``theta > beta eta_dec^2``,
    else ``eta_enc`` (docs/theory.md (T17.3))."""
    theta = np.asarray(theta, dtype=np.float64)
    safe = np.where(theta > 0, theta, 1.0)
    return np.where(theta > beta * eta_dec**2, np.sqrt(beta) * eta_enc * eta_dec / np.sqrt(safe), eta_enc)


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    with one_blas_thread():
        moments, description = image_pairs(config)
        k, prior = config["latent_dim"], config["prior_variance"]
        theta = np.clip(np.linalg.eigvalsh(residual_moment(moments))[::-1], 0.0, None)
        betas = np.geomspace(*config["betas"][:2], int(config["betas"][2]))
        staircase = [
            {
                "sigma2": s2,
                "thresholds": (theta[:k] / s2).tolist(),  # beta at each step
                "curve_active_dims": (theta[None, :k] > betas[:, None] * s2).sum(axis=1).tolist(),
            }
            for s2 in config["sigma2s"]
        ]
        eta_dec, eta_enc = np.sqrt(config["std_sigma2"]), np.sqrt(prior)
        modes = [m - 1 for m in config["std_modes"]]
        exact = exact_std(theta[modes][None, :], betas[:, None], eta_dec, eta_enc)
        published = published_std(theta[modes][None, :], betas[:, None], eta_dec, eta_enc)
        differ = ~np.isclose(exact, published, rtol=1e-12, atol=0.0)
        # the whole latent space on the curve's betas: where the rules give different s_i (any mode <= k)
        all_exact = exact_std(theta[None, :k], betas[:, None], eta_dec, eta_enc)
        all_published = published_std(theta[None, :k], betas[:, None], eta_dec, eta_enc)
        trained = []
        if progress is not None:
            progress.task(NAME)
        for index, (s2, beta) in enumerate(config["trained"]):
            if progress is not None:
                progress.status(f"training {index + 1}/{len(config['trained'])}: sigma2 = {s2}, beta = {beta}")
            report = train_and_compare(
                moments, "cvae", s2, latent_dim=k, beta=beta, prior_variance=prior,
                optimizer=config["optimizer"], seed=config["seed"],
            )  # fmt: skip
            stds = np.sort(np.sqrt([m["trained_encoder_variance"] for m in report["modes"]]))
            trained.append(
                summary(report, sigma2=s2, beta=beta)
                | {
                    "trained_encoder_std": stds.tolist(),  # sorted, smallest first (the modes' order)
                    "exact_encoder_std": exact_std(theta[:k], beta, np.sqrt(s2), eta_enc).tolist(),
                    "published_encoder_std": published_std(theta[:k], beta, np.sqrt(s2), eta_enc).tolist(),
                }
            )
    return {
        **description,
        "residual_spectrum": theta[: k + 1].tolist(),  # theta_i, variance units
        "residual_trace": float(theta.sum()),
        "total_trace": float(np.trace(moments.yy)),
        "curve_betas": betas.tolist(),
        "staircase": staircase,
        "std_panel": {
            "sigma2": config["std_sigma2"],
            "modes": config["std_modes"],
            "exact_std": exact.T.tolist(),  # [mode][beta], units of eta_enc
            "published_std": published.T.tolist(),
            "differ": differ.T.tolist(),
            "largest_difference": float(np.max(np.abs(all_exact - all_published))),
            "betas_where_rules_differ": int(np.any(all_exact != all_published, axis=1).sum()),
        },
        "trained": trained,
        "agrees": sum(t["status"] == "agrees" for t in trained),
        "max_gap": max((abs(t["gap"]) for t in trained), default=0.0),
    }


# --- figure --------------------------------------------------------------------------------------
def _rule_regions(ax, betas, differ, color):
    """Shade the beta intervals where ``differ`` holds."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], differ.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        ax.axvspan(betas[start], betas[min(stop, len(betas) - 1)], color=color, alpha=0.12, linewidth=0)


def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=2, width=5.0, height=4.0)
    betas = np.array(results["curve_betas"])
    ax = axes[0, 0]
    for i, panel in enumerate(results["staircase"]):
        color = COLORS[i]
        ax.step(betas, panel["curve_active_dims"], where="post", color=color, **PREDICTION_STYLE,
                label=rf"closed form, $\eta_{{dec}}^2$ = {panel['sigma2']:g}")  # fmt: skip
        points = [t for t in results["trained"] if t["sigma2"] == panel["sigma2"]]
        for point in points:
            near = point["nearest_threshold_distance"] < NEAR
            ax.plot(point["beta"], point["active_dims"], "o", markersize=8, markerfacecolor="none",
                    markeredgewidth=1.6, color="0.55" if near else color)  # fmt: skip
    ax.plot([], [], "o", color="0.3", markerfacecolor="none", markeredgewidth=1.6,
            label="trained (exact objective, Newton)")  # fmt: skip
    log_axis(ax, "x")
    ax.set_xlabel(r"KL weight $\beta$ (log scale)")
    ax.set_ylabel(f"active latent modes (of $d_z$ = {config['latent_dim']})")
    ax.set_title(r"active iff $\theta_i > \beta\,\eta_{dec}^2$ ($\theta$: eigenvalues of $S$)")
    ax.set_ylim(-1, 1.6 * config["latent_dim"])  # room above the staircase for the legend
    ax.set_yticks(np.linspace(0, config["latent_dim"], 5 if config["latent_dim"] % 4 == 0 else 3))
    ax.legend(loc="upper right")

    ax = axes[0, 1]
    panel = results["std_panel"]
    for j, mode in enumerate(panel["modes"]):
        color = COLORS[j]
        exact, published = np.array(panel["exact_std"][j]), np.array(panel["published_std"][j])
        theta = results["residual_spectrum"][mode - 1]
        ax.plot(betas, exact, color=color, **PREDICTION_STYLE,
                label=rf"mode {mode} ($\theta$ = {theta:.2f}): exact, $\theta > \beta\eta_{{dec}}^2$")  # fmt: skip
        ax.plot(betas, published, color=color, linestyle="--", linewidth=1.4,
                label=rf"mode {mode}: published, $\theta \geq \sqrt{{\beta}}\,\eta_{{dec}}$")  # fmt: skip
        _rule_regions(ax, betas, np.array(panel["differ"][j]), color)
        for point in results["trained"]:
            if point["sigma2"] == panel["sigma2"] and mode <= len(point["trained_encoder_std"]):
                ax.plot(point["beta"], point["trained_encoder_std"][mode - 1], "o", markersize=8,
                        markerfacecolor="none", markeredgewidth=1.6, color=color)  # fmt: skip
    ax.plot([], [], "o", color="0.3", markerfacecolor="none", markeredgewidth=1.6, label="trained")
    log_axis(ax, "x")
    ax.set_xlabel(r"KL weight $\beta$ (log scale)")
    ax.set_ylabel(r"encoder std $s_i$ (units of $\eta_{enc}$)")
    ax.set_title(
        rf"$\eta_{{dec}}^2$ = {panel['sigma2']:g}: shaded where the rules differ (largest: {panel['largest_difference']:.2f})"
    )
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    ax.legend(loc="upper left", fontsize=7.5, ncol=1, framealpha=0.9)
    ax.set_ylim(0, max(1.9, 1.35 * np.max(panel["published_std"])))
    fig.suptitle(
        f"Linear CVAE, MNIST ({results['n']} digits): x = bottom-left quarter ({results['d_x']} pixels), "
        f"y = the rest ({results['d_y']}); {results['agrees']}/{len(results['trained'])} trained 'agrees'"
    )
    return fig
