"""Figure 4 analogue: with a linear decoder, the encoder does not matter at the optimum.

Claim (Lucas et al. 2019, Section 4.2 and Figure 4): a linear decoder trained as a VAE reaches the
pPCA maximum-likelihood solution whatever its encoder, linear, deep linear or a non-linear MLP.
With a linear decoder ``p(x|z) = N(W z + b, sigma2 I)`` the ELBO is at most the MLL of that decoder
(T3.3), which is at most the pPCA MLE's MLL (T2.2); a linear encoder already attains both bounds
(T3.2), so a richer encoder can add nothing at the optimum.

Set-up.  MNIST training digits (the shipped 5,000-image subset, split 4,000 / 1,000), K = 16,
sigma2 learned from 1.  Three encoders under the same linear decoder
(:class:`linear_vae.deep.DeepConfig` with ``decoder_hidden=()``): linear (no hidden layer),
deep linear (two hidden layers of 256, identity activation) and MLP (the same, ReLU), each from 3
seeds, trained by :func:`linear_vae.deep.train_grid` (float32 networks, one-sample stochastic
ELBO, Adam with its step size cosine-decayed to 0 so that the runs settle, minibatches of 100).  The trained models are then measured in float64 without sampling:
for a linear decoder and any Gaussian encoder ``N(m(x), diag v(x))`` the expected reconstruction
error is ``||x - b - W m(x)||^2 + sum_j v_j(x) ||w_j||^2`` (T3.1), so the ELBO is exact; the
decoder's own MLL is (T2.1).  Both are compared with the pPCA MLE of the training digits
(``sigma2* = mean(lambda_{K+1..d})``, MLL* (T2.2)), and on the held-out digits with the MLL of
that MLE model.

Convergence is judged from the held-out objective recorded during training (the same noise at every
record): a run is *still improving* if it rose by more than ``plateau_tol`` nats over the last
quarter of the steps.  Agreement is judged separately, by the gap to MLL*.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from linear_vae.compare import max_principal_angle_deg
from linear_vae.datasets import load_data, train_heldout_split
from linear_vae.deep import DeepHyper, encode, train_grid
from linear_vae.elbo import standard_normal_kl
from linear_vae.experiments.common import deep_config
from linear_vae.moments import LOG_2PI, compute_moments
from linear_vae.plotting import COLORS, PREDICTION_STYLE, new_figure
from linear_vae.ppca import log_marginal_likelihood, ppca_optimum
from linear_vae.problem import Problem

NAME = "encoders"
TITLE = "Figure 4 analogue: a linear decoder reaches the pPCA MLE with a linear, deep linear or MLP encoder"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n_train": 4000,
    "split_seed": 0,  # 4,000 training / 1,000 held-out digits
    "latent_dim": 16,
    "encoders": [
        {"name": "linear", "hidden": [], "activation": "identity"},
        {"name": "deep linear", "hidden": [256, 256], "activation": "identity"},
        {"name": "MLP (ReLU)", "hidden": [256, 256], "activation": "relu"},
    ],
    "seeds": [0, 1, 2],
    "sigma2_init": 1.0,  # learned
    "steps": 20000,
    "log_every": 500,
    "batch_size": 100,
    "learning_rate": 1e-3,
    "sigma2_learning_rate": 3e-3,
    "schedule": "cosine",  # step sizes decay to 0, so the runs settle instead of hovering in gradient noise
    "plateau_tol": 0.5,  # nats: a larger rise over the last quarter of training is "still improving"
}
QUICK = {  # synthetic data (d = 20) and one small encoder: each architecture compiles its own program
    "data": "synthetic",
    "n_train": 1500,
    "latent_dim": 4,
    "encoders": [{"name": "MLP (ReLU)", "hidden": [32], "activation": "relu"}],
    "seeds": [0],
    "steps": 200,
    "log_every": 50,
}


def exact_elbo_linear_decoder(X, enc_mean, enc_log_var, W, b, sigma2) -> float:
    """The ELBO of a linear decoder ``N(W z + b, sigma2 I)`` under any diagonal-Gaussian encoder,
    without sampling, averaged over the rows of ``X`` (float64):

    ``-d/2 log(2 pi sigma2) - [||x - b - W m||^2 + sum_j v_j ||w_j||^2] / (2 sigma2) - sum_j KL_j``,

    the per-datapoint form of (T3.1) with the encoder's mean ``m(x)`` and variances ``v(x)``.

    References: docs/theory.md (T3.1); Lucas et al. 2019, Appendix C.
    """
    d = X.shape[1]
    variance = np.exp(enc_log_var)
    residual = X - b - enc_mean @ W.T
    reconstruction = np.sum(residual**2, axis=1) + variance @ np.sum(W**2, axis=0)
    kl = np.sum(standard_normal_kl(enc_mean**2, variance, enc_log_var), axis=1)
    return float(np.mean(-0.5 * d * (LOG_2PI + np.log(sigma2)) - reconstruction / (2.0 * sigma2) - np.asarray(kl)))


def heldout_mll(W, b, sigma2, heldout: np.ndarray) -> float:
    """Average log-likelihood of the held-out rows under ``N(b, W W^T + sigma2 I)`` (T2.1)."""
    moments = compute_moments(heldout)
    return float(log_marginal_likelihood(W, sigma2, moments.cov, mean_offset=moments.mean - b))


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    train, heldout = train_heldout_split(load_data(config["data"]), config["n_train"], config["split_seed"])
    problem = Problem.from_dataset(train)
    k, seeds = config["latent_dim"], list(config["seeds"])
    mle = ppca_optimum(problem.eigenvalues, k)
    W_mle = mle.weights(problem.eigenvectors)
    runs = []
    for encoder in config["encoders"]:
        trainer = deep_config(
            config,
            latent_dim=k,
            hidden=tuple(encoder["hidden"]),
            decoder_hidden=(),  # a linear decoder under every encoder
            activation=encoder["activation"],
        )
        n = len(seeds)
        hyper = DeepHyper(np.full(n, config["sigma2_init"]), np.ones(n), np.zeros(n), np.array(seeds))
        label = f"{NAME}: {encoder['name']} encoder, {n} seeds"
        result = train_grid(trainer, hyper, train.X, heldout.X, progress=progress, label=label)
        history = result.history
        quarter = len(history.step[0]) * 3 // 4
        for i, seed in enumerate(seeds):
            layers = [(w[i], c[i]) for w, c in result.params.encoder]
            (weight, bias) = [(w[i], c[i]) for w, c in result.params.decoder][0]
            W = np.asarray(weight, dtype=np.float64).T  # (d, k): decode(z) = z @ weight + bias
            b = np.asarray(bias, dtype=np.float64)
            sigma2 = float(np.exp(np.float64(result.params.log_sigma2[i])))
            params = result.params._replace(encoder=layers, decoder=None, log_sigma2=None)

            def elbo_on(X, params=params, trainer=trainer, W=W, b=b, sigma2=sigma2):
                mean, log_var = encode(params, jnp.asarray(X, jnp.float32), trainer)
                return exact_elbo_linear_decoder(
                    X, np.asarray(mean, np.float64), np.asarray(log_var, np.float64), W, b, sigma2
                )

            objective = history.heldout_objective[i]
            train_elbo, train_mll = (
                elbo_on(train.X),
                float(log_marginal_likelihood(W, sigma2, problem.cov, mean_offset=problem.mean - b)),
            )
            rise = float(objective[-1] - objective[quarter])
            runs.append(
                {
                    "encoder": encoder["name"],
                    "seed": seed,
                    "final_sigma2": sigma2,
                    "train_elbo": train_elbo,
                    "train_mll": train_mll,
                    "heldout_elbo": elbo_on(heldout.X),
                    "heldout_mll": heldout_mll(W, b, sigma2, heldout.X),
                    "gap_elbo_to_mle": mle.mll - train_elbo,
                    "gap_decoder_to_mle": mle.mll - train_mll,
                    "encoder_gap": train_mll - train_elbo,  # E KL(q || posterior) of the trained encoder
                    "subspace_angle_deg": max_principal_angle_deg(W, problem.eigenvectors[:, :k]),
                    "rise_last_quarter": rise,
                    "still_improving": rise > config["plateau_tol"],
                    "history": {
                        "step": history.step[i].tolist(),
                        "heldout_objective": objective.tolist(),
                        "sigma2": history.sigma2[i].tolist(),
                    },
                }
            )
    return {
        "n_train": train.n,
        "n_heldout": heldout.n,
        "d": train.d,
        "eigenvalues": problem.eigenvalues[: k + 1].tolist(),
        "mle_sigma2": mle.sigma2,
        "mle_mll": mle.mll,
        "mle_heldout_mll": heldout_mll(W_mle, problem.mean, mle.sigma2, heldout.X),
        "runs": runs,
    }


# --- figure --------------------------------------------------------------------------------------
#: One marker per measure, one colour per encoder in every panel.
MEASURE_MARKERS = (("gap_elbo_to_mle", "o", "ELBO, exact (training digits)"), ("gap_decoder_to_mle", "s",
                   "MLL of the trained decoder"))  # fmt: skip


def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=3, width=4.8, height=4.0)
    names = [e["name"] for e in config["encoders"]]
    colors = {name: COLORS[j] for j, name in enumerate(names)}
    runs = results["runs"]
    x = np.arange(len(names))

    ax = axes[0, 0]
    for offset, (key, marker, label) in zip((-0.12, 0.12), MEASURE_MARKERS):
        for j, name in enumerate(names):
            values = [r[key] for r in runs if r["encoder"] == name]
            ax.plot(np.full(len(values), j + offset), values, marker, color=colors[name], markerfacecolor="none",
                    markersize=7)  # fmt: skip
        ax.plot([], [], marker, color="0.3", markerfacecolor="none", label=label)
    ax.axhline(0.0, color="0.2", **PREDICTION_STYLE, label="pPCA MLE (closed form)")
    ax.set_xticks(x, names)
    ax.set_xlabel("encoder (linear decoder throughout)")
    ax.set_ylabel("MLL* $-$ value (nats per digit)")
    ax.set_title(f"Below the pPCA MLE (MLL* = {results['mle_mll']:.2f}), per seed")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    sigma2_star = results["mle_sigma2"]
    for j, name in enumerate(names):
        values = [(r["final_sigma2"] / sigma2_star - 1.0) * 1e4 for r in runs if r["encoder"] == name]
        ax.plot(np.full(len(values), j), values, "o", color=colors[name], markerfacecolor="none", markersize=7)
    ax.axhline(
        0.0,
        color="0.2",
        **PREDICTION_STYLE,
        label=f"MLE $\\sigma^2_*$ = mean$(\\lambda_{{K+1..d}})$ = {sigma2_star:.5f}",
    )
    ax.set_xticks(x, names)
    ax.set_xlabel("encoder (linear decoder throughout)")
    ax.set_ylabel("learned $\\sigma^2$ / $\\sigma^2_*$ $-$ 1  (units of $10^{-4}$)")
    ax.set_title("Learned observation noise, relative to the MLE")
    spread = max(1.0, max(abs(v) for v in ax.get_ylim()))
    ax.set_ylim(-1.2 * spread, 1.2 * spread)
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    reference = results["mle_heldout_mll"]
    for name in names:
        for r in (r for r in runs if r["encoder"] == name):
            gap = reference - np.asarray(r["history"]["heldout_objective"])
            ax.plot(r["history"]["step"], np.where(gap > 0, gap, np.nan), color=colors[name], linewidth=1.0,
                    alpha=0.8, label=name if r["seed"] == config["seeds"][0] else None)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("MLL of the pPCA MLE $-$ one-sample ELBO\n(held-out digits, nats per digit, log scale)")
    ax.set_title("Training: gap to the MLE's held-out likelihood")
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(
        f"Linear decoder, three encoders: MNIST, {results['n_train']} training digits, K = {config['latent_dim']}, "
        "float32 networks\n"
        f"learned $\\sigma^2$ from {config['sigma2_init']:g}, Adam {config['learning_rate']:g} ({config['schedule']} "
        f"schedule, stopped at {config['steps']:,} steps, not by a rule)"
    )
    return fig
