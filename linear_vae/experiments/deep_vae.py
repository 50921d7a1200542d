"""Deep VAE: posterior collapse against the observation noise, fixed, learned and annealed, every
run trained until it stops by rule, chosen on validation images and measured on test images,
next to the linear VAE.

Claim (Lucas et al. 2019, Section 6 and Table 1): what the linear VAE shows in closed form carries
over to deep Gaussian VAEs.  A larger ``sigma2`` collapses more latent dimensions (the linear
count is ``#{lambda_i > sigma2}`` at beta = 1), learning ``sigma2`` mitigates collapse but a large
initial ``sigma2`` still collapses, and KL annealing only delays collapse.

The set-up (docs/theory.md (T16)):

* **three disjoint splits** of the shipped 5,000 images (:func:`linear_vae.data.datasets.three_way_split`,
  class-balanced): 4,000 train the networks and fit the linear closed form, 500 validation images
  decide when a run stops and which checkpoint it is reported at, 500 test images are only measured;
* **a stopping rule** (:mod:`linear_vae.deep.stopping`): a run stops once its validation ELBO has not
  improved by more than 0.1 nats for 3,000 steps and, when sigma2 is learned, its window means of
  log sigma2 have settled; a run that reaches 20,000 steps first is *not converged* and no claim
  rests on it.  Finished runs leave the vmapped grid (:func:`linear_vae.training.loop.run_until_stopped`)
  and the grid is checkpointed beside the output, so ``--resume`` continues an interrupted study;
* **learned sigma2 with the step size as a factor**: starts 0.01, 3 and 10, each under Adam on
  log sigma2 at several step sizes and under the exact update (sigma2 set to the minibatch's squared
  error per pixel after every step), so a deficit of a large start can be told from a slow sigma2;
* **annealing** at sigma2 = 1, against the fixed-sigma2 runs at 1 with the same seeds.

Every run is measured at its best validation checkpoint on the test images by
:func:`linear_vae.theory.metrics.heldout_measures` (counts, per-dimension KL, rate, distortion, ELBO, IWAE,
MI).  The linear VAE is the closed-form optimum on the training images, measured on the same test
images exactly and by the same estimators.  Seed summaries are means with 95% t-intervals
(:func:`interval`), and the generated claims state a direction only where two intervals do not
overlap.  Networks in float32.  :data:`CONFIG`'s ``data`` selects MNIST (``deep_vae``) or
Fashion-MNIST (``deep_vae_fashion``, standing in for the paper's CelebA).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

from linear_vae.core.io import atomic_write_json
from linear_vae.data.datasets import load_data, three_way_split
from linear_vae.data.moments import compute_moments
from linear_vae.data.problem import Problem
from linear_vae.deep.deep import DeepHyper, measure_grid, train_until_stopped
from linear_vae.deep.stopping import (
    CAP,
    CONVERGED,
    RULE_VERSION,
    StoppingRule,
    decide,
    format_interval,
    interval,
    separated,
)
from linear_vae.experiments.common import data_name, deep_config
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, draw_frontier, log_axis, mark_quick, new_figure
from linear_vae.theory import metrics
from linear_vae.theory.collapse import (
    DEFAULT_DELTA,
    DEFAULT_EPSILON,
    collapsed_fraction_curve,
    encoder_kl_matrix,
    epsilon_delta_collapsed,
)
from linear_vae.theory.metrics import heldout_measures
from linear_vae.theory.optimum import active_by_threshold, beta_elbo_optimum, learned_sigma2
from linear_vae.theory.ppca import log_marginal_likelihood

NAME = "deep_vae"
TITLE = (
    "Deep Gaussian VAE on MNIST, every run stopped by rule: collapse against sigma2, learned sigma2 at several "
    "step sizes, KL annealing, next to the linear VAE"
)
#: Training is checkpointed beside the output and resumed (:func:`linear_vae.experiments.runner.run_experiment`).
RESUMABLE = True
#: Marks the JSON layout of this study (runs stopped by rule, three splits).
SCHEMA = "stopped-by-rule/1"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "mnist",
    "n_validation": 500,
    "n_test": 500,
    "split_seed": 0,  # 4,000 training / 500 validation / 500 test images, class-balanced
    "latent_dim": 32,
    "hidden": [512, 256],
    "activation": "relu",
    "log_every": 100,  # a validation record (and checkpoint candidate) every 100 steps
    "batch_size": 100,
    "learning_rate": 1e-3,
    "rule": {"patience": 3000, "tolerance": 0.1, "window": 1500, "sigma2_tolerance": 0.01, "max_steps": 20000},
    "drop_finished": True,  # finished runs leave the grid (a compilation per padded grid size)
    "part_sigma2": 0.3,  # the parts (PARTS) divide sigma2 here; each part is a grid of its own
    "checkpoint_minutes": 5,
    "fixed_sigma2s": [0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
    "fixed_seeds": [0, 1, 2, 3, 4],
    "learned_sigma2_inits": [0.01, 3.0, 10.0],
    "sigma2_step_sizes": [1e-3, 1e-2, 3e-2, "exact"],  # Adam on log sigma2, or the exact update
    "learned_seeds": [0, 1, 2],
    "annealed_sigma2": 1.0,
    "warmup": 2000,  # KL weight from 0 to 1 over the first 2,000 steps
    "iwae_samples": 100,
    "distortion_samples": 10,
    "measure_seed": 0,
    "au_half": 0.5,  # the "half the units" level of the active-unit count
    "epsilons": [1e-4, 10.0, 41],  # log-spaced START, STOP, NUM (nats)
}
QUICK = {
    "hidden": [64, 32],
    "log_every": 20,
    "rule": {"patience": 100, "tolerance": 0.1, "window": 60, "sigma2_tolerance": 0.01, "max_steps": 300},
    "drop_finished": False,  # one compilation; the dropping is tested in tests/test_stopping.py
    "part_sigma2": 0.01,  # every quick run in a "large" part: two grids, two compilations
    "fixed_sigma2s": [0.1, 1.0],
    "fixed_seeds": [0, 1],
    "learned_sigma2_inits": [3.0],
    "sigma2_step_sizes": [1e-2, "exact"],
    "learned_seeds": [0, 1],
    "warmup": 60,
    "iwae_samples": 8,
    "distortion_samples": 2,
    "epsilons": [1e-4, 10.0, 11],
}

KINDS = ("fixed", "learned", "annealed")
#: The study trains in parts, each its own grid, in this order: the fixed runs at large sigma2 with
#: the annealed ones (most stop early), the fixed runs at small sigma2, and the learned runs from a
#: small and from a large start.  A finished part's measured runs are written to
#: ``<name>.part-<part>.json`` beside the output (:func:`part_path`) and are not trained again, so a
#: study longer than one sitting, or than one machine's life, loses at most the part it was
#: training (and, within that part, no more than the minutes since its last checkpoint).  The parts
#: divide the compute, not the science: every summary reads the runs of all of them.
PARTS = ("fixed-large-sigma2", "fixed-small-sigma2", "learned-small-start", "learned-large-start")
#: The settings that name a run (a configuration of :func:`grid`).
SETTING = ("kind", "sigma2", "sigma2_step", "warmup", "seed")


def part_of(run: dict, config: dict) -> str:
    """The part of :data:`PARTS` that trains ``run``: ``config["part_sigma2"]`` divides the fixed
    sigma2 values and the starting values of the learned ones."""
    size = "small" if run["sigma2"] < config["part_sigma2"] else "large"
    if run["kind"] == "learned":
        return f"learned-{size}-start"
    return "fixed-large-sigma2" if run["kind"] == "annealed" else f"fixed-{size}-sigma2"


#: The configuration keys that fix what is trained: a checkpoint resumes only under the same ones.
TRAINING_KEYS = (
    "data", "n_validation", "n_test", "split_seed", "latent_dim", "hidden", "activation", "log_every",
    "batch_size", "learning_rate", "rule", "drop_finished", "fixed_sigma2s", "fixed_seeds",
    "learned_sigma2_inits", "sigma2_step_sizes", "learned_seeds", "annealed_sigma2", "warmup",
)  # fmt: skip


def grid(config: dict, part: str | None = None) -> list[dict]:
    """Every trained configuration (of one ``part`` of :data:`PARTS`, or all): its kind, sigma2
    (fixed or initial), step size on log sigma2 (``None`` when fixed), warm-up steps and seed."""
    fixed = [
        {"kind": "fixed", "sigma2": s, "sigma2_step": None, "warmup": 0, "seed": seed}
        for s in config["fixed_sigma2s"]
        for seed in config["fixed_seeds"]
    ]
    learned = [
        {"kind": "learned", "sigma2": s, "sigma2_step": step, "warmup": 0, "seed": seed}
        for s in config["learned_sigma2_inits"]
        for step in config["sigma2_step_sizes"]
        for seed in config["learned_seeds"]
    ]
    annealed = [
        {"kind": "annealed", "sigma2": config["annealed_sigma2"], "sigma2_step": None, "warmup": config["warmup"]}
        | {"seed": seed}
        for seed in config["fixed_seeds"]
    ]
    return [g for g in fixed + learned + annealed if part is None or part_of(g, config) == part]


def checkpoint_identity(config: dict, part: str) -> str:
    """What a resumed grid, or a saved part, must have been started with: the training keys of
    ``config``, the part's name and the version of the stopping rule."""
    keys = {k: config[k] for k in TRAINING_KEYS} | {"part": part, "rule_version": RULE_VERSION}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


def settings(runs: list[dict]) -> list[tuple]:
    """What names each run (:data:`SETTING`), in order."""
    return [tuple(run[key] for key in SETTING) for run in runs]


def part_path(checkpoint: Path, part: str) -> Path:
    """Where a finished part is kept: beside the checkpoint, named after the experiment and part."""
    return checkpoint.with_name(checkpoint.name.replace(".checkpoint.pkl", f".part-{part}.json"))


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None, checkpoint: Path | None = None, finished_only: bool = False) -> dict:
    """Train the grid until every run has stopped (resuming from ``checkpoint`` when it exists and
    was written for this configuration), then measure every run and the linear optimum on the test
    images.  ``finished_only``: train nothing, and report the parts already finished beside
    ``checkpoint`` (``results["missing_parts"]`` names the others)."""
    splits = three_way_split(load_data(config["data"]), config["n_validation"], config["n_test"], config["split_seed"])
    problem = Problem.from_dataset(splits.train)
    epsilons = np.geomspace(*config["epsilons"][:2], int(config["epsilons"][2]))
    k = config["latent_dim"]
    if progress:
        progress.task(f"{NAME}: deep VAEs, K = {k}")
    deep = deep_study(config, splits, epsilons, progress, checkpoint, finished_only)
    return {
        "schema": SCHEMA,
        "split": {
            "seed": config["split_seed"],
            "n_train": splits.train.n,
            "n_validation": splits.validation.n,
            "n_test": splits.test.n,
            "rows": {name: rows.tolist() for name, rows in splits.rows.items()},
        },
        "d": splits.train.d,
        "latent_dim": k,
        "eigenvalues": problem.eigenvalues.tolist(),
        "trace": problem.trace,
        "epsilons": epsilons.tolist(),
        "epsilon": DEFAULT_EPSILON,
        "delta": DEFAULT_DELTA,
        "au_threshold": metrics.AU_THRESHOLD,
        "closed_form": closed_form_curves(config, problem.eigenvalues),
        **deep,
        "linear": linear_study(config, problem, k, splits.test.X, epsilons),
    }


def counts(kl: np.ndarray, au_variances: np.ndarray) -> dict:
    """The three counts of active dimensions, from the (N, k) KL matrix and the (k,) AU variances."""
    return {
        "eps_delta_active": int(kl.shape[1] - epsilon_delta_collapsed(kl, DEFAULT_EPSILON, DEFAULT_DELTA).sum()),
        "mean_kl_active": int(np.sum(kl.mean(axis=0) > DEFAULT_EPSILON)),
        "active_units": int(np.sum(au_variances > metrics.AU_THRESHOLD)),
    }


#: Records before the stop over which each count's range is reported (a count that swings says so).
LAST_RECORDS = 10


def train(config: dict, splits, part: str, progress=None, checkpoint=None):
    """Train every configuration of one part of :func:`grid` until it stops by rule
    (:func:`linear_vae.deep.deep.train_until_stopped`), resuming from ``checkpoint`` if it exists."""
    configs = grid(config, part)
    hyper = DeepHyper(
        np.array([g["sigma2"] for g in configs]),
        np.array([g["kind"] == "learned" and g["sigma2_step"] != "exact" for g in configs], float),
        np.array([g["warmup"] for g in configs], float),
        np.array([g["seed"] for g in configs]),
        sigma2_step_size=np.array([g["sigma2_step"] if isinstance(g["sigma2_step"], float) else 0.0 for g in configs]),
        exact_sigma2=np.array([g["sigma2_step"] == "exact" for g in configs], float),
    )
    dc = deep_config(
        config, latent_dim=config["latent_dim"], hidden=tuple(config["hidden"]), activation=config["activation"]
    )
    rule = StoppingRule(**config["rule"])
    result = train_until_stopped(
        dc,
        hyper,
        splits.train.X,
        splits.validation.X,
        rule,
        checkpoint=checkpoint,
        identity=checkpoint_identity(config, part),
        progress=progress,
        drop_finished=config["drop_finished"],
        checkpoint_seconds=60.0 * config["checkpoint_minutes"],
    )
    return configs, dc, result


#: The counts of :func:`study_part`'s ``training`` that add up over parts.
ADDITIVE = ("seconds", "compile_seconds", "configuration_steps", "lane_steps", "cap_steps")


def deep_study(config: dict, splits, epsilons, progress, checkpoint, finished_only: bool = False) -> dict:
    """Train and measure every part of the grid (:data:`PARTS`), taking a part from its saved file
    (:func:`part_path`) where an earlier process finished it for the same configuration, and
    saving each part it finishes (``finished_only``: training none, the others are listed as
    ``missing_parts``).  Runs come back in the order of :func:`grid`."""
    parts, missing = {}, []
    for part in (p for p in PARTS if grid(config, p)):
        identity = checkpoint_identity(config, part)
        saved = None if checkpoint is None else part_path(checkpoint, part)
        if saved is not None and saved.exists():
            kept = json.loads(saved.read_text())
            if kept["identity"] == identity and settings(kept["runs"]) == settings(grid(config, part)):
                parts[part] = kept
                continue
        if finished_only:
            missing.append(part)
            continue
        parts[part] = {"identity": identity, **study_part(config, splits, epsilons, part, progress, checkpoint)}
        if saved is not None:
            atomic_write_json(saved, parts[part])
            checkpoint.unlink(missing_ok=True)  # the next part starts its own grid
    if not parts:
        where = "its output folder" if checkpoint is None else str(checkpoint.parent)
        raise ValueError(f"no part of {NAME} is finished in {where}; train one first (--resume trains the next)")
    order = {setting: i for i, setting in enumerate(settings(grid(config)))}
    runs = sorted((run for p in parts.values() for run in p["runs"]), key=lambda run: order[settings([run])[0]])
    trainings = {part: p["training"] for part, p in parts.items()}
    totals = [t["seconds_total"] for t in trainings.values()]
    training = {
        **{key: sum(t[key] for t in trainings.values()) for key in ADDITIVE},
        "seconds_total": None if None in totals else sum(totals),
        "grid_sizes": {part: t["grid_sizes"] for part, t in trainings.items()},
        "parts": trainings,
    }
    # the training time of each part's last process over the lane-steps that process ran
    timed = sum(t["timed_lane_steps"] for t in trainings.values())
    training["ms_per_configuration_step"] = 1e3 * training["seconds"] / max(timed, 1)
    return {"runs": runs, "training": training, "missing_parts": missing}


def study_part(config: dict, splits, epsilons, part: str, progress, checkpoint) -> dict:
    """Train every configuration of one part until it stops by rule and measure it at its best
    validation checkpoint on the test images."""
    configs, dc, result = train(config, splits, part, progress, checkpoint)
    if progress:
        progress.task(f"{NAME}: test-image measures of {len(configs)} deep VAEs ({part} part)")
    measured = measure_grid(
        result.best_params,
        dc,
        splits.test.X,
        config["measure_seed"],
        config["iwae_samples"],
        config["distortion_samples"],
    )
    runs = []
    for i, g in enumerate(configs):
        h, decision = result.histories[i], result.decisions[i]
        best = int(np.flatnonzero(h.step == result.best_step[i])[0])
        kl = measured.kl[i].astype(np.float64)
        units = (h.au_variances > metrics.AU_THRESHOLD).sum(axis=1)
        kl_active = (h.kl_per_dim > DEFAULT_EPSILON).sum(axis=1)
        runs.append(
            {
                **g,
                "stop_reason": decision.reason,
                "converged": decision.reason == CONVERGED,
                "stop_step": int(h.step[-1]),
                "best_step": int(result.best_step[i]),
                "sigma2_at_best": float(h.sigma2[best]),
                "sigma2_drift_at_stop": None if math.isnan(decision.sigma2_drift) else decision.sigma2_drift,
                **counts(kl, measured.au_variances[i]),
                "validation_count_range": {
                    "active_units": [int(units[-LAST_RECORDS:].min()), int(units[-LAST_RECORDS:].max())],
                    "mean_kl_active": [int(kl_active[-LAST_RECORDS:].min()), int(kl_active[-LAST_RECORDS:].max())],
                },
                "au_variances": measured.au_variances[i].tolist(),
                "test_kl_per_dim": kl.mean(axis=0).tolist(),
                "collapsed_fraction": collapsed_fraction_curve(kl, epsilons, DEFAULT_DELTA).tolist(),
                "rate": float(measured.rate[i]),
                "distortion": float(measured.distortion[i]),
                "test_elbo": float(measured.elbo[i]),
                "iwae": float(measured.iwae[i]),
                "mi_batch": float(measured.mi_batch[i]),
                "mi_leave_one_out": float(measured.mi_leave_one_out[i]),
                "validation_objective_at_best": float(result.best_objective[i]),
                "train_elbo_at_best": float(h.train_elbo[best]),
                "history": {
                    "step": h.step.tolist(),
                    "train_elbo": h.train_elbo.tolist(),
                    "validation_objective": h.heldout_objective.tolist(),
                    "sigma2": h.sigma2.tolist(),
                    "mean_log_sigma2": h.mean_log_sigma2.tolist(),
                    "active_units": units.tolist(),
                    "mean_kl_active": kl_active.tolist(),
                },
            }
        )
    grid_run = result.grid
    return {
        "runs": runs,
        "training": {
            "seconds": grid_run.seconds,
            "compile_seconds": grid_run.compile_seconds,
            "configuration_steps": grid_run.configuration_steps,
            "lane_steps": grid_run.lane_steps,
            "cap_steps": grid_run.cap_steps,
            "grid_sizes": [list(map(int, s)) for s in grid_run.sizes],
            "resumed_from_record": grid_run.resumed_from_record,
            "seconds_total": grid_run.seconds_total,  # every process; None where an earlier one kept no count
            "timed_lane_steps": grid_run.lane_steps - grid_run.resumed_lane_steps,  # those `seconds` ran
            "ms_per_configuration_step": 1e3
            * grid_run.seconds
            / max(grid_run.lane_steps - grid_run.resumed_lane_steps, 1),
        },
    }


def linear_study(config: dict, problem: Problem, k: int, X_test, epsilons) -> dict:
    """The closed-form linear VAE on the training images at each fixed sigma2 and at the learned
    (maximum-likelihood) sigma2, measured on the test images: exactly from their moments, and by the
    deep VAE's estimators (:func:`linear_vae.theory.metrics.heldout_measures`, float64 here)."""
    spectrum = problem.spectrum
    test = compute_moments(np.asarray(X_test, dtype=np.float64))
    X_test = np.asarray(X_test, dtype=np.float64)
    sigma2_mle = learned_sigma2(spectrum.eigenvalues, k, trace=spectrum.trace, dim=spectrum.dim)
    rows = [("fixed", s) for s in config["fixed_sigma2s"]] + [("learned", sigma2_mle)]
    key = jax.random.key(config["measure_seed"])

    @jax.jit  # one compilation for every row (same shapes)
    def estimate(key, params, sigma2):
        model = metrics.linear_model(params, sigma2)
        return heldout_measures(key, X_test, model, config["iwae_samples"], config["distortion_samples"])

    out = []
    for i, (kind, sigma2) in enumerate(rows):
        optimum = beta_elbo_optimum(spectrum.eigenvalues, k, 1.0, sigma2, trace=spectrum.trace, dim=spectrum.dim)
        params = optimum.parameters(problem.mean, spectrum.eigenvectors)
        exact = metrics.collapse_metrics(params, test.mean, test.cov)
        kl = encoder_kl_matrix(params, X_test)
        log_likelihood = float(log_marginal_likelihood(params.W, sigma2, test.cov, mean_offset=test.mean - params.mu))
        estimated = estimate(jax.random.fold_in(key, i), params, sigma2)
        d = X_test.shape[1]
        out.append(
            {
                "kind": kind,
                "sigma2": float(sigma2),
                "predicted_active_dims": int(active_by_threshold(spectrum.eigenvalues, k, sigma2)),
                **counts(kl, np.asarray(exact["au_variances"])),
                "au_variances": exact["au_variances"],
                "test_kl_per_dim": kl.mean(axis=0).tolist(),
                "optimum_kl_per_dim": np.maximum(0.5 * np.log(spectrum.eigenvalues[:k] / sigma2), 0.0).tolist(),
                "collapsed_fraction": collapsed_fraction_curve(kl, epsilons, DEFAULT_DELTA).tolist(),
                "rate": exact["rate"],
                "distortion": exact["distortion"],
                "test_elbo": -0.5 * d * math.log(2 * math.pi * sigma2)
                - exact["distortion"] / (2 * sigma2)
                - exact["rate"],
                "test_log_likelihood": log_likelihood,
                "mutual_information_gaussian": exact["mutual_information_gaussian"],
                "train_elbo": optimum.elbo,
                "estimated": {
                    "active_units": int(np.sum(np.asarray(estimated.au_variances) > metrics.AU_THRESHOLD)),
                    "rate": float(estimated.rate),
                    "distortion": float(estimated.distortion),
                    "test_elbo": float(estimated.elbo),
                    "iwae": float(estimated.iwae),
                    "mi_batch": float(estimated.mi_batch),
                    "mi_leave_one_out": float(estimated.mi_leave_one_out),
                },
            }
        )
    return {
        "rows": out,
        "frontier": frontier(problem.eigenvalues, k, config),
        "gaussian_rd": frontier(problem.eigenvalues, len(problem.eigenvalues), config),
    }


def frontier(eigenvalues, k: int, config: dict) -> dict:
    """The linear VAE's rate-distortion curve on the training spectrum at every water level
    ``t = beta sigma2`` (reverse water-filling cut at ``k`` components), docs/theory.md (T11.4).
    With ``k = d`` it is the Gaussian rate-distortion function R(D) of data with this covariance:
    no code of any kind does better on Gaussian data (Cover & Thomas, Theorem 10.3.3)."""
    levels = np.geomspace(min(config["fixed_sigma2s"]) / 100, max(config["fixed_sigma2s"]) * 10, 300)
    rate, distortion = metrics.rate_distortion_frontier(np.asarray(eigenvalues), k, levels)
    return {
        "water_level": levels.tolist(),
        "rate": np.asarray(rate).tolist(),
        "distortion": np.asarray(distortion).tolist(),
    }


def closed_form_curves(config: dict, eigenvalues) -> dict:
    """The linear VAE's counts against sigma2 on the training spectrum: active dimensions
    ``#{lambda_i > sigma2}`` and active units ``#{lambda_i > sigma2 / (1 - tau)}`` (T11.4)."""
    sigma2 = np.geomspace(min(config["fixed_sigma2s"]) / 2, max(config["fixed_sigma2s"]) * 2, 400)
    tau, k = metrics.AU_THRESHOLD, config["latent_dim"]
    return {
        "sigma2": sigma2.tolist(),
        "active_dims": active_by_threshold(eigenvalues, k, sigma2).tolist(),
        "active_units": active_by_threshold(eigenvalues, k, sigma2 / (1 - tau)).tolist(),
    }


# --- summaries over seeds ------------------------------------------------------------------------
def setting_key(run: dict) -> tuple:
    return (run["kind"], run["sigma2"], str(run["sigma2_step"]), run["warmup"])


def by_setting(runs: list[dict]) -> list[list[dict]]:
    """The runs grouped by setting (kind, sigma2, step size on log sigma2, warm-up), in grid order."""
    groups: dict = {}
    for r in runs:
        groups.setdefault(setting_key(r), []).append(r)
    return list(groups.values())


#: The measures summarised per setting.
MEASURES = ("active_units", "mean_kl_active", "eps_delta_active", "rate", "distortion", "test_elbo", "iwae",
            "mi_batch", "mi_leave_one_out", "sigma2_at_best", "best_step", "stop_step")  # fmt: skip


def summaries(results: dict, admit=None) -> list[dict]:
    """One entry per setting: the setting, how many of its runs converged, and every measure of
    :data:`MEASURES` as :func:`interval` over the runs admitted (``None`` when none is): the
    converged runs, or those for which ``admit(run)`` holds (the ``admitted`` count)."""
    out = []
    for group in by_setting(results["runs"]):
        converged = [r for r in group if r["converged"]]
        admitted = converged if admit is None else [r for r in group if admit(r)]
        g = group[0]
        out.append(
            {
                "kind": g["kind"],
                "sigma2": g["sigma2"],
                "sigma2_step": g["sigma2_step"],
                "warmup": g["warmup"],
                "runs": len(group),
                "converged": len(converged),
                "admitted": len(admitted),
                **{m: interval([r[m] for r in admitted]) if admitted else None for m in MEASURES},
            }
        )
    return out


def summary_by_setting(entries: list[dict]) -> dict:
    """:func:`summaries` keyed by ``(kind, sigma2, str(sigma2_step))``."""
    return {(e["kind"], e["sigma2"], str(e["sigma2_step"])): e for e in entries}


def cap_decision(run: dict, config: dict):
    """The stopping rule (docs/theory.md (T16.1)) read on a run's whole record
    (:func:`linear_vae.deep.stopping.decide` at its last record)."""
    h = run["history"]
    return decide(StoppingRule(**config["rule"]), config["log_every"], h["step"], h["validation_objective"],
                  h["mean_log_sigma2"], learned=run["kind"] == "learned", warmup=run["warmup"])  # fmt: skip


def plateaued(run: dict, config: dict) -> bool:
    """Whether the run met the ELBO condition of the rule by its last record (no gain of more than
    ``tolerance`` nats over ``patience`` steps), whether or not a learned sigma2 had settled: every
    converged run, and a run at the cap whose validation ELBO had stopped gaining."""
    return run["converged"] or cap_decision(run, config).steps_since_improvement >= config["rule"]["patience"]


def half_units_sigma2(sigma2s, units, half: float) -> float | None:
    """The sigma2 at which the active-unit count falls through ``half`` (K/2), interpolated linearly
    in log sigma2 between the two fixed values around it; ``None`` when it never does."""
    sigma2s, units = np.asarray(sigma2s, dtype=np.float64), np.asarray(units, dtype=np.float64)
    below = np.flatnonzero(units < half)
    if not below.size or below[0] == 0:
        return None
    j = below[0]
    x0, x1, y0, y1 = np.log(sigma2s[j - 1]), np.log(sigma2s[j]), units[j - 1], units[j]
    return float(np.exp(x0 + (half - y0) * (x1 - x0) / (y1 - y0)))


def half_units(results: dict, config: dict) -> dict:
    """The sigma2 at which half of the K units remain active: the linear optimum's (exact on the
    training spectrum), and the deep VAE's from the seed means, with an interval from the seeds
    (the crossing of each seed's own curve, then :func:`interval` over the seeds that cross)."""
    k = results["latent_dim"]
    half = config["au_half"] * k
    lam = np.asarray(results["eigenvalues"])
    tau = results["au_threshold"]
    linear = float(lam[int(math.ceil(half)) - 1] * (1 - tau)) if half <= len(lam) else None
    fixed = sorted({r["sigma2"] for r in results["runs"] if r["kind"] == "fixed"})
    per_seed = []
    for seed in sorted({r["seed"] for r in results["runs"] if r["kind"] == "fixed"}):
        runs = {r["sigma2"]: r for r in results["runs"] if r["kind"] == "fixed" and r["seed"] == seed}
        if all(runs[s]["converged"] for s in fixed):
            crossing = half_units_sigma2(fixed, [runs[s]["active_units"] for s in fixed], half)
            if crossing is not None:
                per_seed.append(math.log10(crossing))
    summary = interval(per_seed) if per_seed else None
    return {
        "units": half,
        "linear_sigma2": linear,
        "deep_log10_sigma2": summary,
        "deep_sigma2": None if summary is None else {k_: 10 ** summary[k_] for k_ in ("mean", "low", "high")},
    }


def _fmt(iv: dict | None, fmt: str) -> str:
    return "none converged" if iv is None else format_interval(iv, fmt)


SETTING_NAMES = {"fixed": "fixed", "learned": "learned from", "annealed": "fixed, annealed"}


def setting_name(s: dict) -> str:
    name = SETTING_NAMES[s["kind"]] + f" {s['sigma2']:g}"
    if s["kind"] == "learned":
        name += ", exact update" if s["sigma2_step"] == "exact" else f", Adam step {s['sigma2_step']:g}"
    if s["kind"] == "annealed":
        name += f" (warm-up {s['warmup']} steps)"
    return name


def table(results: dict) -> str:
    """Markdown: every measure per setting on the test images, mean [95% t-interval] over the
    converged seeds, at the best validation checkpoint; then the linear VAE's exact test values."""
    k = results["latent_dim"]
    lines = [
        f"K = {k}: deep VAE at its best validation checkpoint, measured on the {results['split']['n_test']} test "
        "images; mean [95% t-interval] over the runs that stopped by rule (converged of runs)",
        "",
        "| setting | converged | stop step | sigma2 at best | active units | mean-KL count | (eps, delta) count | "
        "rate (nats) | distortion | test ELBO | IWAE |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries(results):
        lines.append(
            f"| {setting_name(s)} | {s['converged']} of {s['runs']} | {_fmt(s['stop_step'], '.0f')} | "
            f"{_fmt(s['sigma2_at_best'], '.3g')} | {_fmt(s['active_units'], '.1f')} | "
            f"{_fmt(s['mean_kl_active'], '.1f')} | {_fmt(s['eps_delta_active'], '.1f')} | {_fmt(s['rate'], '.1f')} | "
            f"{_fmt(s['distortion'], '.1f')} | {_fmt(s['test_elbo'], '.1f')} | {_fmt(s['iwae'], '.1f')} |"
        )
    lines += [
        "",
        f"K = {k}: linear VAE (closed-form optimum on the training images), exact on the test images",
        "",
        "| sigma2 | active dims (closed form) | active units | mean-KL count | rate (nats) | distortion | test ELBO | "
        "test log-likelihood |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["linear"]["rows"]:
        name = f"{r['sigma2']:.3g}" + (" (learned)" if r["kind"] == "learned" else "")
        lines.append(
            f"| {name} | {r['predicted_active_dims']} | {r['active_units']} | {r['mean_kl_active']} | {r['rate']:.1f} | "
            f"{r['distortion']:.1f} | {r['test_elbo']:.1f} | {r['test_log_likelihood']:.1f} |"
        )
    return "\n".join(lines)


# --- the deep-VAE page's text (docs/deep-vae.md), generated from the JSON ------------------------------
def _iv(iv: dict | None, fmt: str = ".1f", runs: str = "converged") -> str:
    """``mean [low, high]``, or "no converged run" (``runs``: what the summaries are over)."""
    return f"no {runs} run" if iv is None else format_interval(iv, fmt)


def _compare(a: dict | None, b: dict | None, more: str, less: str, fmt: str = ".1f", runs: str = "converged") -> str:
    """ "``more``"/"``less``" when the 95% intervals of ``a`` and ``b`` separate, else "no difference at
    this number of seeds", with both intervals (``runs``: what the summaries are over)."""
    if a is None or b is None:
        return f"not comparable (a setting has no {runs} run)"
    if min(a["n"], b["n"]) < 2:
        word = "no direction from one seed"
    else:
        word = {1: more, -1: less, 0: "no difference at this number of seeds"}[separated(a, b)]
    return f"{word} ({_iv(a, fmt)} against {_iv(b, fmt)})"


def _against_point(iv: dict | None, value: float, fmt: str = ".1f") -> str:
    """Where an interval lies against one exact value (the linear optimum's)."""
    if iv is None:
        return "no converged run"
    if iv["n"] < 2:
        return f"from one seed, no interval ({_iv(iv, fmt)} against {value:{fmt}})"
    where = "above" if iv["low"] > value else "below" if iv["high"] < value else "consistent with"
    if where != "consistent with" and f"{iv['low']:{fmt}}" == f"{value:{fmt}}" == f"{iv['high']:{fmt}}":
        fmt = ".2g"  # a separation below the shown precision: show the digits that carry it
    return f"{where} ({_iv(iv, fmt)} against {value:{fmt}})"


def _missing_parts(missing: list) -> str:
    """ "the part A is" or "the parts A, B are" (the parts of the study not trained yet)."""
    return f"the part {missing[0]} is" if len(missing) == 1 else f"the parts {', '.join(missing)} are"


def cap_diagnosis(runs: list, config: dict) -> str:
    """Which condition of the stopping rule (docs/theory.md (T16.1)) the runs at the cap missed,
    from their records (:func:`linear_vae.deep.stopping.decide` at the last record): the validation
    ELBO's patience, or only the settling of a learned sigma2; "" when no run reached the cap."""
    rule = StoppingRule(**config["rule"])
    at_cap = [r for r in runs if r["stop_reason"] == CAP]
    if not at_cap:
        return ""
    patient, drifts, settings = [], [], []
    for r in at_cap:
        decision = cap_decision(r, config)
        if decision.steps_since_improvement >= rule.patience:
            patient.append(decision.steps_since_improvement)
            drifts.append(decision.sigma2_drift)
            settings.append(setting_name(r))
    condition = f"the ELBO condition (no gain of more than {rule.tolerance:g} nats for {rule.patience:,} steps"
    text = f"**At the cap**: {len(at_cap)} run{'s' if len(at_cap) != 1 else ''} reached {rule.max_steps:,} steps. "
    if not patient:
        return text + f"None had met {condition}): all were still gaining."
    text += f"{len(patient)} of them had met {condition}; {min(patient):,}-{max(patient):,} steps without one)"
    learned = [d for d in drifts if math.isfinite(d)]
    if learned:
        text += (
            f", and missed only the settling of the learned sigma2: the window means of log sigma2 were "
            f"{min(learned):.3f}-{max(learned):.3f} apart where the rule asks less than {rule.sigma2_tolerance:g}"
        )
    text += f" ({'; '.join(dict.fromkeys(settings))})"
    still = len(at_cap) - len(patient)
    return text + (f"; the other {still} were still gaining." if still else ".")


def report(payload: dict) -> str:
    """The deep-VAE results as markdown, every number and every direction from the JSON: convergence,
    cost, the tables, then each comparison, stated as a direction only when the two 95%
    t-intervals separate (docs/theory.md (T16.3))."""
    results, config = payload["results"], payload["config"]
    runs, k = results["runs"], results["latent_dim"]
    converged = sum(r["converged"] for r in runs)
    training = results["training"]
    summary = summary_by_setting(summaries(results))
    fixed = sorted({r["sigma2"] for r in runs if r["kind"] == "fixed"})
    linear = {r["sigma2"]: r for r in results["linear"]["rows"] if r["kind"] == "fixed"}
    lines = []
    not_converged = [setting_name(e) for e in summaries(results) if e["converged"] < e["runs"]]
    missing = results.get("missing_parts")
    if missing:
        lines += [
            f"**Partial results**: {_missing_parts(missing)} of the study not trained yet; what follows "
            f"reads the finished parts only ({len(runs)} runs).",
            "",
        ]
    lines.append(
        f"**Convergence**: {converged} of {len(runs)} runs ({100 * converged / len(runs):.0f}%) stopped by the rule "
        f"before the cap of {config['rule']['max_steps']:,} steps"
        + (
            f"; not converged, and left out of every summary: runs of {', '.join(not_converged)}."
            if not_converged
            else "."
        )
        + f" {_training_time(training)} ({training['ms_per_configuration_step']:.1f} ms per "
        f"configuration-step on the lanes run, {training['compile_seconds'] / 60:.1f} min compiling "
        f"{sum(len(sizes) for sizes in training['grid_sizes'].values())} grid sizes in {len(training['parts'])} part{'s' if len(training['parts']) != 1 else ''}); dropping finished runs ran "
        f"{training['lane_steps']:,} lane-steps where training every run to the cap would run {training['cap_steps']:,} "
        f"({100 * (1 - training['lane_steps'] / training['cap_steps']):.0f}% saved)."
    )
    cap = cap_diagnosis(runs, config)
    if cap:
        lines += ["", cap]
    lines += ["", table(results), ""]

    def units(sigma2: float):
        return summary[("fixed", sigma2, "None")]["active_units"]

    lines.append("**Larger fixed sigma2, fewer active units** (test images, adjacent values of the grid):")
    for low, high in zip(fixed, fixed[1:]):
        lines.append(f"- sigma2 {low:g} to {high:g}: {_compare(units(high), units(low), 'more', 'fewer')}")
    lines += ["", "**Deep against linear, active units** (the linear optimum's count on the same test images):"]
    for s_ in fixed:
        lines.append(f"- sigma2 = {s_:g}: deep {_against_point(units(s_), linear[s_]['active_units'])}")
    half = half_units(results, config)
    deep_half = half["deep_log10_sigma2"]
    if deep_half is not None and half["linear_sigma2"] is not None:
        lines += [
            "",
            f"**Half the units** ({half['units']:g} of {k}) remain at sigma2 = {half['linear_sigma2']:.3g} for the linear "
            f"optimum and at {10 ** deep_half['mean']:.3g} [{10 ** deep_half['low']:.3g}, {10 ** deep_half['high']:.3g}] "
            f"for the deep VAE ({deep_half['n']} seeds, interpolated in log sigma2): the deep crossing is "
            + _against_point(deep_half, math.log10(half["linear_sigma2"]), ".2f").split(" (")[0]
            + " the linear one.",
        ]
    lines += ["", "**Deep against linear, rate** (nats per test image):"]
    for s_ in fixed:
        lines.append(
            f"- sigma2 = {s_:g}: deep {_against_point(summary[('fixed', s_, 'None')]['rate'], linear[s_]['rate'])}"
        )
    lines += ["", _learned_text(results, summary, config), "", _annealing_text(results, summary), "", _rd_text(results)]
    return "\n".join(lines) + "\n"


def _training_time(training: dict) -> str:
    """How long the training took, over every process where they all kept count."""
    if training["seconds_total"] is not None:
        return f"Training took {training['seconds_total'] / 60:.0f} min"
    resumed = {part: t["resumed_from_record"] for part, t in training["parts"].items() if t["resumed_from_record"]}
    return (
        f"Training took {training['seconds'] / 60:.0f} min in the last process of each part ("
        + ", ".join(f"the {part} part resumed at record {record}" for part, record in resumed.items())
        + "; the earlier processes kept no count)"
    )


def _learned_text(results: dict, summary: dict, config: dict) -> str:
    """Does a large start of a learned sigma2 leave a lasting deficit, whatever the step size?  Read
    on the converged runs; when some setting has none, the rule gives no answer, and the runs that
    met its ELBO condition are compared at their best validation checkpoint, said to be so."""
    learned = [r for r in results["runs"] if r["kind"] == "learned"]
    starts = sorted({r["sigma2"] for r in learned})
    steps = list(dict.fromkeys(str(r["sigma2_step"]) for r in learned))
    if len(starts) < 2:
        return "**Learned sigma2**: not reported yet (its parts of the study are not finished)."
    if all(summary[("learned", start, step)]["converged"] for start in starts for step in steps):
        return _learned_comparison(summary, starts, steps, "")
    rule = config["rule"]
    at_plateau = summary_by_setting(summaries(results, admit=lambda r: plateaued(r, config)))
    n_converged, n_plateau = sum(r["converged"] for r in learned), sum(plateaued(r, config) for r in learned)
    head = (
        f"**Learned sigma2: no answer under the rule.** {n_converged} of {len(learned)} learned-sigma2 runs "
        f"converged, so the rule leaves the question open. {n_plateau} of the {len(learned)} met its ELBO condition "
        f"(no gain of more than {rule['tolerance']:g} nats for {rule['patience']:,} steps): the {n_converged} converged "
        f"and {n_plateau - n_converged} that missed only the settling of sigma2 (see **At the cap**). Read at their best "
        "validation checkpoint with that condition waived, and only so, they compare as follows; no claim of this study "
        "rests on these lines.\n\n"
    )
    return head + _learned_comparison(
        at_plateau, starts, steps, " at the best validation checkpoint, sigma2 unsettled", runs="admitted"
    )


#: The measures of a lasting deficit from a large start: (key, name, word for more, word for less).
DEFICIT_MEASURES = (("test_elbo", "test ELBO", "higher", "lower"), ("rate", "rate", "higher", "lower"),
                    ("active_units", "active units", "more", "fewer"))  # fmt: skip


def _update_name(step: str) -> str:
    return "the exact update" if step == "exact" else f"Adam at {float(step):g}"


def _learned_comparison(summary: dict, starts: list, steps: list, qualifier: str, runs: str = "converged") -> str:
    """The large starts of each update of log sigma2 against the small start: test ELBO, rate and
    active units, a direction only where the 95% intervals separate; then, per measure, under which
    updates a large start leaves a deficit (:func:`_deficit_answer`)."""
    small = starts[0]
    lines = [
        f"**Learned sigma2: a large start against a start at {small:g}**, per update of log sigma2 (test images"
        f"{qualifier}):"
    ]
    deficits = {}  # (measure, step, start) -> -1 / 0 / +1, or None where not comparable
    for step in steps:
        for start in starts[1:]:
            a, b = summary[("learned", start, step)], summary[("learned", small, step)]
            for key, *_ in DEFICIT_MEASURES:  # not comparable without runs, or from one seed (no interval)
                comparable = a[key] and b[key] and min(a[key]["n"], b[key]["n"]) >= 2
                deficits[(key, step, start)] = separated(a[key], b[key]) if comparable else None
            lines.append(
                f"- {_update_name(step)}, from {start:g} ({a['admitted']} of {a['runs']} runs against "
                f"{b['admitted']} of {b['runs']}): "
                + "; ".join(
                    f"{name} {_compare(a[key], b[key], more, less, runs=runs)}"
                    for key, name, more, less in DEFICIT_MEASURES
                )
                + f"; sigma2 at the checkpoint {_iv(a['sigma2_at_best'], '.3g', runs)} against "
                f"{_iv(b['sigma2_at_best'], '.3g', runs)}"
            )
    lines.append("")
    lines += [_deficit_answer(deficits, key, name, steps, starts[1:]) for key, name, *_ in DEFICIT_MEASURES]
    return "\n".join(lines)


def _deficit_answer(deficits: dict, key: str, name: str, steps: list, large: list) -> str:
    """One line per measure: under which updates a large start leaves it lower (a deficit: the
    intervals separate), under which not, and which pairs cannot be compared (no run, or one seed); a conclusion about
    the step size only where every update is comparable and the deficit is all-or-none per update."""
    per_update = {}
    for step in steps:
        verdicts = [deficits[(key, step, start)] for start in large]
        comparable = [v for v in verdicts if v is not None]
        per_update[step] = (
            None if not comparable else "all" if all(v == -1 for v in comparable)
            else "none" if all(v != -1 for v in comparable) else "some"
        )  # fmt: skip
    names = lambda kind: ", ".join(_update_name(s) for s in steps if per_update[s] == kind)  # noqa: E731
    missing = [f"{_update_name(step)} from {start:g}" for step in steps for start in large
               if deficits[(key, step, start)] is None]  # fmt: skip
    parts = []
    if names("all"):
        parts.append(f"under {names('all')} from every large start compared")
    if names("some"):
        parts.append(f"under {names('some')} from some large starts")
    text = f"- **{name}**: a deficit " + (" and ".join(parts) if parts else "under no update")
    if names("none"):
        text += f"; none under {names('none')}"
    if missing:
        text += f"; not comparable: {', '.join(missing)}"
    kinds = set(per_update.values())
    if missing or "some" in kinds or len(steps) < 2:
        return text + "."
    if kinds == {"all"}:
        return text + ": it does not depend on the step size."
    if kinds == {"all", "none"}:
        return text + ": it depends on how fast sigma2 may move, not on the objective alone."
    return text + "."


def _annealing_text(results: dict, summary: dict) -> str:
    annealed = next((e for e in summary.values() if e["kind"] == "annealed"), None)
    if annealed is None:
        return ""
    plain = summary.get(("fixed", annealed["sigma2"], "None"))

    def ranges(kind: str) -> str:
        """Each converged run's validation active-unit range over its last records."""
        spans = [
            "{}-{}".format(*r["validation_count_range"]["active_units"])
            for r in results["runs"]
            if r["kind"] == kind and r["sigma2"] == annealed["sigma2"] and r["converged"]
        ]
        return ", ".join(spans) or "no converged run"

    return (
        f"**KL annealing** at sigma2 = {annealed['sigma2']:g} (beta from 0 to 1 over {annealed['warmup']:,} steps) against "
        f"none, at the checkpoint on the test images: test ELBO "
        f"{_compare(annealed['test_elbo'], plain['test_elbo'], 'higher', 'lower')}; rate "
        f"{_compare(annealed['rate'], plain['rate'], 'higher', 'lower')}; active units "
        f"{_compare(annealed['active_units'], plain['active_units'], 'more', 'fewer')}. Validation active units over "
        f"the last {LAST_RECORDS} records before each stop (min-max per run): annealed {ranges('annealed')}, "
        f"not annealed {ranges('fixed')}."
    )


def _rd_text(results: dict) -> str:
    """Which settings' mean (rate, distortion) lie below the Gaussian R(D) and the K-latent frontier."""
    gaussian, front = results["linear"]["gaussian_rd"], results["linear"]["frontier"]

    def at(curve, rate):
        order = np.argsort(curve["rate"])
        return float(np.interp(rate, np.asarray(curve["rate"])[order], np.asarray(curve["distortion"])[order]))

    below_gaussian, between, above = [], [], []
    for e in summaries(results):
        if e["rate"] is None:
            continue
        rate, distortion = e["rate"]["mean"], e["distortion"]["mean"]
        label = f"{setting_name(e)} (R = {rate:.1f}, D = {distortion:.1f})"
        if distortion < at(gaussian, rate):
            below_gaussian.append(label)
        elif distortion < at(front, rate):
            between.append(label)
        else:
            above.append(label)
    return (
        f"**Rate and distortion** (seed means on the test images, against two curves of the training spectrum): below "
        f"the Gaussian R(D), the bound of any code on Gaussian data of this covariance, so exploiting that the "
        f"images are not Gaussian: {'; '.join(below_gaussian) or 'none'}. Below only the K = {results['latent_dim']} "
        f"linear frontier: {'; '.join(between) or 'none'}. Above both: {'; '.join(above) or 'none'}."
    )


# --- figures -------------------------------------------------------------------------------------
def plot(results: dict, config: dict) -> dict:
    """Every figure of the study; from finished parts only (``missing_parts``), the figures whose
    runs are all missing are left out and the others say which parts are missing in their title."""
    kinds = {r["kind"] for r in results["runs"]}
    figures = {  # name: (how it is drawn, the kind of run it needs)
        "active": (plot_active_and_rate, "fixed"),
        "kl_per_dim": (plot_kl_per_dim, "fixed"),
        "learned": (plot_learned, "learned"),
        "collapse": (plot_collapse_fraction, "fixed"),
        "annealing": (plot_annealing, "annealed"),
        "rate_distortion": (plot_rate_distortion, "fixed"),
    }
    drawn = {name: draw(results, config) for name, (draw, needs) in figures.items() if needs in kinds}
    if results.get("missing_parts"):
        for fig in drawn.values():
            mark_quick(fig, f"partial: {_missing_parts(results['missing_parts'])} not trained yet")
    return drawn


NOT_CONVERGED_STYLE = {"marker": "x", "color": "0.45", "linestyle": "none", "markersize": 6}


def _converged_note(results: dict) -> str:
    runs = results["runs"]
    return f"{sum(r['converged'] for r in runs)} of {len(runs)} runs stopped by rule before the cap"


def _summary_bars(ax, entries, x_of, measure: str, **style):
    """Error bars of ``measure`` (mean and 95% t-interval over converged seeds) at ``x_of(entry)``."""
    entries = [e for e in entries if e[measure] is not None]
    if not entries:
        return None
    x = np.array([x_of(e) for e in entries], dtype=np.float64)
    y = np.array([[e[measure]["mean"], e[measure]["low"], e[measure]["high"]] for e in entries])
    return ax.errorbar(x, y[:, 0], yerr=[y[:, 0] - y[:, 1], y[:, 2] - y[:, 0]], capsize=3, **style)


def _legend(ax, **style) -> None:
    """A legend, when anything on ``ax`` has a label (a quick run may have no converged run to draw)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**style)


def _not_converged(ax, runs, x_key, y_key, label=True):
    bad = [r for r in runs if not r["converged"]]
    if bad:
        ax.plot(
            [r[x_key] for r in bad],
            [r[y_key] for r in bad],
            label="single run that did not converge (no claim rests on it)" if label else None,
            **NOT_CONVERGED_STYLE,
        )


def plot_active_and_rate(results: dict, config: dict):
    """Active units and rate on the test images against the fixed sigma2: the deep VAE (mean and 95%
    t-interval of the converged seeds) beside the linear VAE (closed-form count on the training
    spectrum as a line, its optimum measured on the test images as squares), with the sigma2 at
    which half the units remain."""
    k = results["latent_dim"]
    fig, axes = new_figure(ncols=2, width=6.0, height=4.6)
    summary = [s for s in summaries(results) if s["kind"] == "fixed"]
    fixed_runs = [r for r in results["runs"] if r["kind"] == "fixed"]
    linear = [r for r in results["linear"]["rows"] if r["kind"] == "fixed"]
    curves = results["closed_form"]
    ax = axes[0, 0]
    ax.step(
        curves["sigma2"],
        curves["active_units"],
        where="post",
        color=COLORS[0],
        label=r"linear VAE, closed form: $\#\{\lambda_i > \sigma^2/(1-\tau)\}$",
        **PREDICTION_STYLE,
    )
    ax.plot(
        [r["sigma2"] for r in linear],
        [r["active_units"] for r in linear],
        "s",
        color=COLORS[0],
        markerfacecolor="none",
        markersize=8,
        label="linear VAE optimum, measured on the test images",
    )
    _summary_bars(
        ax, summary, lambda e: e["sigma2"], "active_units", fmt="o-", color=COLORS[3], linewidth=1,
        label="deep VAE (mean, 95% t-interval over converged seeds)",
    )  # fmt: skip
    _not_converged(ax, fixed_runs, "sigma2", "active_units")
    half = half_units(results, config)
    ax.axhline(half["units"], color="0.5", linestyle=":", linewidth=1)
    if half["linear_sigma2"] is not None:
        ax.axvline(half["linear_sigma2"], color=COLORS[0], linestyle=":", linewidth=1.2)
    if half["deep_sigma2"] is not None:
        band = half["deep_sigma2"]
        ax.axvspan(
            band["low"],
            band["high"],
            color=COLORS[3],
            alpha=0.15,
            linewidth=0,
            label="deep: half the units, 95% interval",
        )
        ax.axvline(band["mean"], color=COLORS[3], linestyle=":", linewidth=1.2)
    log_axis(ax, "x", subs=(1.0,))
    ax.set_xlabel(r"fixed observation noise $\sigma^2$ (log scale)")
    ax.set_ylabel(r"active units on test images: $\mathrm{Var}_x E_q[z_i] > 0.01$")
    ax.set_ylim(-1, k + 2)
    ax.set_title(f"active units (dotted: half of K = {k} remain)")
    _legend(ax, loc="lower left", fontsize=7.5)
    ax = axes[0, 1]
    ax.plot(
        [r["sigma2"] for r in linear], [r["rate"] for r in linear], "s-", color=COLORS[0], markerfacecolor="none",
        markersize=8, label="linear VAE optimum, on the test images",
    )  # fmt: skip
    _summary_bars(
        ax, summary, lambda e: e["sigma2"], "rate", fmt="o-", color=COLORS[3], linewidth=1,
        label="deep VAE (mean, 95% t-interval)",
    )  # fmt: skip
    _not_converged(ax, fixed_runs, "sigma2", "rate")
    log_axis(ax, "x", subs=(1.0,))
    ax.set_xlabel(r"fixed observation noise $\sigma^2$ (log scale)")
    ax.set_ylabel("rate: total KL on test images (nats per image)")
    ax.set_title("rate")
    _legend(ax, loc="upper right", fontsize=7.5)
    fig.suptitle(f"{data_name(config)}, K = {k}, deep against linear VAE ({_converged_note(results)})")
    return fig


def plot_kl_per_dim(results: dict, config: dict):
    """For every fixed sigma2: the deep VAE's per-dimension KL on the test images, sorted (mean and
    95% interval of the converged seeds), against the linear optimum's ``(1/2) log(lambda_i /
    sigma2)`` for ``lambda_i > sigma2`` (docs/theory.md (T11.4))."""
    k = results["latent_dim"]
    sigma2s = sorted({r["sigma2"] for r in results["runs"] if r["kind"] == "fixed"})
    ncols = min(4, len(sigma2s))
    nrows = -(-len(sigma2s) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=3.4, height=2.9, sharex=True, sharey=True)
    linear = {r["sigma2"]: r for r in results["linear"]["rows"] if r["kind"] == "fixed"}
    dims = np.arange(1, k + 1)
    for ax, sigma2 in zip(axes.flat, sigma2s):
        runs = [r for r in results["runs"] if r["kind"] == "fixed" and r["sigma2"] == sigma2]
        converged = [np.sort(r["test_kl_per_dim"])[::-1] for r in runs if r["converged"]]
        ax.step(
            dims,
            linear[sigma2]["optimum_kl_per_dim"],
            where="mid",
            color=COLORS[0],
            label="linear optimum",
            **PREDICTION_STYLE,
        )
        if converged:
            values = np.array(converged)
            stats = [interval(values[:, j]) for j in range(k)] if len(converged) > 1 else None
            ax.plot(
                dims, values.mean(axis=0), "o", color=COLORS[3], markersize=3, label=f"deep, {len(converged)} seeds"
            )
            if stats:
                ax.fill_between(
                    dims,
                    [s_["low"] for s_ in stats],
                    [s_["high"] for s_ in stats],
                    color=COLORS[3],
                    alpha=0.25,
                    linewidth=0,
                )
        for r in runs:
            if not r["converged"]:
                ax.plot(dims, np.sort(r["test_kl_per_dim"])[::-1], color="0.5", linewidth=0.8, linestyle="--")
        ax.set_title(rf"$\sigma^2$ = {sigma2:g}", fontsize=9)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.axhline(DEFAULT_EPSILON, color="0.6", linestyle=":", linewidth=1)
    for ax in axes.flat[len(sigma2s) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("latent dimension, sorted by KL")
    for ax in axes[:, 0]:
        ax.set_ylabel("KL on test images (nats)")
    _legend(axes[0, 0], loc="upper right", fontsize=7)
    fig.suptitle(
        f"{data_name(config)}: per-dimension KL, deep VAE (dots, 95% band; dashed grey: a run that did not converge)\n"
        r"against the linear optimum $\frac{1}{2}\log(\lambda_i/\sigma^2)_+$; dotted: $\epsilon$ = 0.01",
        fontsize=9,
    )
    return fig


STEP_LABELS = {"exact": "exact update"}


def plot_learned(results: dict, config: dict):
    """Learned sigma2: test ELBO, active units and sigma2 at the checkpoint for each start and each
    step size on log sigma2 (and the exact update), mean and 95% t-interval over converged seeds."""
    learned = [s for s in summaries(results) if s["kind"] == "learned"]
    steps = list(dict.fromkeys(str(s["sigma2_step"]) for s in learned))
    starts = sorted({s["sigma2"] for s in learned})
    fig, axes = new_figure(ncols=3, width=4.4, height=4.0)
    for column, (measure, label) in enumerate(
        (("test_elbo", "test ELBO (nats per image)"), ("active_units", "active units on test images"),
         ("sigma2_at_best", r"learned $\sigma^2$ at the checkpoint"))
    ):  # fmt: skip
        ax = axes[0, column]
        for j, start in enumerate(starts):
            entries = [s for s in learned if s["sigma2"] == start]
            _summary_bars(
                ax, entries, lambda e, j=j: steps.index(str(e["sigma2_step"])) + 0.12 * (j - 1), measure, fmt="o",
                color=COLORS[j + 1], label=rf"from $\sigma^2$ = {start:g}",
            )  # fmt: skip
            for r in results["runs"]:
                if r["kind"] == "learned" and r["sigma2"] == start and not r["converged"]:
                    ax.plot(steps.index(str(r["sigma2_step"])) + 0.12 * (j - 1), r[measure], **NOT_CONVERGED_STYLE)
        ax.set_xticks(
            range(len(steps)), [STEP_LABELS[s] if s in STEP_LABELS else f"Adam {float(s):g}" for s in steps], fontsize=8
        )
        ax.set_xlabel(r"update of $\log\sigma^2$")
        ax.set_ylabel(label)
        if measure == "sigma2_at_best":  # log scale, labels as plain numbers however narrow the range
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.4g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:.4g}"))
    _legend(axes[0, 0], loc="lower right", fontsize=7.5)
    fig.suptitle(
        rf"{data_name(config)}: learned $\sigma^2$ by start and step size (mean, 95% t-interval of converged seeds; "
        "x: a run that did not converge)",
        fontsize=10,
    )
    return fig


def plot_collapse_fraction(results: dict, config: dict):
    """The (epsilon, delta)-collapsed fraction against epsilon for each fixed sigma2: the deep VAE
    (mean over converged seeds, band from their minimum to maximum) and the linear optimum on the
    same test images (dashed, same colour); epsilon = 0.01 marked."""
    fig, axes = new_figure(width=8.2, height=4.6)
    ax = axes[0, 0]
    eps = results["epsilons"]
    linear = {r["sigma2"]: r for r in results["linear"]["rows"] if r["kind"] == "fixed"}
    sigma2s = sorted({r["sigma2"] for r in results["runs"] if r["kind"] == "fixed"})
    palette = plt.get_cmap("tab10")
    for i, sigma2 in enumerate(sigma2s):
        color = palette(i % 10)
        curves = np.array(
            [
                r["collapsed_fraction"]
                for r in results["runs"]
                if r["kind"] == "fixed" and r["sigma2"] == sigma2 and r["converged"]
            ]
        )
        if curves.size:
            ax.step(
                eps, curves.mean(axis=0), where="post", color=color, linewidth=1.8, label=rf"$\sigma^2$ = {sigma2:g}"
            )
            ax.fill_between(
                eps, curves.min(axis=0), curves.max(axis=0), step="post", color=color, alpha=0.15, linewidth=0
            )
        ax.step(
            eps,
            linear[sigma2]["collapsed_fraction"],
            where="post",
            color=color,
            linewidth=1.0,
            linestyle="--",
            label=None if curves.size else rf"$\sigma^2$ = {sigma2:g} (linear only: no converged deep run)",
        )
    ax.axvline(DEFAULT_EPSILON, color="0.3", linestyle=":", linewidth=1.2)
    ax.text(DEFAULT_EPSILON, 1.06, r" $\epsilon$ = 0.01", fontsize=8, color="0.3", va="bottom")
    log_axis(ax, "x", subs=(1.0,))
    ax.set_xlabel(r"$\epsilon$ (nats, log scale)")
    ax.set_ylabel(r"fraction of latent dimensions $(\epsilon, \delta)$-collapsed")
    ax.set_ylim(-0.04, 1.12)
    _legend(  # beside the axes: the lines of the largest sigma2 start in the top-left corner
        ax,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7.5,
        title="solid: deep (band: seed range)\ndashed: linear",
        title_fontsize=7.5,
    )
    ax.set_title(f"{data_name(config)}, test images, K = {results['latent_dim']}, " + r"$\delta$ = 0.01", fontsize=10)
    return fig


def plot_annealing(results: dict, config: dict):
    """Validation active units and validation ELBO over training with and without KL annealing at
    the annealed sigma2, one line per seed to its stop (a cross marks the stop, a dot the checkpoint)."""
    annealed = [r for r in results["runs"] if r["kind"] == "annealed"]
    sigma2 = annealed[0]["sigma2"] if annealed else None
    plain = [r for r in results["runs"] if r["kind"] == "fixed" and r["sigma2"] == sigma2]
    fig, axes = new_figure(ncols=2, width=5.0, height=4.0)
    k = results["latent_dim"]
    for group, color, label in ((annealed, COLORS[1], "KL annealing"), (plain, COLORS[0], "no annealing")):
        for i, r in enumerate(group):
            h = r["history"]
            for ax, key in ((axes[0, 0], "active_units"), (axes[0, 1], "validation_objective")):
                ax.plot(h["step"], h[key], color=color, linewidth=0.9, alpha=0.8, label=label if i == 0 else None)
                ax.plot(h["step"][-1], h[key][-1], "x" if not r["converged"] else "|", color=color, markersize=7)
            best = h["step"].index(r["best_step"])
            axes[0, 1].plot(r["best_step"], h["validation_objective"][best], "o", color=color, markersize=4)
    tau = results["au_threshold"]
    linear = int(active_by_threshold(np.array(results["eigenvalues"]), k, sigma2 / (1 - tau))) if sigma2 else 0
    axes[0, 0].axhline(linear, color="0.3", linestyle="--", linewidth=1.2, label=f"linear VAE, closed form: {linear}")
    warmup = annealed[0]["warmup"] if annealed else 0
    for ax in axes[0]:
        ax.axvline(warmup, color="0.5", linestyle=":", linewidth=1.2)
        ax.set_xlabel("training step")
    axes[0, 0].set_ylabel("active units on validation images")
    axes[0, 0].set_ylim(-1, k + 2)
    axes[0, 1].set_ylabel(r"validation ELBO at $\beta$ = 1 (nats per image)")
    objective = np.concatenate([r["history"]["validation_objective"] for r in annealed + plain]) if annealed else [0]
    axes[0, 1].set_ylim(np.percentile(objective, 5) - 5, np.max(objective) + 5)
    _legend(axes[0, 0], loc="upper right", fontsize=8)
    _legend(axes[0, 1], loc="lower right", fontsize=8)
    fig.suptitle(
        rf"{data_name(config)}, K = {k}: KL annealing at fixed $\sigma^2$ = {sigma2:g} ($\beta$ 0 to 1 over {warmup} "
        "steps, dotted); one line per seed, to its stop",
        fontsize=10,
    )
    return fig


def plot_rate_distortion(results: dict, config: dict):
    """Test (rate, distortion) of every converged deep run beside two bounds on the training
    spectrum: the Gaussian R(D) (reverse water-filling over all d components; no code does better
    on Gaussian data of this covariance) and the linear VAE's K-latent frontier."""
    k = results["latent_dim"]
    fig, axes = new_figure(width=7.4, height=4.8)
    ax = axes[0, 0]
    gaussian = results["linear"]["gaussian_rd"]
    ax.plot(gaussian["rate"], gaussian["distortion"], color="0.2", linestyle="--", linewidth=1.4, zorder=3,
            label="Gaussian R(D), all d components: the bound for any code on Gaussian data")  # fmt: skip
    draw_frontier(
        ax, results["eigenvalues"], k, trace=results["trace"], dim=results["d"],
        theta_range=(min(results["linear"]["frontier"]["water_level"]), results["eigenvalues"][0]), color=COLORS[0],
        label=f"linear VAE optimum with K = {k} latents (dots: collapse thresholds)",
    )  # fmt: skip
    summary = summaries(results)
    for kind, fmt, color, label in (
        ("fixed", "o", COLORS[3], r"deep VAE, fixed $\sigma^2$"),
        ("learned", "D", COLORS[2], r"deep VAE, learned $\sigma^2$"),
        ("annealed", "^", COLORS[1], "deep VAE, KL annealing"),
    ):
        entries = [s for s in summary if s["kind"] == kind and s["rate"] is not None]
        if entries:
            ax.errorbar(
                [e["rate"]["mean"] for e in entries], [e["distortion"]["mean"] for e in entries],
                xerr=[[e["rate"]["mean"] - e["rate"]["low"] for e in entries], [e["rate"]["high"] - e["rate"]["mean"] for e in entries]],
                yerr=[[e["distortion"]["mean"] - e["distortion"]["low"] for e in entries], [e["distortion"]["high"] - e["distortion"]["mean"] for e in entries]],
                fmt=fmt, color=color, markersize=6, capsize=2, label=label,
            )  # fmt: skip
    for e in summary:
        if e["kind"] == "fixed" and e["rate"] is not None:
            ax.annotate(f"{e['sigma2']:g}", (e["rate"]["mean"], e["distortion"]["mean"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=COLORS[3])  # fmt: skip
    _not_converged(ax, results["runs"], "rate", "distortion")
    rates = [r["rate"] for r in results["runs"]]
    ax.set_xlim(0, max(rates + [1.0]) * 1.15)
    ax.set_ylim(0, max(r["distortion"] for r in results["runs"]) * 1.1 if results["runs"] else None)
    ax.set_xlabel("rate: total KL on test images (nats per image)")
    ax.set_ylabel("distortion: squared error per test image (pixel units)")
    ax.set_title(
        f"{data_name(config)}, K = {k}: rate and distortion on test images (mean, 95% t-interval)", fontsize=10
    )
    _legend(ax, loc="upper right", fontsize=7.5)
    return fig
