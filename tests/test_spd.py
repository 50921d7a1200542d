"""Tests of :mod:`linear_vae.core.spd` (k x k SPD algebra in plain XLA ops) against numpy's LAPACK, and
that the trainer's compiled programs contain no LAPACK call (jaxlib 0.10's batched LAPACK kernels
deadlock XLA's CPU thread pool; see the module docstring)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linear_vae  # noqa: F401  (float64)
from linear_vae.core import spd
from linear_vae.data.datasets import make_synthetic
from linear_vae.data.problem import Problem
from linear_vae.training.train import Hyper, TrainConfig, TrainData, init_state, record_steps, run_steps

#: Backward-stable factorisations of matrices with condition number <= ~1e3 agree with LAPACK to
#: ~1e-13 relative; 1e-10 leaves room without hiding a wrong formula (those are off by O(1)).
RTOL = 1e-10


def spd_matrix(k, seed, condition=1e3):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    return (Q * np.geomspace(1.0, condition, k)) @ Q.T


@pytest.mark.parametrize("k", [1, 2, 7, 32])
def test_cholesky_solve_and_log_det_match_lapack(k):
    M = spd_matrix(k, seed=k)
    B = np.random.default_rng(1).normal(size=(k, 3))
    L = np.asarray(spd.cholesky(jnp.asarray(M)))
    np.testing.assert_allclose(L, np.linalg.cholesky(M), rtol=RTOL, atol=RTOL * np.abs(L).max())
    np.testing.assert_allclose(np.asarray(spd.solve(L, B)), np.linalg.solve(M, B), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(np.asarray(spd.solve(L, B[:, 0])), np.linalg.solve(M, B[:, 0]), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(np.asarray(spd.solve_lower(L, B)), np.linalg.solve(np.tril(L), B), rtol=RTOL, atol=1e-12)
    assert float(spd.log_det(L)) == pytest.approx(np.linalg.slogdet(M)[1], rel=RTOL, abs=1e-12)


def test_gradient_of_log_det_and_quadratic_form_match_the_closed_form():
    # f(M) = log det M + b^T M^{-1} b has, along any symmetric direction E, the derivative
    # tr[(M^{-1} - M^{-1} b b^T M^{-1}) E] (matrix calculus).  The factorisation reads only the lower
    # triangle of M, so compare directional derivatives along symmetric E, not raw gradients.
    k = 5
    M = jnp.asarray(spd_matrix(k, seed=3, condition=10.0))
    b = jnp.asarray(np.random.default_rng(4).normal(size=k))

    def f(M):
        L = spd.cholesky(M)
        return spd.log_det(L) + b @ spd.solve(L, b)

    Minv = np.linalg.inv(np.asarray(M))
    G = Minv - Minv @ np.outer(b, b) @ Minv
    for seed in range(3):
        E = np.random.default_rng(10 + seed).normal(size=(k, k))
        E = E + E.T
        _, derivative = jax.jvp(f, (M,), (jnp.asarray(E),))
        assert float(derivative) == pytest.approx(np.trace(G @ E), rel=1e-9)


def test_not_positive_definite_gives_nan_like_lapack():
    L = np.asarray(spd.cholesky(jnp.asarray([[1.0, 2.0], [2.0, 1.0]])))
    assert np.isnan(L[1, 1])


def batched_lapack_calls(hlo: str) -> list[str]:
    """The LAPACK custom calls of a compiled program that take a batch of matrices at once (the
    calls that deadlock on CPU with jaxlib 0.10, module docstring of linear_vae/spd.py)."""
    calls = [line for line in hlo.splitlines() if 'custom_call_target="lapack' in line]
    return [line for line in calls if 'num_batch_dims="0"' not in line]


def test_compiled_sweep_makes_no_batched_lapack_call():
    """The vmapped Adam sweep (whose final state is read through the k x k eigendecomposition of
    :func:`linear_vae.training.projected.represented_vae`) and a vmapped eigendecomposition call LAPACK one
    matrix at a time, never with a batch."""
    dataset = make_synthetic(seed=0)
    data = TrainData.build(Problem.from_dataset(dataset), "data")
    for objective in ("exact", "mll"):
        config = TrainConfig(latent_dim=4, steps=2, log_every=1, objective=objective, init="collapsed")
        hyper = Hyper(jnp.ones(3), jnp.full(3, 0.5), jnp.arange(3, dtype=jnp.uint32))
        run = jax.jit(jax.vmap(lambda h: run_steps(init_state(config, h, data), h, data, config, record_steps(config))))
        assert not batched_lapack_calls(run.lower(hyper).compile().as_text()), objective
    stack = jnp.stack([jnp.eye(3)] * 4)
    hlo = jax.jit(jax.vmap(jax.vmap(spd.eigh))).lower(jnp.stack([stack] * 2)).compile().as_text()
    assert 'custom_call_target="lapack' in hlo and not batched_lapack_calls(hlo)
    assert batched_lapack_calls(
        jax.jit(jax.vmap(jnp.linalg.eigh)).lower(stack).compile().as_text()
    )  # the check sees one


def test_eigh_under_vmap_equals_numpy_one_matrix_at_a_time():
    """Bitwise-level agreement is not promised across LAPACK builds: eigenvalues to 1e-12 relative,
    eigenvectors up to sign to 1e-10 (well-separated spectra of random symmetric 6 x 6 matrices)."""
    A = np.random.default_rng(3).normal(size=(2, 5, 6, 6))
    A = A + np.swapaxes(A, -1, -2)
    values, vectors = jax.jit(jax.vmap(jax.vmap(spd.eigh)))(jnp.asarray(A))
    expected_values, expected_vectors = np.linalg.eigh(A)
    np.testing.assert_allclose(values, expected_values, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.abs(vectors), np.abs(expected_vectors), atol=1e-10)
