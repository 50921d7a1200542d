"""Deep VAE: posterior collapse against the observation noise, fixed, learned and annealed, next to
the linear prediction.

Claim (Lucas et al. 2019, Section 6 and Table 1): what the linear VAE shows in closed form carries
over to deep Gaussian VAEs.  A larger ``sigma2`` collapses more latent dimensions (the linear
count is ``#{lambda_i > sigma2}`` at beta = 1), learning ``sigma2`` mitigates collapse, and KL
annealing only delays it: once beta reaches 1 the dimensions collapse again.

Everything here is trained in one compiled call of :func:`linear_vae.deep.train_grid` (the fixed,
learned and annealed settings are values of one vmapped grid), plus one vmapped sweep of linear
VAEs on the same training digits.  A latent dimension counts as active when it is not
(epsilon, delta)-collapsed on the held-out digits (epsilon = 0.01 nats, delta = 0.01); the curves
over training use the simpler "held-out average KL above epsilon".  Networks in float32.  The
paper's CelebA runs need data that cannot be shipped offline; MNIST is used throughout.
"""

from __future__ import annotations

import numpy as np

from linear_vae.collapse import DEFAULT_DELTA, DEFAULT_EPSILON, collapsed_fraction_curve, epsilon_delta_collapsed
from linear_vae.compare import train_and_compare
from linear_vae.datasets import load_data, train_heldout_split
from linear_vae.deep import DeepConfig, DeepHyper, train_grid
from linear_vae.optimum import active_count
from linear_vae.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.problem import Problem
from linear_vae.train import TrainConfig

NAME = "deep_vae"
TITLE = "Deep Gaussian VAE on MNIST: collapse against sigma2, learned sigma2, KL annealing, and the linear prediction"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n_train": 4000,
    "split_seed": 0,  # 4,000 training / 1,000 held-out digits
    "latent_dim": 32,
    "hidden": [512, 256],
    "activation": "relu",
    "steps": 6000,
    "log_every": 200,
    "batch_size": 100,
    "learning_rate": 1e-3,
    "sigma2_learning_rate": 3e-3,  # Adam; its own step size on log sigma2
    "fixed_sigma2s": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0],  # from below the top eigenvalues to above them
    "learned_sigma2_inits": [0.01, 3.0],  # small and large initial values
    "annealed_sigma2": 1.0,
    "warmup_fraction": 0.5,  # beta: 0 -> 1 over the first half
    "seed": 0,
    "linear_steps": 5000,
    "linear_basis": "eigen",  # linear VAEs on the same training digits
    "epsilons": [1e-4, 10.0, 41],  # log-spaced START, STOP, NUM (nats)
}
QUICK = {
    "steps": 400,
    "log_every": 100,
    "fixed_sigma2s": [0.03, 0.3, 1.0, 3.0],
    "learned_sigma2_inits": [3.0],
    "linear_steps": 1000,
    "epsilons": [1e-4, 10.0, 11],
}


def settings(config: dict) -> list[dict]:
    """One entry per trained deep VAE: its kind, sigma2 (fixed or initial) and warm-up steps."""
    fixed = [{"kind": "fixed", "sigma2": s, "warmup": 0} for s in config["fixed_sigma2s"]]
    learned = [{"kind": "learned", "sigma2": s, "warmup": 0} for s in config["learned_sigma2_inits"]]
    annealed = [
        {
            "kind": "annealed",
            "sigma2": config["annealed_sigma2"],
            "warmup": int(config["warmup_fraction"] * config["steps"]),
        }
    ]
    return fixed + learned + annealed


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    train, heldout = train_heldout_split(load_data(config["data"]), config["n_train"], config["split_seed"])
    problem = Problem.from_dataset(train)
    k = config["latent_dim"]
    grid = settings(config)
    deep_config = DeepConfig(
        latent_dim=k,
        hidden=tuple(config["hidden"]),
        activation=config["activation"],
        steps=config["steps"],
        log_every=config["log_every"],
        batch_size=config["batch_size"],
        learning_rate=config["learning_rate"],
        sigma2_learning_rate=config["sigma2_learning_rate"],
    )
    hyper = DeepHyper(
        np.array([g["sigma2"] for g in grid]),
        np.array([g["kind"] == "learned" for g in grid], float),
        np.array([g["warmup"] for g in grid], float),
        np.full(len(grid), config["seed"]),
    )
    result = train_grid(deep_config, hyper, train.X, heldout.X, progress=progress)

    epsilons = np.geomspace(*config["epsilons"][:2], int(config["epsilons"][2]))
    runs = []
    for i, g in enumerate(grid):
        kl = result.heldout_kl[i]
        history_kl = result.history.kl_per_dim[i]
        runs.append(
            {
                **g,
                "final_sigma2": float(result.history.sigma2[i, -1]),
                "active_dims": int(k - epsilon_delta_collapsed(kl, DEFAULT_EPSILON, DEFAULT_DELTA).sum()),
                "heldout_kl_per_dim": np.sort(kl.mean(axis=0))[::-1].tolist(),
                "collapsed_fraction": collapsed_fraction_curve(kl, epsilons, DEFAULT_DELTA).tolist(),
                "train_elbo": float(result.history.train_elbo[i, -1]),
                "heldout_elbo": float(result.history.heldout_elbo[i, -1]),
                "history": {
                    "step": result.history.step[i].tolist(),
                    "beta": result.history.beta[i].tolist(),
                    "active_dims_mean_kl": (history_kl > DEFAULT_EPSILON).sum(axis=1).tolist(),
                    "train_elbo": result.history.train_elbo[i].tolist(),
                    "heldout_elbo": result.history.heldout_elbo[i].tolist(),
                    "sigma2": result.history.sigma2[i].tolist(),
                },
            }
        )

    if progress:
        progress.task(f"{NAME}: linear VAEs on the same digits")
    sigma2s = list(config["fixed_sigma2s"])
    linear_config = TrainConfig(
        latent_dim=k,
        steps=config["linear_steps"],
        basis=config["linear_basis"],
        optimizer="adam",
        stop_when_converged=False,
    )
    _, linear_reports = train_and_compare(
        problem, linear_config, np.ones(len(sigma2s)), sigma2s, np.full(len(sigma2s), config["seed"])
    )
    eigenvalues = problem.eigenvalues
    sigma2_grid = np.geomspace(min(sigma2s) / 2, max(sigma2s) * 2, 300)
    return {
        "n_train": train.n,
        "n_heldout": heldout.n,
        "d": train.d,
        "split_seed": config["split_seed"],
        "eigenvalues": eigenvalues[:64].tolist(),
        "epsilons": epsilons.tolist(),
        "epsilon": DEFAULT_EPSILON,
        "delta": DEFAULT_DELTA,
        "runs": runs,
        "linear": {
            "sigma2": sigma2s,
            "predicted_active_dims": active_count(eigenvalues, k, np.asarray(sigma2s)).tolist(),
            "trained_active_dims": [r["active_dims"] for r in linear_reports],
            "trained_gap": [r["gap"] for r in linear_reports],
            "curve_sigma2": sigma2_grid.tolist(),
            "curve_active_dims": active_count(eigenvalues, k, np.asarray(sigma2_grid)).tolist(),
        },
        "deep_seconds": result.seconds,
        "deep_compile_seconds": result.compile_seconds,
    }


def table(results: dict) -> str:
    """The analogue of the paper's Table 1 (markdown): ELBO and active dimensions per setting."""
    lines = [
        "| setting | sigma2 (initial -> final) | training ELBO | held-out ELBO | active dims (of K) |",
        "|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        setting = {
            "fixed": "fixed sigma2",
            "learned": "learned sigma2",
            "annealed": f"fixed sigma2, KL annealing over {r['warmup']} steps",
        }[r["kind"]]
        sigma2 = f"{r['sigma2']:g}" if r["kind"] != "learned" else f"{r['sigma2']:g} -> {r['final_sigma2']:.3g}"
        lines.append(
            f"| {setting} | {sigma2} | {r['train_elbo']:.1f} | {r['heldout_elbo']:.1f} | "
            f"{r['active_dims']} of {len(r['heldout_kl_per_dim'])} |"
        )
    return "\n".join(lines)


# --- figures -------------------------------------------------------------------------------------
def plot(results: dict, config: dict) -> dict:
    return {
        "collapse": plot_collapse_fraction(results, config),
        "active": plot_active_dims(results, config),
        "annealing": plot_annealing(results, config),
    }


def plot_collapse_fraction(results: dict, config: dict):
    fig, axes = new_figure(width=8.4, height=4.2)
    ax = axes[0, 0]
    fixed = [r for r in results["runs"] if r["kind"] == "fixed"]
    for i, r in enumerate(fixed):
        ax.step(
            results["epsilons"],
            r["collapsed_fraction"],
            where="post",
            color=COLORS[i % len(COLORS)],
            label=rf"fixed $\sigma^2$ = {r['sigma2']:g}",
            **PREDICTION_STYLE,
        )
    for j, r in enumerate(r for r in results["runs"] if r["kind"] == "learned"):
        ax.step(
            results["epsilons"],
            r["collapsed_fraction"],
            where="post",
            color="0.2",
            linestyle=["--", ":"][j % 2],
            linewidth=1.8,
            label=rf"learned $\sigma^2$: {r['sigma2']:g} $\to$ {r['final_sigma2']:.3g}",
        )
    log_axis(ax, "x", subs=(1.0,))
    ax.set_xlabel(r"$\epsilon$ (nats, log scale)")
    ax.set_ylabel(r"fraction of latent dimensions $(\epsilon, \delta)$-collapsed")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(rf"Deep VAE (MLP {config['hidden']}, K = {config['latent_dim']}), held-out MNIST, $\delta$ = 0.01")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8.5)
    return fig


def plot_active_dims(results: dict, config: dict):
    fig, axes = new_figure(width=6.6, height=4.2)
    ax = axes[0, 0]
    linear = results["linear"]
    ax.step(
        linear["curve_sigma2"],
        linear["curve_active_dims"],
        where="post",
        color=COLORS[0],
        label=r"linear VAE, closed form $\#\{\lambda_i > \sigma^2\}$",
        **PREDICTION_STYLE,
    )
    ax.plot(
        linear["sigma2"],
        linear["trained_active_dims"],
        "s",
        color=COLORS[0],
        markerfacecolor="none",
        markersize=8,
        label="linear VAE, trained (exact ELBO)",
    )
    fixed = [r for r in results["runs"] if r["kind"] == "fixed"]
    ax.plot(
        [r["sigma2"] for r in fixed],
        [r["active_dims"] for r in fixed],
        "o-",
        color=COLORS[3],
        linewidth=1,
        label=r"deep VAE, fixed $\sigma^2$",
    )
    for r in (r for r in results["runs"] if r["kind"] == "learned"):
        ax.annotate(
            "",
            xy=(r["final_sigma2"], r["active_dims"]),
            xytext=(r["sigma2"], r["active_dims"]),
            arrowprops={"arrowstyle": "->", "color": COLORS[2], "lw": 1.2},
        )
        ax.plot(r["final_sigma2"], r["active_dims"], "D", color=COLORS[2], markersize=7)
    ax.plot([], [], "D", color=COLORS[2], label=r"deep VAE, learned $\sigma^2$ (arrow: initial $\to$ final)")
    log_axis(ax, "x")
    ax.set_xlabel(r"observation noise $\sigma^2$ (log scale)")
    ax.set_ylabel(r"active latent dimensions ($\epsilon$ = 0.01 nats, $\delta$ = 0.01)")
    ax.set_ylim(-1, config["latent_dim"] + 1)
    ax.set_title(f"Active dimensions against the observation noise, K = {config['latent_dim']}")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_annealing(results: dict, config: dict):
    fig, axes = new_figure(ncols=2, width=4.6, height=3.8)
    annealed = next(r for r in results["runs"] if r["kind"] == "annealed")
    plain = next((r for r in results["runs"] if r["kind"] == "fixed" and r["sigma2"] == annealed["sigma2"]), None)
    for r, color, label in ((annealed, COLORS[1], "KL annealing"), (plain, COLORS[0], "no annealing")):
        if r is None:
            continue
        h = r["history"]
        axes[0, 0].plot(h["step"], h["active_dims_mean_kl"], color=color, linewidth=1.8, label=label)
        axes[0, 1].plot(h["step"], h["train_elbo"], color=color, linewidth=1.8, label=label)
    linear_count = int(np.sum(np.array(results["eigenvalues"][: config["latent_dim"]]) > annealed["sigma2"]))
    axes[0, 0].axhline(
        linear_count,
        color="0.3",
        linestyle="--",
        linewidth=1.2,
        label=rf"linear closed form $\#\{{\lambda_i > \sigma^2\}}$ = {linear_count}",
    )
    warmup = annealed["warmup"]
    for ax in axes[0]:
        ax.axvline(warmup, color="0.5", linestyle=":", linewidth=1.2)
        ax.set_xlabel("training step")
    axes[0, 0].text(warmup, 0.5, r" $\beta$ reaches 1", color="0.35", fontsize=8)
    axes[0, 0].set_ylabel("active dimensions (held-out mean KL > 0.01 nats)")
    axes[0, 0].set_ylim(-1, config["latent_dim"] + 1)
    axes[0, 1].set_ylabel(r"training $\beta$-ELBO (nats per datapoint)")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[0, 1].legend(loc="lower right", fontsize=8)
    elbos = np.array(annealed["history"]["train_elbo"] + (plain["history"]["train_elbo"] if plain else []))
    axes[0, 1].set_ylim(np.percentile(elbos, 5) - 20, elbos.max() + 20)
    fig.suptitle(
        rf"KL annealing at fixed $\sigma^2$ = {annealed['sigma2']:g}: $\beta$ from 0 to 1 over the first "
        rf"{warmup} steps, against $\beta$ = 1 throughout"
    )
    return fig
