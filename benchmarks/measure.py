"""Every measurement of the speed comparison, in one process on the same data and machine
(:func:`run_all`; the entry point is ``python -m benchmarks.run``, see :mod:`benchmarks.run`).

1. Time to accuracy of a beta sweep on the shipped MNIST (d = 784, k = 32, 16 betas log-spaced
   so the thresholds lambda_i / sigma2 fall inside, sigma2 = 0.1, float64): wall time until EVERY
   configuration's exact beta-ELBO is within 1e-2, 1e-5, 1e-6 and 1e-8 nats of its closed-form
   optimum (``beta_elbo_optimum``, the same optima for every method), or the best gap reached and
   when, for

   * the default optimiser: trust-region Newton on the projected objective
     (``linear_vae/training/newton.py``; ``TrainConfig(latent_dim=k)``: eigenbasis, at most 500 iterations,
     convergence checked every ``NEWTON_CHECK_EVERY`` iterations, stops once every configuration
     has converged).  Its iterations have unequal cost (the number of conjugate-gradient steps
     varies), so its clock is read at every chunk end through ``train_sweep``'s ``progress``
     callback and each iteration's gap is charged the time of the end of its chunk (the
     convergence check included), never interpolated.  A second run of the same trajectory with
     one iteration per chunk and no checks gives the cost of each iteration alone (full run only);
   * Adam in this project's vmapped sweep (``train_sweep``, ``optimizer="adam"``) in the data
     basis and in the eigenbasis of S (an algorithmic change; Adam's trajectory differs there);
   * a Python loop over the jitted single-configuration trainer (``train_single``, Adam);
   * PyTorch eager float64, a Python loop over betas in the style of the public reproductions:
     (a) full batch, ``tr(A S A^T)`` with the d x d matrix ``A = I - W V`` formed every step,
     (b) full batch, exact ELBO through d x k products only (as ``elbo_terms``),
     (c) minibatches of 100, reparameterised Monte-Carlo ELBO, epoch by epoch.
     All use our Adam schedule (lr 1e-2, cosine decay over ``--steps``, 40000 by default) and
     start from the SAME initial parameters as our Adam sweep, so they follow the same trajectory up
     to rounding (a comparison of implementations).  Their exact ELBO is evaluated every 100 steps, with the
     evaluation time excluded from their clock, as for ours.

   Wall-time budgets cap the slow baselines; whatever is a projection (per-step time measured
   here times the number of steps that our identical trajectory needed) is labelled as such.

2. Hardware limit: FLOPs of one exact-ELBO step (``benchmarks/trainer.py:step_flops``), the
   achieved FLOP/s and the machine's float64 / float32 matmul FLOP/s measured in the same run,
   plus a breakdown of one sweep step (the ``V S`` product alone, value-and-gradient, full step).

3. Cost against problem size: time per step per configuration and XLA compiled memory
   (``memory_analysis``) against d, k and the number of configurations, with fitted exponents.

4. Hard cases (``linear_vae/verification/hard_cases.py``): the default Newton sweep of each case (all its betas
   in one vmapped ``train_and_compare``), its training and compile seconds, iterations, worst gap
   to the closed form and convergence.

Each point of section 3 runs in a fresh process under a timeout (retried, and the retries
reported): the XLA CPU deadlock that once hung it is fixed (``linear_vae/core/spd.py``), and the guard
keeps one stuck point from costing the whole run should another appear.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import linear_vae  # noqa: F401  (float64)
from linear_vae.core.io import atomic_write_json
from linear_vae.data.datasets import load_mnist
from linear_vae.data.moments import compute_moments, eigen_decomposition
from linear_vae.data.problem import Problem
from linear_vae.theory.elbo import DataStats
from linear_vae.theory.optimum import beta_elbo_optimum
from linear_vae.training import convergence
from linear_vae.training.newton import CHECK_EVERY as NEWTON_CHECK_EVERY
from linear_vae.training.sweep import train_single, train_sweep
from linear_vae.training.train import (
    Hyper,
    TrainConfig,
    TrainData,
    init_state,
    negative_objective,
    record_steps,
    run_steps,
    train_step,
)
from linear_vae.verification.compare import VERDICTS

try:  # imported with the rest, so that one run measures one version of the package
    from linear_vae.verification.hard_cases import hard_cases
except ImportError as _exc:  # written separately; the run reports its absence
    hard_cases, HARD_CASES_IMPORT_ERROR = None, str(_exc)

from .baselines import torch_baseline
from .bookkeeping import (
    ALL_TOLS,
    chunk_seconds,
    chunked_time_to_accuracy,
    fit_exponent,
    steps_needed,
    summarise_loop,
    sweep_time_to_accuracy,
)
from .report import HARD_CASE_GOAL_S
from .trainer import matmul_rate, median_time, step_flops  # reused, not copied

#: The repository root (the working directory of the fresh processes of section 3).
ROOT = Path(__file__).resolve().parents[1]
# The default 20000-step schedule leaves the two smallest betas at 1.5e-5 (eigenbasis) and 9e-5
# (data basis) nats; 40000 steps of the same cosine schedule reach 1e-5 (see docs/performance.md).
FULL_STEPS = 40000


def adam_config(k: int, steps: int | None = None, log_every: int | None = None) -> TrainConfig:
    """The Adam configuration every gradient-method comparison uses (Newton is the default optimiser,
    so Adam is asked for by name): no convergence checks between chunks, defaults resolved."""
    return TrainConfig(
        latent_dim=k, steps=steps, log_every=log_every, optimizer="adam", stop_when_converged=False
    ).resolved()


class ChunkClock:
    """A ``progress`` callback for ``train_sweep`` that records ``(steps done, time.perf_counter())``
    at every chunk end (after the chunk's convergence check, when there is one)."""

    def __init__(self):
        self.ends: list[tuple[int, float]] = []

    def __call__(self, done: int, total: int) -> None:
        self.ends.append((done, time.perf_counter()))

    def training_clock(self, called_at: float, compile_s: float) -> list[tuple[int, float]]:
        """``(steps, training seconds)``: perf_counter minus the call of ``train_sweep`` and its
        compilation (so a few milliseconds of argument checks before the compilation count as
        training: an overestimate, never an underestimate)."""
        return [(s, t - called_at - compile_s) for s, t in self.ends]


# ---------------------------------------------------------------------------------- scaling section


def step_cost(d: int, k: int, c: int, repeats: int) -> dict:
    """Seconds per step per configuration and XLA memory of a vmapped exact-ELBO sweep on random data."""
    n = 500
    X = np.random.default_rng(d * 1000 + k).normal(size=(n, d))
    Xj = jnp.asarray(X)
    mean = Xj.mean(0)
    Xc = Xj - mean
    stats = DataStats.from_moments(mean, Xc.T @ Xc / n)  # in XLA, not numpy's BLAS
    data = TrainData(stats, jnp.asarray(X), jnp.zeros(1), jnp.zeros((d, 1)))  # eigen* unused by random init
    flops = step_flops(d, k) * c
    steps = int(min(200, max(5, 3e9 / flops)))
    cfg = adam_config(k, steps, log_every=steps)
    hyper = Hyper(jnp.full(c, 1.0), jnp.full(c, 0.1), jnp.arange(c, dtype=jnp.uint32))
    state = jax.jit(jax.vmap(lambda h, data: init_state(cfg, h, data), in_axes=(0, None)))(hyper, data)
    run = jax.jit(jax.vmap(lambda s, h, data: run_steps(s, h, data, cfg, record_steps(cfg)), in_axes=(0, 0, None)))
    t0 = time.perf_counter()
    compiled = run.lower(state, hyper, data).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    # Block on the metrics, as train_sweep does.
    jax.block_until_ready(compiled(state, hyper, data)[1])
    seconds = median_time(lambda: compiled(state, hyper, data)[1], repeats)
    per = seconds / (steps * c)
    return {
        "d": d,
        "k": k,
        "configs": c,
        "steps_timed": steps,
        "seconds_per_step_per_config": per,
        "gflops_per_second": step_flops(d, k) / per / 1e9,
        "compile_seconds": compile_s,
        "xla_temp_bytes": getattr(mem, "temp_size_in_bytes", None),
        "xla_argument_bytes": getattr(mem, "argument_size_in_bytes", None),
        "xla_output_bytes": getattr(mem, "output_size_in_bytes", None),
    }


def step_breakdown(data: TrainData, k: int, betas, sigma2: float, repeats: int) -> dict:
    """Seconds of one vmapped sweep step split into: the V S product alone, the forward objective,
    value-and-gradient, and the full Adam step (all jitted, warm, medians)."""
    c = len(betas)
    cfg = adam_config(k)
    hyper = Hyper(jnp.asarray(betas), jnp.full(c, sigma2), jnp.zeros(c, dtype=jnp.uint32))
    state = jax.jit(jax.vmap(lambda h: init_state(cfg, h, data)))(hyper)
    key = jax.random.key(0)
    S = data.stats.cov
    fns = {
        "VS_product": (jax.jit(lambda V: jnp.einsum("ckd,de->cke", V, S)), (state.trainable.params.V,)),
        "objective": (
            jax.jit(jax.vmap(lambda tr, h: negative_objective(tr, h, data, key, cfg))),
            (state.trainable, hyper),
        ),
        "value_and_grad": (
            jax.jit(jax.vmap(lambda tr, h: jax.value_and_grad(negative_objective)(tr, h, data, key, cfg))),
            (state.trainable, hyper),
        ),
        "train_step": (jax.jit(jax.vmap(lambda s, h: train_step(s, h, data, cfg))), (state, hyper)),
    }
    out = {}
    inner = 10
    for name, (f, args) in fns.items():
        jax.block_until_ready(f(*args))
        out[name] = median_time(lambda: [f(*args) for _ in range(inner)][-1], repeats) / inner
    return out


# ------------------------------------------------------------------------------------------- Newton


def timed_sweep(data, config: TrainConfig, betas, sigma2s, seeds, n_chunks: int = 10):
    """``(cold, warm, chunk_ends)``: ``train_sweep`` called twice with the same arguments.

    The first (cold) call compiles; the second finds every program in JAX's compilation cache, so
    its ``compile_seconds`` is only the initial state and the cache look-ups, wherever
    ``train_sweep`` compiles (up front, or its convergence check lazily at the first check).  Its
    ``progress`` callback gives ``(steps done, training seconds)`` at every chunk end: perf_counter
    minus the call's start and that small ``compile_seconds``.
    """
    # The same progress and n_chunks on both calls: they fix the chunk length, hence the programs.
    cold = train_sweep(data, config, betas, sigma2s, seeds, progress=ChunkClock(), n_chunks=n_chunks)
    clock = ChunkClock()
    called = time.perf_counter()
    warm = train_sweep(data, config, betas, sigma2s, seeds, progress=clock, n_chunks=n_chunks)
    return cold, warm, clock.training_clock(called, warm.compile_seconds)


def newton_sweep(
    dataset, moments, spectrum, k: int, betas, sigma2s, seeds, optima, adam_seconds_per_step: float, trace: bool
) -> dict:
    """The default optimiser's sweep on the section-1 problem, timed chunk by chunk.

    Start-up (the data and moments rotated into the eigenbasis, ``TrainData.build``), compilation
    (the cold call's ``compile_seconds``: initial state, chunk, check and update) and training are
    reported apart; training is timed on a second, warm call of the same sweep
    (:func:`timed_sweep`).  With ``trace``, the same trajectory is run again with one iteration
    per chunk and no convergence checks for as many iterations as the sweep used (plus one, whose
    chunk also holds the final diagnosis and is left out), which times every iteration alone.
    Costs are per configuration and in units of one Adam step of the eigenbasis sweep
    (``adam_seconds_per_step``, per configuration).
    """
    n_cfg = len(betas)
    config = TrainConfig(latent_dim=k).resolved()
    t0 = time.perf_counter()
    data = TrainData.build(Problem(dataset, moments.mean, moments.cov, spectrum), config.basis)
    jax.block_until_ready(data)
    startup = time.perf_counter() - t0
    cold, sw, ends = timed_sweep(data, config, betas, sigma2s, seeds)
    gaps = optima[:, None] - sw.history.elbo
    iterations_run = gaps.shape[1] * config.log_every
    per_iteration = sw.seconds / (iterations_run * n_cfg)
    out = {
        "config": {
            "optimizer": config.optimizer,
            "basis": config.basis,
            "max_iterations": config.steps,
            "log_every": config.log_every,
            "check_every": NEWTON_CHECK_EVERY,
            "gain_tol": getattr(config, "gain_tol", convergence.GAIN_TOL),
            "curvature_tol": convergence.CURVATURE_TOL,
            "cg_max_iterations": convergence.CG_MAX_ITERATIONS,
            "lanczos_iterations": convergence.LANCZOS_ITERATIONS,
        },
        "startup_seconds": startup,
        "compile_seconds": cold.compile_seconds,
        "train_seconds": sw.seconds,
        "first_call_train_seconds": cold.seconds,
        "second_call_compile_seconds": sw.compile_seconds,
        "second_call_same_elbo_history": bool(np.array_equal(cold.history.elbo, sw.history.elbo)),
        "iterations_run": iterations_run,
        "iterations_used_per_config": sw.steps_used.tolist(),
        "converged_per_config": sw.converged.tolist(),
        "all_converged": bool(sw.converged.all()),
        "final_predicted_gain": sw.diagnosis.predicted_gain.tolist(),
        "convergence_checks": len(ends),
        "checks_recorded_by_train_sweep": [
            {"iteration": int(st), "worst_predicted_gain": float(np.max(g))} for st, g in sw.checks
        ],
        "chunk_ends": [{"iteration": st, "train_seconds": t} for st, t in ends],
        "seconds_per_iteration_per_config": per_iteration,
        "adam_steps_per_iteration": per_iteration / adam_seconds_per_step,
        "time_to_accuracy": chunked_time_to_accuracy(gaps, cold.compile_seconds, config.log_every, ends),
        "iterations_needed_per_config": steps_needed(gaps, config.log_every, ALL_TOLS),
        "worst_gap_per_iteration": gaps.max(axis=0).tolist(),
        "final_gap_per_config": gaps[:, -1].tolist(),
        "min_gap_seen": float(gaps.min()),
        "clock_note": (
            "compile seconds from the first call of train_sweep; training timed on a second, "
            "identical call whose programs come from JAX's compilation cache; an iteration's gap "
            "is charged that call's training clock at the end of its chunk of "
            f"{NEWTON_CHECK_EVERY} iterations, convergence check included, read by a progress "
            "callback (time.perf_counter at each chunk end, minus the call's start and its "
            "cache look-up seconds); no interpolation. Time to accuracy = first call's compile "
            "seconds + that clock"
        ),
    }
    if trace:
        n_it = iterations_run
        tconfig = config._replace(steps=n_it + 1, stop_when_converged=False)
        tcold, tw, tends = timed_sweep(data, tconfig, betas, sigma2s, seeds, n_chunks=n_it + 1)
        each = chunk_seconds(tends)[:n_it]
        tgaps = (optima[:, None] - tw.history.elbo)[:, :n_it]
        alone = float(each.sum() / (n_it * n_cfg))
        out["trace"] = {
            "note": (
                f"the same trajectory, one iteration per chunk, no convergence checks, {n_it} iterations "
                "timed on a second (warm) call (one more iteration run and left out: its chunk holds the "
                "final diagnosis)"
            ),
            "compile_seconds": tcold.compile_seconds,
            "seconds_per_iteration": each.tolist(),
            "adam_steps_per_iteration_per_config": (each / n_cfg / adam_seconds_per_step).tolist(),
            "worst_gap_per_iteration": tgaps.max(axis=0).tolist(),
            "same_trajectory_max_abs_elbo_diff": float(np.max(np.abs(tgaps - gaps[:, :n_it]))),
            "seconds_per_iteration_per_config": alone,
            "adam_steps_per_iteration": alone / adam_seconds_per_step,
            "iterations_alone_seconds": float(each.sum()),
            "checks_share_of_training": 1.0 - float(each.sum()) / sw.seconds,
            "time_to_accuracy_without_checks": chunked_time_to_accuracy(tgaps, 0.0, config.log_every, tends[:n_it]),
        }
    return out


#: Newton iterations of a hard case in a --quick run (a smoke run; the full run uses the default 500).
QUICK_HARD_CASE_ITERATIONS = 100


def hard_case_runs(quick: bool) -> dict:
    """Section 4: the default Newton sweep of every case of ``linear_vae.verification.hard_cases`` (all its betas
    in one vmapped ``train_and_compare``; sigma2 learned from the mean eigenvalue where the case
    leaves it free).  ``quick`` runs only the first case with fixed and the first with learned sigma2
    (each compiles its own program), at most :data:`QUICK_HARD_CASE_ITERATIONS` iterations."""
    if hard_cases is None:
        return {
            "error": f"linear_vae.verification.hard_cases is not available ({HARD_CASES_IMPORT_ERROR})",
            "cases": [],
        }
    from linear_vae.verification.compare import train_and_compare_zipped

    cases = hard_cases()
    if quick:
        cases = [
            c
            for c in (
                next((c for c in cases if c.sigma2 is not None), None),
                next((c for c in cases if c.sigma2 is None), None),
            )
            if c is not None
        ]
    rows = []
    for case in cases:
        row = {
            "name": case.name,
            "description": case.description,
            "latent_dim": case.latent_dim,
            "sigma2": case.sigma2,
            "betas": [float(b) for b in case.betas],
        }
        try:
            t0 = time.perf_counter()
            problem = Problem.from_dataset(case.make())
            row["startup_seconds"] = time.perf_counter() - t0
            learned = case.sigma2 is None
            sigma2 = float(np.mean(problem.eigenvalues)) if learned else float(case.sigma2)
            betas = np.asarray(case.betas, dtype=float)
            config = TrainConfig(
                latent_dim=case.latent_dim, learn_sigma2=learned, steps=QUICK_HARD_CASE_ITERATIONS if quick else None
            )
            t0 = time.perf_counter()
            start = {"sigma2_init": sigma2} if learned else {"sigma2s": sigma2}
            result, reports = train_and_compare_zipped(problem, config, betas, seeds=0, **start)
            row.update(
                n=problem.dataset.n,
                d=problem.dataset.d,
                initial_sigma2=sigma2,
                wall_seconds=time.perf_counter() - t0,
                train_seconds=result.seconds,
                compile_seconds=result.compile_seconds,
                iterations_run=int(result.history.elbo.shape[1]),
                iterations_used_per_config=result.steps_used.tolist(),
                max_iterations=result.config.steps,
                gaps=[r["gap"] for r in reports],
                worst_gap=max(r["gap"] for r in reports),
                converged=bool(result.converged.all()),
                converged_configs=int(result.converged.sum()),
                verdicts={v: sum(r["verdict"] == v for r in reports) for v in VERDICTS},
            )
        except Exception as exc:  # one broken case must not cost the others (or the run)
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        print(
            f"    hard case {case.name}: "
            + (
                row["error"]
                if "error" in row
                else f"{row['train_seconds']:.1f} s + compile {row['compile_seconds']:.1f} s, "
                f"{max(row['iterations_used_per_config'])} iterations, worst gap {row['worst_gap']:.2e}, "
                f"converged {row['converged']}"
            ),
            flush=True,
        )
    cap = (
        f", steps={QUICK_HARD_CASE_ITERATIONS}; --quick: only the first case with fixed and the first with "
        "learned sigma2"
        if quick
        else ""
    )
    return {
        "cases": rows,
        "goal_train_seconds": HARD_CASE_GOAL_S,
        "note": (
            f"TrainConfig(latent_dim=case.latent_dim, learn_sigma2=case.sigma2 is None{cap}), the default "
            "Newton optimiser; initial sigma2 = the case's, or the mean eigenvalue when learned; "
            "gaps against the closed-form optimum (at the closed-form learned sigma2 when learned); "
            "wall_seconds is the whole train_and_compare_zipped call (basis change, compilation, training, "
            "comparison)"
        ),
    }


def code_version() -> dict:
    """The commit the run measured and whether the package differed from it (others edit it)."""

    def git(*argv):
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", "linear_vae")
    return {"commit": git("rev-parse", "HEAD"), "linear_vae_uncommitted_changes": status.splitlines() if status else []}


POINT_TIMEOUT_S = 180
POINT_ATTEMPTS = 3


def step_cost_in_fresh_process(d: int, k: int, c: int, repeats: int) -> dict:
    """:func:`step_cost` in a fresh Python process under a timeout, retried if it hangs.

    jaxlib 0.10's batched LAPACK kernels deadlocked XLA's CPU thread pool in vmapped sweeps (gdb:
    pool threads in ``jax::ParallelBatchMap`` waiting on each other); the trainer no longer calls
    LAPACK (``linear_vae/core/spd.py``).  The guard stays so that one stuck point cannot cost the
    whole run; the number of attempts each point took is recorded with it.  The process runs
    ``python -m benchmarks.run --scaling-point D K CONFIGS REPEATS`` from the repository root.
    """
    cmd = [sys.executable, "-m", "benchmarks.run", "--scaling-point", str(d), str(k), str(c), str(repeats)]
    for attempt in range(1, POINT_ATTEMPTS + 1):
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=POINT_TIMEOUT_S, check=True)
        except subprocess.TimeoutExpired:
            continue
        point = json.loads(out.stdout.strip().splitlines()[-1])
        point["attempts"] = attempt
        return point
    return {
        "d": d,
        "k": k,
        "configs": c,
        "attempts": POINT_ATTEMPTS,
        "error": f"hung in XLA on all {POINT_ATTEMPTS} attempts of {POINT_TIMEOUT_S} s",
    }


def scaling(q: bool) -> dict:
    """Section 3: cost per step per configuration against d, k and the number of configurations."""
    ds = [100, 300, 784] if q else [100, 300, 784, 2000, 4000]
    ks = [8, 32] if q else [8, 16, 32, 64]
    cs = [1, 4] if q else [1, 4, 16, 64]
    repeats = 3
    scale = {
        "vs_d": [step_cost_in_fresh_process(x, 32, 1, repeats) for x in ds],
        "vs_k": [step_cost_in_fresh_process(784, x, 1, repeats) for x in ks],
        "vs_configs": [step_cost_in_fresh_process(784, 32, x, repeats) for x in cs],
    }

    def fit(rows, key, total=False):
        ok = [r for r in rows if "error" not in r]
        if len(ok) < 2:
            return None
        return fit_exponent(
            [r[key] for r in ok], [r["seconds_per_step_per_config"] * (r["configs"] if total else 1) for r in ok]
        )

    scale["exponent_d_all"] = fit(scale["vs_d"], "d")
    scale["exponent_d_large"] = fit([r for r in scale["vs_d"] if r["d"] >= 784], "d")
    scale["exponent_k"] = fit(scale["vs_k"], "k")
    scale["exponent_configs_total_time"] = fit(scale["vs_configs"], "configs", total=True)
    scale["hung_attempts"] = sum(
        r["attempts"] - 1 for key in ("vs_d", "vs_k", "vs_configs") for r in scale[key] if "error" not in r
    )
    scale["note"] = (
        "random data, n = 500, data basis, k = 32 / d = 784 / 1 configuration unless varied; "
        "a step's FLOPs are 4kd^2 + 12dk^2 + 4dk, so the ideal exponents are 2 in d (large d) "
        "and 1-2 in k; memory is XLA's compiled memory_analysis of the vmapped run; each point "
        f"is measured in a fresh process (timeout {POINT_TIMEOUT_S} s, up to {POINT_ATTEMPTS} "
        "attempts: see step_cost_in_fresh_process)"
    )
    return scale


def run_all(quick: bool, steps: int | None = None, partial: str = "benchmarks/results.json.partial") -> dict:
    """Sections 1 to 4 and the PyTorch baselines, in that order (PyTorch last: see below).

    ``quick`` is the smoke run (4 configurations, 2000 steps, small budgets); ``steps`` overrides
    the Adam schedule's length.  The results so far are written to ``partial`` after every
    section.  Returns the raw results: :func:`benchmarks.report.write_report` adds the ratios,
    targets and notes and writes the JSON and the markdown.
    """
    q = quick
    T0 = time.perf_counter()

    steps = steps or (2000 if q else FULL_STEPS)
    n_cfg = 4 if q else 16
    budget = {"a": 8 if q else 25, "b": 15 if q else 150, "c": 15 if q else 45}
    a_configs = 1 if q else 2
    repeats = 3 if q else 5

    t0 = time.perf_counter()
    dataset = load_mnist()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    moments = compute_moments(dataset.X)
    moments_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spectrum = eigen_decomposition(moments.cov)
    eigh_s = time.perf_counter() - t0
    d, k, sigma2 = dataset.d, 32, 0.1
    lam = spectrum.eigenvalues
    betas = np.geomspace(0.5, 2 * lam[0] / sigma2, n_cfg)
    optima = np.array([beta_elbo_optimum(lam, k, b, sigma2).elbo for b in betas])
    thresholds = lam[:k] / sigma2
    config = adam_config(k, steps)
    res = {
        "mode": "quick" if q else "full",
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "code": code_version(),
        "load_average": {"start": os.getloadavg()},
        "problem": {
            "dataset": "shipped MNIST",
            "n": dataset.n,
            "d": d,
            "k": k,
            "sigma2": sigma2,
            "betas": betas.tolist(),
            "thresholds_inside": int(np.sum((thresholds > betas[0]) & (thresholds < betas[-1]))),
            "optimal_elbo": optima.tolist(),
            "tolerances_nats": list(ALL_TOLS),
            "load_seconds": load_s,
            "moments_seconds": moments_s,
            "eigendecomposition_seconds": eigh_s,
        },
        "optimiser": {
            "name": "adam",
            "lr": config.learning_rate,
            "schedule": config.schedule,
            "steps": steps,
            "log_every": config.log_every,
            "init": config.init,
            "init_scale": config.init_scale,
        },
    }
    print(
        f"[{time.perf_counter() - T0:6.1f}s] MNIST n={dataset.n} d={d} k={k}, {n_cfg} betas "
        f"{betas[0]:.3g}..{betas[-1]:.3g}, {res['problem']['thresholds_inside']} of k thresholds inside",
        flush=True,
    )

    # ---- 1. vmapped sweeps (data basis, eigenbasis)
    seeds = np.zeros(n_cfg, int)
    sigma2s = np.full(n_cfg, sigma2)
    ours, needed = {}, {}
    for basis in ("data", "eigen"):
        data = TrainData.build(Problem(dataset, moments.mean, moments.cov, spectrum), basis)
        cfg = config._replace(basis=basis)
        sw = train_sweep(data, cfg, betas, sigma2s, seeds)
        gaps = optima[:, None] - sw.history.elbo
        needed[basis] = steps_needed(gaps, config.log_every, ALL_TOLS)
        ours[basis] = {
            "compile_seconds": sw.compile_seconds,
            "train_seconds": sw.seconds,
            "seconds_per_step_per_config": sw.seconds / (steps * n_cfg),
            "time_to_accuracy": sweep_time_to_accuracy(
                gaps, sw.compile_seconds, sw.seconds, config.log_every, ALL_TOLS
            ),
            "steps_needed_per_config": needed[basis],
            "min_gap_seen": float(gaps.min()),
        }
        print(
            f"[{time.perf_counter() - T0:6.1f}s] sweep {basis}: {sw.seconds:.1f} s + compile "
            f"{sw.compile_seconds:.1f} s, tta {ours[basis]['time_to_accuracy']}",
            flush=True,
        )
        if basis == "data":
            sweep_hist = sw.history.elbo
    res["sweep_data"], res["sweep_eigen"] = ours["data"], ours["eigen"]
    res["load_average"]["after_adam_sweeps"] = os.getloadavg()
    atomic_write_json(partial, res)

    # ---- the default optimiser: trust-region Newton (eigenbasis), timed at every chunk end
    res["sweep_newton"] = nw = newton_sweep(
        dataset,
        moments,
        spectrum,
        k,
        betas,
        sigma2s,
        seeds,
        optima,
        ours["eigen"]["seconds_per_step_per_config"],
        trace=not q,
    )
    res["load_average"]["after_newton"] = os.getloadavg()
    atomic_write_json(partial, res)
    print(
        f"[{time.perf_counter() - T0:6.1f}s] newton: start-up {nw['startup_seconds']:.1f} s, compile "
        f"{nw['compile_seconds']:.1f} s, {nw['train_seconds']:.1f} s for {nw['iterations_run']} iterations "
        f"({nw['adam_steps_per_iteration']:.0f} Adam steps each), converged {nw['all_converged']}, "
        f"tta {nw['time_to_accuracy']}",
        flush=True,
    )

    # ---- Python loop over train_single (same trajectory as the sweep: checked)
    data = TrainData.build(Problem(dataset, moments.mean, moments.cov, spectrum), "data")
    t0 = time.perf_counter()
    jax.block_until_ready(train_single(data, config, betas[0], sigma2, 0))  # compile + first run
    first_call = time.perf_counter() - t0
    t0 = time.perf_counter()  # one timed run, the first configuration's (the sweep's steps cost the same)
    _, hist = train_single(data, config, betas[0], sigma2, 0)
    e = np.asarray(jax.block_until_ready(hist.elbo))
    run_s = time.perf_counter() - t0
    max_diff = float(np.max(np.abs(e - sweep_hist[0])))
    compile_single = max(first_call - run_s, 0.0)
    loop = {
        "compile_seconds": compile_single,
        "seconds_per_run_median": run_s,
        "runs_timed": 1,
        "seconds_per_step_per_config": run_s / steps,
        "max_abs_elbo_diff_vs_sweep_history": max_diff,
        "note": (
            "time to accuracy = compile + sum over configurations of (steps that configuration needs, "
            "from the identical sweep trajectory) x the measured seconds per step of train_single"
        ),
    }
    res["python_loop_train_single"] = loop
    print(
        f"[{time.perf_counter() - T0:6.1f}s] train_single: {run_s:.2f} s per run, diff vs sweep {max_diff:.2e}",
        flush=True,
    )

    # ---- 2. hardware limit
    flops = step_flops(d, k)
    per_step = ours["data"]["seconds_per_step_per_config"]
    rate64 = matmul_rate(n_cfg * k, d, jnp.float64, repeats)
    rate32 = matmul_rate(n_cfg * k, d, jnp.float32, repeats)
    breakdown = step_breakdown(data, k, betas, sigma2, repeats)
    res["hardware"] = {
        "flops_per_step": flops,
        "achieved_flops_per_second": flops / per_step,
        "matmul_float64_flops_per_second": rate64,
        "matmul_float32_flops_per_second": rate32,
        "fraction_of_float64_matmul": flops / per_step / rate64,
        "matmul_shape": f"({n_cfg * k} x {d}) @ ({d} x {d})",
        "sweep_step_breakdown_seconds": breakdown,
        "VS_product_fraction_of_step": breakdown["VS_product"] / breakdown["train_step"],
    }
    print(f"[{time.perf_counter() - T0:6.1f}s] hardware {res['hardware']}", flush=True)

    # ---- 3. scaling: one fresh process per point (see step_cost_in_fresh_process)
    res["scaling"] = scale = scaling(q)
    atomic_write_json(partial, res)
    print(
        f"[{time.perf_counter() - T0:6.1f}s] scaling exponents d {scale['exponent_d_all']} "
        f"(d >= 784: {scale['exponent_d_large']}), k {scale['exponent_k']}, "
        f"{scale['hung_attempts']} hung attempts retried",
        flush=True,
    )

    # ---- 4. hard cases: the default Newton sweep of each (JAX only, so before PyTorch is imported)
    print(f"[{time.perf_counter() - T0:6.1f}s] hard cases", flush=True)
    res["hard_cases"] = hard_case_runs(q)
    res["load_average"]["after_hard_cases"] = os.getloadavg()
    atomic_write_json(partial, res)

    # ---- PyTorch baselines (imported last, so that its thread pool never shares a process with JAX's)
    torch = None
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        res["torch_version"] = torch.__version__
    except ImportError:
        print("PyTorch not installed (pip install -e '.[bench]'): skipping the PyTorch baselines")
    if torch is not None:
        hyper = Hyper(jnp.asarray(betas), jnp.asarray(sigma2s), jnp.asarray(seeds, dtype=jnp.uint32))
        init = jax.jit(jax.vmap(lambda h: init_state(config, h, data)))(hyper).trainable.params
        inits = [{n: np.asarray(getattr(init, n))[i] for n in ("W", "mu", "V", "log_D")} for i in range(n_cfg)]
        S_t = torch.tensor(moments.cov, dtype=torch.float64)
        mean_t = torch.tensor(moments.mean, dtype=torch.float64)
        X_t = torch.tensor(dataset.X, dtype=torch.float64)
        trace = float(np.trace(moments.cov))
        res["torch"] = {}
        for kind in ("b", "c", "a"):
            per_config = [None] * n_cfg
            spent = 0.0
            order = np.linspace(0, n_cfg - 1, a_configs).round().astype(int) if kind == "a" else range(n_cfg)
            for i in order:
                left = budget[kind] if kind == "a" else budget[kind] - spent
                if left <= 0:
                    break
                recs = torch_baseline(
                    kind,
                    inits[i],
                    float(betas[i]),
                    sigma2,
                    float(optima[i]),
                    S_t,
                    mean_t,
                    trace,
                    X_t,
                    steps,
                    config.learning_rate,
                    left,
                    stop_tol=min(ALL_TOLS),
                )
                spent += recs[-1][1]
                per_config[i] = {
                    "records": recs,
                    "seconds_per_step": recs[-1][1] / recs[-1][0],
                    "steps_run": recs[-1][0],
                }
            summary = summarise_loop(per_config, needed["data"], steps, project=kind != "c", tols=ALL_TOLS)
            summary["budget_seconds"] = budget[kind]  # (a): per configuration; (b), (c): in all
            summary["per_config"] = [
                None
                if p is None
                else {
                    "beta": float(betas[i]),
                    "steps_run": p["steps_run"],
                    "seconds_per_step": p["seconds_per_step"],
                    "best_gap": min(r[2] for r in p["records"]),
                    "first_step_within": {
                        f"{t:g}": next((r[0] for r in p["records"] if r[2] <= t), None) for t in ALL_TOLS
                    },
                    "ours_first_step_within": {f"{t:g}": needed["data"][f"{t:g}"][i] for t in ALL_TOLS},
                }
                for i, p in enumerate(per_config)
            ]
            res["torch"][kind] = summary
            atomic_write_json(partial, res)
            print(
                f"[{time.perf_counter() - T0:6.1f}s] torch ({kind}): {summary['configs_run']} configs, "
                f"{summary['seconds_per_step_median'] * 1e3:.2f} ms/step, "
                f"{ {t: v['total_seconds'] for t, v in summary['tolerances'].items()} }",
                flush=True,
            )

    res["total_seconds"] = time.perf_counter() - T0
    res["load_average"]["end"] = os.getloadavg()
    return res
