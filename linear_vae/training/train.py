"""Gradient training of the linear VAE in JAX: one configuration written once, a sweep by ``vmap``.

The trainer maximises the beta-ELBO of :mod:`linear_vae.theory.elbo`, either

* ``objective="exact"``: the closed-form ELBO from the data moments (full batch; a step costs
  O(d^2 k), independent of N), or
* ``objective="stochastic"``: the reparameterised Monte-Carlo ELBO on minibatches, or
* ``objective="mll"``: no VAE at all, the pPCA log marginal likelihood of the decoder (pPCA fitted
  by gradient ascent; the encoder is left untouched), the baseline of the escape and
  identifiability experiments,

with fixed or learned ``sigma2`` (``log sigma2`` is a parameter, so it stays positive; ``D`` is
parameterised by ``log D`` for the same reason).  The objective is written once,
:func:`exact_objective` (from :func:`linear_vae.theory.elbo.exact_elbo` or the pPCA MLL) and
:func:`negative_objective` (what a solver descends).  Optimisers are
solvers (:class:`linear_vae.training.solver.Solver`), named in :mod:`linear_vae.training.solvers`:

* ``"newton"`` (default, exact objective only): trust-region Newton on the projected objective of
  :mod:`linear_vae.training.newton`, which converges to the closed-form optimum to round-off on any
  spectrum and stops once converged;
* ``"adam"`` and ``"sgd"`` (optax): what practitioners use, for the escape-time and training-curve
  experiments and for the stochastic objective.

The trainer calls the solver's ``init``, ``step`` and ``model`` and never asks which one it holds.

Every sweep ends with a convergence diagnosis that never looks at the closed form
(:func:`linear_vae.training.convergence.convergence_test`): the predicted gain of exact block maximisation plus a
Newton step, and a Lanczos check for an ascent direction.  With ``stop_when_converged`` the
sweep is also diagnosed between chunks and stops once every configuration has converged.

This module is one configuration, written once: its settings (:class:`TrainConfig`), data
(:class:`TrainData`), state, step (:func:`train_step`), records (:func:`measure`) and
:func:`run_steps` (steps under ``lax.scan``, metrics every ``log_every`` steps).  The sweep driver,
which ``vmap``s it over beta, sigma2 and seeds into one compiled program and checks it between
chunks, is :mod:`linear_vae.training.sweep`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.core.validation import check_latent_dim, check_positive
from linear_vae.data.problem import BASES, Problem
from linear_vae.theory.elbo import DataStats, LinearVAEParams, elbo_terms, exact_elbo, monte_carlo_elbo, optimal_encoder
from linear_vae.theory.ppca import log_marginal_likelihood
from linear_vae.training import convergence, loop, projected, solvers
from linear_vae.training.solver import Objective, Solver

OBJECTIVES = ("exact", "stochastic", "mll")
SCHEDULES = ("constant", "cosine", "exponential")
INITS = ("random", "collapsed")


class TrainConfig(NamedTuple):
    """Everything that fixes the compiled program (hashable; the same for a whole sweep).

    Attributes
    ----------
    latent_dim : k.
    steps : the most optimiser steps; a run that converges stops sooner when
        ``stop_when_converged``.  Default: the solver's ``default_steps`` (Newton iterations are
        few and costly, gradient steps many and cheap).
    log_every : record metrics every this many steps, and after the last step (default: the
        solver's ``default_log_every``).
    objective : "exact" (closed-form ELBO from S), "stochastic" (minibatch Monte Carlo) or
        "mll" (the pPCA marginal likelihood of the decoder alone).
    optimizer : "newton" (default; exact objective only, see :mod:`linear_vae.training.newton`), "adam" or
        "sgd" (plain gradient ascent, no momentum), or a :class:`linear_vae.training.solver.Solver` itself
        (:mod:`linear_vae.training.solvers`).
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
        the data basis.  Default: the solver's ``default_basis``.
    stop_when_converged : diagnose between chunks and stop once every configuration has
        converged (off for experiments that need the whole trajectory).
    gain_tol : the predicted gain (nats per datapoint) below which a configuration has converged
        (:func:`linear_vae.training.convergence.convergence_test`); Newton converges quadratically, so a tighter value
        costs it a few iterations and buys parameters correct to round-off.
    """

    latent_dim: int
    steps: int | None = None
    log_every: int | None = None
    objective: str = "exact"
    optimizer: str | Solver = "newton"
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
    gain_tol: float = convergence.GAIN_TOL

    @property
    def solver(self) -> Solver:
        """The :class:`~linear_vae.training.solver.Solver` that ``optimizer`` names (:func:`linear_vae.training.solvers.resolve`).

        >>> TrainConfig(latent_dim=2).solver.name, TrainConfig(latent_dim=2, optimizer="adam").solver.has_step_size
        ('newton', True)
        """
        return solvers.resolve(self.optimizer)

    def resolved(self) -> "TrainConfig":
        """The config with ``steps``, ``log_every`` and ``basis`` filled in from the solver's defaults.

        >>> config = TrainConfig(latent_dim=2).resolved()  # Newton: few, costly iterations, each recorded
        >>> config.steps, config.log_every, config.basis
        (500, 1, 'eigen')
        >>> TrainConfig(latent_dim=2, steps=100).resolved().steps  # what was given is kept
        100
        """
        solver = self.solver
        return self._replace(
            steps=solver.default_steps if self.steps is None else self.steps,
            log_every=solver.default_log_every if self.log_every is None else self.log_every,
            basis=solver.default_basis if self.basis is None else self.basis,
        )

    def validate(self, d: int, n: int) -> "TrainConfig":
        """Raise ``ValueError`` (one line, what to change) for an impossible configuration; returns
        the :meth:`resolved` config.

        >>> TrainConfig(latent_dim=2).validate(d=3, n=200).steps
        500
        >>> TrainConfig(latent_dim=2, objective="stochastic").validate(d=3, n=200)
        Traceback (most recent call last):
        ...
        ValueError: `optimizer` newton needs `objective` exact; use `optimizer` adam with `objective` stochastic
        """
        self = self.resolved()
        check_latent_dim(self.latent_dim, d)
        for name, value, allowed in (
            ("objective", self.objective, OBJECTIVES),
            ("schedule", self.schedule, SCHEDULES),
            ("init", self.init, INITS),
            ("basis", self.basis, BASES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.solver.needs_exact_objective and self.objective == "stochastic":
            raise ValueError(
                f"`optimizer` {self.solver.name} needs `objective` exact; "
                "use `optimizer` adam with `objective` stochastic"
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
    ``init="collapsed"``.  In the eigenbasis (the :meth:`~linear_vae.data.problem.Problem.coordinates`
    along the eigenvectors ``U`` of ``S``) the data are ``X U``, ``stats.cov`` is the diagonal of
    ``S`` and the eigenvectors are the identity; :meth:`to_data_basis` maps trained parameters
    back.  On wide data the eigenbasis has only the top ``r = N`` eigenvectors (the data do not
    vary along the others; see :mod:`linear_vae.data.problem`), and ``mean_outside``, the part of the
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
        """Device arrays for training in the data basis or in the eigenbasis of ``S``.

        >>> from linear_vae.data.problem import Problem
        >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
        >>> data = TrainData.build(problem, basis="eigen")
        >>> bool(np.allclose(data.stats.cov, problem.eigenvalues)), data.rotation.shape  # cov: the diagonal of S
        (True, (3, 3))
        >>> TrainData.build(problem).rotation is None  # the data basis: nothing to rotate back
        True
        """
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

        >>> from linear_vae.data.problem import Problem
        >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
        >>> first = LinearVAEParams(np.eye(3)[None, :, :1], np.zeros((1, 3)), np.eye(3)[None, :1], np.zeros((1, 1)))
        >>> back = TrainData.build(problem, basis="eigen").to_data_basis(first)  # the first eigenvector, in the data
        >>> bool(np.allclose(back.W[0, :, 0], problem.eigenvectors[:, 0])), bool(np.allclose(back.V[0, 0], problem.eigenvectors[:, 0]))
        (True, True)

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
    solver_state: object  # the solver's own state (a pytree; only the solver reads it)
    key: jax.Array
    step: jax.Array  # steps taken (frozen once converged)
    first_nonfinite_step: jax.Array  # -1 while every objective value has been finite
    converged: jax.Array  # set by the convergence check between chunks; freezes the state


def record_steps(config: TrainConfig) -> np.ndarray:
    """:func:`linear_vae.training.loop.record_steps` of the config: the last record is after the final step.

    >>> record_steps(TrainConfig(latent_dim=2, steps=5, log_every=2))
    array([2, 2, 1], dtype=int32)
    """
    return loop.record_steps(config.steps, config.log_every)


class History(NamedTuple):
    """Metrics recorded every ``log_every`` steps and after the last (leading axes: [configuration,] record)."""

    step: jax.Array
    elbo: jax.Array  # exact beta-ELBO (nats per datapoint)
    mll: jax.Array  # pPCA log marginal likelihood of the current decoder
    kl_per_dim: jax.Array  # (k,) average KL of each latent dimension
    column_norms_sq: jax.Array  # (k,) ||w_i||^2
    sigma2: jax.Array


def initial_parameters(config: TrainConfig, hyper: Hyper, data: TrainData, key) -> LinearVAEParams:
    """Initial ``(W, mu, V, log D)`` for ``config.init`` (see :class:`TrainConfig`).

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> config = TrainConfig(latent_dim=2, init="collapsed", collapsed_columns=(1,)).resolved()
    >>> params = initial_parameters(config, hyper, data, jax.random.key(0))
    >>> round(float(problem.eigenvalues[0] - 0.5) ** 0.5, 6)  # sqrt(lambda_1 - beta sigma2)
    2.95959
    >>> jnp.linalg.norm(params.W, axis=0).round(1)  # that, and a perturbation of size 1e-2
    Array([3., 0.], dtype=float64)
    """
    d, k = data.eigenvectors.shape[0], config.latent_dim  # d: the coordinates trained on
    key_w, _ = jax.random.split(key)
    if config.solver.start_in_data_basis and data.rotation is not None:
        # The solver's trajectory is invariant to the basis (Newton's), so draw the start in the data
        # basis too: --basis data and --basis eigen then train the same model, at different cost.
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
    """The state before the first step of one configuration (``seed`` fixes every random draw).

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> state = init_state(TrainConfig(latent_dim=2).resolved(), hyper, data)
    >>> int(state.step), bool(state.converged), state.trainable.params.W.shape, float(jnp.abs(state.trainable.params.V).max())
    (0, False, (3, 2), 0.0)
    """
    key_init, key_train = jax.random.split(jax.random.key(hyper.seed))
    params = initial_parameters(config, hyper, data, key_init)
    trainable = Trainable(params, jnp.log(hyper.sigma2))
    solver_state = config.solver.init(trainable, objective(hyper, data, config), config)
    return TrainState(trainable, solver_state, key_train, jnp.zeros((), int), -jnp.ones((), int), jnp.zeros((), bool))


def objective(hyper: Hyper, data: TrainData, config: TrainConfig) -> Objective:
    """One configuration's objective as its solver sees it (:class:`linear_vae.training.solver.Objective`):
    :func:`negative_objective`, and the beta of the projected objective (beta = 1 for the MLL
    objective, whose projected objective is the MLL itself; docs/theory.md (T7.1)).

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> config = TrainConfig(latent_dim=2, objective="mll").resolved()
    >>> objective(hyper, data, config).phi_beta, objective(hyper, data, config).learn_sigma2
    (1.0, False)
    >>> state = init_state(config, hyper, data)
    >>> round(float(objective(hyper, data, config).negative(state.trainable, None)), 6)  # -MLL at the start
    15.942798
    """
    return Objective(
        lambda trainable, key: negative_objective(trainable, hyper, data, key, config),
        1.0 if config.objective == "mll" else hyper.beta,
        config.learn_sigma2,
        data.stats,
    )


def _marginal_likelihood(params: LinearVAEParams, sigma2, stats: DataStats):
    """The pPCA log marginal likelihood of the decoder ``(W, mu)`` (docs/theory.md (T2.1))."""
    return log_marginal_likelihood(params.W, sigma2, stats.cov, stats.mean - params.mu, dim=stats.dim)


def exact_objective(params: LinearVAEParams, sigma2, hyper: Hyper, data: TrainData, config: TrainConfig):
    """The objective trained, exactly: the pPCA MLL for ``objective="mll"``, else the exact
    beta-ELBO :func:`linear_vae.theory.elbo.exact_elbo` (also for the stochastic objective, whose
    convergence is judged on the exact one).

    At the closed-form optimum (:mod:`linear_vae.theory.optimum`) the exact beta-ELBO is the optimum's:

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum(problem.eigenvalues, latent_dim=2, beta=1.0, sigma2=0.5)
    >>> at_optimum = optimum.parameters(problem.mean, problem.eigenvectors)
    >>> round(float(exact_objective(at_optimum, 0.5, hyper, data, TrainConfig(latent_dim=2))), 6), round(optimum.elbo, 6)
    (-6.154357, -6.154357)

    References: docs/theory.md (T3.1, T2.1).
    """
    if config.objective == "mll":
        return _marginal_likelihood(params, sigma2, data.stats)
    return exact_elbo(params, sigma2, hyper.beta, data.stats)


def negative_objective(trainable: Trainable, hyper: Hyper, data: TrainData, key, config: TrainConfig):
    """The negative objective: ``-beta-ELBO`` (exact, or a minibatch Monte-Carlo estimate), or ``-MLL``.

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum(problem.eigenvalues, latent_dim=2, beta=1.0, sigma2=0.5)
    >>> at_optimum = optimum.parameters(problem.mean, problem.eigenvectors)
    >>> trainable = Trainable(at_optimum, jnp.log(0.5))
    >>> round(float(negative_objective(trainable, hyper, data, None, TrainConfig(latent_dim=2))), 6)  # -ELBO at the optimum
    6.154357
    """
    log_sigma2 = trainable.log_sigma2 if config.learn_sigma2 else jax.lax.stop_gradient(trainable.log_sigma2)
    sigma2 = jnp.exp(log_sigma2)
    if config.objective != "stochastic":
        return -exact_objective(trainable.params, sigma2, hyper, data, config)
    key_batch, key_eps = jax.random.split(key)
    # Minibatch rows drawn uniformly with replacement: an unbiased estimate at O(batch) cost per step
    # (a fresh permutation of all N rows per step would cost O(N log N)).
    rows = jax.random.randint(key_batch, (config.batch_size,), 0, data.X.shape[0])
    return -monte_carlo_elbo(
        trainable.params, sigma2, hyper.beta, data.X[rows], key_eps, config.mc_samples, dim=data.stats.dim
    )


def train_step(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig) -> TrainState:
    """One optimiser step (none once converged); records the first step whose objective is not finite.

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> config = TrainConfig(latent_dim=2, optimizer="adam").resolved()
    >>> state = init_state(config, hyper, data)
    >>> step = jax.jit(train_step, static_argnums=3)
    >>> stepped = step(state, hyper, data, config)
    >>> int(stepped.step), int(stepped.first_nonfinite_step)
    (1, -1)
    >>> bool(measure(stepped, hyper, data, config).elbo > measure(state, hyper, data, config).elbo)  # it climbed
    True
    >>> int(step(state._replace(converged=jnp.array(True)), hyper, data, config).step)  # frozen once converged
    0
    """
    key, key_step = jax.random.split(state.key)
    trainable, solver_state, loss = config.solver.step(
        state.trainable, state.solver_state, objective(hyper, data, config), key_step, config
    )
    # A non-finite parameter makes the next objective non-finite, so watching the objective suffices
    # (the metrics recorded after the last step are checked by train_sweep as well).
    first_bad = jnp.where(
        (state.first_nonfinite_step < 0) & ~jnp.isfinite(loss), state.step, state.first_nonfinite_step
    )
    stepped = TrainState(trainable, solver_state, key, state.step + 1, first_bad, state.converged)
    return jax.tree.map(lambda old, new: jnp.where(state.converged, old, new), state, stepped)


def model(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig) -> LinearVAEParams:
    """The linear VAE a state stands for (the solver's ``model``): its parameters, or for Newton the
    represented VAE (:func:`linear_vae.training.projected.represented_vae`: rotated decoder, optimal encoder,
    bias at the mean).

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> config = TrainConfig(latent_dim=2).resolved()
    >>> vae = model(init_state(config, hyper, data), hyper, data, config)
    >>> bool(np.allclose(vae.mu, problem.mean))  # Newton's model: the bias at the data mean
    True
    """
    return config.solver.model(state.trainable, objective(hyper, data, config))


def convergence_diagnosis(
    state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig
) -> convergence.Diagnosis:
    """The closed-form-free convergence test (:func:`linear_vae.training.convergence.convergence_test`) of the current model.

    The block gain compares the projected objective with the objective actually trained: the
    exact beta-ELBO (also for the stochastic objective, whose convergence is judged on the exact
    one) or, for ``objective="mll"``, the MLL with the current bias.

    At the closed-form optimum it finds nothing left to gain:

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum(problem.eigenvalues, latent_dim=2, beta=1.0, sigma2=0.5)
    >>> at_optimum = optimum.parameters(problem.mean, problem.eigenvectors)
    >>> config = TrainConfig(latent_dim=2).resolved()
    >>> state = init_state(config, hyper, data)._replace(trainable=Trainable(at_optimum, jnp.log(0.5)))
    >>> diagnosis = jax.jit(convergence_diagnosis, static_argnums=3)(state, hyper, data, config)
    >>> bool(diagnosis.converged), float(diagnosis.predicted_gain) < 1e-12
    (True, True)

    References: docs/theory.md (T7.3).
    """
    params = model(state, hyper, data, config)
    current = exact_objective(params, jnp.exp(state.trainable.log_sigma2), hyper, data, config)
    x, problem = projected.problem_at(state.trainable, objective(hyper, data, config))
    block_gain = -problem.f(x) - current
    return convergence.convergence_test(
        x, problem, block_gain, jax.random.fold_in(state.key, 1), gain_tol=config.gain_tol
    )


def measure(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig) -> History:
    """Exact beta-ELBO, pPCA MLL, per-dimension KL, column norms and sigma2 of the current :func:`model`.

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> from linear_vae.theory.optimum import beta_elbo_optimum
    >>> optimum = beta_elbo_optimum(problem.eigenvalues, latent_dim=2, beta=1.0, sigma2=0.5)
    >>> at_optimum = optimum.parameters(problem.mean, problem.eigenvectors)
    >>> config = TrainConfig(latent_dim=2, optimizer="adam").resolved()
    >>> state = init_state(config, hyper, data)._replace(trainable=Trainable(at_optimum, jnp.log(0.5)))
    >>> record = measure(state, hyper, data, config)
    >>> round(float(record.elbo), 6), record.column_norms_sq.round(6)  # ||w_i||^2 = lambda_i - beta sigma2
    (-6.154357, Array([8.75917, 3.48828], dtype=float64))
    >>> (problem.eigenvalues[:2] - 0.5).round(6)
    array([8.75917, 3.48828])
    """
    params = model(state, hyper, data, config)
    sigma2 = jnp.exp(state.trainable.log_sigma2)
    _, kl_per_dim = elbo_terms(params, sigma2, data.stats)
    return History(
        state.step,
        exact_elbo(params, sigma2, hyper.beta, data.stats),
        _marginal_likelihood(params, sigma2, data.stats),
        kl_per_dim,
        jnp.sum(params.W**2, axis=0),
        sigma2,
    )


def run_steps(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig, steps_per_record):
    """``sum(steps_per_record)`` steps under ``lax.scan``, measuring after each group of
    ``steps_per_record[r]`` steps (an array, so that a short last record does not recompile).

    >>> from linear_vae.data.problem import Problem
    >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> data, hyper = TrainData.build(problem), Hyper(1.0, 0.5, 0)
    >>> config = TrainConfig(latent_dim=2, optimizer="adam", steps=300, log_every=100, learning_rate=0.1).resolved()
    >>> run = jax.jit(run_steps, static_argnums=3)
    >>> state, history = run(init_state(config, hyper, data), hyper, data, config, record_steps(config))
    >>> history.step, history.elbo.round(3)  # Adam, cosine schedule: 0.04 below the optimum, -6.154
    (Array([100, 200, 300], dtype=int64), Array([-6.199, -6.198, -6.198], dtype=float64))
    """

    def one_record(state, n_steps):
        state = jax.lax.fori_loop(0, n_steps, lambda _, s: train_step(s, hyper, data, config), state)
        return state, measure(state, hyper, data, config)

    return jax.lax.scan(one_record, state, jnp.asarray(steps_per_record))
