"""Figure 3: ELBO and marginal likelihood during training, with learned sigma2.

Claim (Lucas et al. Section 4.2 and their notebook's training plot; docs/theory.md (T3) and
claims 3-4): the linear VAE with learned ``sigma2`` (beta = 1), trained by gradient ascent on its
ELBO, reaches the global optimum, which is the pPCA maximum-likelihood solution: the ELBO rises
to the pPCA marginal likelihood (MLL) of its own decoder (the bound becomes tight once the encoder
is optimal and ``W^T W`` is diagonal), both converge to the closed-form MLE
``-1/2 [d log 2pi + sum_{i<=k} log lambda_i + (d - k) log sigma2* + d]`` (Tipping & Bishop), and
the learned ``sigma2`` converges to ``sigma2* = mean(lambda_{k+1..d})``.

Two trainers on MNIST-1000, k = 16, Adam with a cosine-decayed learning rate, random
initialisation, ``sigma2`` starting at 1: the exact ELBO (full batch, closed form from ``S``) and
the stochastic ELBO (minibatches of 100, one reparameterised sample), which plateaus a few nats
below at the peak learning rate (gradient noise) and gets there as the learning rate decays.
Both curves come from the trainer's history, recorded every ``log_every`` steps with the exact
ELBO and MLL of the current parameters.  The closed-form MLE values are horizontal lines.

The same module draws the paper's notebook configuration (:mod:`linear_vae.experiments.training_curves_paper`,
only ``CONFIG`` differs): K = 200, exact ELBO only, Adam at a constant 1e-3 for 12,000 steps.  Beside
the MLE it draws the value the notebook calls its MLE, the same closed form evaluated with the
1/(N - 1) covariance, which lies exactly ``d/2 log(N / (N - 1))`` nats lower (docs/theory.md (T14)),
so that a converging ELBO ends above it.
"""

from __future__ import annotations

import numpy as np

from linear_vae.experiments.common import data_description, load_problem, train
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.theory.ppca import ppca_optimum, unbiased_covariance_mle, unbiased_covariance_shift
from linear_vae.training.train import TrainConfig

NAME = "training_curves"
TITLE = "ELBO and marginal likelihood during training (learned sigma2), against the pPCA MLE"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,  # seeded random 1,000 of the shipped digits
    "latent_dim": 16,
    "objectives": ["exact", "stochastic"],  # exact: full batch, closed form; stochastic: minibatches
    "initial_sigma2": 1.0,  # sigma2 is learned (log sigma2 a parameter) from here
    "exact_steps": 20000,  # full-batch exact ELBO
    "stochastic_steps": 10000,  # minibatch Monte-Carlo ELBO
    "batch_size": 100,
    "learning_rate": 1e-2,
    "schedule": "cosine",
    "log_every": 20,
    "seed": 0,
    "basis": "eigen",  # O(d k^2) exact steps; the ELBO is rotation invariant
    "middle_panel": "gap",  # "gap": MLE - objective on a log axis; "zoom": the last nats, linear
}
QUICK = {"exact_steps": 2000, "stochastic_steps": 1000}


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    problem = load_problem(config)
    eigenvalues = problem.eigenvalues
    k = config["latent_dim"]
    mle = ppca_optimum(eigenvalues, k)  # learned sigma2: sigma2* = mean(lambda_{k+1..d})
    curves = {}
    for objective in config["objectives"]:
        train_config = TrainConfig(
            latent_dim=k,
            steps=config[f"{objective}_steps"],
            log_every=config["log_every"],
            objective=objective,
            learning_rate=config["learning_rate"],
            schedule=config["schedule"],
            batch_size=config["batch_size"],
            learn_sigma2=True,
            optimizer="adam",
            stop_when_converged=False,
        )
        result, (report,) = train(
            problem,
            train_config,
            [1.0],
            [config["initial_sigma2"]],
            [config["seed"]],
            basis=config["basis"],
            progress=progress,
            label=f"{NAME} ({objective})",
        )
        h = result.history
        elbo, mll, sigma2 = h.elbo[0], h.mll[0], h.sigma2[0]
        curves[objective] = {
            "steps": h.step[0].tolist(),
            "elbo": elbo.tolist(),
            "mll": mll.tolist(),
            "sigma2": sigma2.tolist(),
            "final_elbo": float(elbo[-1]),
            "final_mll": float(mll[-1]),
            "final_sigma2": float(sigma2[-1]),
            "final_elbo_gap": float(mle.mll - elbo[-1]),  # closed-form MLE minus trained ELBO, >= 0
            "final_mll_gap": float(mle.mll - mll[-1]),  # closed-form MLE minus trained MLL, >= 0
            "final_mll_minus_elbo": float(mll[-1] - elbo[-1]),  # the bound's slack, >= 0
            "min_mll_minus_elbo": float(np.min(mll - elbo)),  # ELBO <= MLL at every record
            # still rising? the ELBO's gain over the last tenth of the run (Adam has no convergence test)
            "elbo_gain_last_tenth": float(elbo[-1] - elbo[int(0.9 * (len(elbo) - 1))]),
            "final_sigma2_relative_error": float(abs(sigma2[-1] - mle.sigma2) / mle.sigma2),
            "active_dims": report["active_dims"],
            "predicted_active_dims": report["predicted_active_dims"],
            "max_principal_angle_deg": report["max_principal_angle_deg"],
        }
    return {
        **data_description(problem, config),
        "latent_dim": k,
        "mle_mll": mle.mll,
        "mle_sigma2": mle.sigma2,
        # the notebook's "MLE": the same closed form with the 1/(N - 1) covariance (docs/theory.md (T14.1))
        "unbiased_covariance_mle_mll": unbiased_covariance_mle(eigenvalues, k, problem.dataset.n),
        "unbiased_covariance_shift": unbiased_covariance_shift(eigenvalues, k, problem.dataset.n),
        "curves": curves,
        "max_final_elbo_gap": max(c["final_elbo_gap"] for c in curves.values()),
    }


# --- figure --------------------------------------------------------------------------------------
def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=3, width=4.3, height=4.0)
    ax_value, ax_middle, ax_sigma = axes[0]
    mle, mle_sigma2 = results["mle_mll"], results["mle_sigma2"]
    notebook_mle = results["unbiased_covariance_mle_mll"]
    zoom = config["middle_panel"] == "zoom"
    colors = dict(zip(("exact", "stochastic"), (COLORS[0], COLORS[1])))
    for objective in config["objectives"]:
        c, color = results["curves"][objective], colors[objective]
        steps = np.array(c["steps"])
        elbo, mll = np.array(c["elbo"]), np.array(c["mll"])
        for ax in (ax_value, ax_middle) if zoom else (ax_value,):
            ax.plot(steps, elbo, color=color, linewidth=1.4, label=f"ELBO ({objective})")
            ax.plot(steps, mll, color=color, linewidth=1.4, linestyle=":", label=f"MLL of its W ({objective})")
        if not zoom:
            floor = 1e-6  # the exact trainer's gaps reach ~3e-5 nats; keep the log axis finite
            ax_middle.plot(steps, np.maximum(mle - elbo, floor), color=color, linewidth=1.4)
            ax_middle.plot(steps, np.maximum(mle - mll, floor), color=color, linewidth=1.4, linestyle=":")
        ax_sigma.plot(steps, c["sigma2"], color=color, linewidth=1.4, label=f"{objective} ELBO")
    shift = results["unbiased_covariance_shift"]
    for ax in (ax_value, ax_middle) if zoom else (ax_value,):
        ax.axhline(mle, color=COLORS[7], **PREDICTION_STYLE, label="closed-form MLE (1/N covariance)", zorder=0)
        ax.axhline(
            notebook_mle,
            color=COLORS[3],
            **{**PREDICTION_STYLE, "linestyle": "--"},
            label=f'the same with the 1/(N−1) covariance (the notebook\'s "MLE"): {shift:.3f} nats lower',
            zorder=0,
        )
    ax_value.set_ylim(mle - 30, mle + 4)
    ax_value.set_ylabel("objective (nats per datapoint)")
    ends = ", ".join(f"{results['curves'][o]['final_elbo_gap']:.2g} ({o})" for o in config["objectives"])
    ax_value.set_title(
        f"ELBO (solid) below its MLL (dotted), last 30 nats;\nat the end MLE − ELBO = {ends}", fontsize=10
    )

    if zoom:
        exact = results["curves"]["exact"]
        final = exact["final_elbo"]
        ax_middle.set_ylim(notebook_mle - 0.6, mle + 0.25)
        ax_middle.set_xlim(0.25 * exact["steps"][-1], exact["steps"][-1] * 1.02)
        ax_middle.set_xscale("linear")
        ax_middle.set_ylabel("objective (nats per datapoint)")
        side = "above" if final > notebook_mle else "below"
        ax_middle.set_title(
            f"the last steps: the ELBO ends {exact['final_elbo_gap']:.3f} nats below the MLE,\n"
            f'{abs(final - notebook_mle):.3f} {side} the 1/(N−1) "MLE"'
        )
        ax_middle.set_xlabel("training step")
    else:
        ax_middle.set_yscale("log")
        ax_middle.set_ylabel("MLE − objective (nats per datapoint)")
        ax_middle.set_title("distance to the closed-form MLE\n(log scale)")

    ax_sigma.axhline(mle_sigma2, color=COLORS[7], **PREDICTION_STYLE, zorder=0)
    closed_form = rf"$\sigma^{{2*}}$ = mean($\lambda_{{k+1..d}}$) = {mle_sigma2:.4g}"
    ax_sigma.text(
        0.97,
        0.95,
        "black line: closed form\n" + closed_form,
        transform=ax_sigma.transAxes,
        ha="right",
        va="top",
        fontsize=8.5,
    )
    log_axis(ax_sigma, "y")
    ax_sigma.set_ylim(0.8 * min(mle_sigma2, min(min(c["sigma2"]) for c in results["curves"].values())), None)
    ax_sigma.set_ylabel(r"learned $\sigma^2$ (pixel variance, log scale)")
    relative = ", ".join(
        f"{results['curves'][o]['final_sigma2_relative_error']:.1g} ({o})" for o in config["objectives"]
    )
    ax_sigma.set_title(
        f"learned observation noise $\\sigma^2$; at the end\n$|\\sigma^2/\\sigma^{{2*}} - 1|$ = {relative}", fontsize=10
    )
    for ax in (ax_value, ax_sigma) if zoom else axes[0]:
        log_axis(ax, "x", subs=(1.0,))  # 10, 100, ...: no crowded labels
        ax.set_xlabel("training step (log scale)")
    fig.legend(*ax_value.get_legend_handles_labels(), loc="outside lower center", ncol=3)
    schedule = "cosine-decayed" if config["schedule"] == "cosine" else config["schedule"]
    trainers = {
        "exact": "exact: full-batch closed-form ELBO",
        "stochastic": f"stochastic: minibatches of {config['batch_size']}, one reparameterised sample",
    }
    fig.suptitle(
        f"Linear VAE with learned σ² from {config['initial_sigma2']:g} (β = 1), MNIST ({results['n']} digits), "
        f"K = {results['latent_dim']}, Adam, {schedule} learning rate {config['learning_rate']:g}, float64\n"
        + "; ".join(trainers[o] for o in config["objectives"])
    )
    return fig
