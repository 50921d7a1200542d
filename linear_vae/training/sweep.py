"""The sweep driver: many linear VAEs trained at once by one compiled program.

Data flow.  :func:`train_sweep` takes the data, a static :class:`~linear_vae.training.train.TrainConfig`
(shapes, step counts, optimiser) and arrays of per-configuration values (``beta``, ``sigma2``,
``seed``).  It ``vmap``s :func:`linear_vae.training.train.init_state` and :func:`linear_vae.training.train.run_steps`
over those arrays and ``jit``s them once, so a sweep over beta, sigma2 and seeds is one compiled
program; changing the values never recompiles.  The scan is cut into equal chunks, each a call of
the same compiled function (:func:`linear_vae.training.loop.run_in_chunks`), so that progress can be shown
and convergence checked between them (:class:`_Monitor`); a configuration that has converged is
frozen.  The driver asks the solver (:class:`linear_vae.training.solver.Solver`) only through its interface
and attributes: how often to check it, when to skip a check, what it does with a check, and
how it normalises its final models.  Divergence is watched between chunks and at the end (:class:`_DivergenceWatch`).  On
several devices the configuration axis is sharded across them.  :func:`train_single` is a sweep of
one.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.core.validation import check_positive
from linear_vae.theory.elbo import LinearVAEParams
from linear_vae.training import convergence, divergence, loop
from linear_vae.training.train import (
    History,
    Hyper,
    TrainConfig,
    TrainData,
    TrainState,
    convergence_diagnosis,
    init_state,
    measure,
    model,
    record_steps,
    run_steps,
)


class SweepResult(NamedTuple):
    """Final parameters, histories and convergence of every configuration of a sweep (numpy, leading axis C).

    ``history`` holds the records up to the last chunk run (fewer than ``len(record_steps(config))``
    when every configuration converged sooner).  ``diagnosis`` is the convergence test after the
    last step; ``checks`` lists ``(steps, predicted_gain per configuration)`` for every test made
    (between chunks and at the end), for convergence rates, and ``skipped_checks`` the steps at
    which the sweep skipped one (the solver's ``skip_check_gain``, :data:`linear_vae.training.newton.SKIP_CHECK_GAIN`
    for Newton).  ``start_objective`` is the objective
    before the first step, and ``diverged``/``divergence`` the verdict and reason of
    :func:`linear_vae.training.divergence.diverged_runs` (``None`` where the run did not diverge).
    """

    config: TrainConfig
    hyper: Hyper
    params: LinearVAEParams
    sigma2: np.ndarray
    history: History
    seconds: float  # training wall time, compilation excluded (convergence checks included)
    compile_seconds: float
    steps_used: np.ndarray  # (C,) steps taken before converging (or all of them)
    diagnosis: convergence.Diagnosis
    checks: list
    start_objective: np.ndarray
    diverged: np.ndarray
    divergence: list
    check_seconds: float  # the part of ``seconds`` spent in convergence and divergence checks
    skipped_checks: list  # steps at which a check was skipped (the solver's ``skip_check_gain``)

    @property
    def step_seconds(self) -> float:
        """Training wall time of the optimiser steps and records alone (checks excluded).

        >>> from linear_vae.data.problem import Problem
        >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
        >>> result = train_sweep(TrainData.build(problem, "eigen"), TrainConfig(latent_dim=2), [1.0, 1.0], [0.5, 5.0], [0, 0])
        >>> 0 < result.step_seconds < result.seconds  # the convergence checks took the rest
        True
        """
        return self.seconds - self.check_seconds

    @property
    def converged(self) -> np.ndarray:
        """Whether each configuration passed the convergence test after its last step.

        >>> from linear_vae.data.problem import Problem
        >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
        >>> result = train_sweep(TrainData.build(problem, "eigen"), TrainConfig(latent_dim=2), [1.0, 1.0], [0.5, 5.0], [0, 0])
        >>> result.converged
        array([ True,  True])
        """
        return np.asarray(self.diagnosis.converged, dtype=bool)


def _records_per_chunk(config: TrainConfig, total_records: int, n_chunks: int, progress) -> int:
    """A solver with a ``check_every`` (Newton: :data:`linear_vae.training.newton.CHECK_EVERY` iterations) is checked that
    often; the others in ``n_chunks`` chunks when they are checked or show progress, else in one."""
    check_every = config.solver.check_every
    if check_every is not None and config.stop_when_converged:
        return loop.records_per_chunk(total_records, max(1, total_records * config.log_every // check_every))
    return loop.records_per_chunk(total_records, n_chunks if (progress or config.stop_when_converged) else 1)


def _after_check(state: TrainState, diagnosis: convergence.Diagnosis, config: TrainConfig) -> TrainState:
    """Freeze converged configurations, and let the solver act on the check (``after_check``:
    Newton takes an ascent direction where it sits at a saddle)."""
    state = state._replace(converged=state.converged | diagnosis.converged)
    return state._replace(solver_state=config.solver.after_check(state.solver_state, diagnosis, config))


_COMPILED: dict = {}


def _compiled_sweep(config: TrainConfig, n_records: int):
    """``jit(vmap(...))`` of :func:`init_state` (with the first :func:`measure`), :func:`run_steps`
    over ``n_records`` records, :func:`convergence_diagnosis` and the post-check update for a static config
    (cached: a sweep's values never recompile)."""
    cache_key = (config, n_records)
    if cache_key not in _COMPILED:

        def init_and_measure(hyper, data):
            state = init_state(config, hyper, data)
            return state, measure(state, hyper, data, config)

        init = jax.jit(jax.vmap(init_and_measure, in_axes=(0, None)))
        run = jax.jit(
            jax.vmap(lambda s, h, data, n: run_steps(s, h, data, config, n), in_axes=(0, 0, None, None)),
            donate_argnums=0,
        )
        check = jax.jit(jax.vmap(lambda s, h, data: convergence_diagnosis(s, h, data, config), in_axes=(0, 0, None)))
        update = jax.jit(jax.vmap(lambda s, g: _after_check(s, g, config)))
        _COMPILED[cache_key] = (init, run, check, update)
    return _COMPILED[cache_key]


def train_sweep(
    data: TrainData,
    config: TrainConfig,
    betas,
    sigma2s,
    seeds,
    progress: Callable[[int, int], None] | None = None,
    n_chunks: int = 10,
    on_divergence: str = "raise",
) -> SweepResult:
    """Train one linear VAE per entry of ``betas``, ``sigma2s``, ``seeds`` (equal-length 1-D) at once.

    One compiled call trains every configuration (``vmap`` over the three arrays).  ``progress``
    is called as ``progress(steps_done, steps_total)`` between chunks; if it has a ``phase(name)``
    method (:class:`linear_vae.core.progress.Progress`), it is told when compilation and training
    begin.  With ``config.stop_when_converged`` the sweep is diagnosed between chunks and stops
    once every configuration has converged (or diverged); it is always diagnosed after its last
    step.

    Divergence (:mod:`linear_vae.training.divergence`) is checked between chunks and at the end.  With
    ``on_divergence="raise"`` the first diverged configuration raises :class:`~linear_vae.training.divergence.DivergenceError`
    naming it and the step; with ``"report"`` the sweep runs on and the result marks it
    (``diverged``, ``divergence``).

    Two configurations (``sigma2`` = 0.5 and 5) on data of variances about 9.3, 4 and 0.9: both
    converge to the closed-form optimum, where a direction collapses when its variance is below
    ``beta sigma2`` (:mod:`linear_vae.theory.optimum`):

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> result = train_sweep(TrainData.build(problem, "eigen"), TrainConfig(latent_dim=2), [1.0, 1.0], [0.5, 5.0], [0, 0])
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optima = [beta_elbo_optimum(problem.eigenvalues, 2, 1.0, sigma2).elbo for sigma2 in (0.5, 5.0)]
    >>> bool(result.converged.all()), float(np.abs(result.history.elbo[:, -1] - optima).max()) < 1e-9
    (True, True)
    >>> result.history.column_norms_sq[:, -1].round(6)  # lambda_i - beta sigma2, or 0 where collapsed
    array([[8.75917, 3.48828],
           [4.25917, 0.     ]])
    """
    if on_divergence not in ("raise", "report"):
        raise ValueError(f"on_divergence must be 'raise' or 'report', not {on_divergence!r}")
    if config.basis is None:  # the basis the data were built in
        config = config._replace(basis="data" if data.rotation is None else "eigen")
    config = config.resolved()
    _check_sweep(config, data, betas, sigma2s, seeds)
    hyper = Hyper(
        jnp.asarray(betas, dtype=jnp.float64),
        jnp.asarray(sigma2s, dtype=jnp.float64),
        jnp.asarray(seeds, dtype=jnp.uint32),
    )
    n_configs = hyper.beta.shape[0]
    hyper, sharding = loop.shard_configurations(hyper, n_configs)

    steps_per_record = record_steps(config)
    chunk = _records_per_chunk(config, len(steps_per_record), n_chunks, progress)
    init, run, check, update = _compiled_sweep(config, chunk)
    if config.solver.progress_units != "step" and hasattr(progress, "units"):
        progress.units(config.solver.progress_units)
    monitor = _Monitor(config, hyper, data, n_configs, check, update, on_divergence, progress)
    outcome = loop.run_in_chunks(
        init, run, (hyper, data), steps_per_record, chunk, monitor, progress, sharded=sharding is not None
    )
    state = outcome.state

    def host(tree):
        return jax.tree.map(lambda a: np.asarray(a)[:n_configs], tree)

    params = config.solver.final_params(
        data.to_data_basis(host(jax.vmap(lambda s, h: model(s, h, data, config))(state, hyper)))
    )
    history, steps_used = host(outcome.history), host(state.step)
    diverged, reasons = monitor.watch.at_end(state, history, steps_used)
    return SweepResult(
        config,
        host(hyper),
        params,
        np.exp(host(state.trainable.log_sigma2)),
        history,
        outcome.seconds,
        outcome.compile_seconds,
        steps_used,
        host(monitor.diagnosis),
        monitor.checks,
        monitor.watch.start,
        diverged,
        reasons,
        outcome.hook_seconds,
        monitor.skipped,
    )


class _Monitor:
    """What a linear sweep does between chunks (:func:`linear_vae.training.loop.run_in_chunks`): divergence
    checks, the convergence test (compiled on first use, for the state as the run leaves it),
    freezing converged configurations, and stopping once every one has converged or diverged."""

    def __init__(
        self,
        config: TrainConfig,
        hyper: Hyper,
        data: TrainData,
        n_configs: int,
        check,
        update,
        on_divergence: str,
        progress=None,
    ):
        self.config, self.hyper, self.data, self.n_configs = config, hyper, data, n_configs
        self.check, self.update, self.on_divergence = check, update, on_divergence
        self.show = progress.status if hasattr(progress, "status") else None
        self.compiled = None
        self.watch = None
        self.diagnosis = None
        self.checks: list = []  # (steps, predicted gain per configuration) of every test made
        self.skipped: list = []  # steps at which a check was skipped (the solver's skip_check_gain)
        self.previous = None  # each configuration's objective at the end of the previous chunk

    def __call__(self, chunk: loop.Chunk):
        config, n_configs, state, compiling = self.config, self.n_configs, chunk.state, 0.0
        if self.watch is None:
            self.watch = _DivergenceWatch(
                config, self.data, self.hyper, n_configs, chunk.first_record, self.on_divergence
            )
            self.previous = self.watch.start
        self.watch.during(state, chunk.history)
        last_gain = self._last_iteration_gain(state, chunk.history)
        if config.stop_when_converged and last_gain > config.solver.skip_check_gain and not chunk.last:
            self.skipped.append(chunk.steps_done)
            if self.show:
                self.show(f"worst last-iteration gain {last_gain:.1e} nats")
        elif config.stop_when_converged or chunk.last:
            if self.compiled is None:
                start = time.perf_counter()
                check = self.check.lower(state, self.hyper, self.data).compile()
                self.compiled = (check, self.update.lower(state, check.out_info).compile())
                compiling = time.perf_counter() - start
            self.diagnosis = self.compiled[0](state, self.hyper, self.data)
            state = self.compiled[1](state, self.diagnosis)
            self.checks.append((chunk.steps_done, np.asarray(self.diagnosis.predicted_gain)[:n_configs]))
            if self.show and config.solver.check_every is not None:
                self.show(_worst_gain_text(self.checks[-1][1], np.asarray(state.converged)[:n_configs]))
        converged = np.asarray(state.converged)[:n_configs]
        return state, config.stop_when_converged and bool(np.all(converged | self.watch.blown)), compiling

    def _last_iteration_gain(self, state: TrainState, history: History) -> float:
        """The largest gain of a running configuration's last recorded step (nats per datapoint);
        above the solver's ``skip_check_gain`` the sweep cannot stop at this check, so it is
        skipped.  ``-inf`` for a solver that never skips (infinite ``skip_check_gain``) and when no
        configuration is running."""
        if self.config.solver.skip_check_gain == np.inf:
            return -np.inf
        objective = np.asarray(self.watch.objective(history))[: self.n_configs]
        before = objective[:, -2] if objective.shape[1] > 1 else self.previous
        self.previous = objective[:, -1]
        running = ~(np.asarray(state.converged)[: self.n_configs] | self.watch.blown)
        gain = (objective[:, -1] - before)[running]
        return float(np.max(gain)) if gain.size else -np.inf


def _worst_gain_text(predicted_gain: np.ndarray, converged: np.ndarray) -> str:
    """What a Newton sweep's progress shows after a convergence check: the largest predicted gain
    among the configurations still running (docs/theory.md (T7.3)), or that all have converged."""
    running = predicted_gain[~converged]
    if running.size == 0:
        return f"all {converged.size} converged"
    worst = np.max(running)
    shown = f"{worst:.1e} nats" if np.isfinite(worst) else "unknown (far from a maximum)"
    return f"{running.size} of {converged.size} running, worst predicted gain {shown}"


class _DivergenceWatch:
    """Applies :mod:`linear_vae.training.divergence` to a sweep: between chunks (non-finite values, a model
    variance past the bound) and at the end (also the fall of the objective below its start)."""

    def __init__(
        self,
        config: TrainConfig,
        data: TrainData,
        hyper: Hyper,
        n_configs: int,
        first_record: History,
        on_divergence: str,
    ):
        self.config, self.hyper, self.n_configs, self.on_divergence = config, hyper, n_configs, on_divergence
        self.data_variance = float(data.stats.trace)
        self.d = float(data.stats.dim)  # the data's d, also when training in the top-N eigen-coordinates
        self.start = self.objective(jax.tree.map(lambda a: np.asarray(a)[:n_configs], first_record))
        self.blown = np.zeros(n_configs, dtype=bool)  # rule 1 or 3 has fired
        self.blown_step = np.zeros(n_configs, dtype=int)
        self.peak_variance = np.zeros(n_configs)

    def objective(self, record: History) -> np.ndarray:
        return np.asarray(record.mll if self.config.objective == "mll" else record.elbo)

    def _last(self, history: History) -> History:
        return jax.tree.map(lambda a: np.asarray(a)[: self.n_configs, -1], history)

    def during(self, state: TrainState, history: History) -> None:
        last = self._last(history)
        variance = np.sum(last.column_norms_sq, axis=-1) + self.d * last.sigma2
        variance = np.where(np.isfinite(variance), variance, np.inf)
        self.peak_variance = np.maximum(self.peak_variance, variance)
        nonfinite = np.asarray(state.first_nonfinite_step)[: self.n_configs] >= 0
        nonfinite |= ~np.isfinite(self.objective(last))
        fired = ~self.blown & (nonfinite | (variance > divergence.SCALE_FACTOR**2 * self.data_variance))
        self.blown_step[fired] = np.asarray(last.step)[fired]
        self.blown |= fired
        if self.on_divergence == "raise" and fired.any():
            _, reasons = self._verdict(state, self.objective(last), np.asarray(last.step))
            self._raise(int(np.argmax(fired)), reasons)

    def at_end(self, state: TrainState, history: History, steps_used: np.ndarray):
        diverged, reasons = self._verdict(state, self.objective(history)[:, -1], steps_used)
        if self.on_divergence == "raise" and diverged.any():
            self._raise(int(np.argmax(diverged)), reasons)
        return diverged, reasons

    def _verdict(self, state: TrainState, end: np.ndarray, steps: np.ndarray):
        named_step = np.where(self.blown, self.blown_step, steps)
        return divergence.diverged_runs(
            self.start,
            end,
            self.peak_variance,
            self.data_variance,
            np.asarray(state.first_nonfinite_step)[: self.n_configs],
            named_step,
        )

    def _raise(self, i: int, reasons: list) -> None:
        h = self.hyper
        sigma2 = "initial sigma2" if self.config.learn_sigma2 else "sigma2"  # a learned one has moved since
        raise divergence.DivergenceError(
            f"training diverged in configuration {i} (beta = {float(h.beta[i]):.6g}, {sigma2} = {float(h.sigma2[i]):.6g}, "
            f"seed = {int(h.seed[i])}): {reasons[i]}; lower the `learning_rate`"
        )


def _check_sweep(config: TrainConfig, data: TrainData, betas, sigma2s, seeds) -> None:
    """One-line ``ValueError`` for sweeps that cannot run: mismatched lengths, bad values, wrong basis."""
    lengths = {len(np.atleast_1d(v)) for v in (betas, sigma2s, seeds)}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(
            f"betas, sigma2s and seeds must be non-empty and of equal length, got lengths "
            f"{[len(np.atleast_1d(v)) for v in (betas, sigma2s, seeds)]}"
        )
    for values, name in ((betas, "beta"), (sigma2s, "sigma2")):
        for v in np.atleast_1d(values):
            check_positive(name, v)
    for seed in np.atleast_1d(seeds):
        if int(seed) != seed or not 0 <= int(seed) < 2**32:
            raise ValueError(f"seed {seed} is out of range; pass an integer seed between 0 and {2**32 - 1}")
    if (config.basis == "eigen") != (data.rotation is not None):
        raise ValueError(
            f"the config trains in the {config.basis!r} basis but the data were built in the other; "
            f"build them with TrainData.build(..., basis={config.basis!r})"
        )


def train_single(data: TrainData, config: TrainConfig, beta: float, sigma2: float, seed: int):
    """One configuration without ``vmap`` (the baseline a sweep is compared with): returns the
    final :class:`TrainState` and :class:`History` as device arrays.

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> config = TrainConfig(latent_dim=2, optimizer="adam", steps=300, log_every=100, learning_rate=0.1)
    >>> state, history = train_single(TrainData.build(problem), config, beta=1.0, sigma2=0.5, seed=0)
    >>> history.step, history.elbo.round(3)  # Adam, cosine schedule: 0.04 below the optimum, -6.154
    (Array([100, 200, 300], dtype=int64), Array([-6.199, -6.198, -6.198], dtype=float64))
    """
    hyper = Hyper(jnp.float64(beta), jnp.float64(sigma2), jnp.uint32(seed))
    config = config.resolved()
    return _single(config, hyper, data, jnp.asarray(record_steps(config)))


def _single_impl(config, hyper, data, steps_per_record):
    state = init_state(config, hyper, data)
    return run_steps(state, hyper, data, config, steps_per_record)


_single = jax.jit(_single_impl, static_argnums=0)
