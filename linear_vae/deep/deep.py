"""A deep (non-linear) Gaussian VAE in JAX, trained on the stochastic ELBO, one configuration
written once and a grid of configurations trained by ``vmap``.

Lucas et al. 2019, Section 6: the linear analysis predicts that in deep VAEs a larger observation
noise ``sigma2`` collapses more latent dimensions, learning ``sigma2`` mitigates it, and KL
annealing only delays it.  This module is the deep counterpart of :mod:`linear_vae.training.train`:

* encoder: an MLP ``x -> (mean, log variance)`` of ``q(z|x) = N(mean, diag(exp(log variance)))``;
* decoder: an MLP ``z -> mean`` of ``p(x|z) = N(mean, sigma2 I)``, ``sigma2`` one scalar, fixed or
  learned through ``log sigma2`` with its own learning rate (as in the paper);
* objective: the reparameterised beta-ELBO on minibatches (one sample of ``z``, analytic KL), with
  the KL weight warmed up linearly from 0 to ``beta`` (1 by default) over ``warmup`` steps for KL
  annealing (0: no annealing).  Runs at equal ``beta sigma2`` are the same run (docs/theory.md (T13)),
  so ``beta`` is rarely worth a grid axis;
* checkpoint: every ``log_every`` steps the held-out (validation) one-sample beta-ELBO is recorded
  with the same noise each time, and the parameters at its best value are kept in the scanned
  state (:func:`keep_best`);
* stopping: :func:`train_grid` trains every configuration for ``config.steps``;
  :func:`train_until_stopped` trains each until it stops by the rule of :mod:`linear_vae.deep.stopping`,
  dropping finished configurations from the grid and resuming from a checkpoint
  (:func:`linear_vae.training.loop.run_until_stopped`);
* measures: :func:`linear_vae.theory.metrics.heldout_measures` reports every collapse measure of any Gaussian VAE given as
  ``(encode, decode, sigma2)`` on held-out rows, by :mod:`linear_vae.theory.metrics`' estimators, so the deep
  and the linear VAE are measured by the same code.

Precision: the networks train in **float32** by default for speed (stated here and in
docs/deep-vae.md; the linear science paths stay float64); ``DeepConfig.precision = "float64"``
trains them in float64 (:func:`dtype_of`).  Expectation: the objective's ``E_q log p(x|z)`` is a
one-sample reparameterised estimate by default; for a linear decoder
``DeepConfig.expectation = "analytic"`` takes it exactly, ``E_q ||x - b - W z||^2 = ||x - b - W m||^2
+ sum_j v_j ||w_j||^2`` (docs/theory.md (T3.1)), so only the minibatch remains random.  The configurations of a grid differ in ``sigma2`` (the
fixed value, or the initial one), ``learn_sigma2`` (a 0/1 mask on the gradient of ``log
sigma2``), ``warmup`` and ``seed``, so fixed, learned and annealed settings share one compiled
program.  With ``hidden=()`` and ``activation="identity"`` the model is a linear VAE whose encoder
variance may depend on ``x`` (it does not at the optimum), which the tests compare with the closed
form.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from linear_vae.data.moments import LOG_2PI
from linear_vae.deep import stopping
from linear_vae.theory import metrics
from linear_vae.theory.elbo import diagonal_gaussian_kl
from linear_vae.training import divergence, loop

#: The default precision of the networks (``DeepConfig.precision = "float32"``); the code uses
#: :func:`dtype_of` of the configuration.
DTYPE = jnp.float32
PRECISIONS = {"float32": jnp.float32, "float64": jnp.float64}
EXPECTATIONS = ("sample", "analytic")
SCHEDULES = ("constant", "cosine")
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "identity": lambda x: x}


class DeepConfig(NamedTuple):
    """Everything that fixes the compiled program (hashable, shared by the whole grid).

    Attributes
    ----------
    latent_dim : k.
    hidden : hidden-layer widths of the encoder.
    decoder_hidden : hidden-layer widths of the decoder; ``None`` mirrors ``hidden``, ``()`` makes the
        decoder linear (a linear decoder under a deep encoder, as in the paper's Figure 4).
    activation : "relu", "tanh" or "identity".
    steps, log_every : gradient steps, and how often metrics are recorded.
    batch_size : minibatch size (rows drawn uniformly with replacement).
    learning_rate : Adam step size of the networks.
    sigma2_learning_rate : Adam step size of ``log sigma2`` when it is learned.
    schedule : "constant" step sizes, or "cosine": both decay as ``(1 + cos(pi t / steps)) / 2``
        towards 0 over the run, so that the one-sample gradient noise stops moving the parameters
        at the end (used where a run should settle on an optimum).
    expectation : "sample", the one-sample reparameterised estimate of ``E_q log p(x|z)``, or
        "analytic", its exact value (T3.1), for a linear decoder only.
    precision : "float32" or "float64", the dtype of the parameters, data and objective.
    """

    latent_dim: int = 32
    hidden: tuple[int, ...] = (512, 256)
    decoder_hidden: tuple[int, ...] | None = None
    activation: str = "relu"
    steps: int = 6000
    log_every: int = 200
    batch_size: int = 100
    learning_rate: float = 1e-3
    sigma2_learning_rate: float = 3e-3
    schedule: str = "constant"
    expectation: str = "sample"
    precision: str = "float32"

    @property
    def linear_decoder(self) -> bool:
        """Whether the decoder is one linear layer (no hidden decoder layer).

        >>> DeepConfig().linear_decoder, DeepConfig(decoder_hidden=()).linear_decoder, DeepConfig(hidden=()).linear_decoder
        (False, True, True)
        """
        return self.decoder_hidden == () or (self.decoder_hidden is None and self.hidden == ())

    def validate(self, d: int, n: int) -> "DeepConfig":
        """The config itself, or ``ValueError`` naming what to change.

        >>> DeepConfig(latent_dim=2).validate(d=3, n=100).latent_dim
        2
        >>> DeepConfig(batch_size=500).validate(d=3, n=100)
        Traceback (most recent call last):
        ...
        ValueError: batch size 500 must be between 1 and the 100 training samples
        """
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown `schedule` {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown `precision` {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.expectation not in EXPECTATIONS:
            raise ValueError(f"unknown `expectation` {self.expectation!r}; choose one of {', '.join(EXPECTATIONS)}")
        if self.expectation == "analytic" and not self.linear_decoder:
            raise ValueError("`expectation` 'analytic' needs a linear decoder (`decoder_hidden=()`)")
        if self.latent_dim < 1 or self.steps < 1 or self.log_every < 1:
            raise ValueError(
                f"need `latent_dim`, `steps` and `log_every` >= 1, got {self.latent_dim}, {self.steps}, "
                f"{self.log_every}"
            )
        if not 1 <= self.batch_size <= n:
            raise ValueError(f"batch size {self.batch_size} must be between 1 and the {n} training samples")
        return self


def dtype_of(config: DeepConfig):
    """The dtype the configuration trains in (``config.precision``).

    >>> dtype_of(DeepConfig()).__name__, dtype_of(DeepConfig(precision="float64")).__name__
    ('float32', 'float64')
    """
    return PRECISIONS[config.precision]


class DeepHyper(NamedTuple):
    """Per-configuration values (scalars; arrays when batched)."""

    sigma2: jax.Array  # fixed sigma2, or the initial value when learned
    learn_sigma2: jax.Array  # 1.0 to learn log sigma2 by Adam, 0.0 to keep it fixed (or set it exactly)
    warmup: jax.Array  # KL-annealing steps (weight min(1, step / warmup) on beta); 0: no annealing
    seed: jax.Array
    beta: jax.Array | float = 1.0  # the KL weight the run ends at (the beta-ELBO's beta)
    sigma2_step_size: jax.Array | float | None = None  # Adam's step size on log sigma2 (None: the config's)
    exact_sigma2: jax.Array | float = 0.0  # 1.0: after each step sigma2 = the minibatch's squared error per pixel


class DeepVAE(NamedTuple):
    """Parameters: lists of ``(weight, bias)`` layers and ``log sigma2`` (a pytree)."""

    encoder: list
    decoder: list
    log_sigma2: jax.Array


def init_mlp(key, sizes: list[int], dtype=DTYPE) -> list:
    """Layers ``sizes[i] -> sizes[i+1]`` with LeCun-normal weights (variance 1/fan-in) and zero biases.

    >>> [(weight.shape, bias.shape) for weight, bias in init_mlp(jax.random.key(0), [3, 4, 2])]
    [((3, 4), (4,)), ((4, 2), (2,))]
    """
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (m, n), dtype) / math.sqrt(m), jnp.zeros(n, dtype))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp(layers: list, x, activation: str):
    """Apply the layers, with ``activation`` between them (not after the last).

    >>> layers = [(jnp.eye(2), jnp.zeros(2)), (jnp.ones((2, 1)), jnp.zeros(1))]
    >>> mlp(layers, jnp.array([1.0, -2.0]), "relu"), mlp(layers, jnp.array([1.0, -2.0]), "identity")  # relu: -2 -> 0
    (Array([1.], dtype=float64), Array([-1.], dtype=float64))
    """
    act = ACTIVATIONS[activation]
    for i, (weight, bias) in enumerate(layers):
        x = x @ weight + bias
        if i < len(layers) - 1:
            x = act(x)
    return x


def init_params(config: DeepConfig, d: int, hyper: DeepHyper) -> DeepVAE:
    """The starting networks (:func:`init_mlp`, seeded by ``hyper.seed``): the encoder ends in
    ``2 k`` outputs (means and log variances), the decoder mirrors the encoder unless
    ``config.decoder_hidden`` says otherwise; ``log sigma2`` at ``hyper.sigma2``.

    >>> params = init_params(DeepConfig(latent_dim=2, hidden=(8,)), 3, DeepHyper(0.5, 0.0, 0.0, 0))
    >>> [w.shape for w, _ in params.encoder], [w.shape for w, _ in params.decoder], round(float(jnp.exp(params.log_sigma2)), 6)
    ([(3, 8), (8, 4)], [(2, 8), (8, 3)], 0.5)
    """
    key_enc, key_dec = jax.random.split(jax.random.key(hyper.seed))
    k, hidden = config.latent_dim, list(config.hidden)
    decoder_hidden = hidden[::-1] if config.decoder_hidden is None else list(config.decoder_hidden)
    dtype = dtype_of(config)
    return DeepVAE(
        init_mlp(key_enc, [d] + hidden + [2 * k], dtype),
        init_mlp(key_dec, [k] + decoder_hidden + [d], dtype),
        jnp.log(hyper.sigma2).astype(dtype),
    )


def encode(params: DeepVAE, x, config: DeepConfig):
    """``q(z|x)``: mean and log variance, each (..., k).

    >>> config = DeepConfig(latent_dim=2, hidden=(8,))
    >>> mean, log_var = encode(init_params(config, 3, DeepHyper(0.5, 0.0, 0.0, 0)), jnp.ones((5, 3)), config)
    >>> mean.shape, log_var.shape
    ((5, 2), (5, 2))
    """
    out = mlp(params.encoder, x, config.activation)
    return out[..., : config.latent_dim], out[..., config.latent_dim :]


def one_sample_elbo_terms(params: DeepVAE, x, key, config: DeepConfig):
    """One-sample reparameterised estimate of ``E_q log p(x|z)`` per example, and the analytic KL per
    example and dimension: ``z = mean + exp(log_var / 2) * eps``.

    >>> config = DeepConfig(latent_dim=2, hidden=(8,))
    >>> params = init_params(config, 3, DeepHyper(0.5, 0.0, 0.0, 0))
    >>> log_lik, kl = one_sample_elbo_terms(params, jnp.ones((5, 3)), jax.random.key(0), config)
    >>> log_lik.shape, kl.shape, bool((kl >= 0).all())  # per example; per example and dimension
    ((5,), (5, 2), True)

    References: docs/theory.md (T3.4); Kingma & Welling 2013, Section 2.4 and eq. 10.
    """
    log_lik, kl, _, _ = _elbo_parts(params, x, key, config)
    return log_lik, kl


def _elbo_parts(params: DeepVAE, x, key, config: DeepConfig):
    """:func:`one_sample_elbo_terms`, the encoder means and the squared reconstruction error per example.
    With ``config.expectation == "analytic"`` (a linear decoder) the reconstruction term is its
    expectation over ``q(z|x)`` (T3.1) and ``key`` is unused."""
    mean, log_var = encode(params, x, config)
    d = x.shape[-1]
    if config.expectation == "analytic":
        ((weight, bias),) = params.decoder  # decode(z) = z @ weight + bias, weight (k, d)
        residual = x - (mean @ weight + bias)
        squared_error = jnp.sum(residual**2, axis=-1) + jnp.exp(log_var) @ jnp.sum(weight**2, axis=-1)
    else:
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, dtype_of(config))
        reconstruction = mlp(params.decoder, z, config.activation)
        squared_error = jnp.sum((x - reconstruction) ** 2, axis=-1)
    log_lik = -0.5 * d * (LOG_2PI + params.log_sigma2) - squared_error / (2.0 * jnp.exp(params.log_sigma2))
    return log_lik, diagonal_gaussian_kl(mean, log_var), mean, jax.lax.stop_gradient(squared_error)


def beta_at(step, warmup, dtype=DTYPE):
    """KL weight of linear warm-up: ``min(1, step / warmup)``, and 1 without warm-up.

    >>> beta_at(jnp.array([0, 50, 100, 200]), warmup=100), beta_at(0, warmup=0)
    (Array([0. , 0.5, 1. , 1. ], dtype=float32), Array(1., dtype=float32))
    """
    return jnp.where(warmup > 0, jnp.minimum(1.0, step / jnp.maximum(warmup, 1.0)), 1.0).astype(dtype)


def step_size(base: float, config: DeepConfig):
    """Adam's step size: ``base`` throughout, or cosine-decayed from ``base`` to 0 over ``config.steps``.

    >>> step_size(1e-3, DeepConfig()), round(float(step_size(1e-3, DeepConfig(schedule="cosine", steps=100))(50)), 6)
    (0.001, 0.0005)
    """
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(base, config.steps)
    return base


def make_optimizer(config: DeepConfig) -> optax.GradientTransformation:
    """Adam on the networks and on ``log sigma2``; the latter's update comes out at unit step size
    (times the schedule) and :func:`train_step` scales it by each configuration's own step size.

    >>> config = DeepConfig(latent_dim=1, hidden=(), learning_rate=0.01)
    >>> params = init_params(config, 3, DeepHyper(0.5, 0.0, 0.0, 0))
    >>> optimizer = make_optimizer(config)
    >>> ones = jax.tree.map(jnp.ones_like, params)  # a gradient of ones everywhere
    >>> updates, _ = jax.jit(optimizer.update)(ones, optimizer.init(params), params)
    >>> round(float(updates.decoder[0][0][0, 0]), 6), round(float(updates.log_sigma2), 6)  # Adam's first step: -rate
    (-0.01, -1.0)
    """

    def labels(params):
        return DeepVAE(
            jax.tree.map(lambda _: "net", params.encoder), jax.tree.map(lambda _: "net", params.decoder), "sigma2"
        )

    return optax.multi_transform(
        {
            "net": optax.adam(step_size(config.learning_rate, config)),
            "sigma2": optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(step_size(1.0, config))),
        },
        labels,
    )


class DeepState(NamedTuple):
    params: DeepVAE
    opt_state: optax.OptState
    key: jax.Array
    step: jax.Array
    first_nonfinite_step: jax.Array
    best_params: DeepVAE  # the parameters at the best held-out objective recorded so far
    best_objective: jax.Array  # that objective (:class:`DeepHistory`'s ``heldout_objective``)
    best_step: jax.Array
    log_sigma2_sum: jax.Array  # sum of log sigma2 over the steps since the last record


class DeepHistory(NamedTuple):
    """Recorded every ``log_every`` steps on the held-out data (leading axes: [configuration,] record)."""

    step: jax.Array
    beta: jax.Array
    train_elbo: jax.Array  # one-sample ELBO on a fixed slice of the training data
    heldout_elbo: jax.Array  # one-sample ELBO on the held-out data (at the current KL weight)
    kl_per_dim: jax.Array  # (k,) held-out average KL of each latent dimension
    sigma2: jax.Array
    heldout_objective: jax.Array  # one-sample held-out beta-ELBO at the final beta, the same noise each record
    au_variances: jax.Array  # (k,) Var over the held-out rows of the encoder means (active units)
    mean_log_sigma2: jax.Array  # mean of log sigma2 over the steps since the previous record


def train_step(state: DeepState, hyper: DeepHyper, X, config: DeepConfig) -> DeepState:
    """One Adam step on a minibatch's one-sample beta-ELBO.  ``log sigma2`` then moves by its own
    Adam step (``learn_sigma2``), or is set to the log of the minibatch's squared reconstruction error
    per pixel (``exact_sigma2``): at the networks before the step this maximises the minibatch's
    ELBO over sigma2 (docs/theory.md (T16.2)); the raw value is used, no moving average.

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> hyper = DeepHyper(sigma2=0.5, learn_sigma2=0.0, warmup=0.0, seed=0, sigma2_step_size=3e-3)
    >>> state, _ = init_state(config, hyper, X[:100], X[100:])
    >>> stepped = jax.jit(train_step, static_argnums=3)(state, hyper, X[:100], config)
    >>> int(stepped.step), int(stepped.first_nonfinite_step), bool(jnp.all(stepped.params.encoder[0][0] != state.params.encoder[0][0]))
    (1, -1, True)
    """
    key, key_rows, key_eps = jax.random.split(jax.random.wrap_key_data(state.key), 3)
    rows = jax.random.randint(key_rows, (config.batch_size,), 0, X.shape[0])
    beta = beta_at(state.step, hyper.warmup, dtype_of(config)) * hyper.beta

    def negative_elbo(params):
        log_lik, kl, _, squared_error = _elbo_parts(params, X[rows], key_eps, config)
        return -(jnp.mean(log_lik) - beta * jnp.mean(jnp.sum(kl, axis=-1))), squared_error

    (loss, squared_error), grads = jax.value_and_grad(negative_elbo, has_aux=True)(state.params)
    grads = grads._replace(log_sigma2=grads.log_sigma2 * hyper.learn_sigma2)
    updates, opt_state = make_optimizer(config).update(grads, state.opt_state, state.params)
    updates = updates._replace(log_sigma2=updates.log_sigma2 * hyper.sigma2_step_size)
    params = optax.apply_updates(state.params, updates)
    exact = jnp.log(jnp.mean(squared_error) / X.shape[-1]).astype(dtype_of(config))
    params = params._replace(log_sigma2=jnp.where(hyper.exact_sigma2 > 0, exact, params.log_sigma2))
    bad = jnp.where((state.first_nonfinite_step < 0) & ~jnp.isfinite(loss), state.step, state.first_nonfinite_step)
    return state._replace(
        params=params,
        opt_state=opt_state,
        key=jax.random.key_data(key),
        step=state.step + 1,
        first_nonfinite_step=bad,
        log_sigma2_sum=state.log_sigma2_sum + params.log_sigma2,
    )


#: Key of the noise of the held-out objective, the same at every record (common random numbers), so
#: that the best checkpoint is chosen by the parameters rather than by the draw.
OBJECTIVE_KEY = 2


def measure(state: DeepState, hyper: DeepHyper, X_train_slice, X_heldout, config: DeepConfig, n_steps=1) -> DeepHistory:
    """One record: one-sample ELBOs on a training slice (fresh noise) and on the held-out rows (the
    noise of :data:`OBJECTIVE_KEY`, so records differ only by the parameters), at the current KL
    weight and, for the checkpoint, at the final ``beta``; held-out KL per dimension and AU variances;
    the mean of ``log sigma2`` over the ``n_steps`` steps since the previous record.

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> hyper = DeepHyper(sigma2=0.5, learn_sigma2=0.0, warmup=0.0, seed=0, sigma2_step_size=3e-3)
    >>> state, _ = init_state(config, hyper, X[:100], X[100:])
    >>> record = measure(state, hyper._replace(warmup=100.0), X[:20], X[100:], config)  # KL annealed over 100 steps
    >>> int(record.step), float(record.beta), record.kl_per_dim.shape  # KL weight 0 at step 0
    (0, 0.0, (1,))
    >>> bool(record.heldout_elbo > record.heldout_objective)  # the annealed ELBO; the objective keeps beta = 1
    True
    """
    beta = beta_at(state.step, hyper.warmup, dtype_of(config)) * hyper.beta
    log_lik, kl, _, _ = _elbo_parts(
        state.params, X_train_slice, jax.random.fold_in(jax.random.key(0), state.step), config
    )
    train_elbo = jnp.mean(log_lik) - beta * jnp.mean(jnp.sum(kl, axis=-1))
    log_lik, kl, mean, _ = _elbo_parts(state.params, X_heldout, jax.random.key(OBJECTIVE_KEY), config)
    total_kl = jnp.mean(jnp.sum(kl, axis=-1))
    return DeepHistory(
        state.step,
        beta,
        train_elbo,
        jnp.mean(log_lik) - beta * total_kl,
        jnp.mean(kl, axis=0),
        jnp.exp(state.params.log_sigma2),
        jnp.mean(log_lik) - hyper.beta * total_kl,
        jnp.var(mean, axis=0),
        state.log_sigma2_sum / jnp.maximum(n_steps, 1),
    )


def keep_best(state: DeepState, record: DeepHistory) -> DeepState:
    """Replace the kept checkpoint when this record's held-out objective beats it, so that a run is
    reported at its best record however long it trained after it.

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> hyper = DeepHyper(sigma2=0.5, learn_sigma2=0.0, warmup=0.0, seed=0, sigma2_step_size=3e-3)
    >>> state, _ = init_state(config, hyper, X[:100], X[100:])
    >>> record = measure(state, hyper, X[:20], X[100:], config)
    >>> kept = keep_best(state, record)  # anything beats the start's -inf
    >>> float(state.best_objective), bool(kept.best_objective == record.heldout_objective), int(kept.best_step)
    (-inf, True, 0)
    """
    better = record.heldout_objective > state.best_objective
    return state._replace(
        best_params=jax.tree.map(lambda new, old: jnp.where(better, new, old), state.params, state.best_params),
        best_objective=jnp.where(better, record.heldout_objective, state.best_objective),
        best_step=jnp.where(better, state.step, state.best_step),
    )


def divergence_measures(params: DeepVAE, X_heldout, config: DeepConfig):
    """What :mod:`linear_vae.training.divergence` judges a deep run by: the held-out one-sample ELBO at
    beta = 1 (the objective, whatever the annealing) and the model's total variance, ``d sigma2``
    plus the spread of the reconstructions at the encoder means.

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> hyper = DeepHyper(sigma2=0.5, learn_sigma2=0.0, warmup=0.0, seed=0, sigma2_step_size=3e-3)
    >>> elbo, variance = jax.jit(divergence_measures, static_argnums=2)(init_params(config, 3, hyper), X[100:], config)
    >>> bool(jnp.isfinite(elbo)), bool(variance > 3 * 0.5)  # d sigma2, plus the reconstructions' spread
    (True, True)

    References: docs/theory.md (T10).
    """
    log_lik, kl = one_sample_elbo_terms(params, X_heldout, jax.random.key(1), config)
    mean, _ = encode(params, X_heldout, config)
    reconstruction = mlp(params.decoder, mean, config.activation)
    spread = jnp.mean(jnp.sum((reconstruction - reconstruction.mean(axis=0)) ** 2, axis=-1))
    return jnp.mean(log_lik) - jnp.mean(jnp.sum(kl, axis=-1)), X_heldout.shape[-1] * jnp.exp(params.log_sigma2) + spread


def init_state(config: DeepConfig, hyper: DeepHyper, X_train, X_heldout, params: DeepVAE | None = None):
    """The state of one configuration before its first step, and :func:`divergence_measures` there;
    ``params``: where it starts (default: :func:`init_params`).

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> hyper = DeepHyper(sigma2=0.5, learn_sigma2=0.0, warmup=0.0, seed=0, sigma2_step_size=3e-3)
    >>> state, (elbo, variance) = init_state(config, hyper, X[:100], X[100:])
    >>> int(state.step), int(state.first_nonfinite_step), float(state.best_objective), bool(jnp.isfinite(elbo))
    (0, -1, -inf, True)
    """
    dtype = dtype_of(config)
    if params is None:
        params = init_params(config, X_train.shape[1], hyper)
    else:
        params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    key = jax.random.fold_in(jax.random.key(hyper.seed), 1)
    state = DeepState(
        params,
        make_optimizer(config).init(params),
        jax.random.key_data(key),
        jnp.zeros((), int),
        -jnp.ones((), int),
        params,
        jnp.asarray(-jnp.inf, dtype),
        jnp.zeros((), int),
        jnp.zeros((), dtype),
    )
    return state, divergence_measures(params, X_heldout, config)


def run_steps(state: DeepState, hyper: DeepHyper, X_train, X_heldout, config: DeepConfig, steps_per_record):
    """``lax.scan`` over records, ``fori_loop`` over the ``steps_per_record[r]`` steps before each.

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> grid_hyper = DeepHyper(np.array([0.5, 0.5]), np.array([0.0, 1.0]), np.zeros(2), np.zeros(2))  # sigma2 fixed, learned

    As :func:`train_grid` runs it (the same compiled program): vmapped over the configurations by
    :func:`grid_programs`, the data in float32:

    >>> grid_hyper, X = batched_hyper(config, grid_hyper), jnp.asarray(X, dtype_of(config))
    >>> init, run = grid_programs(config)
    >>> state, _ = init(grid_hyper, X[:100], X[100:])
    >>> state, history = run(state, grid_hyper, X[:100], X[100:], loop.record_steps(config.steps, config.log_every))
    >>> history.step, state.step  # one record, after 20 steps
    (Array([[20],
           [20]], dtype=int64), Array([20, 20], dtype=int64))
    """
    X_train_slice = X_train[: X_heldout.shape[0]]

    def record(state, n_steps):
        state = jax.lax.fori_loop(0, n_steps, lambda _, s: train_step(s, hyper, X_train, config), state)
        history = measure(state, hyper, X_train_slice, X_heldout, config, n_steps)
        state = keep_best(state, history)._replace(log_sigma2_sum=jnp.zeros((), dtype_of(config)))
        return state, history

    return jax.lax.scan(record, state, steps_per_record)


class DeepResult(NamedTuple):
    """Final parameters, histories and held-out per-example KL of every configuration (numpy), and
    the checkpoint of each at its best held-out objective (:func:`keep_best`)."""

    config: DeepConfig
    hyper: DeepHyper
    params: DeepVAE
    history: DeepHistory
    heldout_kl: np.ndarray  # (C, N_heldout, k) per-example, per-dimension KL at the end
    seconds: float
    compile_seconds: float
    best_params: DeepVAE
    best_step: np.ndarray  # (C,) step of the best held-out objective
    best_objective: np.ndarray  # (C,) that objective


def train_grid(
    config: DeepConfig,
    hyper: DeepHyper,
    X_train: np.ndarray,
    X_heldout: np.ndarray,
    progress=None,
    label: str | None = None,
) -> DeepResult:
    """Train every configuration of ``hyper`` (1-D arrays of equal length) in one compiled program,
    through the shared loop (:func:`linear_vae.training.loop.run_in_chunks`): in :data:`DEEP_CHUNKS` chunks
    when ``progress`` (:class:`linear_vae.core.progress.Progress`) shows them, else in one.  Raises
    :class:`~linear_vae.training.divergence.DivergenceError` by the rule of :mod:`linear_vae.training.divergence`.

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> hyper = DeepHyper(sigma2=0.5, learn_sigma2=0.0, warmup=0.0, seed=0, sigma2_step_size=3e-3)
    >>> grid_hyper = DeepHyper(np.array([0.5, 0.5]), np.array([0.0, 1.0]), np.zeros(2), np.zeros(2))  # sigma2 fixed, learned
    >>> result = train_grid(config, grid_hyper, X[:100], X[100:])
    >>> result.history.step, result.heldout_kl.shape  # (configurations, records); (configurations, rows, k)
    (array([[20],
           [20]]), (2, 20, 1))
    >>> np.exp(result.params.log_sigma2) != 0.5  # only the learned sigma2 moved
    array([False,  True])
    """
    config.validate(X_train.shape[1], X_train.shape[0])
    hyper = batched_hyper(config, hyper)
    X_train = jnp.asarray(X_train, dtype_of(config))
    X_heldout = jnp.asarray(X_heldout, dtype_of(config))
    init, run = grid_programs(config)
    if hasattr(progress, "task"):  # named by the caller, or by what it trains
        n = hyper.sigma2.shape[0]
        progress.task(label or f"deep VAE{'s' if n > 1 else ''}: {n} configuration{'s' if n > 1 else ''}")
    steps_per_record = loop.record_steps(config.steps, config.log_every)
    chunk = loop.records_per_chunk(len(steps_per_record), DEEP_CHUNKS if progress is not None else 1)
    hyper_sharded, sharding = loop.shard_configurations(hyper, hyper.sigma2.shape[0])
    n_configs = hyper.sigma2.shape[0]

    def stop_if_nonfinite(chunk: loop.Chunk):
        """Raise at the first chunk where a configuration's objective stopped being finite."""
        bad = np.asarray(chunk.state.first_nonfinite_step)[:n_configs]
        if np.any(bad >= 0):
            zeros = np.zeros(n_configs)  # only the non-finite rule can fire here
            _raise_divergence(hyper, zeros, zeros, zeros, 1.0, bad, np.asarray(chunk.state.step)[:n_configs])
        return chunk.state, False, 0.0

    outcome = loop.run_in_chunks(
        init,
        run,
        (hyper_sharded, X_train, X_heldout),
        steps_per_record,
        chunk,
        stop_if_nonfinite,
        progress,
        sharded=sharding is not None,
    )
    state = jax.tree.map(lambda a: a[:n_configs], outcome.state)
    start_elbo, _ = outcome.first_record
    end_elbo, model_variance = jax.vmap(lambda p: divergence_measures(p, X_heldout, config))(state.params)
    data_variance = float(np.sum(np.var(np.asarray(X_train, dtype=np.float64), axis=0)))
    _raise_divergence(
        hyper,
        np.asarray(start_elbo)[:n_configs],
        end_elbo,
        model_variance,
        data_variance,
        state.first_nonfinite_step,
        state.step,
    )
    history = jax.tree.map(lambda a: a[:n_configs], outcome.history)
    seconds, compile_seconds = outcome.seconds, outcome.compile_seconds
    mean, log_var = jax.vmap(lambda p: encode(p, X_heldout, config))(state.params)
    heldout_kl = np.asarray(diagonal_gaussian_kl(mean, log_var), dtype=np.float64)
    host = lambda tree: jax.tree.map(np.asarray, tree)  # noqa: E731
    return DeepResult(
        config,
        host(hyper),
        host(state.params),
        host(history),
        heldout_kl,
        seconds,
        compile_seconds,
        host(state.best_params),
        np.asarray(state.best_step),
        np.asarray(state.best_objective),
    )


def batched_hyper(config: DeepConfig, hyper: DeepHyper) -> DeepHyper:
    """``hyper`` as device arrays of one length, defaults filled in (the sigma2 step size from
    ``config``).

    >>> hyper = batched_hyper(DeepConfig(), DeepHyper(np.array([0.5, 2.0]), np.array([0.0, 1.0]), np.zeros(2), np.zeros(2)))
    >>> hyper.beta, hyper.sigma2_step_size.round(6)  # beta 1, and the config's sigma2 step size, for each
    (Array([1., 1.], dtype=float32), Array([0.003, 0.003], dtype=float32))
    """
    dtype = dtype_of(config)
    sigma2 = jnp.asarray(hyper.sigma2, dtype)
    step = config.sigma2_learning_rate if hyper.sigma2_step_size is None else hyper.sigma2_step_size
    return DeepHyper(
        sigma2,
        jnp.asarray(hyper.learn_sigma2, dtype),
        jnp.asarray(hyper.warmup, dtype),
        jnp.asarray(hyper.seed, jnp.uint32),
        jnp.broadcast_to(jnp.asarray(hyper.beta, dtype), sigma2.shape),
        jnp.broadcast_to(jnp.asarray(step, dtype), sigma2.shape),
        jnp.broadcast_to(jnp.asarray(hyper.exact_sigma2, dtype), sigma2.shape),
    )


@functools.lru_cache(maxsize=8)
def grid_programs(config: DeepConfig):
    """``(init, run)`` of a grid, ``jit(vmap(...))``-ed over the configuration axis, in the form of
    :mod:`linear_vae.training.loop`: ``init(hyper, X_train, X_heldout)``, ``run(state, hyper, X_train,
    X_heldout, steps_per_record)`` (the state is donated).

    >>> config = DeepConfig(latent_dim=1, hidden=(4,))
    >>> init, run = grid_programs(config)
    >>> grid_programs(config)[0] is init  # cached by config: a grid's values never recompile
    True
    """
    init = jax.jit(jax.vmap(lambda h, a, b: init_state(config, h, a, b), in_axes=(0, None, None)))
    run = jax.jit(
        jax.vmap(lambda s, h, a, b, n: run_steps(s, h, a, b, config, n), in_axes=(0, 0, None, None, None)),
        donate_argnums=0,
    )
    return init, run


class StoppedDeepGrid(NamedTuple):
    """What :func:`train_until_stopped` returns (numpy; lists and leading axes by configuration)."""

    config: DeepConfig
    hyper: DeepHyper
    histories: list  # DeepHistory of each configuration, its records up to its stop
    decisions: list  # stopping.StopDecision of each configuration at its stop
    best_params: DeepVAE  # stacked: each configuration at its best validation record
    best_step: np.ndarray
    best_objective: np.ndarray
    grid: loop.StoppedGrid  # timings and the configuration-steps run, saved and padded


def train_until_stopped(
    config: DeepConfig,
    hyper: DeepHyper,
    X_train: np.ndarray,
    X_validation: np.ndarray,
    rule: stopping.StoppingRule,
    checkpoint=None,
    identity: str = "",
    progress=None,
    drop_finished: bool = True,
    checkpoint_seconds: float = 300.0,
    start: DeepVAE | None = None,
) -> StoppedDeepGrid:
    """Train every configuration of ``hyper`` until it stops by ``rule`` (:mod:`linear_vae.deep.stopping`:
    patience on the validation objective, settled ``log sigma2`` when learned, a cap), through
    :func:`linear_vae.training.loop.run_until_stopped`: finished configurations leave the grid, and the
    grid is checkpointed to ``checkpoint`` and resumed from it.  Each is kept at its best
    validation record.  ``config.steps`` is unused (the rule's cap bounds a run); the step sizes
    are constant.  ``start``: the parameters each configuration starts from (leading axis:
    configuration), instead of :func:`init_params`.

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> hyper = DeepHyper(sigma2=0.5, learn_sigma2=0.0, warmup=0.0, seed=0, sigma2_step_size=3e-3)
    >>> grid_hyper = DeepHyper(np.array([0.5, 0.5]), np.array([0.0, 1.0]), np.zeros(2), np.zeros(2))  # sigma2 fixed, learned
    >>> rule = stopping.StoppingRule(patience=40, window=20, max_steps=100)  # (tiny: steps are multiples of log_every)
    >>> stopped = train_until_stopped(config, grid_hyper, X[:100], X[100:], rule, drop_finished=False)  # one grid size
    >>> [decision.reason for decision in stopped.decisions]  # so short a cap that both reach it
    ['cap', 'cap']
    >>> [int(history.step[-1]) for history in stopped.histories], stopped.best_params.log_sigma2.shape  # kept at their best
    ([100, 100], (2,))
    """
    config.validate(X_train.shape[1], X_train.shape[0])
    rule.validate(config.log_every)
    if config.schedule != "constant":
        raise ValueError("a run stopped by a rule needs `schedule` 'constant' (a decay needs a known end)")
    host_hyper = jax.tree.map(np.asarray, batched_hyper(config, hyper))
    learned = (host_hyper.learn_sigma2 > 0) | (host_hyper.exact_sigma2 > 0)
    init, run = grid_programs(config)
    if start is not None:
        init_at = jax.jit(jax.vmap(lambda h, p, a, b: init_state(config, h, a, b, p), in_axes=(0, 0, None, None)))
        init = lambda h, a, b: init_at(h, start, a, b)  # noqa: E731

    def decide(i, records: DeepHistory):
        decision = stopping.decide(
            rule,
            config.log_every,
            records.step,
            records.heldout_objective,
            records.mean_log_sigma2,
            bool(learned[i]),
            int(host_hyper.warmup[i]),
        )
        return decision.stopped, decision

    def keep(state: DeepState):
        return (state.best_params, state.best_step, state.best_objective)

    if hasattr(progress, "task"):
        progress.task(f"deep VAEs: {len(learned)} configurations, each until it stops (at most {rule.max_steps} steps)")
    grid = loop.run_until_stopped(
        init,
        run,
        batched_hyper(config, hyper),
        (jnp.asarray(X_train, dtype_of(config)), jnp.asarray(X_validation, dtype_of(config))),
        config.log_every,
        rule.max_steps // config.log_every,
        decide,
        keep,
        checkpoint=checkpoint,
        identity=identity,
        progress=progress,
        drop_finished=drop_finished,
        checkpoint_seconds=checkpoint_seconds,
    )
    stack = lambda trees: jax.tree.map(lambda *xs: np.stack(xs), *trees)  # noqa: E731
    best_params, best_step, best_objective = stack(grid.kept)
    return StoppedDeepGrid(
        config, host_hyper, grid.histories, grid.decisions, best_params, best_step, best_objective, grid
    )


#: Chunks of a deep run when progress is shown (each chunk reuses the one compiled program).
DEEP_CHUNKS = 10


def _raise_divergence(
    hyper: DeepHyper, start, end, model_variance, data_variance: float, first_nonfinite_step, steps
) -> None:
    """Raise :class:`~linear_vae.training.divergence.DivergenceError` for the first configuration that diverged."""
    diverged, reasons = divergence.diverged_runs(start, end, model_variance, data_variance, first_nonfinite_step, steps)
    if diverged.any():
        i = int(np.argmax(diverged))
        raise divergence.DivergenceError(
            f"deep VAE training diverged in configuration {i} (sigma2 = {float(hyper.sigma2[i]):.4g}, "
            f"learned = {bool(hyper.learn_sigma2[i])}, warmup = {int(hyper.warmup[i])}): "
            f"{reasons[i]}; lower the `learning_rate`"
        )


# --- held-out measures, the same for the deep and the linear VAE ---------------------------------
def decode(params: DeepVAE, z, config: DeepConfig):
    """``p(x|z)``'s mean, (..., d).

    >>> config = DeepConfig(latent_dim=2, hidden=(8,))
    >>> decode(init_params(config, 3, DeepHyper(0.5, 0.0, 0.0, 0)), jnp.zeros((5, 2)), config).shape
    (5, 3)
    """
    return mlp(params.decoder, z, config.activation)


def deep_model(params: DeepVAE, config: DeepConfig):
    """One deep VAE as ``(encode, decode, sigma2)``, the model convention of :mod:`linear_vae.theory.metrics`'
    estimators (as :func:`linear_vae.theory.metrics.linear_model` is for the linear VAE).

    >>> config = DeepConfig(latent_dim=2, hidden=(8,))
    >>> encoder, decoder, sigma2 = deep_model(init_params(config, 3, DeepHyper(0.5, 0.0, 0.0, 0)), config)
    >>> decoder(encoder(jnp.ones((5, 3)))[0]).shape, round(float(sigma2), 6)  # reconstructions at the means
    ((5, 3), 0.5)
    """
    return (lambda x: encode(params, x, config)), (lambda z: decode(params, z, config)), jnp.exp(params.log_sigma2)


def measure_grid(
    params: DeepVAE, config: DeepConfig, X, seed: int, iwae_samples: int, distortion_samples: int
) -> metrics.HeldoutMeasures:
    """:func:`linear_vae.theory.metrics.heldout_measures` of every configuration of a grid (``params`` with a leading
    configuration axis, e.g. :class:`DeepResult`'s ``best_params``), one after another in one compiled
    ``lax.map`` (memory of one configuration), in float32 like the training; numpy out.

    >>> X = np.random.default_rng(0).normal(size=(120, 3)) * [3.0, 1.0, 0.3]  # 100 rows to train on, 20 held out
    >>> config = DeepConfig(latent_dim=1, hidden=(4,), steps=20, log_every=20, batch_size=20, learning_rate=0.01)
    >>> hyper = DeepHyper(sigma2=0.5, learn_sigma2=0.0, warmup=0.0, seed=0, sigma2_step_size=3e-3)
    >>> two = jax.tree.map(lambda *a: jnp.stack(a), init_params(config, 3, hyper), init_params(config, 3, hyper._replace(seed=1)))
    >>> measures = measure_grid(two, config, X[100:], seed=0, iwae_samples=4, distortion_samples=2)
    >>> measures.kl.shape, measures.rate.shape, bool((measures.iwae >= measures.elbo - 1e-3).all())  # IWAE bounds the ELBO from above
    ((2, 20, 1), (2,), True)
    """
    X = jnp.asarray(X, dtype_of(config))
    n_configs = np.shape(params.log_sigma2)[0]
    keys = jax.random.split(jax.random.key(seed), n_configs)

    @jax.jit
    def run(params, keys):
        return jax.lax.map(
            lambda pk: metrics.heldout_measures(pk[1], X, deep_model(pk[0], config), iwae_samples, distortion_samples),
            (params, keys),
        )

    return jax.tree.map(np.asarray, run(jax.tree.map(jnp.asarray, params), keys))
