"""Gradient training of the linear VAE in JAX: one configuration written once, a sweep by ``vmap``.

The trainer maximises the beta-ELBO of :mod:`linear_vae.elbo`, either

* ``objective="exact"``: the closed-form ELBO from the data moments (full batch; a step costs
  O(d^2 k), independent of N), or
* ``objective="stochastic"``: the reparameterised Monte-Carlo ELBO on minibatches, or
* ``objective="mll"``: no VAE at all, the pPCA log marginal likelihood of the decoder (pPCA fitted
  by gradient ascent; the encoder is left untouched), the baseline of the escape and
  identifiability experiments,

with fixed or learned ``sigma2`` (``log sigma2`` is a parameter, so it stays positive; ``D`` is
parameterised by ``log D`` for the same reason).  Optimisers:

* ``"newton"`` (default, exact objective only): trust-region Newton on the projected objective of
  :mod:`linear_vae.newton`, which converges to the closed-form optimum to round-off on any
  spectrum and stops once converged;
* ``"adam"`` and ``"sgd"`` (optax): what practitioners use, for the escape-time and training-curve
  experiments and for the stochastic objective.

Every run ends with a convergence diagnosis that never looks at the closed form
(:func:`linear_vae.newton.convergence_test`): the predicted gain of exact block maximisation plus a
Newton step, and a Lanczos check for an ascent direction.  With ``stop_when_converged`` the
sweep is also diagnosed between chunks and stops once every configuration has converged.

Data flow.  :func:`train_sweep` takes the data, a static :class:`TrainConfig` (shapes, step
counts, optimiser) and arrays of per-configuration values (``beta``, ``sigma2``, ``seed``).  It
``vmap``s :func:`init_state` and :func:`run_steps` over those arrays and ``jit``s them once, so a
sweep over beta, sigma2 and seeds is one compiled program; changing the values never
recompiles.  Steps run under ``lax.scan``; metrics are recorded every ``log_every`` steps.  The
scan is cut into equal chunks, each a call of the same compiled function, so that progress can
be shown and convergence checked between them; a configuration that has converged is frozen.
On several devices the configuration axis is sharded across them.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from linear_vae import divergence, loop, newton
from linear_vae.elbo import DataStats, LinearVAEParams, elbo_terms, monte_carlo_elbo, optimal_encoder
from linear_vae.ppca import log_marginal_likelihood
from linear_vae.problem import BASES, Problem
from linear_vae.validation import check_latent_dim, check_positive

OBJECTIVES = ("exact", "stochastic", "mll")
OPTIMIZERS = ("newton", "adam", "sgd")
#: ``(steps, log_every, basis)`` when a :class:`TrainConfig` leaves them unset: Newton iterations are
#: few and costly (each is recorded; the eigenbasis makes them O(d k^2)), gradient steps many and cheap.
OPTIMIZER_DEFAULTS = {"newton": (500, 1, "eigen"), "adam": (20000, 100, "data"), "sgd": (20000, 100, "data")}
#: Newton iterations between two convergence checks.
NEWTON_CHECK_EVERY = 5
#: A Newton sweep skips a convergence check while some running configuration's last iteration
#: still raised its objective by more than this (nats per datapoint).  Newton converges
#: superlinearly, so the gap left after a step that gained ``g`` is of order ``g^2`` or more
#: (more where the trust region cut the step), far above the test's ``GAIN_TOL = 1e-8``: the sweep
#: cannot stop at that check.  The check would only freeze the configurations already finished and
#: hand an escape direction to one stalled at a saddle, and both wait until the last one nears
#: the end.
NEWTON_SKIP_GAIN = 1e-3
SCHEDULES = ("constant", "cosine", "exponential")
INITS = ("random", "collapsed")


class TrainConfig(NamedTuple):
    """Everything that fixes the compiled program (hashable; the same for a whole sweep).

    Attributes
    ----------
    latent_dim : k.
    steps : the most optimiser steps; a run that converges stops sooner when
        ``stop_when_converged``.  Default from :data:`OPTIMIZER_DEFAULTS`.
    log_every : record metrics every this many steps, and after the last step (default from
        :data:`OPTIMIZER_DEFAULTS`).
    objective : "exact" (closed-form ELBO from S), "stochastic" (minibatch Monte Carlo) or
        "mll" (the pPCA marginal likelihood of the decoder alone).
    optimizer : "newton" (default; exact objective only, see :mod:`linear_vae.newton`), "adam" or
        "sgd" (plain gradient ascent, no momentum).
    learning_rate : peak step size (Adam and SGD).
    schedule : "constant", "cosine" (decay to 0 over ``steps``) or "exponential" (to 1e-2 of
        the peak over ``steps``).
    batch_size : minibatch size of the stochastic objective.
    mc_samples : Monte-Carlo samples of z per datapoint (stochastic objective).
    learn_sigma2 : learn ``log sigma2`` (``sigma2`` of the sweep is then its initial value).
    init : "random" (small Gaussian decoder weights, encoder at the prior) or "collapsed" (the
        fixed-sigma2 optimum with the ``collapsed_columns`` zeroed, the optimal encoder for it,
        plus a perturbation of size ``init_scale``: the start of the escape experiments).
    init_scale : standard deviation of the random initial weights / of the perturbation.
    collapsed_columns : latent dimensions set to zero by ``init="collapsed"``.
    basis : "data" (train on the data as given) or "eigen" (rotate the data once into the
        eigenbasis of ``S``, where ``S`` is diagonal and a step of the exact objective costs
        O(d k^2) instead of O(d^2 k); the ELBO is invariant to the rotation, plain gradient
        ascent's and Newton's trajectories are too, Adam's is not).  Results are rotated back to
        the data basis.  Default from :data:`OPTIMIZER_DEFAULTS`.
    stop_when_converged : diagnose between chunks and stop once every configuration has
        converged (off for experiments that need the whole trajectory).
    gain_tol : the predicted gain (nats per datapoint) below which a configuration has converged
        (:func:`linear_vae.newton.convergence_test`); Newton converges quadratically, so a tighter value
        costs it a few iterations and buys parameters correct to round-off.
    """

    latent_dim: int
    steps: int | None = None
    log_every: int | None = None
    objective: str = "exact"
    optimizer: str = "newton"
    learning_rate: float = 1e-2
    schedule: str = "cosine"
    batch_size: int = 100
    mc_samples: int = 1
    learn_sigma2: bool = False
    init: str = "random"
    init_scale: float = 1e-2
    collapsed_columns: tuple[int, ...] = ()
    basis: str | None = None
    stop_when_converged: bool = True
    gain_tol: float = newton.GAIN_TOL

    def resolved(self) -> "TrainConfig":
        """The config with ``steps``, ``log_every`` and ``basis`` filled in from the optimiser's defaults."""
        if self.optimizer not in OPTIMIZER_DEFAULTS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        steps, log_every, basis = OPTIMIZER_DEFAULTS[self.optimizer]
        return self._replace(
            steps=steps if self.steps is None else self.steps,
            log_every=log_every if self.log_every is None else self.log_every,
            basis=basis if self.basis is None else self.basis,
        )

    def validate(self, d: int, n: int) -> "TrainConfig":
        """Raise ``ValueError`` (one line, what to change) for an impossible configuration; returns
        the :meth:`resolved` config."""
        self = self.resolved()
        check_latent_dim(self.latent_dim, d)
        for name, value, allowed in (
            ("objective", self.objective, OBJECTIVES),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("init", self.init, INITS),
            ("basis", self.basis, BASES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.optimizer == "newton" and self.objective == "stochastic":
            raise ValueError(
                "`optimizer` newton needs `objective` exact; use `optimizer` adam with `objective` stochastic"
            )
        if self.steps < 1:
            raise ValueError(f"`steps` must be at least 1, got {self.steps}")
        if self.log_every < 1:
            raise ValueError(f"`log_every` must be at least 1, got {self.log_every}")
        check_positive("learning_rate", self.learning_rate)
        check_positive("init_scale", self.init_scale)
        check_positive("gain_tol", self.gain_tol)
        if self.objective == "stochastic" and not 1 <= self.batch_size <= n:
            raise ValueError(f"`batch_size` {self.batch_size} must be between 1 and the {n} samples")
        if self.mc_samples < 1:
            raise ValueError(f"`mc_samples` must be at least 1, got {self.mc_samples}")
        if any(not 0 <= c < self.latent_dim for c in self.collapsed_columns):
            raise ValueError(f"collapsed columns {self.collapsed_columns} must lie in 0..{self.latent_dim - 1}")
        return self


class TrainData(NamedTuple):
    """The data as the trainer sees them (a pytree of device arrays, shared by every configuration).

    ``X`` is only read by the stochastic objective; the eigen-decomposition only by
    ``init="collapsed"``.  In the eigenbasis (the :meth:`~linear_vae.problem.Problem.coordinates`
    along the eigenvectors ``U`` of ``S``) the data are ``X U``, ``stats.cov`` is the diagonal of
    ``S`` and the eigenvectors are the identity; :meth:`to_data_basis` maps trained parameters
    back.  On wide data the eigenbasis has only the top ``r = N`` eigenvectors (the data do not
    vary along the others; see :mod:`linear_vae.problem`), and ``mean_outside``, the part of the
    sample mean outside their span, is where the bias sits along the directions left out.
    """

    stats: DataStats
    X: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    rotation: jax.Array | None = None  # (d, r) eigenvectors U, in the eigenbasis
    mean_outside: jax.Array | None = None  # (d,) mean - U U^T mean, in the eigenbasis

    @classmethod
    def build(cls, problem: Problem, basis: str = "data") -> "TrainData":
        """Device arrays for training in the data basis or in the eigenbasis of ``S``."""
        X, mean, cov = problem.coordinates(basis)
        stats = DataStats.from_moments(mean, cov, dim=problem.d)
        if basis == "data":
            return cls(stats, jnp.asarray(X), jnp.asarray(problem.eigenvalues), jnp.asarray(problem.eigenvectors))
        U = problem.eigenvectors
        return cls(
            stats,
            jnp.asarray(X),
            jnp.asarray(problem.eigenvalues),
            jnp.eye(U.shape[1]),
            jnp.asarray(U),
            jnp.asarray(problem.mean - U @ (U.T @ problem.mean)),
        )

    def to_data_basis(self, params: LinearVAEParams) -> LinearVAEParams:
        """Map parameters (numpy, leading configuration axis) from the training basis back to the data:
        ``W -> U W``, ``V -> V U^T``, ``mu -> U mu + mean_outside``.

        References: docs/theory.md (T8.2, T8.4).
        """
        if self.rotation is None:
            return params
        U = np.asarray(self.rotation)
        W, mu, V, log_D = params
        return LinearVAEParams(np.einsum("ij,cjk->cik", U, W), mu @ U.T + np.asarray(self.mean_outside), V @ U.T, log_D)


class Hyper(NamedTuple):
    """The values that differ between configurations of a sweep (scalars; arrays when batched)."""

    beta: jax.Array
    sigma2: jax.Array
    seed: jax.Array


class Trainable(NamedTuple):
    params: LinearVAEParams
    log_sigma2: jax.Array


class TrainState(NamedTuple):
    trainable: Trainable
    opt_state: optax.OptState  # optax's state, or :class:`linear_vae.newton.NewtonState`
    key: jax.Array
    step: jax.Array  # steps taken (frozen once converged)
    first_nonfinite_step: jax.Array  # -1 while every objective value has been finite
    converged: jax.Array  # set by the convergence check between chunks; freezes the state


def record_steps(config: TrainConfig) -> np.ndarray:
    """:func:`linear_vae.loop.record_steps` of the config: the last record is after the final step."""
    return loop.record_steps(config.steps, config.log_every)


class History(NamedTuple):
    """Metrics recorded every ``log_every`` steps and after the last (leading axes: [configuration,] record)."""

    step: jax.Array
    elbo: jax.Array  # exact beta-ELBO (nats per datapoint)
    mll: jax.Array  # pPCA log marginal likelihood of the current decoder
    kl_per_dim: jax.Array  # (k,) average KL of each latent dimension
    column_norms_sq: jax.Array  # (k,) ||w_i||^2
    sigma2: jax.Array


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimiser and learning-rate schedule of ``config`` (minimising the negative ELBO)."""
    if config.optimizer == "newton":
        raise ValueError("the newton optimizer is not an optax transformation (see linear_vae.newton)")
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr, config.steps)
    elif config.schedule == "exponential":
        lr = optax.exponential_decay(lr, config.steps, 1e-2)
    return optax.adam(lr) if config.optimizer == "adam" else optax.sgd(lr)


def initial_parameters(config: TrainConfig, hyper: Hyper, data: TrainData, key) -> LinearVAEParams:
    """Initial ``(W, mu, V, log D)`` for ``config.init`` (see :class:`TrainConfig`)."""
    d, k = data.eigenvectors.shape[0], config.latent_dim  # d: the coordinates trained on
    key_w, _ = jax.random.split(key)
    if config.optimizer == "newton" and data.rotation is not None:
        # Newton's trajectory is invariant to the basis, so draw the start in the data basis too:
        # --basis data and --basis eigen then train the same model, at different cost.
        noise_w = data.rotation.T @ (config.init_scale * jax.random.normal(key_w, (data.rotation.shape[0], k)))
    else:
        noise_w = config.init_scale * jax.random.normal(key_w, (d, k))
    if config.init == "random":
        # The encoder starts at the prior (V = 0, D = 1): V then only ever grows along directions
        # the data vary in (its gradient is proportional to W^T S), which keeps Adam from leaving
        # slowly decaying noise along the near-null directions of S.
        return LinearVAEParams(noise_w, jnp.zeros(d), jnp.zeros((k, d)), jnp.zeros(k))
    keep = jnp.ones(k).at[jnp.asarray(config.collapsed_columns, dtype=int)].set(0.0)
    t = hyper.beta * hyper.sigma2
    W = data.eigenvectors[:, :k] * jnp.sqrt(jnp.maximum(data.eigenvalues[:k] - t, 0.0)) * keep + noise_w
    V, D = optimal_encoder(W, hyper.sigma2, hyper.beta)
    return LinearVAEParams(W, data.stats.mean, V, jnp.log(D))


def init_state(config: TrainConfig, hyper: Hyper, data: TrainData) -> TrainState:
    """The state before the first step of one configuration (``seed`` fixes every random draw)."""
    key_init, key_train = jax.random.split(jax.random.key(hyper.seed))
    params = initial_parameters(config, hyper, data, key_init)
    trainable = Trainable(params, jnp.log(hyper.sigma2))
    if config.optimizer == "newton":
        opt_state = newton.init_newton(_newton_vector(trainable, config), data.stats)
    else:
        opt_state = make_optimizer(config).init(trainable)
    return TrainState(trainable, opt_state, key_train, jnp.zeros((), int), -jnp.ones((), int), jnp.zeros((), bool))


def _newton_vector(trainable: Trainable, config: TrainConfig):
    return newton.pack(trainable.params.W, trainable.log_sigma2, config.learn_sigma2)


def projected_problem(
    trainable: Trainable, hyper: Hyper, data: TrainData, config: TrainConfig
) -> newton.ProjectedProblem:
    """``-Phi`` of :mod:`linear_vae.newton` for this configuration (beta = 1 for the MLL objective,
    whose projected objective is the MLL itself).

    References: docs/theory.md (T7.1).
    """
    beta = 1.0 if config.objective == "mll" else hyper.beta
    return newton.make_problem(trainable.params.W.shape, config.learn_sigma2, trainable.log_sigma2, beta, data.stats)


def negative_objective(trainable: Trainable, hyper: Hyper, data: TrainData, key, config: TrainConfig):
    """The negative objective: ``-beta-ELBO`` (exact, or a minibatch Monte-Carlo estimate), or ``-MLL``."""
    log_sigma2 = trainable.log_sigma2 if config.learn_sigma2 else jax.lax.stop_gradient(trainable.log_sigma2)
    sigma2 = jnp.exp(log_sigma2)
    if config.objective == "exact":
        expected_log_lik, kl_per_dim = elbo_terms(trainable.params, sigma2, data.stats)
        return -(expected_log_lik - hyper.beta * jnp.sum(kl_per_dim))
    if config.objective == "mll":
        params = trainable.params
        return -log_marginal_likelihood(
            params.W, sigma2, data.stats.cov, data.stats.mean - params.mu, dim=data.stats.dim
        )
    key_batch, key_eps = jax.random.split(key)
    # Minibatch rows drawn uniformly with replacement: an unbiased estimate at O(batch) cost per step
    # (a fresh permutation of all N rows per step would cost O(N log N)).
    rows = jax.random.randint(key_batch, (config.batch_size,), 0, data.X.shape[0])
    return -monte_carlo_elbo(
        trainable.params, sigma2, hyper.beta, data.X[rows], key_eps, config.mc_samples, dim=data.stats.dim
    )


def train_step(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig) -> TrainState:
    """One optimiser step (none once converged); records the first step whose objective is not finite."""
    key, key_step = jax.random.split(state.key)
    if config.optimizer == "newton":
        problem = projected_problem(state.trainable, hyper, data, config)
        x, opt_state, loss = newton.newton_step(_newton_vector(state.trainable, config), state.opt_state, problem)
        W, log_sigma2 = newton.unpack(
            x, state.trainable.params.W.shape, state.trainable.log_sigma2, config.learn_sigma2
        )
        trainable = Trainable(state.trainable.params._replace(W=W), log_sigma2)
    else:
        loss, grads = jax.value_and_grad(negative_objective)(state.trainable, hyper, data, key_step, config)
        updates, opt_state = make_optimizer(config).update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
    # A non-finite parameter makes the next objective non-finite, so watching the objective suffices
    # (the metrics recorded after the last step are checked by train_sweep as well).
    first_bad = jnp.where(
        (state.first_nonfinite_step < 0) & ~jnp.isfinite(loss), state.step, state.first_nonfinite_step
    )
    stepped = TrainState(trainable, opt_state, key, state.step + 1, first_bad, state.converged)
    return jax.tree.map(lambda old, new: jnp.where(state.converged, old, new), state, stepped)


def model(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig) -> LinearVAEParams:
    """The linear VAE a state stands for: its parameters, or for Newton the represented VAE
    (:func:`linear_vae.newton.represented_vae`: rotated decoder, optimal encoder, bias at the mean)."""
    if config.optimizer != "newton":
        return state.trainable.params
    beta = 1.0 if config.objective == "mll" else hyper.beta
    return newton.represented_vae(state.trainable.params.W, data.stats.mean, jnp.exp(state.trainable.log_sigma2), beta)


def convergence_diagnosis(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig) -> newton.Diagnosis:
    """The closed-form-free convergence test (:func:`linear_vae.newton.convergence_test`) of the current model.

    The block gain compares the projected objective with the objective actually trained: the
    exact beta-ELBO (also for the stochastic objective, whose convergence is judged on the exact
    one) or, for ``objective="mll"``, the MLL with the current bias.

    References: docs/theory.md (T7.3).
    """
    params = model(state, hyper, data, config)
    sigma2 = jnp.exp(state.trainable.log_sigma2)
    if config.objective == "mll":
        current = log_marginal_likelihood(
            params.W, sigma2, data.stats.cov, data.stats.mean - params.mu, dim=data.stats.dim
        )
    else:
        expected_log_lik, kl_per_dim = elbo_terms(params, sigma2, data.stats)
        current = expected_log_lik - hyper.beta * jnp.sum(kl_per_dim)
    problem = projected_problem(state.trainable, hyper, data, config)
    x = _newton_vector(state.trainable, config)
    block_gain = -problem.f(x) - current
    return newton.convergence_test(x, problem, block_gain, jax.random.fold_in(state.key, 1), gain_tol=config.gain_tol)


def measure(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig) -> History:
    """Exact beta-ELBO, pPCA MLL, per-dimension KL, column norms and sigma2 of the current :func:`model`."""
    params = model(state, hyper, data, config)
    sigma2 = jnp.exp(state.trainable.log_sigma2)
    expected_log_lik, kl_per_dim = elbo_terms(params, sigma2, data.stats)
    mll = log_marginal_likelihood(params.W, sigma2, data.stats.cov, data.stats.mean - params.mu, dim=data.stats.dim)
    return History(
        state.step,
        expected_log_lik - hyper.beta * jnp.sum(kl_per_dim),
        mll,
        kl_per_dim,
        jnp.sum(params.W**2, axis=0),
        sigma2,
    )


def run_steps(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig, steps_per_record):
    """``sum(steps_per_record)`` steps under ``lax.scan``, measuring after each group of
    ``steps_per_record[r]`` steps (an array, so that a short last record does not recompile)."""

    def one_record(state, n_steps):
        state = jax.lax.fori_loop(0, n_steps, lambda _, s: train_step(s, hyper, data, config), state)
        return state, measure(state, hyper, data, config)

    return jax.lax.scan(one_record, state, jnp.asarray(steps_per_record))


class SweepResult(NamedTuple):
    """Final parameters, histories and convergence of every configuration of a sweep (numpy, leading axis C).

    ``history`` holds the records up to the last chunk run (fewer than ``len(record_steps(config))``
    when every configuration converged sooner).  ``diagnosis`` is the convergence test after the
    last step; ``checks`` lists ``(steps, predicted_gain per configuration)`` for every test made
    (between chunks and at the end), for convergence rates, and ``skipped_checks`` the steps at
    which a Newton sweep skipped one (:data:`NEWTON_SKIP_GAIN`).  ``start_objective`` is the objective
    before the first step, and ``diverged``/``divergence`` the verdict and reason of
    :func:`linear_vae.divergence.diverged_runs` (``None`` where the run did not diverge).
    """

    config: TrainConfig
    hyper: Hyper
    params: LinearVAEParams
    sigma2: np.ndarray
    history: History
    seconds: float  # training wall time, compilation excluded (convergence checks included)
    compile_seconds: float
    steps_used: np.ndarray  # (C,) steps taken before converging (or all of them)
    diagnosis: newton.Diagnosis
    checks: list
    start_objective: np.ndarray
    diverged: np.ndarray
    divergence: list
    check_seconds: float  # the part of ``seconds`` spent in convergence and divergence checks
    skipped_checks: list  # steps at which a Newton check was skipped (:data:`NEWTON_SKIP_GAIN`)

    @property
    def step_seconds(self) -> float:
        """Training wall time of the optimiser steps and records alone (checks excluded)."""
        return self.seconds - self.check_seconds

    @property
    def converged(self) -> np.ndarray:
        return np.asarray(self.diagnosis.converged, dtype=bool)


def _records_per_chunk(config: TrainConfig, total_records: int, n_chunks: int, progress) -> int:
    """Newton is checked every :data:`NEWTON_CHECK_EVERY` iterations; gradient methods in ``n_chunks``
    chunks when they are checked or show progress, else in one."""
    if config.optimizer == "newton" and config.stop_when_converged:
        return loop.records_per_chunk(total_records, max(1, total_records * config.log_every // NEWTON_CHECK_EVERY))
    return loop.records_per_chunk(total_records, n_chunks if (progress or config.stop_when_converged) else 1)


def _after_check(state: TrainState, diagnosis: newton.Diagnosis, config: TrainConfig) -> TrainState:
    """Freeze converged configurations; hand Newton an ascent direction where it sits at a saddle
    (negligible predicted gain, but an ascent direction of ``Phi``)."""
    state = state._replace(converged=state.converged | diagnosis.converged)
    if config.optimizer != "newton":
        return state
    at_saddle = ~diagnosis.converged & (diagnosis.predicted_gain <= config.gain_tol)
    escape = jnp.where(at_saddle, diagnosis.ascent, state.opt_state.escape)
    return state._replace(opt_state=state.opt_state._replace(escape=escape))


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
    method (:class:`linear_vae.progress.Progress`), it is told when compilation and training
    begin.  With ``config.stop_when_converged`` the sweep is diagnosed between chunks and stops
    once every configuration has converged (or diverged); it is always diagnosed after its last
    step.

    Divergence (:mod:`linear_vae.divergence`) is checked between chunks and at the end.  With
    ``on_divergence="raise"`` the first diverged configuration raises :class:`~linear_vae.divergence.DivergenceError`
    naming it and the step; with ``"report"`` the sweep runs on and the result marks it
    (``diverged``, ``divergence``).
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
    if config.optimizer == "newton" and hasattr(progress, "units"):
        progress.units("iteration")
    monitor = _Monitor(config, hyper, data, n_configs, check, update, on_divergence, progress)
    outcome = loop.run_in_chunks(
        init, run, (hyper, data), steps_per_record, chunk, monitor, progress, sharded=sharding is not None
    )
    state = outcome.state

    def host(tree):
        return jax.tree.map(lambda a: np.asarray(a)[:n_configs], tree)

    params = data.to_data_basis(host(jax.vmap(lambda s, h: model(s, h, data, config))(state, hyper)))
    if config.optimizer == "newton":
        params = newton.with_canonical_signs(params)
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
    """What a linear sweep does between chunks (:func:`linear_vae.loop.run_in_chunks`): divergence
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
        self.skipped: list = []  # steps at which a Newton check was skipped (NEWTON_SKIP_GAIN)
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
        if config.stop_when_converged and last_gain > NEWTON_SKIP_GAIN and not chunk.last:
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
            if self.show and config.optimizer == "newton":
                self.show(_worst_gain_text(self.checks[-1][1], np.asarray(state.converged)[:n_configs]))
        converged = np.asarray(state.converged)[:n_configs]
        return state, config.stop_when_converged and bool(np.all(converged | self.watch.blown)), compiling

    def _last_iteration_gain(self, state: TrainState, history: History) -> float:
        """Newton only: the largest gain of a running configuration's last iteration (nats per
        datapoint); above :data:`NEWTON_SKIP_GAIN` the sweep cannot stop at this check, so it is
        skipped.  ``-inf`` for the gradient methods and when no configuration is running."""
        if self.config.optimizer != "newton":
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
    """Applies :mod:`linear_vae.divergence` to a sweep: between chunks (non-finite values, a model
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
    final :class:`TrainState` and :class:`History` as device arrays."""
    hyper = Hyper(jnp.float64(beta), jnp.float64(sigma2), jnp.uint32(seed))
    config = config.resolved()
    return _single(config, hyper, data, jnp.asarray(record_steps(config)))


def _single_impl(config, hyper, data, steps_per_record):
    state = init_state(config, hyper, data)
    return run_steps(state, hyper, data, config, steps_per_record)


_single = jax.jit(_single_impl, static_argnums=0)
