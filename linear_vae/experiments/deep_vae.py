"""Deep VAE: posterior collapse against the observation noise, fixed, learned and annealed, with seeds,
measured on held-out data by the same estimators as the linear VAE next to it.

Claim (Lucas et al. 2019, Section 6 and Table 1): what the linear VAE shows in closed form carries
over to deep Gaussian VAEs.  A larger ``sigma2`` collapses more latent dimensions (the linear
count is ``#{lambda_i > sigma2}`` at beta = 1), learning ``sigma2`` mitigates collapse but a large
initial ``sigma2`` still collapses, and KL annealing only delays collapse.

Each latent size is one compiled call of :func:`linear_vae.deep.train_grid`: fixed, learned and
annealed ``sigma2``, each with several seeds, are values of one vmapped grid trained in lockstep
for the whole budget; every run is reported at its **best held-out checkpoint** (the parameters
at the best one-sample held-out ELBO among the records, kept in the scanned state), since a
stopping rule saves nothing in a lockstep grid.  Equal ``beta sigma2`` gives the same run
(docs/theory.md (T13)), so beta is not a grid axis.  At that checkpoint every run is measured on the
held-out rows by :func:`linear_vae.deep.heldout_measures`: the (epsilon, delta)-count and the
held-out mean-KL count, active units ``Var_x E_q[z_i] > 0.01``, the total KL (the rate), the
Monte-Carlo distortion, the ELBO, the IWAE bound and both minibatch forms of the mutual
information.  The linear VAE is the closed-form optimum on the same training rows (which trained
linear VAEs reach to 1e-6 nats), measured on the same held-out rows exactly from their moments and
by the same estimators; its IWAE bound equals its exact held-out pPCA log-likelihood, because its
encoder is the exact posterior.  Networks in float32.  :data:`CONFIG`'s ``data`` selects MNIST
(``deep_vae``) or Fashion-MNIST (``deep_vae_fashion``, standing in for the paper's CelebA).
"""

from __future__ import annotations

import math

import jax
import matplotlib.pyplot as plt
import numpy as np

from linear_vae import metrics
from linear_vae.collapse import (
    DEFAULT_DELTA,
    DEFAULT_EPSILON,
    collapsed_fraction_curve,
    encoder_kl_matrix,
    epsilon_delta_collapsed,
)
from linear_vae.datasets import load_data, train_heldout_split
from linear_vae.deep import DeepHyper, heldout_measures, measure_grid, train_grid
from linear_vae.experiments.common import deep_config
from linear_vae.experiments.rate_distortion import draw_frontier
from linear_vae.moments import compute_moments
from linear_vae.optimum import active_count, beta_elbo_optimum, learned_sigma2
from linear_vae.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.ppca import log_marginal_likelihood
from linear_vae.problem import Problem

NAME = "deep_vae"
TITLE = "Deep Gaussian VAE on MNIST: collapse against sigma2, learned sigma2, KL annealing, with seeds, next to the linear VAE"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n_train": 4000,
    "split_seed": 0,  # 4,000 training / 1,000 held-out images
    "latent_dims": [32],  # K = 128 too was trimmed to fit the budget (README)
    "hidden": [512, 256],
    "activation": "relu",
    "steps": 3000,
    "log_every": 100,  # a held-out record (and checkpoint candidate) every 100 steps
    "batch_size": 100,
    "learning_rate": 1e-3,
    "sigma2_learning_rate": 3e-3,  # Adam; its own step size on log sigma2
    "fixed_sigma2s": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
    "learned_sigma2_inits": [0.01, 0.3, 3.0, 10.0],
    "annealed_sigma2": 1.0,
    "warmup_fraction": 0.5,  # beta: 0 -> 1 over the first half
    "seeds": [0, 1, 2],
    "iwae_samples": 100,
    "distortion_samples": 10,
    "measure_seed": 0,
    "closed_form_latent_dims": [32, 128],  # the linear count drawn for these K
    "epsilons": [1e-4, 10.0, 41],  # log-spaced START, STOP, NUM (nats)
}
QUICK = {
    "hidden": [64, 32],
    "steps": 60,
    "log_every": 20,
    "fixed_sigma2s": [0.1, 1.0],
    "learned_sigma2_inits": [3.0],
    "seeds": [0, 1],
    "iwae_samples": 8,
    "distortion_samples": 2,
    "epsilons": [1e-4, 10.0, 11],
}

KINDS = ("fixed", "learned", "annealed")


def settings(config: dict) -> list[dict]:
    """One entry per setting (its kind, sigma2 fixed or initial, warm-up steps), before seeds."""
    fixed = [{"kind": "fixed", "sigma2": s, "warmup": 0} for s in config["fixed_sigma2s"]]
    learned = [{"kind": "learned", "sigma2": s, "warmup": 0} for s in config["learned_sigma2_inits"]]
    warmup = int(config["warmup_fraction"] * config["steps"])
    annealed = [{"kind": "annealed", "sigma2": config["annealed_sigma2"], "warmup": warmup}]
    return fixed + learned + annealed


def grid(config: dict) -> list[dict]:
    """Every trained configuration: each setting once per seed."""
    return [{**g, "seed": seed} for g in settings(config) for seed in config["seeds"]]


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    train, heldout = train_heldout_split(load_data(config["data"]), config["n_train"], config["split_seed"])
    problem = Problem.from_dataset(train)
    epsilons = np.geomspace(*config["epsilons"][:2], int(config["epsilons"][2]))
    studies = []
    for k in config["latent_dims"]:
        if progress:
            progress.task(f"{NAME}: deep VAEs, K = {k}")
        studies.append(
            {
                "latent_dim": k,
                **deep_study(config, k, train.X, heldout.X, epsilons, progress),
                "linear": linear_study(config, problem, k, heldout.X, epsilons),
            }
        )
    return {
        "n_train": train.n,
        "n_heldout": heldout.n,
        "d": train.d,
        "split_seed": config["split_seed"],
        "eigenvalues": problem.eigenvalues[:160].tolist(),
        "trace": problem.trace,
        "epsilons": epsilons.tolist(),
        "epsilon": DEFAULT_EPSILON,
        "delta": DEFAULT_DELTA,
        "au_threshold": metrics.AU_THRESHOLD,
        "closed_form": closed_form_curves(config, problem.eigenvalues),
        "studies": studies,
    }


def counts(kl: np.ndarray, au_variances: np.ndarray) -> dict:
    """The three counts of active dimensions, from the (N, k) KL matrix and the (k,) AU variances."""
    return {
        "eps_delta_active": int(kl.shape[1] - epsilon_delta_collapsed(kl, DEFAULT_EPSILON, DEFAULT_DELTA).sum()),
        "mean_kl_active": int(np.sum(kl.mean(axis=0) > DEFAULT_EPSILON)),
        "active_units": int(np.sum(au_variances > metrics.AU_THRESHOLD)),
    }


def deep_study(config: dict, k: int, X_train, X_heldout, epsilons, progress) -> dict:
    """Train the grid at latent size ``k`` and measure every run at its best held-out checkpoint."""
    configs = grid(config)
    hyper = DeepHyper(
        np.array([g["sigma2"] for g in configs]),
        np.array([g["kind"] == "learned" for g in configs], float),
        np.array([g["warmup"] for g in configs], float),
        np.array([g["seed"] for g in configs]),
    )
    dc = deep_config(config, latent_dim=k, hidden=tuple(config["hidden"]), activation=config["activation"])
    result = train_grid(dc, hyper, X_train, X_heldout, progress=progress)
    if progress:
        progress.task(f"{NAME}: held-out measures of {len(configs)} deep VAEs, K = {k}")
    measured = measure_grid(
        result.best_params, dc, X_heldout, config["measure_seed"], config["iwae_samples"], config["distortion_samples"]
    )
    h = result.history
    runs = []
    for i, g in enumerate(configs):
        best = int(np.flatnonzero(h.step[i] == result.best_step[i])[0])
        kl = measured.kl[i].astype(np.float64)
        runs.append(
            {
                **g,
                "best_step": int(result.best_step[i]),
                "sigma2_at_best": float(h.sigma2[i, best]),
                "final_sigma2": float(h.sigma2[i, -1]),
                **counts(kl, measured.au_variances[i]),
                "au_variances": measured.au_variances[i].tolist(),
                "heldout_kl_per_dim": kl.mean(axis=0).tolist(),
                "collapsed_fraction": collapsed_fraction_curve(kl, epsilons, DEFAULT_DELTA).tolist(),
                "rate": float(measured.rate[i]),
                "distortion": float(measured.distortion[i]),
                "heldout_elbo": float(measured.elbo[i]),
                "iwae": float(measured.iwae[i]),
                "mi_batch": float(measured.mi_batch[i]),
                "mi_leave_one_out": float(measured.mi_leave_one_out[i]),
                "train_elbo_at_best": float(h.train_elbo[i, best]),
                "heldout_objective_at_best": float(result.best_objective[i]),
                "final_train_elbo": float(h.train_elbo[i, -1]),
                "final_heldout_elbo": float(h.heldout_elbo[i, -1]),
                "history": {
                    "step": h.step[i].tolist(),
                    "beta": h.beta[i].tolist(),
                    "train_elbo": h.train_elbo[i].tolist(),
                    "heldout_elbo": h.heldout_elbo[i].tolist(),
                    "heldout_objective": h.heldout_objective[i].tolist(),
                    "sigma2": h.sigma2[i].tolist(),
                    "active_units": (h.au_variances[i] > metrics.AU_THRESHOLD).sum(axis=1).tolist(),
                    "mean_kl_active": (h.kl_per_dim[i] > DEFAULT_EPSILON).sum(axis=1).tolist(),
                },
            }
        )
    return {"runs": runs, "deep_seconds": result.seconds, "deep_compile_seconds": result.compile_seconds}


def linear_study(config: dict, problem: Problem, k: int, X_heldout, epsilons) -> dict:
    """The closed-form linear VAE on the training rows at each fixed sigma2 and at the learned
    (maximum-likelihood) sigma2, measured on the held-out rows: exactly from their moments, and by
    the deep VAE's estimators (:func:`linear_vae.deep.heldout_measures`, float64 here)."""
    spectrum = problem.spectrum
    held = compute_moments(np.asarray(X_heldout, dtype=np.float64))
    X_heldout = np.asarray(X_heldout, dtype=np.float64)
    sigma2_mle = learned_sigma2(spectrum.eigenvalues, k, trace=spectrum.trace, dim=spectrum.dim)
    rows = [("fixed", s) for s in config["fixed_sigma2s"]] + [("learned", sigma2_mle)]
    key = jax.random.key(config["measure_seed"])

    @jax.jit  # one compilation for every row (same shapes)
    def estimate(key, params, sigma2):
        model = metrics.linear_model(params, sigma2)
        return heldout_measures(key, X_heldout, model, config["iwae_samples"], config["distortion_samples"])

    out = []
    for i, (kind, sigma2) in enumerate(rows):
        optimum = beta_elbo_optimum(spectrum.eigenvalues, k, 1.0, sigma2, trace=spectrum.trace, dim=spectrum.dim)
        params = optimum.parameters(problem.mean, spectrum.eigenvectors)
        exact = metrics.collapse_metrics(params, held.mean, held.cov)
        kl = encoder_kl_matrix(params, X_heldout)
        log_likelihood = float(log_marginal_likelihood(params.W, sigma2, held.cov, mean_offset=held.mean - params.mu))
        estimated = estimate(jax.random.fold_in(key, i), params, sigma2)
        d = X_heldout.shape[1]
        out.append(
            {
                "kind": kind,
                "sigma2": float(sigma2),
                "predicted_active_dims": int(active_count(spectrum.eigenvalues, k, sigma2)),
                **counts(kl, np.asarray(exact["au_variances"])),
                "au_variances": exact["au_variances"],
                "heldout_kl_per_dim": kl.mean(axis=0).tolist(),
                "collapsed_fraction": collapsed_fraction_curve(kl, epsilons, DEFAULT_DELTA).tolist(),
                "rate": exact["rate"],
                "distortion": exact["distortion"],
                "heldout_elbo": -0.5 * d * math.log(2 * math.pi * sigma2)
                - exact["distortion"] / (2 * sigma2)
                - exact["rate"],
                "heldout_log_likelihood": log_likelihood,
                "mutual_information_gaussian": exact["mutual_information_gaussian"],
                "train_elbo": optimum.elbo,
                "estimated": {
                    "active_units": int(np.sum(np.asarray(estimated.au_variances) > metrics.AU_THRESHOLD)),
                    "rate": float(estimated.rate),
                    "distortion": float(estimated.distortion),
                    "heldout_elbo": float(estimated.elbo),
                    "iwae": float(estimated.iwae),
                    "mi_batch": float(estimated.mi_batch),
                    "mi_leave_one_out": float(estimated.mi_leave_one_out),
                },
            }
        )
    return {"rows": out, "frontier": frontier(problem.eigenvalues, k, config)}


def frontier(eigenvalues, k: int, config: dict) -> dict:
    """The linear VAE's rate-distortion curve on the training spectrum: its optimum at every water
    level ``t = beta sigma2`` (reverse water-filling cut at ``k`` components), docs/theory.md (T11.4)."""
    levels = np.geomspace(min(config["fixed_sigma2s"]) / 10, max(config["fixed_sigma2s"]) * 10, 200)
    points = [metrics.optimum_collapse_metrics(eigenvalues, k, t) for t in levels]
    return {
        "water_level": levels.tolist(),
        "rate": [p["rate"] for p in points],
        "distortion": [p["distortion"] for p in points],
    }


def closed_form_curves(config: dict, eigenvalues) -> dict:
    """The linear VAE's count against sigma2 on the training spectrum, for each K drawn: active
    dimensions ``#{lambda_i > sigma2}`` and active units ``#{lambda_i > sigma2 / (1 - tau)}`` (T11.4)."""
    sigma2 = np.geomspace(min(config["fixed_sigma2s"]) / 2, max(config["fixed_sigma2s"]) * 2, 400)
    tau = metrics.AU_THRESHOLD
    return {
        "sigma2": sigma2.tolist(),
        "active_dims": {
            str(k): active_count(eigenvalues, k, sigma2).tolist() for k in config["closed_form_latent_dims"]
        },
        "active_units": {
            str(k): active_count(eigenvalues, k, sigma2 / (1 - tau)).tolist() for k in config["closed_form_latent_dims"]
        },
    }


# --- summaries over seeds ------------------------------------------------------------------------
def by_setting(runs: list[dict]) -> list[list[dict]]:
    """The runs grouped by setting (kind, sigma2, warm-up), in grid order."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["kind"], r["sigma2"], r["warmup"]), []).append(r)
    return list(groups.values())


def spread(group: list[dict], key) -> tuple[float, float, float]:
    """Mean, minimum and maximum over the seeds of ``key`` (a name or a function of a run)."""
    values = np.array([key(r) if callable(key) else r[key] for r in group], dtype=np.float64)
    return float(values.mean()), float(values.min()), float(values.max())


def _cell(group, key, fmt: str) -> str:
    mean, low, high = spread(group, key)
    return f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


SETTING_NAMES = {"fixed": "fixed", "learned": "learned from", "annealed": "fixed, annealed"}


def table(results: dict) -> str:
    """Markdown tables per latent size: every measure per setting, mean [min, max] over the seeds, at
    the best held-out checkpoint; then the linear VAE's exact held-out values."""
    parts = []
    for study in results["studies"]:
        k = study["latent_dim"]
        lines = [
            f"K = {k}: deep VAE at its best held-out checkpoint, mean [min, max] over "
            f"{len(by_setting(study['runs'])[0])} seeds",
            "",
            "| sigma2 | sigma2 at best | best step | (eps, delta) count | mean-KL count | active units | "
            "total KL (nats) | distortion | MI, whole batch (nats) | MI, leave-one-out (nats) | held-out ELBO | IWAE | "
            "training ELBO |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for group in by_setting(study["runs"]):
            g = group[0]
            name = SETTING_NAMES[g["kind"]] + f" {g['sigma2']:g}"
            if g["kind"] == "annealed":
                name += f" (warm-up {g['warmup']})"
            lines.append(
                f"| {name} | {_cell(group, 'sigma2_at_best', '.3g')} | {_cell(group, 'best_step', '.0f')} | "
                f"{_cell(group, 'eps_delta_active', '.1f')} | {_cell(group, 'mean_kl_active', '.1f')} | "
                f"{_cell(group, 'active_units', '.1f')} | {_cell(group, 'rate', '.1f')} | "
                f"{_cell(group, 'distortion', '.1f')} | {_cell(group, 'mi_batch', '.2f')} | "
                f"{_cell(group, 'mi_leave_one_out', '.1f')} | {_cell(group, 'heldout_elbo', '.1f')} | "
                f"{_cell(group, 'iwae', '.1f')} | {_cell(group, 'train_elbo_at_best', '.1f')} |"
            )
        lines += [
            "",
            f"K = {k}: linear VAE (closed-form optimum on the training rows), exact on the held-out rows",
            "",
            "| sigma2 | (eps, delta) count | mean-KL count | active units | total KL (nats) | distortion | "
            "held-out ELBO | held-out log-likelihood | IWAE (estimated) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in study["linear"]["rows"]:
            name = f"{r['sigma2']:.3g}" + (" (learned)" if r["kind"] == "learned" else "")
            lines.append(
                f"| {name} | {r['eps_delta_active']} | {r['mean_kl_active']} | {r['active_units']} | "
                f"{r['rate']:.1f} | {r['distortion']:.1f} | {r['heldout_elbo']:.1f} | "
                f"{r['heldout_log_likelihood']:.1f} | {r['estimated']['iwae']:.1f} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


# --- figures -------------------------------------------------------------------------------------
def plot(results: dict, config: dict) -> dict:
    return {
        "active": plot_active_units(results, config),
        "collapse": plot_collapse_fraction(results, config),
        "annealing": plot_annealing(results, config),
        "rate_distortion": plot_rate_distortion(results, config),
    }


DATA_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def _data_name(config: dict) -> str:
    return DATA_NAMES.get(config["data"], config["data"])


def _errorbar(ax, groups, x_key, y_key, **style):
    """Seed means with min-max bars in ``y`` (and in ``x`` when it varies across seeds)."""
    x = np.array([spread(g, x_key) for g in groups])
    y = np.array([spread(g, y_key) for g in groups])
    return ax.errorbar(
        x[:, 0],
        y[:, 0],
        xerr=[x[:, 0] - x[:, 1], x[:, 2] - x[:, 0]] if np.any(x[:, 2] > x[:, 1]) else None,
        yerr=[y[:, 0] - y[:, 1], y[:, 2] - y[:, 0]],
        capsize=3,
        **style,
    )


def _groups(study: dict, kind: str) -> list[list[dict]]:
    return [g for g in by_setting(study["runs"]) if g[0]["kind"] == kind]


def plot_active_units(results: dict, config: dict):
    """Active units ``Var_x E_q[z_i] > 0.01`` on the held-out rows against sigma2, for the deep VAE
    (fixed and learned, seed means with min-max bars) and the linear VAE (the closed-form count on
    the training spectrum as lines, the closed-form model measured on the held-out rows as squares)."""
    studies = results["studies"]
    fig, axes = new_figure(ncols=len(studies), width=6.8, height=4.6)
    curves = results["closed_form"]
    for ax, study in zip(axes[0], studies):
        k = study["latent_dim"]
        ax.step(
            curves["sigma2"],
            curves["active_units"][str(k)],
            where="post",
            color=COLORS[0],
            label=r"linear VAE, closed form on the training rows: $\#\{\lambda_i > \sigma^2/(1-\tau)\}$",
            **PREDICTION_STYLE,
        )
        linear = study["linear"]["rows"]
        ax.plot(
            [r["sigma2"] for r in linear],
            [r["active_units"] for r in linear],
            "s",
            color=COLORS[0],
            markerfacecolor="none",
            markersize=8,
            label=r"linear VAE optimum, measured on held-out (leftmost: learned $\sigma^2$)",
        )
        _errorbar(
            ax,
            _groups(study, "fixed"),
            "sigma2",
            "active_units",
            fmt="o-",
            color=COLORS[3],
            linewidth=1,
            label=r"deep VAE, fixed $\sigma^2$ (mean, min-max of seeds)",
        )
        for g in _groups(study, "learned"):
            mean_final = spread(g, "sigma2_at_best")[0]
            mean_count = spread(g, "active_units")[0]
            ax.annotate(
                "",
                xy=(mean_final, mean_count),
                xytext=(g[0]["sigma2"], mean_count),
                arrowprops={"arrowstyle": "->", "color": COLORS[2], "lw": 1.2},
            )
        _errorbar(
            ax,
            _groups(study, "learned"),
            "sigma2_at_best",
            "active_units",
            fmt="D",
            color=COLORS[2],
            markersize=6,
            label=r"deep VAE, learned $\sigma^2$ (arrow: initial $\to$ learned)",
        )
        _errorbar(
            ax,
            _groups(study, "annealed"),
            "sigma2",
            "active_units",
            fmt="^",
            color=COLORS[1],
            markersize=7,
            label="deep VAE, fixed, KL annealing",
        )
        log_axis(ax, "x")
        ax.set_xlabel(r"observation noise $\sigma^2$ (learned: at the best checkpoint; log scale)")
        ax.set_ylabel(r"active units on held-out data: $\mathrm{Var}_x\, E_q[z_i] > 0.01$")
        ax.set_ylim(-1, k + 2)
        ax.set_title(f"{_data_name(config)}, K = {k}: active units against the observation noise")
        ax.legend(loc="lower left", fontsize=7.5)
    return fig


def plot_collapse_fraction(results: dict, config: dict):
    """The (epsilon, delta)-collapsed fraction against epsilon of every setting, seed means: fixed
    sigma2 (left) and learned / annealed (right).  These lines are trained models, not the closed
    form; a later curve is drawn thinner over an earlier one, so that coinciding curves stay visible."""
    study = results["studies"][0]
    fig, axes = new_figure(ncols=2, width=5.2, height=4.4)
    eps = results["epsilons"]
    fixed = _groups(study, "fixed")
    cmap = plt.get_cmap("viridis")
    for i, g in enumerate(fixed):
        ax = axes[0, 0]
        ax.step(
            eps,
            np.mean([r["collapsed_fraction"] for r in g], axis=0),
            where="post",
            color=cmap(0.85 * i / max(len(fixed) - 1, 1)),
            linewidth=4.5 - 3.5 * i / max(len(fixed) - 1, 1),
            label=rf"$\sigma^2$ = {g[0]['sigma2']:g}",
        )
    others = _groups(study, "learned") + _groups(study, "annealed")
    for i, g in enumerate(others):
        r0 = g[0]
        label = (
            rf"learned from {r0['sigma2']:g} ($\to$ {spread(g, 'sigma2_at_best')[0]:.3g})"
            if r0["kind"] == "learned"
            else rf"fixed {r0['sigma2']:g}, annealed"
        )
        axes[0, 1].step(
            eps,
            np.mean([r["collapsed_fraction"] for r in g], axis=0),
            where="post",
            color=COLORS[(i + 1) % len(COLORS)],
            linestyle=["-", "--", "-.", ":"][i % 4],
            linewidth=4.0 - 3.0 * i / max(len(others) - 1, 1),
            label=label,
        )
    for ax, title in zip(axes[0], (r"fixed $\sigma^2$", r"learned $\sigma^2$; KL annealing")):
        log_axis(ax, "x", subs=(1.0,))
        ax.set_xlabel(r"$\epsilon$ (nats, log scale)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"trained deep VAEs, {title}")
        ax.legend(loc="upper left", fontsize=7.5, title="trained (mean of seeds)", title_fontsize=7.5)
    axes[0, 0].set_ylabel(r"fraction of latent dimensions $(\epsilon, \delta)$-collapsed")
    fig.suptitle(
        f"{_data_name(config)}, held-out images, K = {study['latent_dim']}, " + r"$\delta$ = 0.01." + "\n"
        "Every line is a trained model (not the closed form); coinciding lines are drawn thinner on top",
        fontsize=10,
    )
    return fig


def _band(ax, step, values, color, label, **style):
    values = np.asarray(values, dtype=np.float64)
    ax.plot(step, values.mean(axis=0), color=color, linewidth=1.8, label=label, **style)
    ax.fill_between(step, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2, linewidth=0)


def plot_annealing(results: dict, config: dict):
    """Active units and the held-out ELBO over training with and without KL annealing at the
    annealed sigma2 (seed means, min-max bands)."""
    study = results["studies"][0]
    annealed = _groups(study, "annealed")[0]
    sigma2 = annealed[0]["sigma2"]
    plain = next((g for g in _groups(study, "fixed") if g[0]["sigma2"] == sigma2), None)
    fig, axes = new_figure(ncols=2, width=4.8, height=3.9)
    step = annealed[0]["history"]["step"]
    for group, color, label in ((annealed, COLORS[1], "KL annealing"), (plain, COLORS[0], "no annealing")):
        if group is None:
            continue
        _band(axes[0, 0], step, [r["history"]["active_units"] for r in group], color, label)
        _band(axes[0, 1], step, [r["history"]["heldout_objective"] for r in group], color, label)
    k = study["latent_dim"]
    tau = results["au_threshold"]
    linear = int(active_count(np.array(results["eigenvalues"]), k, sigma2 / (1 - tau)))
    axes[0, 0].axhline(
        linear, color="0.3", linestyle="--", linewidth=1.2, label=f"linear VAE, closed form: {linear} active units"
    )
    warmup = annealed[0]["warmup"]
    for ax in axes[0]:
        ax.axvline(warmup, color="0.5", linestyle=":", linewidth=1.2)
        ax.set_xlabel("training step")
    axes[0, 0].text(warmup, 1.0, r" $\beta$ reaches 1", color="0.35", fontsize=8)
    axes[0, 0].set_ylabel("active units on held-out data")
    axes[0, 0].set_ylim(-1, k + 2)
    axes[0, 1].set_ylabel(r"held-out ELBO at $\beta$ = 1 (nats per image)")
    objective = np.array([r["history"]["heldout_objective"] for r in annealed + (plain or [])])
    axes[0, 1].set_ylim(np.percentile(objective, 10) - 20, objective.max() + 10)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[0, 1].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        rf"{_data_name(config)}, K = {k}: KL annealing at fixed $\sigma^2$ = {sigma2:g}, $\beta$ from 0 to 1 over "
        f"{warmup} steps (mean and min-max of {len(annealed)} seeds)"
    )
    return fig


def plot_rate_distortion(results: dict, config: dict):
    """Held-out (rate, distortion) of every deep run beside the linear VAE's closed-form frontier on
    the training spectrum and the linear optimum measured on the held-out rows."""
    study = results["studies"][0]
    k = study["latent_dim"]
    fig, axes = new_figure(width=7.4, height=4.8)
    ax = axes[0, 0]
    front = study["linear"]["frontier"]
    draw_frontier(
        ax,
        results["eigenvalues"],
        k,
        trace=results["trace"],
        dim=results["d"],
        theta_range=(min(front["water_level"]), results["eigenvalues"][0]),
        color=COLORS[0],
        label=f"linear VAE optimum on the training spectrum, K = {k} (dots: collapse thresholds)",
    )
    linear = study["linear"]["rows"]
    ax.plot(
        [r["rate"] for r in linear],
        [r["distortion"] for r in linear],
        "s",
        color=COLORS[0],
        markerfacecolor="none",
        markersize=8,
        label="linear VAE optimum, measured on held-out",
    )
    for kind, fmt, color, label in (
        ("fixed", "o", COLORS[3], r"deep VAE, fixed $\sigma^2$"),
        ("learned", "D", COLORS[2], r"deep VAE, learned $\sigma^2$"),
        ("annealed", "^", COLORS[1], "deep VAE, KL annealing"),
    ):
        _errorbar(ax, _groups(study, kind), "rate", "distortion", fmt=fmt, color=color, markersize=6, label=label)
    for g in _groups(study, "fixed"):
        ax.annotate(
            f"{g[0]['sigma2']:g}",
            (spread(g, "rate")[0], spread(g, "distortion")[0]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
            color=COLORS[3],
        )
    ax.set_xlabel("rate: held-out total KL (nats per image)")
    ax.set_ylabel("distortion: held-out squared error per image (pixel units)")
    ax.set_title(
        f"{_data_name(config)}, K = {k}: rate and distortion on held-out data.  The frontier is optimal "
        "for Gaussian data\nof this covariance with a linear code; a deep VAE on non-Gaussian images "
        "can lie below it",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=7.5)
    return fig
