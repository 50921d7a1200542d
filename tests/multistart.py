"""Multi-start minimisation of the reference objectives of tests/reference.py, and data with exact moments.

Used by the tests of docs/theory.md (T17): the closed forms of the conditional and hierarchical linear
models are checked against the best of several minimisations of the exact objective written from the
model's definition, from random starts, by a method that knows nothing of the closed form.

The method is Newton's with the Hessian's eigenvalues replaced by their absolute values (floored), so that
every step is a descent direction and a saddle point repels the iterate (Dauphin et al. 2014, "saddle-free
Newton"), followed by the best of 30 halvings of the step (an exact line search over a fixed grid).  Near an
isolated minimum with a positive-definite Hessian it converges quadratically, so the value it reaches is the
minimum to float64 round-off; directions of exact symmetry (zero curvature, zero gradient) are left alone.
JAX differentiates the objective; every start of one point runs in one compiled program (``lax.map``,
sequential: no batched LAPACK call, see linear_vae/core/spd.py).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import linear_vae  # noqa: F401  (float64)

#: Newton steps per start.  Measured on the HVAE grids of tests/test_hierarchical.py: with 40 steps all six
#: starts of every point reached the same minimum (to 1e-10), with gradient norms of 1e-8 or below.
ITERATIONS = 40


class Minimum(NamedTuple):
    """The best start's parameters (unravelled), its value and gradient norm, and every start's value."""

    params: object
    value: float
    gradient_norm: float
    values: np.ndarray


def newton_minimiser(objective: Callable, template) -> Callable:
    """``minimise(starts, data) -> Minimum``: runs ``ITERATIONS`` saddle-free Newton steps from each row of
    ``starts`` (flat parameter vectors shaped like ``ravel_pytree(template)``) on ``objective(params, data)``."""
    flat0, unravel = ravel_pytree(template)

    def f(flat, data):
        return objective(unravel(flat), data)

    grad, hess = jax.grad(f), jax.hessian(f)
    scales = 2.0 ** -jnp.arange(0, 30)

    def step(_, carry):
        flat, data = carry
        g = grad(flat, data)
        H = hess(flat, data)
        lam, V = jnp.linalg.eigh((H + H.T) / 2)
        floor = 1e-10 * (1.0 + jnp.max(jnp.abs(lam)))
        direction = -V @ ((V.T @ g) / jnp.maximum(jnp.abs(lam), floor))
        values = jax.vmap(lambda a: f(flat + a * direction, data))(scales)
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        best = jnp.argmin(values)
        better = values[best] <= f(flat, data)
        return jnp.where(better, flat + scales[best] * direction, flat), data

    @jax.jit
    def run(starts, data):
        def one(flat):
            flat, _ = jax.lax.fori_loop(0, ITERATIONS, step, (flat, data))
            return flat, f(flat, data), jnp.linalg.norm(grad(flat, data))

        return jax.lax.map(one, starts)

    def minimise(starts, data) -> Minimum:
        flats, values, norms = (np.asarray(a) for a in run(jnp.asarray(starts), data))
        best = int(np.argmin(values))
        return Minimum(unravel(jnp.asarray(flats[best])), float(values[best]), float(norms[best]), values)

    minimise.size = flat0.size
    return minimise


def random_starts(rng: np.random.Generator, count: int, size: int, scale: float = 0.7) -> np.ndarray:
    """``count`` flat starting points, entries ``N(0, scale^2)`` (log-variances included)."""
    return scale * rng.standard_normal((count, size))


def exact_data(cov: np.ndarray, n: int, rng: np.random.Generator, mean=None, raw: bool = False) -> np.ndarray:
    """``n`` rows whose sample mean is ``mean`` (default 0) and whose 1/N covariance is exactly ``cov``:
    ``G cov^{1/2} + mean`` with ``G`` centred and ``G^T G / n = I`` (orthonormalised Gaussian columns).
    ``raw``: ``G`` is not centred, so ``cov`` is the *uncentred* second moment and the mean is whatever
    ``G``'s is (``mean`` must be None)."""
    d = cov.shape[0]
    G = rng.standard_normal((n, d)) + (0.5 if raw else 0.0)
    if raw:
        assert mean is None, "raw rows have the mean their Gaussian draw gives"
    else:
        G -= G.mean(axis=0)
    Q, _ = np.linalg.qr(G)
    values, vectors = np.linalg.eigh(cov)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    return np.sqrt(n) * Q @ root + (np.zeros(d) if mean is None else mean)


def singular_values(M) -> np.ndarray:
    """Singular values of ``M`` (descending)."""
    return np.linalg.svd(np.asarray(M), compute_uv=False)
