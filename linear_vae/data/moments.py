"""Sample moments and the eigen-decomposition of the data covariance (docs/theory.md (T1)).

The covariance is the maximum-likelihood one, ``S = (1/N) sum_n (x_n - mu)(x_n - mu)^T``
(not ``np.cov``'s 1/(N-1)): every objective is averaged over the same data, and the 1/(N-1)
normalisation shifts its optimum by about ``d/(2N)`` nats.

Two decompositions: :func:`eigen_decomposition` of the d x d ``S`` (all ``d`` eigenpairs), and
:func:`top_eigenpairs`, the top ``m`` eigenpairs and ``tr S`` from the data matrix without forming
``S`` when ``d > N`` (memory O(N d + d m)).  The closed form needs no more than the latter
(:func:`spectrum_totals`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

#: ``log(2 pi)``, of every Gaussian log-density in the package.
LOG_2PI = float(np.log(2.0 * np.pi))
#: Bytes of the centred column block that :func:`top_eigenpairs` holds at a time (64 MiB).
BLOCK_BYTES = 64 * 2**20


class Moments(NamedTuple):
    """First and second sample moments: everything the exact ELBO and the MLL need of the data.

    Attributes
    ----------
    mean : (d,) sample mean ``mu``.
    cov : (d, d) covariance ``S`` with the 1/N normalisation; ``None`` where ``S`` was not formed
        (:func:`linear_vae.analysis.analyze` with ``d > N``, which works from :func:`top_eigenpairs`).
    n : number of samples ``N``.
    """

    mean: np.ndarray
    cov: np.ndarray | None
    n: int


class Spectrum(NamedTuple):
    """Eigenpairs of ``S = U diag(lambda) U^T``, all ``d`` of them or the top ``m``, with ``tr S`` and ``d``.

    The top ``m >= k`` eigenpairs with ``tr S`` and ``d`` are all the closed form needs of ``S``:
    the optimum and the MLL depend on the eigenvalues beyond the top ``k`` only through their sum
    ``tr S - sum_{i<=k} lambda_i`` and their number ``d - k`` (:func:`spectrum_totals`).

    Attributes
    ----------
    eigenvalues : (m,) ``lambda_1 >= ... >= lambda_m >= 0`` (round-off below 0 clipped to 0).
    eigenvectors : (d, m) orthonormal columns ``u_i``, each with the canonical sign: its entry of
        largest absolute value is positive (ties: the first such entry), as scikit-learn's ``svd_flip``.
    trace : ``tr S = sum_{i<=d} lambda_i = ||X - 1 mu^T||_F^2 / N``.
    dim : ``d``.

    References: docs/theory.md (T8.3).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    trace: float
    dim: int


def compute_moments(X: np.ndarray) -> Moments:
    """Sample mean and ``S = (1/N) (X - mu)^T (X - mu)`` in float64 (docs/theory.md (T1)).

    >>> compute_moments(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]]))
    Moments(mean=array([1., 2.]), cov=array([[1., 0.],
           [0., 4.]]), n=4)

    References: docs/theory.md (T1).
    """
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    centred = X - mean
    cov = centred.T @ centred / X.shape[0]
    return Moments(mean=mean, cov=(cov + cov.T) / 2, n=X.shape[0])


def canonical_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest absolute value is positive.

    Makes eigenvectors (defined only up to sign) deterministic across runs and machines.

    >>> canonical_signs(np.array([[0.6, -0.8], [-0.8, -0.6]]))
    array([[-0.6,  0.8],
           [ 0.8,  0.6]])

    References: docs/theory.md (T1).
    """
    rows = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def eigen_decomposition(cov: np.ndarray) -> Spectrum:
    """Eigenvalues in descending order, clipped at 0, with canonically signed eigenvectors.

    ``S`` is positive semi-definite, so negative eigenvalues are round-off (on MNIST, 121
    constant pixels give 121 zero eigenvalues that LAPACK returns as about +-1e-17); they are
    clipped to exactly 0.  Repeated eigenvalues have eigenvectors defined only up to a rotation
    within their eigenspace; every quantity this package reports is invariant to that choice.

    >>> spectrum = eigen_decomposition(np.array([[2.0, 1.0], [1.0, 2.0]]))
    >>> spectrum.eigenvalues, spectrum.trace, spectrum.dim
    (array([3., 1.]), 4.0, 2)
    >>> spectrum.eigenvectors.round(4)
    array([[ 0.7071,  0.7071],
           [ 0.7071, -0.7071]])

    References: docs/theory.md (T1, T8.3).
    """
    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    order = np.argsort(eigenvalues, kind="stable")[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    return Spectrum(eigenvalues, canonical_signs(eigenvectors[:, order]), float(np.sum(eigenvalues)), len(eigenvalues))


def top_eigenpairs(X: np.ndarray, m: int) -> Spectrum:
    """The top ``m`` eigenpairs of ``S`` and ``tr S`` from the data, forming ``S`` only when ``d <= N``.

    With ``Xc = X - 1 mu^T``, ``S = Xc^T Xc / N`` (d x d) and the Gram matrix ``G = Xc Xc^T / N``
    (N x N) have the same nonzero eigenvalues, and ``G v = lambda v`` with ``||v|| = 1`` gives the
    unit eigenvector ``u = Xc^T v / sqrt(N lambda)`` of ``S`` (the thin SVD
    ``Xc = sqrt(N) V Lambda^{1/2} U^T``, Golub & Van Loan, *Matrix Computations*, Section 8.6);
    ``tr S = tr G = ||Xc||_F^2 / N``.  We eigen-decompose the smaller of the two: ``S``
    (:func:`compute_moments`) when ``d <= N``, else ``G``, accumulated over blocks of
    :data:`BLOCK_BYTES` of centred columns so that neither ``S`` nor a centred copy of ``X`` is held.
    Memory O(N d) for ``X`` (the caller's) plus O(min(N, d)^2 + d m); time O(N d min(N, d)) for the
    product (one BLAS-3 ``syrk`` per block), O(min(N, d)^3) for the eigenproblem (LAPACK ``syevr``,
    only the top ``m`` vectors), O(N d m) for the ``u_i``.

    Why the Gram matrix and not the thin SVD of ``Xc`` (also O(N^2 d)): measured on the 2-core
    development machine at N = 2000, d = 10^4 (one BLAS thread), the Gram product plus ``syevr``
    took 1.0 s against 10.3 s for ``np.linalg.svd(Xc, full_matrices=False)``, and ``syevr`` on the
    top ``m`` only 0.5 s against 1.1 s for all of ``np.linalg.eigh``; at d = 10^5 this function
    takes about 4 s (``benchmarks/analyze_scale.py``).  Squaring the
    singular values costs no accuracy that the d x d path has: ``G`` and ``S`` are formed by the
    same products, so eigenvalues agree to about ``min(N, d) eps lambda_1`` absolute, and to ~1e-14
    relative for the top ones.  A randomised or Lanczos solver would avoid the O(N^3) step but
    converges slowly when ``lambda_m`` sits in a bulk of close eigenvalues (the usual case: the
    report's ``lambda_{k+1}`` is noise), so it could not promise the report's 1e-9 agreement.

    Conventions as :func:`eigen_decomposition`: descending, clipped at 0, canonical signs.
    Eigenvalues of ``G`` at or below ``10 n eps lambda_1`` (``n = min(N, d)``, the round-off of a
    float64 eigen-solver) are exact zeros of ``S`` as far as float64 can tell, and so are
    ``lambda_{N+1..d}``: their ``u_i`` (any orthonormal basis of the null space, as ``eigh`` of ``S``
    would return) complete the others from a seeded Gaussian draw.

    References: docs/theory.md (T8.4); Golub & Van Loan, *Matrix Computations*, Section 8.6.

    Parameters
    ----------
    X : (N, d) data, one sample per row.
    m : number of eigenpairs, ``1 <= m <= d``.

    Examples
    --------
    With more columns than rows (N = 3 < d = 5) the 3 x 3 Gram matrix is decomposed, and the
    spectrum is that of ``S`` itself:

    >>> X = np.random.default_rng(0).normal(size=(3, 5))
    >>> top, full = top_eigenpairs(X, 2), eigen_decomposition(compute_moments(X).cov)
    >>> bool(np.allclose(top.eigenvalues, full.eigenvalues[:2])), bool(np.allclose(top.eigenvectors, full.eigenvectors[:, :2]))
    (True, True)
    >>> top.dim, bool(np.isclose(top.trace, full.trace))
    (5, True)

    """
    X = np.asarray(X, dtype=np.float64)
    N, d = X.shape
    if not 1 <= m <= d:
        raise ValueError(f"number of eigenpairs m = {m} is out of range for d = {d}; need 1 <= m <= d")
    if d <= N:
        cov = compute_moments(X).cov
        eigenvalues, eigenvectors = _top_eigh(cov, m)
        return Spectrum(eigenvalues, canonical_signs(eigenvectors), float(np.trace(cov)), d)
    mean = X.mean(axis=0)
    width = max(1, min(d, BLOCK_BYTES // (8 * N)))
    block = np.empty((N, width))
    gram = np.zeros((N, N))
    for start in range(0, d, width):
        centred = _centred_columns(X, mean, start, width, block)
        gram += centred @ centred.T
    gram /= N
    trace = float(np.trace(gram))
    values, vectors = _top_eigh(gram, min(m, N))
    eigenvalues = np.zeros(m)
    eigenvalues[: len(values)] = values
    mapped = values > rank_tolerance(values, N)
    coefficients = vectors[:, mapped] / np.sqrt(N * values[mapped])
    eigenvectors = np.empty((d, m))
    r = int(mapped.sum())  # mapped is a prefix: the eigenvalues are descending
    for start in range(0, d, width):
        centred = _centred_columns(X, mean, start, width, block)
        eigenvectors[start : start + centred.shape[1], :r] = centred.T @ coefficients
    eigenvectors[:, r:] = _orthonormal_complement(eigenvectors[:, :r], m - r)
    return Spectrum(eigenvalues, canonical_signs(eigenvectors), trace, d)


def _top_eigh(A: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest eigenvalues of the symmetric ``A`` (descending, clipped at 0) and their
    eigenvectors, by LAPACK ``syevr`` on the index range only."""
    n = A.shape[0]
    eigenvalues, eigenvectors = scipy.linalg.eigh(A, subset_by_index=[n - m, n - 1], driver="evr")
    return np.clip(eigenvalues[::-1], 0.0, None), eigenvectors[:, ::-1]


def _centred_columns(X: np.ndarray, mean: np.ndarray, start: int, width: int, block: np.ndarray) -> np.ndarray:
    """``X[:, start:start+width] - mean[start:start+width]``, written into (a view of) ``block``."""
    stop = min(start + width, X.shape[1])
    out = block[:, : stop - start]
    np.subtract(X[:, start:stop], mean[start:stop], out=out)
    return out


def _orthonormal_complement(U: np.ndarray, count: int) -> np.ndarray:
    """``count`` orthonormal columns orthogonal to the orthonormal columns of ``U`` (d x r), from a
    Gaussian draw of seed 0 projected off ``U`` twice (classical Gram-Schmidt needs the second pass
    to be orthogonal to working precision) and orthonormalised by QR."""
    if count == 0:
        return np.zeros((U.shape[0], 0))
    Q = np.random.default_rng(0).standard_normal((U.shape[0], count))
    for _ in range(2):
        Q -= U @ (U.T @ Q)
        Q = np.linalg.qr(Q)[0]
    return Q


def spectrum_totals(eigenvalues, trace=None, dim=None, latent_dim: int = 0) -> tuple[np.ndarray, float, int]:
    """``(eigenvalues, tr S, d)``: what the closed forms need of the spectrum of ``S``.

    The optimum, the learned sigma2 and the MLL of a model whose ``k`` columns lie along the top
    eigenvectors depend on the eigenvalues beyond the top ``k`` only through their sum
    ``tr S - sum_{i<=k} lambda_i`` and their number ``d - k`` (every formula of docs/theory.md (T2) and
    "Global maximum of the beta-ELBO" sums over them with one weight).  So each closed form takes
    either the full spectrum alone (``trace = sum_i lambda_i``, ``d = len(eigenvalues)``) or the
    top ``m >= k`` eigenvalues with ``trace`` and ``dim`` (:class:`linear_vae.data.moments.Spectrum`,
    from :func:`linear_vae.data.moments.top_eigenpairs` without forming the d x d ``S``).

    Raises ``ValueError`` if only one of ``trace``, ``dim`` is given or if fewer than
    ``min(latent_dim, d)`` eigenvalues are.

    >>> spectrum_totals([4.0, 2.0, 1.0, 0.5])  # the full spectrum
    (array([4. , 2. , 1. , 0.5]), 7.5, 4)
    >>> spectrum_totals([4.0, 2.0], trace=7.5, dim=4, latent_dim=2)  # its top two, with the totals
    (array([4., 2.]), 7.5, 4)

    References: docs/theory.md (T8.3).
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    if (trace is None) != (dim is None):
        raise ValueError("pass both trace and dim (top eigenvalues only) or neither (the full spectrum)")
    if trace is None:
        trace, dim = float(np.sum(eigenvalues)), len(eigenvalues)
    if not min(latent_dim, dim) <= len(eigenvalues) <= dim:
        raise ValueError(
            f"{len(eigenvalues)} eigenvalues given for latent dimension {latent_dim} and d = {dim}; "
            f"pass between min(k, d) and d of them"
        )
    return eigenvalues, float(trace), int(dim)


def rank_tolerance(eigenvalues, dim: int | None = None) -> float:
    """Eigenvalues at or below ``10 d eps lambda_1`` are round-off of an exact zero (float64 ``eigh``
    of a d x d matrix is accurate to about ``d eps ||S||``): a learned sigma2 that small means the
    data have rank <= k.  ``dim``: ``d`` when ``eigenvalues`` is only the top of the spectrum (from
    the N x N Gram matrix when ``N < d``, accurate to ``N eps ||S||``, so the bound still holds).

    >>> bool(rank_tolerance([4.0, 2.0, 1.0, 0.5]) == 10 * 4 * np.finfo(np.float64).eps * 4.0)
    True

    References: docs/theory.md (T8.3).
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    d = len(eigenvalues) if dim is None else dim
    return float(10 * d * np.finfo(np.float64).eps * eigenvalues[0])
