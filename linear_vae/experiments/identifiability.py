"""Figure 7: identifiability.  The linear VAE recovers the principal directions themselves; pPCA only their span.

Claim (Lucas et al. Section 4.2 / Appendix C, docs/theory.md (T3)): the pPCA marginal
likelihood is invariant to ``W -> W R`` for any orthogonal ``R``, so its maximum-likelihood
decoder ``W* = U_k (Lambda_k - sigma2* I)^{1/2} R`` is defined only up to a rotation and its
``W^T W = R^T (Lambda_k - sigma2*) R`` is generically not diagonal.  The linear VAE's ELBO with
its diagonal encoder equals ``MLL(W) - 1/2 [sum_j log M_jj - log det M]``
(``M = W^T W + sigma2 I``): the gap is zero iff ``W^T W`` is diagonal, so at the ELBO's
maximum ``W^T W = diag(lambda_i - sigma2*)`` and every column is a principal eigenvector,
``|cos(w_i, u_i)| = 1`` (up to sign and order).  Both reach the same likelihood, the MLE's.

Set-up.  Synthetic data (d = 20, eigenvalues exactly ``8 * 0.75**i``, well-separated so the
rotation is determined), k = 5, learned sigma2 (started at 1), Adam from the same random
initialisation (same seeds) for both models: the linear VAE on the exact ELBO, and pPCA by
gradient ascent on the marginal likelihood of the decoder alone (``objective="mll"``).  Trained
in the data basis (the point is the rotation; Adam is not rotation invariant, so the eigenbasis
would hand it the answer).  One vmapped sweep over seeds per model.

Figure: ``|W^T W|`` normalised to a unit diagonal (``|cos|`` between columns, columns ordered
by norm) for each model (seed 0); ``|cos(w_i, u_j)|`` of each column with its best-matching
eigenvector against the closed-form value 1 for the VAE; and the off-diagonal ratio
``max_{i != j} |(W^T W)_ij| / max_i (W^T W)_ii`` for every seed (closed form: 0 for the VAE).
"""

from __future__ import annotations

import numpy as np

from linear_vae.experiments.common import data_description, load_problem, train
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, new_figure
from linear_vae.theory.ppca import ppca_optimum
from linear_vae.training.train import TrainConfig
from linear_vae.verification.compare import max_principal_angle_deg, off_diagonal_ratio

NAME = "identifiability"
TITLE = "Identifiability: the linear VAE's columns are the principal directions, pPCA's are rotated"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "synthetic",
    "n": 2000,  # d = 20, eigenvalues exactly 8 * 0.75**i
    "latent_dim": 5,
    "sigma2_init": 1.0,  # sigma2 is learned (pPCA MLE: mean of lambda_6..20)
    "seeds": [0, 1, 2, 3, 4, 5, 6, 7],  # the same random initialisations for both models
    "steps": 20000,
    "learning_rate": 1e-2,
    "init_scale": 1e-2,
    "basis": "data",  # the point is rotation: do not hand Adam the eigenbasis
}
QUICK = {"steps": 10000, "seeds": [0, 1]}
MODELS = {"vae": ("exact", "linear VAE (ELBO)"), "ppca": ("mll", "pPCA (MLL)")}


def column_summary(W: np.ndarray, eigenvectors: np.ndarray, spectrum_k: np.ndarray) -> dict:
    """``W^T W``, its unit-diagonal normalisation, each column's best-matching eigenvector and
    ``|cos|`` with it, and the off-diagonal ratios; columns ordered by decreasing norm."""
    order = np.argsort(np.sum(W**2, axis=0))[::-1]
    W = W[:, order]
    WtW = W.T @ W
    norms = np.sqrt(np.diag(WtW))
    cos_columns = np.abs(WtW) / np.outer(norms, norms)
    cos_eigen = np.abs(eigenvectors.T @ W) / norms  # (d, k): |cos(w_i, u_j)|
    match = np.argmax(cos_eigen, axis=0)
    off = ~np.eye(len(norms), dtype=bool)
    return {
        "column_order": order.tolist(),
        "wtw": WtW.tolist(),
        "wtw_normalised": cos_columns.tolist(),
        "column_norms_sq": np.diag(WtW).tolist(),
        "matched_eigenvector": match.tolist(),
        "cosine_with_matched_eigenvector": cos_eigen[match, np.arange(len(norms))].tolist(),
        "cosine_with_same_index_eigenvector": np.diag(cos_eigen[: len(norms)]).tolist(),
        "off_diagonal_ratio": off_diagonal_ratio(W),
        "max_off_diagonal_cosine": float(np.max(cos_columns[off])),
        "subspace_angle_deg": max_principal_angle_deg(W, eigenvectors[:, : len(norms)]),
    }


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    problem = load_problem(config)
    k = config["latent_dim"]
    seeds = list(config["seeds"])
    n = len(seeds)
    mle = ppca_optimum(problem.eigenvalues, k)  # learned sigma2: the pPCA MLE
    U = problem.eigenvectors
    models = {}
    for key, (objective, _) in MODELS.items():
        train_config = TrainConfig(
            latent_dim=k,
            steps=config["steps"],
            learning_rate=config["learning_rate"],
            objective=objective,
            learn_sigma2=True,
            init_scale=config["init_scale"],
            optimizer="adam",
            stop_when_converged=False,
        )
        result, reports = train(
            problem,
            train_config,
            np.ones(n),
            np.full(n, config["sigma2_init"]),
            seeds,
            basis=config["basis"],
            progress=progress,
            label=f"{NAME} {key}",
        )
        per_seed = [column_summary(result.params.W[i], U, problem.eigenvalues[:k]) for i in range(n)]
        models[key] = {
            "objective": objective,
            "per_seed": per_seed,
            "off_diagonal_ratio": [s["off_diagonal_ratio"] for s in per_seed],
            "min_cosine_with_matched_eigenvector": [min(s["cosine_with_matched_eigenvector"]) for s in per_seed],
            "subspace_angle_deg": [s["subspace_angle_deg"] for s in per_seed],
            "final_mll": result.history.mll[:, -1].tolist(),
            "final_elbo": result.history.elbo[:, -1].tolist(),  # meaningful for the VAE only (pPCA has no encoder)
            "final_sigma2": result.sigma2.tolist(),
            "mll_minus_mle": (result.history.mll[:, -1] - mle.mll).tolist(),
            "bias_error": [r["bias_error"] for r in reports],
        }
    return {
        **data_description(problem, config),
        "seeds": seeds,
        "mle_sigma2": mle.sigma2,
        "mle_mll": mle.mll,
        # Closed form for the VAE: W^T W = diag(lambda_i - sigma2*), |cos(w_i, u_i)| = 1, off-diagonal 0.
        "predicted_column_norms_sq": mle.column_variances.tolist(),
        "predicted_vae_cosine": 1.0,
        "predicted_vae_off_diagonal_ratio": 0.0,
        "models": models,
    }


# --- figure --------------------------------------------------------------------------------------
def _heatmap(ax, matrix, matched, title):
    k = len(matrix)
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="cividis")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{matrix[i][j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if matrix[i][j] > 0.5 else "white",
            )
    labels = [f"$w_{{{c + 1}}}$\n($u_{{{m + 1}}}$)" for c, m in enumerate(matched)]
    ax.set_xticks(range(k), labels, fontsize=8)
    ax.set_yticks(range(k), [f"$w_{{{c + 1}}}$" for c in range(k)])
    ax.grid(False)
    ax.set_title(title)
    ax.set_xlabel("column (best-matching eigenvector)")
    return image


def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=2, nrows=2, width=4.6, height=3.9)
    k = config["latent_dim"]
    vae, ppca = results["models"]["vae"], results["models"]["ppca"]
    seed = results["seeds"][0]
    for ax, model, name in ((axes[0, 0], vae, MODELS["vae"][1]), (axes[0, 1], ppca, MODELS["ppca"][1])):
        s = model["per_seed"][0]
        image = _heatmap(
            ax,
            s["wtw_normalised"],
            s["matched_eigenvector"],
            f"{name}: $|W^\\top W|$, unit diagonal\n(seed {seed}, off-diagonal ratio {s['off_diagonal_ratio']:.1e})",
        )
    fig.colorbar(image, ax=axes[0, :], shrink=0.85, label=r"$|\cos(w_i, w_j)|$")

    ax = axes[1, 0]
    x = np.arange(k)
    width = 0.38
    for offset, model, key, color in ((-width / 2, vae, "vae", COLORS[0]), (width / 2, ppca, "ppca", COLORS[1])):
        cos = model["per_seed"][0]["cosine_with_matched_eigenvector"]
        ax.bar(x + offset, cos, width, color=color, label=MODELS[key][1])
    ax.axhline(results["predicted_vae_cosine"], color="0.15", **PREDICTION_STYLE, label="closed form, linear VAE: 1")
    ax.set_xticks(x, [f"$w_{{{c + 1}}}$" for c in x])
    ax.set_ylim(0, 1.32)
    ax.set_xlabel(f"trained column, by decreasing norm (seed {seed})")
    ax.set_ylabel(r"$|\cos(w_i, u_j)|$, best-matching eigenvector $u_j$")
    ax.set_title("Alignment of each column with a principal direction")
    ax.legend(loc="upper center", ncols=2, fontsize=8)

    ax = axes[1, 1]
    seeds = np.array(results["seeds"])
    floor = 1e-16  # below float64 round-off: an exactly diagonal W^T W sits here
    for model, key, color, marker in ((vae, "vae", COLORS[0], "o"), (ppca, "ppca", COLORS[1], "s")):
        worst = max(abs(m) for m in model["mll_minus_mle"])
        ax.plot(
            seeds,
            np.maximum(model["off_diagonal_ratio"], floor),
            marker,
            color=color,
            markersize=7,
            markerfacecolor="none",
            markeredgewidth=1.5,
            label=f"{MODELS[key][1]}; |MLL $-$ MLE's MLL| $\\leq$ {worst:.0e} nats",
        )
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, 30)
    ax.set_xticks(seeds)
    ax.set_xlabel("seed of the (shared) random initialisation")
    ax.set_ylabel(r"$\mathrm{max}_{i \neq j} |(W^\top W)_{ij}| \; / \; \mathrm{max}_i (W^\top W)_{ii}$")
    ax.set_title("Off-diagonal ratio of $W^\\top W$ (closed form, VAE: 0)")
    ax.legend(loc="center", fontsize=7.5)  # the band between the two groups of markers is empty
    fig.suptitle(
        f"Identifiability: synthetic data (d = {results['d']}), K = {k}, learned $\\sigma^2$ "
        f"(MLE {results['mle_sigma2']:.4f}), Adam, {config['steps']} steps"
    )
    return fig
