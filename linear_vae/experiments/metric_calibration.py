"""Calibration of the collapse-metric estimators against their exact values.

Claim (docs/theory.md (T11, T12)): the sampling estimators that deep-VAE papers use -- Monte-Carlo rate
and distortion, active units from the variance of encoder means, the minibatch mutual information
in its two forms and the importance-weighted bound -- have biases and spreads that depend on the
batch size ``B`` and the sample count ``K``; the linear VAE, where every metric is exact, measures
them.  Two settings:

* **Gaussian data** ``x ~ N(mu, S)`` with a known spectrum (``S`` diagonal: every estimator is
  rotation invariant), at the beta-ELBO optimum for that spectrum (docs/theory.md (T4.1)) at two
  water levels: one with ``I`` about 1.3 nats, one with about 6.  Exact values from the population
  moments ((T11.1)-(T11.4)); the estimators see fresh samples.  beta = 2, so ``q(z|x)`` is not the
  posterior and the IWAE bound has a bias to measure: its ``K = 1`` value is the ELBO gap and its
  tail ``chi2 / (2K)`` ((T12.4)), with the chi-square divergence in closed form below.
* **MNIST** (the shipped digits as the population, minibatches drawn without replacement), at the
  optimum for their spectrum: only the moment-exact rate, distortion and active units.

Every grid over seeds (and cases) is one ``jit``-compiled, ``vmap``-ped call per batch size or
sample count (the array shapes change with them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.data.moments import LOG_2PI
from linear_vae.experiments.common import data_description, load_problem
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, log_axis, new_figure
from linear_vae.theory.elbo import kl_per_datapoint
from linear_vae.theory.estimators import (
    MI_ROW_BLOCK,
    active_unit_variances,
    diagonal_gaussian_log_density,
    distortion_mc,
    iwae_bound,
    kl_rate_mc,
    linear_model,
    mutual_information_minibatch,
    posterior_chi2_at_optimum,
)
from linear_vae.theory.metrics import AU_THRESHOLD, collapse_metrics, optimum_collapse_metrics
from linear_vae.theory.optimum import beta_elbo_optimum

NAME = "metric_calibration"
TITLE = "Collapse-metric estimators against their exact values: bias and spread against batch size and samples"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "spectrum": [4.0, 0.6, 16],  # lambda_i = 4 * 0.6^i, i = 0..15: d = 16
    "latent_dim": 4,
    "cases": [[2.0, 0.5], [2.0, 0.05]],  # (beta, sigma2): water level t = 1 (I = 1.3 nats) and t = 0.1 (I = 5.9)
    "batch_sizes": [16, 64, 256, 1024, 4096],
    "seeds": 24,
    "mc_rows": 256,
    "mc_samples": [1, 4, 16, 64],
    "iwae_rows": 1024,
    "iwae_samples": [1, 3, 10, 30, 100, 300, 1000],
    "iwae_seeds": 8,
    "mnist": {"data": "mnist", "n": 5000, "subset_seed": 0, "latent_dim": 64, "beta": 1.0, "sigma2": 0.3},
    "mnist_batch_sizes": [16, 64, 256, 1024, 4096],
    "seed": 0,
}
#: Seeds of the batch grid run together are limited to keep the minibatch-MI blocks near this many
#: elements per case (about 64 MB in float64).
SEED_BLOCK_ELEMENTS = 2**23
QUICK = {
    "batch_sizes": [256],
    "seeds": 16,
    "mc_samples": [],  # the samples-of-z grid only at full budget (the quick run keeps to a few compilations)
    "iwae_samples": [1],
    "iwae_seeds": 4,
    "mnist_batch_sizes": [64],
}


# --- the model and the exact values --------------------------------------------------------------
def population(config: dict):
    """Eigenvalues and mean of the Gaussian population (``S = diag(eigenvalues)``)."""
    top, ratio, d = config["spectrum"]
    eigenvalues = top * ratio ** np.arange(int(d))
    mean = np.random.default_rng(config["seed"]).standard_normal(int(d))
    return eigenvalues, mean


def exact_synthetic(eigenvalues, k: int, beta: float, sigma2: float) -> dict:
    """Exact population values at the optimum ((T11.4)), plus the IWAE references ((T12.4))."""
    metrics = optimum_collapse_metrics(eigenvalues, k, beta * sigma2)
    opt_beta1 = beta_elbo_optimum(eigenvalues, k, beta, sigma2)
    # log p(x) under N(mu, W W^T + sigma2 I) and the beta = 1 ELBO of the same parameters, averaged over
    # the population: the ELBO gap E_x KL(q || p(z|x)) is the IWAE bias at K = 1.
    elbo_beta1 = -0.5 * len(eigenvalues) * (LOG_2PI + np.log(sigma2)) - metrics["distortion"] / (2 * sigma2)
    elbo_beta1 -= metrics["rate"]
    chi2 = posterior_chi2_at_optimum(eigenvalues, k, beta, sigma2)
    return {
        **metrics,
        "log_likelihood": opt_beta1.mll,
        "elbo_beta1": float(elbo_beta1),
        "iwae_bias_k1": float(opt_beta1.mll - elbo_beta1),
        "chi2": chi2,
    }


# --- the estimators on a grid of seeds -------------------------------------------------------------
def moment_estimates(rate_key, distortion_key, x, mean, log_var, decode) -> dict:
    """The estimators that need only the encoder's outputs ``mean``, ``log_var`` on the batch ``x``:
    rate and distortion (one sample of z each) and the AU variances and count."""
    variances = active_unit_variances(mean)
    return {
        "rate": kl_rate_mc(rate_key, mean, log_var),
        "distortion": distortion_mc(distortion_key, x, mean, log_var, decode),
        "au_variances": variances,
        "active_units": jnp.sum(variances > AU_THRESHOLD),
    }


def batch_estimates(key, params, draw, batch: int, sigma2):
    """Every batch-size estimator on one fresh batch: :func:`moment_estimates` and the two minibatch
    MI forms (sharing their z)."""
    data_key, rate_key, distortion_key, mi_key = jax.random.split(key, 4)
    x = draw(data_key, batch)
    encode, decode, _ = linear_model(params, sigma2)
    mean, log_var = encode(x)
    return {
        **moment_estimates(rate_key, distortion_key, x, mean, log_var, decode),
        "mi_include_self": mutual_information_minibatch(mi_key, mean, log_var, include_self=True),
        "mi_exclude_self": mutual_information_minibatch(mi_key, mean, log_var, include_self=False),
    }


def sample_count_errors(key, params, draw, rows: int, samples: int, sigma2):
    """MC rate and distortion with ``samples`` draws of z per row, minus their exact values on the same
    rows (the analytic KL and the per-row (T11.1) distortion): the error of the z-sampling alone."""
    data_key, rate_key, distortion_key = jax.random.split(key, 3)
    x = draw(data_key, rows)
    encode, decode, _ = linear_model(params, sigma2)
    mean, log_var = encode(x)
    W, mu, _, log_D = params
    residual = (x - mu) - mean @ W.T  # A (x - mu): the error of the mean reconstruction
    rows_distortion = jnp.mean(jnp.sum(residual**2, axis=-1)) + jnp.sum(jnp.exp(log_D) * jnp.sum(W**2, axis=0))
    rows_rate = jnp.mean(jnp.sum(kl_per_datapoint(params, x), axis=-1))
    return {
        "rate": kl_rate_mc(rate_key, mean, log_var, samples) - rows_rate,
        "distortion": distortion_mc(distortion_key, x, mean, log_var, decode, samples) - rows_distortion,
    }


def iwae_error(key, params, draw, rows: int, samples: int, sigma2, marginal_variances):
    """``log p(x) - L_K(x)`` averaged over ``rows`` fresh rows (``log p(x)`` the exact pPCA density)."""
    data_key, iwae_key = jax.random.split(key)
    x = draw(data_key, rows)
    encode, decode, _ = linear_model(params, sigma2)
    exact = diagonal_gaussian_log_density(x, params.mu, jnp.log(marginal_variances))
    return jnp.mean(exact - iwae_bound(iwae_key, x, encode, decode, sigma2, samples))


def summarise(grid: list, case: int | None = None) -> dict:
    """``{name: {mean, sd, min, max}}``, each a list over the grid (batch sizes or sample counts) of the
    statistic over seeds; ``grid[i][name]`` has axes (cases, seeds, ...) or (seeds, ...)."""
    out = {}
    for name in grid[0] if grid else ():
        values = [np.asarray(g[name], dtype=np.float64) for g in grid]
        if case is not None:
            values = [v[case] for v in values]
        out[name] = {
            "mean": [v.mean(0).tolist() for v in values],
            "sd": [v.std(0, ddof=1).tolist() for v in values],
            "min": [v.min(0).tolist() for v in values],
            "max": [v.max(0).tolist() for v in values],
        }
    return out


def stack_params(params_list):
    """Parameters of several cases stacked on a leading axis (a pytree to ``vmap`` over)."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack([jnp.asarray(a) for a in leaves]), *params_list)


def run_synthetic(config: dict, progress=None) -> dict:
    eigenvalues, mean = population(config)
    d, k = len(eigenvalues), config["latent_dim"]
    cases = [tuple(map(float, case)) for case in config["cases"]]
    optima = [beta_elbo_optimum(eigenvalues, k, beta, sigma2) for beta, sigma2 in cases]
    params = stack_params([opt.parameters(mean, np.eye(d)) for opt in optima])
    sigma2s = jnp.array([sigma2 for _, sigma2 in cases])
    # W W^T + sigma2 I is diagonal here: the model's per-row log p(x) is a diagonal Gaussian density.
    marginal_variances = jnp.stack(
        [jnp.asarray(np.pad(opt.column_variances, (0, d - k)) + opt.sigma2) for opt in optima]
    )
    scale = jnp.sqrt(jnp.asarray(eigenvalues))

    def draw(key, n):
        return jnp.asarray(mean) + jax.random.normal(key, (n, d)) * scale

    root = jax.random.key(config["seed"])
    batch_keys = jax.random.split(jax.random.fold_in(root, 0), config["seeds"])
    sample_keys = jax.random.split(jax.random.fold_in(root, 1), config["seeds"])
    iwae_keys = jax.random.split(jax.random.fold_in(root, 2), config["iwae_seeds"])

    def grid_over(estimate, keys, phase, seed_block=None):
        """``estimate(key, params, sigma2, variances)`` on every (case, seed): one compiled call, the
        seeds ``seed_block`` at a time (bounding memory; all at once by default)."""
        if progress is not None:
            progress.phase(phase)

        def per_case(p, s2, v):
            return jax.lax.map(lambda key: estimate(key, p, s2, v), keys, batch_size=seed_block)

        return jax.device_get(jax.jit(jax.vmap(per_case))(params, sigma2s, marginal_variances))

    by_batch = [
        grid_over(
            lambda key, p, s2, v, b=batch: batch_estimates(key, p, draw, b, s2),
            batch_keys,
            f"Gaussian, B = {batch}",
            seed_block=max(1, min(config["seeds"], SEED_BLOCK_ELEMENTS // (batch * MI_ROW_BLOCK * k))),
        )
        for batch in config["batch_sizes"]
    ]
    by_samples = [
        grid_over(
            lambda key, p, s2, v, s=samples: sample_count_errors(key, p, draw, config["mc_rows"], s, s2),
            sample_keys,
            f"Gaussian, {samples} samples of z per row",
        )
        for samples in config["mc_samples"]
    ]
    iwae = [
        {
            "bias": grid_over(
                lambda key, p, s2, v, s=samples: iwae_error(key, p, draw, config["iwae_rows"], s, s2, v),
                iwae_keys,
                f"Gaussian, IWAE with K = {samples}",
            )
        }
        for samples in config["iwae_samples"]
    ]
    return {
        "eigenvalues": eigenvalues.tolist(),
        "mean": mean.tolist(),
        "latent_dim": k,
        "cases": [
            {
                "beta": beta,
                "sigma2": sigma2,
                "water_level": beta * sigma2,
                "exact": exact_synthetic(eigenvalues, k, beta, sigma2),
                "by_batch": summarise(by_batch, c),
                "by_samples": summarise(by_samples, c),
                "iwae": summarise(iwae, c)["bias"],
            }
            for c, (beta, sigma2) in enumerate(cases)
        ],
    }


def minibatch_estimates(key, X, params, batch: int, sigma2):
    """:func:`moment_estimates` on ``batch`` rows of ``X`` drawn without replacement."""
    rows_key, rate_key, distortion_key = jax.random.split(key, 3)
    x = X[jax.random.choice(rows_key, X.shape[0], (batch,), replace=False)]
    encode, decode, _ = linear_model(params, sigma2)
    return moment_estimates(rate_key, distortion_key, x, *encode(x), decode)


def run_mnist(config: dict, progress=None) -> dict:
    setting = config["mnist"]
    problem = load_problem(setting)
    k, beta, sigma2 = setting["latent_dim"], setting["beta"], setting["sigma2"]
    params = beta_elbo_optimum(problem.eigenvalues, k, beta, sigma2).parameters(
        problem.mean, problem.spectrum.eigenvectors
    )
    exact = collapse_metrics(params, problem.mean, problem.cov)  # (T11.1, T11.2) on the digits' moments
    X = jnp.asarray(problem.dataset.X)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(config["seed"]), 3), config["seeds"])
    grid = []
    for batch in config["mnist_batch_sizes"]:
        if progress is not None:
            progress.phase(f"MNIST, B = {batch}")
        one = jax.jit(jax.vmap(lambda key, X, p, b=batch: minibatch_estimates(key, X, p, b, sigma2), (0, None, None)))
        grid.append(jax.device_get(one(keys, X, params)))
    return {
        **data_description(problem, setting),
        "beta": beta,
        "sigma2": sigma2,
        "exact": {name: exact[name] for name in ("rate", "distortion", "active_units", "au_variances")},
        "batch_sizes": list(config["mnist_batch_sizes"]),
        "by_batch": summarise(grid),
    }


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    if progress is not None:
        progress.task(NAME)
    return {
        "batch_sizes": list(config["batch_sizes"]),
        "mc_samples": list(config["mc_samples"]),
        "iwae_samples": list(config["iwae_samples"]),
        "seeds": config["seeds"],
        "iwae_seeds": config["iwae_seeds"],
        "au_threshold": AU_THRESHOLD,
        "gaussian": run_synthetic(config, progress),
        "mnist": run_mnist(config, progress),
    }


# --- figure --------------------------------------------------------------------------------------
ESTIMATED_STYLE = {"marker": "o", "markersize": 4.5, "capsize": 2.5, "linestyle": "-", "linewidth": 0.9}


def _errorbar(ax, x, stats, color, label, scale=1.0, offset=0.0):
    mean = (np.asarray(stats["mean"], dtype=float) - offset) / scale
    ax.errorbar(x, mean, yerr=np.asarray(stats["sd"]) / abs(scale), color=color, label=label, **ESTIMATED_STYLE)


def _resolution_band(ax, x, sd, seeds: int) -> None:
    """Shade below two standard errors of a mean over ``seeds`` draws: a |mean - exact| inside the
    band is what sampling alone gives, not a measured bias (on a log axis there is no zero line).
    Call it after the panel's lines and scale: it keeps the y range they set, widened downwards to
    leave the legend room below the data."""
    low, high = ax.get_ylim()
    low /= 10
    ax.fill_between(
        x,
        np.full(len(x), low),
        2 * np.asarray(sd) / np.sqrt(seeds),
        color="0.6",
        alpha=0.25,
        linewidth=0,
        label=f"rate: 2 standard errors of a mean of {seeds}; a bias inside is not resolved",
    )
    ax.set_ylim(low, high)


def _mi_panel(ax, results, case):
    B = np.asarray(results["batch_sizes"])
    exact = case["exact"]["mutual_information_gaussian"]
    ax.axhline(exact, color="0.2", **PREDICTION_STYLE, label=f"exact $I(x;z)$ = {exact:.2f} nats")
    ax.plot(B, np.log(B), color="0.5", linestyle=":", label=r"$\log B$ (ceiling of include-self)")
    _errorbar(ax, B, case["by_batch"]["mi_include_self"], COLORS[0], "include self (InfoNCE; common form)")
    _errorbar(ax, B, case["by_batch"]["mi_exclude_self"], COLORS[1], "exclude self (leave-one-out)")
    log_axis(ax, "x", subs=(1.0,))
    top = max(2.2 * exact, 3.0)
    ax.set_ylim(0, top)
    if np.log(B[0]) < top < np.log(B[-1]):  # say where the ceiling leaves the panel
        leaves = float(np.exp(top))
        ax.annotate(
            f"log B passes {top:.1f} nats at B = {leaves:.0f} ↑",
            (leaves, top),
            xytext=(6, -12),
            textcoords="offset points",
            color="0.4",
            fontsize=7.5,
        )
    for b, m, sd in zip(B, case["by_batch"]["mi_exclude_self"]["mean"], case["by_batch"]["mi_exclude_self"]["sd"]):
        if m > top:  # say where an off-scale estimate is rather than squash the panel
            ax.annotate(
                f"B = {b}: {m:.1f} ± {sd:.1f} ↑",
                (b, top),
                xytext=(4, -12),
                textcoords="offset points",
                color=COLORS[1],
                fontsize=7.5,
            )
    ax.set_xlabel("batch size B (log scale)")
    ax.set_ylabel("mutual information (nats)")
    ax.set_title(f"Minibatch MI, Gaussian data, $I$ = {exact:.2f} nats")
    ax.legend(loc="upper right" if exact > 3 else "lower right")


def plot(results: dict, config: dict):
    fig, axes = new_figure(ncols=3, nrows=2, width=5.0, height=3.9)
    gaussian, mnist = results["gaussian"], results["mnist"]
    cases = gaussian["cases"]
    B = np.asarray(results["batch_sizes"])

    # (a, b) the two MI forms against B, at a low and a high information.
    _mi_panel(axes[0, 0], results, cases[0])
    _mi_panel(axes[0, 1], results, cases[1])

    # (c) the IWAE bias against K, with its first-order prediction chi2 / (2K) and the exact K = 1 gap.
    ax = axes[0, 2]
    K = np.asarray(results["iwae_samples"], dtype=float)
    curve = np.geomspace(K[0], K[-1], 100)
    for i, case in enumerate(cases):
        color, exact = COLORS[2 * i], case["exact"]
        label = f"$I$ = {exact['mutual_information_gaussian']:.2f}"
        ax.plot(curve, exact["chi2"] / (2 * curve), color=color, **PREDICTION_STYLE, label=rf"{label}: $\chi^2/(2K)$")
        ax.plot([1], [exact["iwae_bias_k1"]], "x", color=color, markersize=9, label=f"{label}: exact ELBO gap (K = 1)")
        _errorbar(ax, K, case["iwae"], color, f"{label}: estimated (mean ± sd)")
    log_axis(ax, "x", subs=(1.0,))
    ax.set_yscale("log", nonpositive="clip")
    ax.set_xlabel("importance samples K (log scale)")
    ax.set_ylabel(r"bias $\log p(x) - L_K$ (nats per datapoint)")
    ax.set_title(f"IWAE bound, Gaussian data ({config['iwae_rows']} rows per estimate)")
    ax.legend(loc="upper right", fontsize=7.5)

    # (d) rate, distortion and AU variance against B: bias and spread relative to the exact value.
    ax = axes[1, 0]
    case = cases[0]
    for j, (name, label) in enumerate((("rate", "rate"), ("distortion", "distortion"))):
        exact = case["exact"][name]
        stats = case["by_batch"][name]
        ax.plot(B, np.asarray(stats["sd"]) / exact, "o-", color=COLORS[j], label=f"{label}: sd / exact")
        bias = np.abs(np.asarray(stats["mean"]) - exact) / exact
        ax.plot(
            B, bias, "s--", color=COLORS[j], markerfacecolor="none", label=f"{label}: |mean over seeds - exact| / exact"
        )
    first = case["by_batch"]["rate"]["sd"][0] / case["exact"]["rate"]
    ax.plot(B, first * np.sqrt(B[0] / B), color="0.4", **PREDICTION_STYLE, label=r"$\propto B^{-1/2}$")
    log_axis(ax, "x", subs=(1.0,))
    ax.set_yscale("log")
    _resolution_band(ax, B, np.asarray(case["by_batch"]["rate"]["sd"]) / case["exact"]["rate"], config["seeds"])
    ax.set_xlabel("batch size B (log scale; 1 sample of z per row)")
    ax.set_ylabel("relative error (log scale)")
    ax.set_title(f"Rate and distortion, Gaussian data, $I$ = {case['exact']['rate']:.2f} nats")
    ax.legend(loc="lower left", fontsize=7.5)

    # (e) the z-sampling error alone against the number of samples per row.
    ax = axes[1, 1]
    S = np.asarray(results["mc_samples"], dtype=float)
    if not len(S):
        ax.text(0.5, 0.5, "samples-of-z grid: full budget only", ha="center", va="center", transform=ax.transAxes)
        S = np.array([1.0, 64.0])
        ax.set_xlim(1, 64)
        ax.set_ylim(1e-3, 1e-1)
    for j, (name, unit) in enumerate((("rate", "nats"), ("distortion", "squared units")) if case["by_samples"] else ()):
        stats = case["by_samples"][name]
        ax.plot(S, stats["sd"], "o-", color=COLORS[j], label=f"{name}: sd ({unit})")
        ax.plot(S, np.abs(stats["mean"]), "s--", color=COLORS[j], markerfacecolor="none", label=f"{name}: |mean error|")
        ax.plot(S, stats["sd"][0] / np.sqrt(S), color=COLORS[j], alpha=0.5, **PREDICTION_STYLE)
    ax.plot([], [], color="0.4", **PREDICTION_STYLE, label=r"$\propto S^{-1/2}$ from S = 1")
    log_axis(ax, "x", subs=(1.0,))
    ax.set_yscale("log")
    if case["by_samples"]:
        _resolution_band(ax, S, np.asarray(case["by_samples"]["rate"]["sd"]), config["seeds"])
    ax.set_xlabel(f"samples of z per row S (log scale; {config['mc_rows']} rows)")
    ax.set_ylabel("error against the rows' exact value")
    ax.set_title("Rate and distortion: the z-sampling error")
    ax.legend(loc="lower left", fontsize=7.5)

    # (f) MNIST: moment-exact rate, distortion and active units against minibatch estimates.
    ax = axes[1, 2]
    Bm = np.asarray(mnist["batch_sizes"])
    for j, name in enumerate(("rate", "distortion")):
        _errorbar(ax, Bm, mnist["by_batch"][name], COLORS[j], f"{name} (estimate / exact)", scale=mnist["exact"][name])
    exact_au = mnist["exact"]["active_units"]
    _errorbar(
        ax,
        Bm,
        mnist["by_batch"]["active_units"],
        COLORS[3],
        f"active units (estimate / exact {exact_au})",
        scale=exact_au,
    )
    ax.axhline(1.0, color="0.2", **PREDICTION_STYLE, label="exact (moments of all digits)")
    log_axis(ax, "x", subs=(1.0,))
    ax.set_xlabel("minibatch size B (log scale)")
    ax.set_ylabel("estimate / exact value")
    ax.set_title(
        f"MNIST ({mnist['n']} digits), {config['mnist']['latent_dim']} latents, "
        f"$\\beta\\sigma^2$ = {mnist['beta'] * mnist['sigma2']:g}"
    )
    ax.legend(loc="lower right", fontsize=7.5)
    return fig
