"""Gradient training of the linear VAE in JAX: one configuration written once, a sweep by ``vmap``.

The trainer maximises the beta-ELBO of :mod:`linear_vae.elbo`, either

* ``objective="exact"``: the closed-form ELBO from the data moments (full batch; a step costs
  O(d^2 k), independent of N), or
* ``objective="stochastic"``: the reparameterised Monte-Carlo ELBO on minibatches, or
* ``objective="mll"``: no VAE at all, the pPCA log marginal likelihood of the decoder (pPCA fitted
  by gradient ascent; the encoder is left untouched), the baseline of the escape and
  identifiability experiments,

with optax (Adam by default, SGD available), fixed or learned ``sigma2`` (``log sigma2`` is a
parameter, so it stays positive; ``D`` is parameterised by ``log D`` for the same reason).

Data flow.  :func:`train_sweep` takes the data, a static :class:`TrainConfig` (shapes, step
counts, optimiser) and arrays of per-configuration values (``beta``, ``sigma2``, ``seed``).  It
``vmap``s :func:`init_state` and :func:`run_steps` over those arrays and ``jit``s them once, so a
sweep over beta, sigma2 and seeds is one compiled program; changing the values never
recompiles.  Steps run under ``lax.scan``; metrics are recorded every ``log_every`` steps.  The
scan is cut into a few equal chunks, each a call of the same compiled function, only so that
progress can be shown; on several devices the configuration axis is sharded across them.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from linear_vae.elbo import DataStats, LinearVAE, elbo_terms, monte_carlo_elbo, optimal_encoder
from linear_vae.moments import Moments, Spectrum
from linear_vae.ppca import log_marginal_likelihood
from linear_vae.validation import check_latent_dim, check_positive

OBJECTIVES = ("exact", "stochastic", "mll")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "exponential")
INITS = ("random", "collapsed")
BASES = ("data", "eigen")


class TrainConfig(NamedTuple):
    """Everything that fixes the compiled program (hashable; the same for a whole sweep).

    Attributes
    ----------
    latent_dim : k.
    steps : gradient steps (a multiple of ``log_every``).
    log_every : record metrics every this many steps.
    objective : "exact" (closed-form ELBO from S), "stochastic" (minibatch Monte Carlo) or
        "mll" (the pPCA marginal likelihood of the decoder alone).
    optimizer : "adam" (default) or "sgd" (plain gradient ascent, no momentum).
    learning_rate : peak step size.
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
        ascent's trajectory is too, Adam's is not).  Results are rotated back to the data basis.
    """

    latent_dim: int
    steps: int = 20000
    log_every: int = 100
    objective: str = "exact"
    optimizer: str = "adam"
    learning_rate: float = 1e-2
    schedule: str = "cosine"
    batch_size: int = 100
    mc_samples: int = 1
    learn_sigma2: bool = False
    init: str = "random"
    init_scale: float = 1e-2
    collapsed_columns: tuple[int, ...] = ()
    basis: str = "data"

    def validate(self, d: int, n: int) -> "TrainConfig":
        """Raise ``ValueError`` (one line, what to change) for an impossible configuration."""
        check_latent_dim(self.latent_dim, d)
        for name, value, allowed in (("objective", self.objective, OBJECTIVES),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES), ("init", self.init, INITS),
                                     ("basis", self.basis, BASES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.steps < 1 or self.log_every < 1 or self.steps % self.log_every:
            raise ValueError(f"--steps {self.steps} must be a positive multiple of --log-every {self.log_every}")
        check_positive("learning rate", self.learning_rate, "--lr")
        check_positive("init scale", self.init_scale, "--init-scale")
        if self.objective == "stochastic" and not 1 <= self.batch_size <= n:
            raise ValueError(f"--batch-size {self.batch_size} must be between 1 and the {n} samples")
        if self.mc_samples < 1:
            raise ValueError("--mc-samples must be >= 1")
        if any(not 0 <= c < self.latent_dim for c in self.collapsed_columns):
            raise ValueError(f"collapsed columns {self.collapsed_columns} must lie in 0..{self.latent_dim - 1}")
        return self


class TrainData(NamedTuple):
    """The data as the trainer sees them (a pytree of device arrays, shared by every configuration).

    ``X`` is only read by the stochastic objective; the eigen-decomposition only by
    ``init="collapsed"``.  In the eigenbasis (``rotation`` = ``U``, the eigenvectors of ``S``)
    the data are ``X U``, ``stats.cov`` is the diagonal of ``S`` and the eigenvectors are the
    identity; :meth:`to_data_basis` maps trained parameters back.
    """

    stats: DataStats
    X: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    rotation: jax.Array | None = None

    @classmethod
    def build(cls, X: np.ndarray, moments: Moments, spectrum: Spectrum, basis: str = "data") -> "TrainData":
        """Device arrays for training in the data basis or in the eigenbasis of ``S``."""
        if basis == "data":
            return cls(DataStats.from_moments(moments.mean, moments.cov), jnp.asarray(X, dtype=jnp.float64),
                       jnp.asarray(spectrum.eigenvalues), jnp.asarray(spectrum.eigenvectors))
        U = spectrum.eigenvectors
        d = U.shape[0]
        return cls(DataStats.from_moments(moments.mean @ U, spectrum.eigenvalues), jnp.asarray(X @ U),
                   jnp.asarray(spectrum.eigenvalues), jnp.eye(d), jnp.asarray(U))

    def to_data_basis(self, params: LinearVAE) -> LinearVAE:
        """Rotate parameters (numpy, leading configuration axis) from the training basis back to the data."""
        if self.rotation is None:
            return params
        U = np.asarray(self.rotation)
        W, mu, V, log_D = params
        return LinearVAE(np.einsum("ij,cjk->cik", U, W), mu @ U.T, V @ U.T, log_D)


class Hyper(NamedTuple):
    """The values that differ between configurations of a sweep (scalars; arrays when batched)."""

    beta: jax.Array
    sigma2: jax.Array
    seed: jax.Array


class Trainable(NamedTuple):
    params: LinearVAE
    log_sigma2: jax.Array


class TrainState(NamedTuple):
    trainable: Trainable
    opt_state: optax.OptState
    key: jax.Array
    step: jax.Array
    first_nonfinite_step: jax.Array  # -1 while every objective value has been finite


class History(NamedTuple):
    """Metrics recorded every ``log_every`` steps (leading axes: [configuration,] record)."""

    step: jax.Array
    elbo: jax.Array             # exact beta-ELBO (nats per datapoint)
    mll: jax.Array              # pPCA log marginal likelihood of the current decoder
    kl_per_dim: jax.Array       # (k,) average KL of each latent dimension
    column_norms_sq: jax.Array  # (k,) ||w_i||^2
    sigma2: jax.Array


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimiser and learning-rate schedule of ``config`` (minimising the negative ELBO)."""
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr, config.steps)
    elif config.schedule == "exponential":
        lr = optax.exponential_decay(lr, config.steps, 1e-2)
    return optax.adam(lr) if config.optimizer == "adam" else optax.sgd(lr)


def initial_parameters(config: TrainConfig, hyper: Hyper, data: TrainData, key) -> LinearVAE:
    """Initial ``(W, mu, V, log D)`` for ``config.init`` (see :class:`TrainConfig`)."""
    d, k = data.eigenvectors.shape[0], config.latent_dim
    key_w, _ = jax.random.split(key)
    noise_w = config.init_scale * jax.random.normal(key_w, (d, k))
    if config.init == "random":
        # The encoder starts at the prior (V = 0, D = 1): V then only ever grows along directions
        # the data vary in (its gradient is proportional to W^T S), which keeps Adam from leaving
        # slowly decaying noise along the near-null directions of S.
        return LinearVAE(noise_w, jnp.zeros(d), jnp.zeros((k, d)), jnp.zeros(k))
    keep = jnp.ones(k).at[jnp.asarray(config.collapsed_columns, dtype=int)].set(0.0)
    t = hyper.beta * hyper.sigma2
    W = data.eigenvectors[:, :k] * jnp.sqrt(jnp.maximum(data.eigenvalues[:k] - t, 0.0)) * keep + noise_w
    V, D = optimal_encoder(W, hyper.sigma2, hyper.beta)
    return LinearVAE(W, data.stats.mean, V, jnp.log(D))


def init_state(config: TrainConfig, hyper: Hyper, data: TrainData) -> TrainState:
    """The state before the first step of one configuration (``seed`` fixes every random draw)."""
    key_init, key_train = jax.random.split(jax.random.key(hyper.seed))
    trainable = Trainable(initial_parameters(config, hyper, data, key_init), jnp.log(hyper.sigma2))
    opt_state = make_optimizer(config).init(trainable)
    return TrainState(trainable, opt_state, key_train, jnp.zeros((), int), -jnp.ones((), int))


def negative_objective(trainable: Trainable, hyper: Hyper, data: TrainData, key, config: TrainConfig):
    """The negative objective: ``-beta-ELBO`` (exact, or a minibatch Monte-Carlo estimate), or ``-MLL``."""
    log_sigma2 = trainable.log_sigma2 if config.learn_sigma2 else jax.lax.stop_gradient(trainable.log_sigma2)
    sigma2 = jnp.exp(log_sigma2)
    if config.objective == "exact":
        expected_log_lik, kl_per_dim = elbo_terms(trainable.params, sigma2, data.stats)
        return -(expected_log_lik - hyper.beta * jnp.sum(kl_per_dim))
    if config.objective == "mll":
        params = trainable.params
        return -log_marginal_likelihood(params.W, sigma2, data.stats.cov, data.stats.mean - params.mu)
    key_batch, key_eps = jax.random.split(key)
    # Minibatch rows drawn uniformly with replacement: an unbiased estimate at O(batch) cost per step
    # (a fresh permutation of all N rows per step would cost O(N log N)).
    rows = jax.random.randint(key_batch, (config.batch_size,), 0, data.X.shape[0])
    return -monte_carlo_elbo(trainable.params, sigma2, hyper.beta, data.X[rows], key_eps, config.mc_samples)


def train_step(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig) -> TrainState:
    """One optimiser step; records the first step whose objective is not finite."""
    key, key_step = jax.random.split(state.key)
    loss, grads = jax.value_and_grad(negative_objective)(state.trainable, hyper, data, key_step, config)
    updates, opt_state = make_optimizer(config).update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    # A non-finite parameter makes the next objective non-finite, so watching the objective suffices
    # (the metrics recorded after the last step are checked by train_sweep as well).
    first_bad = jnp.where((state.first_nonfinite_step < 0) & ~jnp.isfinite(loss), state.step,
                          state.first_nonfinite_step)
    return TrainState(trainable, opt_state, key, state.step + 1, first_bad)


def measure(state: TrainState, hyper: Hyper, data: TrainData) -> History:
    """Exact beta-ELBO, pPCA MLL, per-dimension KL, column norms and sigma2 of the current state."""
    params = state.trainable.params
    sigma2 = jnp.exp(state.trainable.log_sigma2)
    expected_log_lik, kl_per_dim = elbo_terms(params, sigma2, data.stats)
    mll = log_marginal_likelihood(params.W, sigma2, data.stats.cov, data.stats.mean - params.mu)
    return History(state.step, expected_log_lik - hyper.beta * jnp.sum(kl_per_dim), mll, kl_per_dim,
                   jnp.sum(params.W**2, axis=0), sigma2)


def run_steps(state: TrainState, hyper: Hyper, data: TrainData, config: TrainConfig, n_records: int):
    """``n_records * log_every`` steps under ``lax.scan``, measuring after every ``log_every``."""

    def one_record(state, _):
        state = jax.lax.fori_loop(0, config.log_every, lambda _, s: train_step(s, hyper, data, config), state)
        return state, measure(state, hyper, data)

    return jax.lax.scan(one_record, state, None, length=n_records)


class SweepResult(NamedTuple):
    """Final parameters and histories of every configuration of a sweep (numpy, leading axis C)."""

    config: TrainConfig
    hyper: Hyper
    params: LinearVAE
    sigma2: np.ndarray
    history: History
    seconds: float          # training wall time, compilation excluded
    compile_seconds: float


class NonFiniteError(ValueError):
    """Training produced a NaN or inf; raised with the step and configuration that did."""


def _chunks(n_records: int, target: int) -> int:
    """Records per chunk: the divisor of ``n_records`` nearest ``n_records / target`` (equal chunks
    reuse one compiled function)."""
    goal = max(1, n_records // max(target, 1))
    divisors = [c for c in range(1, n_records + 1) if n_records % c == 0]
    return min(divisors, key=lambda c: abs(c - goal))


def _sweep_sharding(n_configs: int):
    """Shard the configuration axis across devices when there are several (``None`` otherwise)."""
    devices = jax.devices()
    if len(devices) < 2 or n_configs < 2:
        return None, n_configs
    padded = math.ceil(n_configs / len(devices)) * len(devices)
    return NamedSharding(Mesh(np.array(devices), ("config",)), PartitionSpec("config")), padded


@jax.jit
def _concatenate_histories(parts):
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *parts)


_COMPILED: dict = {}


def _compiled_sweep(config: TrainConfig, n_records: int):
    """``jit(vmap(init_state))`` and ``jit(vmap(run_steps))`` for a static config (cached)."""
    cache_key = (config, n_records)
    if cache_key not in _COMPILED:
        init = jax.jit(jax.vmap(lambda h, data: init_state(config, h, data), in_axes=(0, None)))
        run = jax.jit(jax.vmap(lambda s, h, data: run_steps(s, h, data, config, n_records),
                               in_axes=(0, 0, None)), donate_argnums=0)
        _COMPILED[cache_key] = (init, run)
    return _COMPILED[cache_key]


def train_sweep(data: TrainData, config: TrainConfig, betas, sigma2s, seeds,
                progress: Callable[[int, int], None] | None = None, n_chunks: int = 10) -> SweepResult:
    """Train one linear VAE per entry of ``betas``, ``sigma2s``, ``seeds`` (equal-length 1-D) at once.

    One compiled call trains every configuration (``vmap`` over the three arrays); ``progress``
    is called as ``progress(steps_done, steps_total)`` between chunks.  Raises
    :class:`NonFiniteError` naming the first step and configuration whose objective or
    parameters were not finite.
    """
    _check_sweep(config, data, betas, sigma2s, seeds)
    hyper = Hyper(jnp.asarray(betas, dtype=jnp.float64), jnp.asarray(sigma2s, dtype=jnp.float64),
                  jnp.asarray(seeds, dtype=jnp.uint32))
    n_configs = hyper.beta.shape[0]
    sharding, padded = _sweep_sharding(n_configs)
    if padded != n_configs:
        hyper = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], padded - n_configs)]), hyper)
    if sharding is not None:
        hyper = jax.device_put(hyper, sharding)

    total_records = config.steps // config.log_every
    chunk = _chunks(total_records, n_chunks if progress else 1)
    init, run = _compiled_sweep(config, chunk)
    start = time.perf_counter()
    state = init(hyper, data)
    compiled_run = run.lower(state, hyper, data).compile()
    compile_seconds = time.perf_counter() - start

    start = time.perf_counter()
    histories = []
    for done in range(0, total_records, chunk):
        state, history = compiled_run(state, hyper, data)
        histories.append(history)
        _raise_if_nonfinite(state, history, hyper, n_configs)
        if progress:
            progress((done + chunk) * config.log_every, config.steps)
    history = _concatenate_histories(histories) if len(histories) > 1 else histories[0]
    jax.block_until_ready(history)
    seconds = time.perf_counter() - start

    def host(tree):
        return jax.tree.map(lambda a: np.asarray(a)[:n_configs], tree)

    return SweepResult(config, host(hyper), data.to_data_basis(host(state.trainable.params)),
                       np.exp(host(state.trainable.log_sigma2)), host(history), seconds, compile_seconds)


def _check_sweep(config: TrainConfig, data: TrainData, betas, sigma2s, seeds) -> None:
    """One-line ``ValueError`` for sweeps that cannot run: mismatched lengths, bad values, wrong basis."""
    lengths = {len(np.atleast_1d(v)) for v in (betas, sigma2s, seeds)}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"betas, sigma2s and seeds must be non-empty and of equal length, got lengths "
                         f"{[len(np.atleast_1d(v)) for v in (betas, sigma2s, seeds)]}")
    for values, name in ((betas, "beta"), (sigma2s, "sigma2")):
        for v in np.atleast_1d(values):
            check_positive(name, v)
    for seed in np.atleast_1d(seeds):
        if int(seed) != seed or not 0 <= int(seed) < 2**32:
            raise ValueError(f"seed {seed} is out of range; pass an integer seed between 0 and {2**32 - 1}")
    if (config.basis == "eigen") != (data.rotation is not None):
        raise ValueError(f"the config trains in the {config.basis!r} basis but the data were built in the other; "
                         f"build them with TrainData.build(..., basis={config.basis!r})")


def _raise_if_nonfinite(state: TrainState, history: History, hyper: Hyper, n_configs: int) -> None:
    bad = np.asarray(state.first_nonfinite_step)[:n_configs]
    last_elbo = np.asarray(history.elbo)[:n_configs, -1]
    bad = np.where((bad < 0) & ~np.isfinite(last_elbo), np.asarray(state.step)[:n_configs], bad)
    if np.any(bad >= 0):
        i = int(np.argmax(bad >= 0))
        raise NonFiniteError(
            f"training diverged: non-finite beta-ELBO or parameters at step {int(bad[i])} of configuration "
            f"{i} (beta = {float(hyper.beta[i]):.6g}, sigma2 = {float(hyper.sigma2[i]):.6g}, "
            f"seed = {int(hyper.seed[i])}); lower --lr")


def train_single(data: TrainData, config: TrainConfig, beta: float, sigma2: float, seed: int):
    """One configuration without ``vmap`` (the baseline a sweep is compared with): returns the
    final :class:`TrainState` and :class:`History` as device arrays."""
    hyper = Hyper(jnp.float64(beta), jnp.float64(sigma2), jnp.uint32(seed))
    return _single(config, hyper, data)


def _single_impl(config, hyper, data):
    state = init_state(config, hyper, data)
    return run_steps(state, hyper, data, config, config.steps // config.log_every)


_single = jax.jit(_single_impl, static_argnums=0)
