"""Beyond the paper: how much of ``y``'s variance the condition ``x`` explains decides the linear CVAE's
collapse.

Claim (docs/theory.md (T17.3)): the CVAE's latents model only the residual of ``y`` given ``x``,
whose second moment is ``S = B - C^T A^+ C``; mode ``i`` collapses iff its eigenvalue ``theta_i <= beta
eta_dec^2``.  The more of ``y``'s variance ``x`` explains (``tr S`` against ``tr B``), the more modes
collapse at a fixed ``beta``: none beyond the plain VAE's when ``x`` is independent of ``y`` (``S = B``,
(T17.2)), all of them when ``x = y`` (``S = 0``).  On the synthetic families of Dang et al. (2024,
Section 5), ``x = a y + sqrt(1 - a^2) e`` (:func:`linear_vae.data.conditioning.correlated_condition`) with
``a`` = 1/8, 1/4, 1/2, plus ``x`` independent of ``y`` (``a = 0``) and ``x = y`` (``a = 1``), the figure
draws the collapsed count against ``a`` (closed form on a fine grid of ``a``, the same noise draw)
with trained CVAEs (the exact objective, trust-region Newton,
:func:`linear_vae.verification.model_verify.train_and_compare`, docs/theory.md (T7.2, T7.3)) as markers, and each
family's residual spectrum against the threshold.
"""

from __future__ import annotations

import numpy as np

from linear_vae.data.conditioning import correlated_condition
from linear_vae.data.datasets import make_synthetic
from linear_vae.data.joint_moments import JointMoments, residual_moment
from linear_vae.experiments.pairs import one_blas_thread, summary
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, new_figure
from linear_vae.verification.model_verify import train_and_compare

NAME = "conditional_information"
TITLE = "Linear CVAE: the share of y's variance x explains decides collapse (synthetic families of Dang et al.)"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "synthetic",  # y: Gaussian with spectrum 8 * 0.75^i, d = 20 (datasets.make_synthetic)
    "n": 2000,
    "data_seed": 0,
    "noise_seed": 1,  # the noise e of x = a y + sqrt(1 - a^2) e
    "shares": [0.0, 0.125, 0.25, 0.5, 1.0],  # a: independent, 1/8, 1/4, 1/2, identical
    "curve_shares": 101,  # closed form on a grid of a in [0, 1]
    "latent_dim": 20,
    "beta": 1.5,  # beta eta_dec^2 = 1.5: at least 5% from every family's residual eigenvalues
    "sigma2": 1.0,  # eta_dec^2
    "prior_variance": 1.0,
    "optimizer": "newton",
    "seed": 0,
}
QUICK = {"shares": [0.0, 0.5, 1.0], "curve_shares": 21, "latent_dim": 10}
NEAR = 0.02
FLOOR = 1e-2  # where the right panel draws theta_i = 0 (x = y)


def family(Y: np.ndarray, share: float, seed: int) -> JointMoments:
    """Centred moments of ``(x, y)`` with ``x = a y + sqrt(1 - a^2) e``."""
    return JointMoments.from_data(correlated_condition(Y, share, seed), Y, centred=True)


def residual_spectrum(moments: JointMoments) -> np.ndarray:
    """``theta_i``, the eigenvalues of ``S``, descending, clipped at 0 (round-off at ``x = y``)."""
    return np.clip(np.linalg.eigvalsh(residual_moment(moments))[::-1], 0.0, None)


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    k, beta, eta2, prior = config["latent_dim"], config["beta"], config["sigma2"], config["prior_variance"]
    threshold = beta * eta2
    with one_blas_thread():
        Y = make_synthetic(n=config["n"], seed=config["data_seed"]).X
        total = float(np.trace(np.cov(Y.T, bias=True)))
        grid = np.linspace(0.0, 1.0, int(config["curve_shares"]))
        curve = [residual_spectrum(family(Y, a, config["noise_seed"])) for a in grid]
        families = []
        if progress is not None:
            progress.task(NAME)
        for index, share in enumerate(config["shares"]):
            if progress is not None:
                progress.status(f"training {index + 1}/{len(config['shares'])}: a = {share}")
            moments = family(Y, share, config["noise_seed"])
            theta = residual_spectrum(moments)
            report = train_and_compare(
                moments, "cvae", eta2, latent_dim=k, beta=beta, prior_variance=prior,
                optimizer=config["optimizer"], seed=config["seed"],
            )  # fmt: skip
            families.append(
                summary(report, share=share)
                | {
                    "residual_spectrum": theta.tolist(),
                    "residual_trace": float(theta.sum()),
                    "explained_share": 1.0 - float(theta.sum()) / total,  # 1 - tr S / tr B
                    "predicted_collapsed": int(k - np.sum(theta[:k] > threshold)),
                    "trained_collapsed": int(k - report["active_dims"]),
                }
            )
    return {
        "data": config["data"],
        "n": config["n"],
        "d_y": int(Y.shape[1]),
        "total_trace": total,  # tr B
        "threshold": threshold,  # beta eta_dec^2
        "curve_shares": grid.tolist(),
        "curve_collapsed": [int(k - np.sum(t[:k] > threshold)) for t in curve],
        "curve_explained_share": [1.0 - float(t.sum()) / total for t in curve],
        "families": families,
        "agrees": sum(f["status"] == "agrees" for f in families),
        "max_gap": max((abs(f["gap"]) for f in families), default=0.0),
    }


# --- figure --------------------------------------------------------------------------------------
def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=2, width=4.8, height=3.9)
    k = config["latent_dim"]
    ax = axes[0, 0]
    shares = np.array(results["curve_shares"])
    ax.step(shares, results["curve_collapsed"], where="mid", color=COLORS[0], **PREDICTION_STYLE,
            label=r"closed form $\#\{\theta_i \leq \beta\eta_{dec}^2\}$")  # fmt: skip
    fams = results["families"]
    near = np.array([f["nearest_threshold_distance"] < NEAR for f in fams], dtype=bool)
    x = np.array([f["share"] for f in fams])
    y = np.array([f["trained_collapsed"] for f in fams])
    ax.plot(x[~near], y[~near], "o", color=COLORS[3], markersize=8, markerfacecolor="none", markeredgewidth=1.6,
            label="trained (exact objective, Newton)")  # fmt: skip
    if near.any():
        ax.plot(x[near], y[near], "o", color="0.55", markersize=8, markerfacecolor="none",
                label=f"trained, within {NEAR:.0%} of a threshold")  # fmt: skip
    ax2 = ax.twinx()
    (explained,) = ax2.plot(shares, results["curve_explained_share"], color=COLORS[2], linestyle=":", linewidth=1.6,
                            label=r"$1 - \mathrm{tr}\,S / \mathrm{tr}\,B$ (right axis)")  # fmt: skip
    ax2.set_ylabel(r"share of $y$'s variance $x$ explains, $1 - \mathrm{tr}\,S / \mathrm{tr}\,B$", color=COLORS[2])
    ax2.set_ylim(-0.02, 1.02)
    ax2.grid(False)
    ax.set_xlabel(r"share $a$ in $x = a\,y + \sqrt{1 - a^2}\,e$")
    ax.set_ylabel(f"collapsed latent modes (of $d_z$ = {k})")
    ax.set_ylim(-0.5, k + 0.5)
    ax.set_title(rf"$\beta$ = {config['beta']:g}, $\eta_{{dec}}^2$ = {config['sigma2']:g}")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles + [explained], labels + [explained.get_label()], loc="lower right")

    ax = axes[0, 1]
    names = {0.0: "independent", 1.0: "x = y"}
    for i, f in enumerate(fams):
        theta = np.array(f["residual_spectrum"][:k])
        label = names.get(f["share"], f"a = {f['share']:g}")
        if f["share"] == 1.0:
            label += r" ($\theta_i$ = 0, at the floor)"
        ax.semilogy(np.arange(1, len(theta) + 1), np.maximum(theta, FLOOR), "o-", markersize=3.5, color=COLORS[i % 8],
                    label=f"{label}: tr S / tr B = {f['residual_trace'] / results['total_trace']:.2f}")  # fmt: skip
    ax.axhline(results["threshold"], color="0.2", linestyle="--", linewidth=1.2, label=r"threshold $\beta\eta_{dec}^2$")
    ax.set_xlabel("mode i")
    ax.set_ylabel(rf"residual eigenvalue $\theta_i$ (variance, floor {FLOOR:g})")
    ax.set_ylim(FLOOR / 1.5, None)
    ax.set_title("residual spectrum of y given x")
    ax.legend(loc="upper right", fontsize=7.5)
    fig.suptitle(
        f"Linear CVAE on synthetic pairs (y: d = {results['d_y']}, N = {results['n']}): "
        f"{results['agrees']}/{len(fams)} trained 'agrees'"
    )
    return fig
