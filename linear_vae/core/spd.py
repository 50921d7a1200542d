"""Small symmetric positive-definite systems (the k x k matrix ``M = W^T W + c I``) in plain XLA ops.

Why not ``jnp.linalg``: on CPU, jaxlib 0.10.x runs a *batched* LAPACK call (``potrf``, ``getrf``:
what ``jnp.linalg.cholesky`` / ``solve`` / ``slogdet`` become under ``vmap``) by splitting the
batch over XLA's intra-op thread pool and blocking on the pieces.  When the thunk executor runs two
such calls at once, each occupies a pool thread waiting for sub-tasks that no free thread can run,
and the process deadlocks at 0% CPU (gdb: both pool threads in ``jax::ParallelBatchMap`` ->
``BlockingCounter::Wait`` under ``lapack_dgetrf_ffi``).  A vmapped sweep of 64 configurations at
d = 784 hung in most runs.  jaxlib compiles that path out of open-source builds from 0.11.1.

The loops below are the textbook unblocked algorithms (Golub & Van Loan, *Matrix Computations*,
Alg. 4.2.1 and 3.1.1-3.1.2): ``k`` sequential steps of O(k^2) work, negligible next to the
O(d^2 k) step of the ELBO for the k of a linear VAE, differentiable, and batched by ``vmap``
into ordinary vector operations.  Each function is jitted so that eager calls (outside a
compiled training loop) reuse one compiled loop per shape instead of retracing it.

The eigendecompositions Newton needs (:func:`eigh`) have no short textbook loop, so they call
LAPACK after all, one matrix at a time: under ``vmap`` a ``lax.map`` of the unbatched call, which
never takes the batched path above.

References: docs/theory.md (T8.5); Golub & Van Loan, *Matrix Computations*, Alg. 4.2.1, 3.1.1-3.1.2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def cholesky(M):
    """Lower-triangular ``L`` with ``L L^T = M`` for a symmetric positive-definite (k, k) ``M``.

    Column ``j``: ``s = M[:, j] - L[:, :j] L[j, :j]``, ``L[j, j] = sqrt(s_j)``,
    ``L[i, j] = s_i / L[j, j]`` for ``i > j`` (NaN when ``M`` is not positive definite, as LAPACK).

    >>> cholesky(jnp.array([[4.0, 2.0], [2.0, 3.0]]))
    Array([[2.        , 0.        ],
           [1.        , 1.41421356]], dtype=float64)

    References: docs/theory.md (T8.5); Golub & Van Loan, *Matrix Computations*, Alg. 4.2.1.
    """
    M = jnp.asarray(M)
    k = M.shape[0]
    rows = jnp.arange(k)

    def column(j, L):
        s = M[:, j] - L @ L[j]  # columns >= j of L are still zero
        pivot = jnp.sqrt(s[j])
        return L.at[:, j].set(jnp.where(rows > j, s / pivot, jnp.where(rows == j, pivot, 0.0)))

    return jax.lax.fori_loop(0, k, column, jnp.zeros_like(M))


@jax.jit
def solve_lower(L, B):
    """``L^{-1} B`` by forward substitution (``B`` of shape (k,) or (k, m)).

    >>> L = cholesky(jnp.array([[4.0, 2.0], [2.0, 3.0]]))
    >>> solve_lower(L, jnp.array([1.0, 2.0]))
    Array([0.5       , 1.06066017], dtype=float64)

    References: docs/theory.md (T8.5); Golub & Van Loan, *Matrix Computations*, Alg. 3.1.1.
    """
    L, B = jnp.asarray(L), jnp.asarray(B)
    Bm = B[:, None] if B.ndim == 1 else B

    def row(i, Y):
        return Y.at[i].set((Bm[i] - L[i] @ Y) / L[i, i])  # rows >= i of Y are still zero

    Y = jax.lax.fori_loop(0, L.shape[0], row, jnp.zeros_like(Bm))
    return Y[:, 0] if B.ndim == 1 else Y


@jax.jit
def solve_lower_transpose(L, B):
    """``L^{-T} B`` by back substitution (``B`` of shape (k,) or (k, m)).

    >>> L = cholesky(jnp.array([[4.0, 2.0], [2.0, 3.0]]))
    >>> solve_lower_transpose(L, jnp.array([1.0, 2.0]))
    Array([-0.20710678,  1.41421356], dtype=float64)

    References: docs/theory.md (T8.5); Golub & Van Loan, *Matrix Computations*, Alg. 3.1.2.
    """
    L, B = jnp.asarray(L), jnp.asarray(B)
    Bm = B[:, None] if B.ndim == 1 else B
    k = L.shape[0]

    def row(n, X):
        i = k - 1 - n
        return X.at[i].set((Bm[i] - L[:, i] @ X) / L[i, i])  # rows <= i of X are still zero

    X = jax.lax.fori_loop(0, k, row, jnp.zeros_like(Bm))
    return X[:, 0] if B.ndim == 1 else X


def solve(L, B):
    """``M^{-1} B`` given the Cholesky factor ``L`` of ``M``.

    >>> M = jnp.array([[4.0, 2.0], [2.0, 3.0]])
    >>> solve(cholesky(M), jnp.array([1.0, 2.0]))  # as jnp.linalg.solve(M, b)
    Array([-0.125,  0.75 ], dtype=float64)

    References: docs/theory.md (T8.5).
    """
    return solve_lower_transpose(L, solve_lower(L, B))


def log_det(L):
    """``log det M = 2 sum_j log L_jj`` given the Cholesky factor ``L`` of ``M``.

    >>> round(float(log_det(cholesky(jnp.array([[4.0, 2.0], [2.0, 3.0]])))), 12) == round(float(jnp.log(8.0)), 12)
    True

    References: docs/theory.md (T8.5).
    """
    return 2.0 * jnp.sum(jnp.log(jnp.diag(L)))


@jax.custom_batching.custom_vmap
def eigh(A):
    """Eigenvalues (ascending) and eigenvectors of a symmetric (k, k) ``A``, by LAPACK one matrix
    at a time.

    Unbatched, this is ``jnp.linalg.eigh``.  Under ``vmap`` it maps the unbatched call over the
    configurations (``jax.lax.map``) instead of letting XLA issue one *batched* LAPACK call, which
    deadlocks on CPU with jaxlib 0.10 (module docstring).  Newton calls it a few times per
    iteration, never per Hessian-vector product, and, unlike the host callback it replaces, it
    keeps the program cacheable on disk (:mod:`linear_vae.compilation_cache`).  Not differentiated
    (nothing differentiates through it).

    >>> values, vectors = jax.vmap(eigh)(jnp.array([jnp.diag(jnp.array([3.0, 1.0])), jnp.eye(2)]))
    >>> values
    Array([[1., 3.],
           [1., 1.]], dtype=float64)
    >>> jnp.abs(vectors[0])
    Array([[0., 1.],
           [1., 0.]], dtype=float64)

    References: docs/theory.md (T8.5).
    """
    return tuple(jnp.linalg.eigh(A))


@eigh.def_vmap
def _eigh_one_at_a_time(axis_size, in_batched, A):
    return jax.lax.map(eigh, A), (True, True)
