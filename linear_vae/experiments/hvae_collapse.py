"""Beyond the paper: collapse of the two-level linear HVAE on MNIST (x = the bottom-left quarter of each
digit, y = the other three, as in ``cvae_collapse``), over the two KL weights, in closed form and trained.

Claim (docs/theory.md (T17.4), ``Sigma2`` learned, ``sigma1^2`` fixed): with ``theta_i^2`` the squared
singular values of ``C^T A^{-1/2}`` (variance units), a ``z1`` mode ``i <= min(d1, d2)`` is active iff
``theta_i^2 > min(beta1 sigma1^2, beta2 eta_dec^2)``, and a ``z2`` mode iff ``beta1 sigma1^2 > beta2 eta_dec^2``
(then every one is: the ``z2`` level models ``z1``'s fixed noise) or ``theta_i^2 > beta2^2 eta_dec^4 /
(beta1 sigma1^2)``.  The figure draws both counts over ``(beta1, beta2)`` at two ``sigma1^2``, the
line ``beta1 sigma1^2 = beta2 eta_dec^2`` where ``z2`` switches between the two regimes, and trained
HVAEs (the exact objective, trust-region Newton, :func:`linear_vae.verification.model_verify.train_and_compare`,
docs/theory.md (T7.2, T7.3)) as labelled markers: the trained count, green when it equals the closed form's.
"""

from __future__ import annotations

import numpy as np

from linear_vae.data.joint_moments import cross_spectrum
from linear_vae.experiments.pairs import image_pairs, one_blas_thread, summary
from linear_vae.experiments.plotting import COLORS, new_figure
from linear_vae.verification.model_verify import train_and_compare

NAME = "hvae_collapse"
TITLE = "Two-level linear HVAE on MNIST quarters: active z1 and z2 modes over (beta1, beta2), closed form and trained"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,
    "split": "quarter",
    "latent_dims": [32, 32],
    "sigma2": 0.1,  # decoder variance eta_dec^2 (of y and of z1 given z2)
    "prior_variance": 1.0,  # eta_enc^2
    "z1_variances": [0.02, 0.2],  # sigma1^2, one row of panels each
    "betas": [0.1, 10.0, 121],  # log-spaced START, STOP, NUM of both axes of the closed-form maps
    # (sigma1^2, beta1, beta2) trained, each at least 5% from every threshold and from beta1 sigma1^2 = beta2 eta_dec^2
    "trained": [
        [0.02, 0.3, 3.0],
        [0.02, 3.0, 0.3],
        [0.02, 1.0, 1.0],
        [0.2, 3.0, 3.0],
        [0.2, 1.0, 1.0],
        [0.2, 1.0, 3.0],
    ],
    "optimizer": "newton",
    "seed": 0,
}
QUICK = {"latent_dims": [8, 8], "trained": [[0.2, 1.0, 1.0]], "z1_variances": [0.2], "betas": [0.1, 10.0, 41]}
NEAR = 0.02


def predicted_counts(theta2, dims, beta1, beta2, s1, eta2):
    """Active ``z1`` and ``z2`` counts of (T17.4) (``Sigma2`` learned) for arrays ``beta1``, ``beta2``
    broadcast together; ``theta2`` the squared singular values (descending)."""
    d1, d2 = dims
    padded = np.zeros(d1)  # 0 beyond the rank of C^T A^{-1/2}
    spectrum = np.asarray(theta2, dtype=np.float64)[:d1]
    padded[: len(spectrum)] = spectrum
    theta2 = padded
    beta1, beta2 = np.broadcast_arrays(np.asarray(beta1, float), np.asarray(beta2, float))
    b1, b2 = beta1[..., None], beta2[..., None]
    paired = np.arange(len(theta2)) < d2
    z1_threshold = np.where(paired, np.minimum(b1 * s1, b2 * eta2), b1 * s1)
    z1 = (theta2 > z1_threshold).sum(axis=-1)
    noise = beta1 * s1 > beta2 * eta2
    z2 = np.where(noise, d2, (theta2[:d2] > b2**2 * eta2**2 / (b1 * s1)).sum(axis=-1))
    return z1, z2


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    dims, eta2, prior = tuple(config["latent_dims"]), config["sigma2"], config["prior_variance"]
    with one_blas_thread():
        moments, description = image_pairs(config)
        theta2 = cross_spectrum(moments).variances
        betas = np.geomspace(*config["betas"][:2], int(config["betas"][2]))
        B1, B2 = np.meshgrid(betas, betas, indexing="xy")  # rows: beta2, columns: beta1
        panels = []
        if progress is not None:
            progress.task(NAME)
        done, total = 0, len(config["trained"])
        for s1 in config["z1_variances"]:
            z1, z2 = predicted_counts(theta2, dims, B1, B2, s1, eta2)
            trained = []
            for beta1, beta2 in [(b1, b2) for s, b1, b2 in config["trained"] if s == s1]:
                done += 1
                if progress is not None:
                    progress.status(f"training {done}/{total}: sigma1^2 = {s1}, beta1 = {beta1}, beta2 = {beta2}")
                report = train_and_compare(
                    moments, "hvae", eta2, latent_dims=dims, beta1=beta1, beta2=beta2, z1_variance=s1,
                    prior_variance=prior, optimizer=config["optimizer"], seed=config["seed"],
                )  # fmt: skip
                trained.append(summary(report, beta1=beta1, beta2=beta2))
            panels.append(
                {
                    "z1_variance": s1,
                    "active_z1": z1.tolist(),  # [beta2 index][beta1 index]
                    "active_z2": z2.tolist(),
                    "trained": trained,
                }
            )
    points = [t for p in panels for t in p["trained"]]
    return {
        **description,
        "spectrum": theta2[: dims[0] + 1].tolist(),  # theta_i^2, variance units
        "betas": betas.tolist(),
        "panels": panels,
        "agrees": sum(t["status"] == "agrees" for t in points),
        "trained_points": len(points),
        "max_gap": max((abs(t["gap"]) for t in points), default=0.0),
    }


# --- figure --------------------------------------------------------------------------------------
def plot(results: dict, config: dict):
    panels = results["panels"]
    fig, axes = new_figure(ncols=2, nrows=len(panels), width=4.6, height=3.7)
    betas = np.array(results["betas"])
    eta2 = config["sigma2"]
    d1, d2 = config["latent_dims"]
    for row, panel in zip(axes, panels):
        s1 = panel["z1_variance"]
        for col, (ax, key, level, top) in enumerate(zip(row, ("active_z1", "active_z2"), ("z1", "z2"), (d1, d2))):
            mesh = ax.pcolormesh(betas, betas, np.array(panel[key]), shading="nearest", cmap="viridis",
                                 vmin=0, vmax=top)  # fmt: skip
            fig.colorbar(mesh, ax=ax, label=f"active {level} modes (closed form, of {top})")
            ax.plot(betas, betas * s1 / eta2, color=COLORS[3], linestyle="--", linewidth=1.6,
                    label=r"$\beta_1\sigma_1^2 = \beta_2\eta_{dec}^2$")  # fmt: skip
            for point in panel["trained"]:
                count = point["active_dims"][col]
                good = count == point["predicted_active_dims"][col]
                ax.plot(point["beta1"], point["beta2"], "o", markersize=17, markerfacecolor="white",
                        markeredgecolor=COLORS[2] if good else COLORS[4], markeredgewidth=2)  # fmt: skip
                ax.annotate(str(count), (point["beta1"], point["beta2"]), ha="center", va="center", fontsize=8,
                            fontweight="bold")  # fmt: skip
            ax.plot([], [], "o", markersize=9, markerfacecolor="white", markeredgecolor=COLORS[2], markeredgewidth=2,
                    label="trained count (green: = closed form, pink: differs)")  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(betas[0], betas[-1])
            ax.set_ylim(betas[0], betas[-1])
            ax.set_xlabel(r"$\beta_1$ (KL weight of $z_1$, log scale)")
            ax.set_ylabel(r"$\beta_2$ (KL weight of $z_2$, log scale)")
            ax.set_title(rf"active {level} modes, $\sigma_1^2$ = {s1:g}")
            ax.grid(False)
            ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(
        f"Two-level linear HVAE, MNIST ({results['n']} digits, x = bottom-left quarter, y = the rest),\n"
        f"d1 = {d1}, d2 = {d2}, $\\eta_{{dec}}^2$ = {eta2:g}: {results['agrees']}/{results['trained_points']} "
        "trained 'agrees'"
    )
    return fig
