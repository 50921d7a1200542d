"""One interface for any linear model's exact objective, and one trainer that takes it.

A model (the linear CVAE of :mod:`linear_vae.training.cvae_training`, the two-level HVAE of
:mod:`linear_vae.training.hvae_training`) is handed to the solvers as a :class:`ModelObjective`:

* a flat parameter vector ``x``: the blocks the optimiser moves;
* ``negative(x, data)``: minus the model's beta-ELBO per datapoint with every other block at its
  maximiser given ``x`` (profiled out in closed form: a least-squares map, an encoder given its
  decoder, a latent rotation), as the linear VAE's projected objective ``Phi`` profiles out its
  encoder (docs/theory.md (T7.1));
* ``projector(x, data)``: the orthogonal projector onto the complement of the directions along which
  ``negative`` is exactly invariant (latent rotations), which Newton's method must not divide by;
* ``complete(x, data)``: the full model, the profiled blocks filled in;
* ``exact(params, data)``: the model's exact negative beta-ELBO per datapoint, written once from the
  model's definition and its data moments, what every reported value is.

:func:`fit` trains it with the linear VAE's own solver code: the trust-region Newton step
:func:`linear_vae.training.newton.newton_step` and the closed-form-free convergence test
:func:`linear_vae.training.convergence.convergence_test`, both on a :class:`linear_vae.training.projected.ProjectedProblem`
(built by :func:`linear_vae.training.projected.reduced_problem`, as the linear VAE's is), or with Adam on the
same ``negative``.  The block gain of the test is ``exact(complete(x)) - negative(x)``, which the
profiling makes zero: a nonzero one would mean a profiled block is not at its maximiser.
Nothing here reads a closed-form optimum, a threshold or an eigenvector of the data's key matrix.

References: docs/theory.md (T7.2, T7.3, T17.7).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from linear_vae.training.convergence import GAIN_TOL, convergence_test
from linear_vae.training.newton import SKIP_CHECK_GAIN, NewtonState, initial_newton_state, newton_step, with_escape
from linear_vae.training.projected import reduced_problem


class ModelObjective(NamedTuple):
    """A model's exact objective as the solvers take it (see the module docstring).

    Attributes
    ----------
    name : the model ("cvae", "hvae").
    data : a pytree of arrays (data moments and the model's hyperparameters) the functions read.
    negative, projector, complete, exact : module-level functions of ``(x, data)`` (``exact`` of
        ``(params, data)``), so that one compiled program serves every configuration of a shape.
    initial : ``(key, data) -> x``, a small random start.
    scale : a bound on the norm of the optimal ``x`` (the trust region's scale).
    """

    name: str
    data: Any
    negative: Callable
    projector: Callable
    complete: Callable
    exact: Callable
    initial: Callable
    scale: float


def static_last_field(cls):
    """Register the NamedTuple ``cls`` as a pytree whose last field is static (a shape or a count, part
    of the compiled program) and whose other fields are its leaves; returns ``cls``, for use as a
    class decorator on a model's data.

    >>> @static_last_field
    ... class Example(NamedTuple):
    ...     weights: Any
    ...     count: int
    >>> jax.tree_util.tree_leaves(Example(jnp.ones(2), 3))  # the count is not a leaf
    [Array([1., 1.], dtype=float64)]
    """
    jax.tree_util.register_pytree_node(
        cls, lambda data: (tuple(data[:-1]), data[-1]), lambda last, leaves: cls(*leaves, last)
    )
    return cls


class ModelFit(NamedTuple):
    """What :func:`fit` returns.

    Attributes
    ----------
    x : the trained flat vector.
    params : the trained model (:meth:`ModelObjective.complete` of ``x``, numpy arrays).
    value : its exact negative beta-ELBO per datapoint (nats, constants included).
    converged : the convergence test passed (predicted gain at most ``gain_tol``, no ascent direction).
    predicted_gain : the test's predicted gain at the end (nats per datapoint; inf far from a maximum).
    block_gain : ``exact(complete(x)) - negative(x)`` (round-off only).
    iterations : optimiser iterations taken.
    seconds : wall-clock time of the training.
    """

    x: np.ndarray
    params: Any
    value: float
    converged: bool
    predicted_gain: float
    block_gain: float
    iterations: int
    seconds: float


def _problem(model_fns, data):
    negative, projector = model_fns
    return reduced_problem(lambda x: negative(x, data), lambda x: projector(x, data))


class _Newton:
    """Trust-region Newton (:func:`linear_vae.training.newton.newton_step`) on ``negative``; one iteration per call."""

    name = "newton"
    has_step_size = False
    check_every = 5
    skip_check_gain = SKIP_CHECK_GAIN
    default_iterations = 500

    def init(self, x, model: ModelObjective, learning_rate):
        return initial_newton_state(jnp.asarray(x), jnp.asarray(model.scale, jnp.float64))

    def run(self, x, state, model: ModelObjective, iterations: int, learning_rate):
        return _newton_run(x, state, model.data, (model.negative, model.projector), iterations)

    def after_check(self, state: NewtonState, diagnosis, gain_tol):
        return with_escape(state, diagnosis, gain_tol)


@partial(jax.jit, static_argnames=("fns",))
def _newton_run(x, state, data, fns, iterations):
    problem = _problem(fns, data)

    def body(_, carry):
        x, state, _ = carry
        return newton_step(x, state, problem)

    return jax.lax.fori_loop(0, iterations, body, (x, state, problem.f(x)))


class _Adam:
    """Adam (optax) on ``negative``, with a constant step size."""

    name = "adam"
    has_step_size = True
    check_every = 1000
    skip_check_gain = np.inf
    default_iterations = 50000

    def init(self, x, model: ModelObjective, learning_rate):
        return optax.adam(learning_rate).init(jnp.asarray(x))

    def run(self, x, state, model: ModelObjective, iterations: int, learning_rate):
        return _adam_run(x, state, model.data, model.negative, iterations, learning_rate)

    def after_check(self, state, diagnosis, gain_tol):
        return state


@partial(jax.jit, static_argnames=("negative", "learning_rate"))
def _adam_run(x, state, data, negative, iterations, learning_rate):
    optimizer = optax.adam(learning_rate)

    def body(_, carry):
        x, state, _ = carry
        loss, g = jax.value_and_grad(negative)(x, data)
        updates, state = optimizer.update(g, state, x)
        return optax.apply_updates(x, updates), state, loss

    return jax.lax.fori_loop(0, iterations, body, (x, state, negative(x, data)))


#: The solvers a model objective trains with, by name (the default first).
MODEL_SOLVERS = {solver.name: solver for solver in (_Newton(), _Adam())}


@partial(jax.jit, static_argnames=("fns", "gain_tol"))
def _diagnose(x, data, key, fns, gain_tol):
    negative, projector, complete, exact = fns
    problem = _problem((negative, projector), data)
    block_gain = exact(complete(x, data), data) - negative(x, data)
    return convergence_test(x, problem, block_gain, key, gain_tol=gain_tol)


@partial(jax.jit, static_argnames=("complete", "exact"))
def _completed(x, data, complete, exact):
    params = complete(x, data)
    return params, exact(params, data)


def fit(
    model: ModelObjective,
    optimizer: str = "newton",
    iterations: int | None = None,
    seed: int = 0,
    gain_tol: float = GAIN_TOL,
    learning_rate: float = 1e-2,
) -> ModelFit:
    """Train ``model`` from its random start (``seed``) until the convergence test passes or
    ``iterations`` (default: the solver's) are spent; returns a :class:`ModelFit`.

    The test (docs/theory.md (T7.3)) runs every ``check_every`` iterations of the solver (Newton
    skips it while the last iteration still gained more than :data:`linear_vae.training.newton.SKIP_CHECK_GAIN`);
    a Newton run stalled at a saddle gets the test's ascent direction for its next step, as the
    linear VAE's does.

    >>> import numpy as np
    >>> from linear_vae.training.cvae_training import cvae_model
    >>> from linear_vae.data.joint_moments import JointMoments
    >>> m = JointMoments.from_matrices(np.eye(2), np.zeros((2, 2)), np.diag([3.0, 0.5]))
    >>> trained = fit(cvae_model(m, latent_dim=2, beta=1.0, decoder_variance=1.0))
    >>> trained.converged, round(trained.value, 6)  # min L = log(2 pi) + (tr S - g(3)) / 2, g(r) = r - 1 - log r
    (True, 3.137183)

    References: docs/theory.md (T7.2, T7.3, T17.7).
    """
    if optimizer not in MODEL_SOLVERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(MODEL_SOLVERS)}")
    solver = MODEL_SOLVERS[optimizer]
    iterations = solver.default_iterations if iterations is None else int(iterations)
    if iterations < 1:
        raise ValueError(f"`iterations` must be at least 1, got {iterations}")
    key_init, key_check = jax.random.split(jax.random.key(seed))
    fns = (model.negative, model.projector, model.complete, model.exact)
    start = time.perf_counter()
    x = jnp.asarray(model.initial(key_init, model.data))
    state = solver.init(x, model, learning_rate)
    done, previous, diagnosis = 0, np.inf, None
    while done < iterations:
        chunk = min(solver.check_every, iterations - done)
        x, state, loss = solver.run(x, state, model, chunk, learning_rate)
        done += chunk
        loss = float(loss)
        if not np.isfinite(loss):
            break
        still_gaining = previous - loss > solver.skip_check_gain
        previous = loss
        if still_gaining and done < iterations:
            continue
        diagnosis = _diagnose(x, model.data, jax.random.fold_in(key_check, done), fns, gain_tol)
        if bool(diagnosis.converged):
            break
        state = solver.after_check(state, diagnosis, gain_tol)
    if diagnosis is None:
        diagnosis = _diagnose(x, model.data, jax.random.fold_in(key_check, done), fns, gain_tol)
    params, value = _completed(x, model.data, model.complete, model.exact)
    seconds = time.perf_counter() - start
    return ModelFit(
        np.asarray(x),
        jax.tree.map(np.asarray, params),
        float(value),
        bool(diagnosis.converged),
        float(diagnosis.predicted_gain),
        float(diagnosis.block_gain),
        done,
        seconds,
    )
