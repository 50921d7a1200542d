"""The one description of a data set that the closed form, the trainer and the experiments share.

A :class:`Problem` holds what every computation needs of the data, computed once: the sample
mean, the 1/N covariance ``S`` (when it is formed), the eigenpairs of ``S`` (with the canonical
signs), ``tr S``, ``d`` and ``N`` (docs/theory.md (T1)).

Wide data.  When ``d > N``, ``S`` (d x d) is larger than the data and has rank below ``N``:
:meth:`Problem.from_dataset` then never forms it and takes the top ``N`` eigenpairs from the
N x N Gram matrix (:func:`linear_vae.data.moments.top_eigenpairs`; docs/theory.md (T8)).  Every
eigenvalue beyond them is 0, so the data vary only in the span of those eigenvectors and the
*eigenbasis view* (:meth:`Problem.stats` with ``basis="eigen"``) is exact with ``r = N``
coordinates: ``S`` becomes the diagonal of the top eigenvalues, while ``d`` enters the
likelihood as a number (:class:`linear_vae.theory.elbo.DataStats`).  A model trained there is mapped
back to the data (:meth:`linear_vae.training.train.TrainData.to_data_basis`) without any d x d matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from linear_vae.core.validation import validate_data
from linear_vae.data.datasets import Dataset
from linear_vae.data.moments import Spectrum, compute_moments, eigen_decomposition, top_eigenpairs

BASES = ("data", "eigen")


class Problem(NamedTuple):
    """A data set with its moments and eigen-decomposition.

    Attributes
    ----------
    dataset : the data (``X``, ``name``).
    mean : (d,) sample mean.
    cov : (d, d) covariance ``S`` (1/N), or ``None`` for wide data (``d > N``), where it is not formed.
    spectrum : all ``d`` eigenpairs of ``S``, or for wide data its top ``N`` (the others are 0),
        with ``tr S`` and ``d`` (:class:`linear_vae.data.moments.Spectrum`).
    """

    dataset: Dataset
    mean: np.ndarray
    cov: np.ndarray | None
    spectrum: Spectrum

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, form_covariance: bool | None = None, eigenpairs: int | None = None
    ) -> "Problem":
        """Moments and eigenpairs of ``dataset``.

        ``form_covariance`` (default: iff ``d <= N``) forms ``S`` and all its eigenpairs
        (memory O(N d + d^2), time O(N d^2 + d^3)); otherwise the top ``eigenpairs`` (default
        ``min(N, d)``, enough to train on: the others are 0 when ``d > N``) come from the data
        matrix, through the N x N Gram matrix when ``d > N`` (memory O(N d + N^2 + d m), time
        O(N^2 d + N^3 + N d m)).  The two agree to float64 round-off.

        >>> from linear_vae.data.datasets import Dataset
        >>> X = np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0]
        >>> Problem.from_dataset(Dataset(X, None, "example")).eigenvalues.round(3)
        array([9.259, 3.988, 0.94 ])
        """
        X = dataset.X
        validate_data(X)
        n, d = X.shape
        if form_covariance is None:
            form_covariance = d <= n
        if form_covariance:
            moments = compute_moments(X)
            return cls(dataset, moments.mean, moments.cov, eigen_decomposition(moments.cov))
        return cls(dataset, X.mean(axis=0), None, top_eigenpairs(X, min(n, d) if eigenpairs is None else eigenpairs))

    @classmethod
    def from_data(cls, X: np.ndarray, name: str = "array", **options) -> "Problem":
        """:meth:`from_dataset` for a bare (N, d) array.

        >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
        >>> problem.n, problem.d, round(problem.trace, 3), problem.wide
        (200, 3, 14.187, False)
        """
        return cls.from_dataset(Dataset(np.asarray(X, dtype=np.float64), None, name), **options)

    @property
    def n(self) -> int:
        """The number of samples ``N``.

        >>> Problem.from_data(np.zeros((4, 2)) + np.arange(8).reshape(4, 2) ** 2).n
        4
        """
        return self.dataset.n

    @property
    def d(self) -> int:
        """The number of features ``d`` (also for wide data, where fewer eigenpairs are held).

        >>> Problem.from_data(np.random.default_rng(0).normal(size=(5, 8))).d
        8
        """
        return self.spectrum.dim

    @property
    def trace(self) -> float:
        """``tr S``, the total variance of the data.

        >>> round(Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0]).trace, 3)
        14.187
        """
        return self.spectrum.trace

    @property
    def eigenvalues(self) -> np.ndarray:
        """The eigenvalues of ``S``, descending (the top ``min(N, d)`` for wide data).

        >>> Problem.from_data(np.random.default_rng(0).normal(size=(5, 8))).eigenvalues.shape
        (5,)
        """
        return self.spectrum.eigenvalues

    @property
    def eigenvectors(self) -> np.ndarray:
        """The eigenvectors of ``S`` as columns, canonically signed (docs/theory.md (T1)).

        >>> Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0]).eigenvectors.shape
        (3, 3)
        """
        return self.spectrum.eigenvectors

    @property
    def wide(self) -> bool:
        """``d > N``: ``S`` is not formed, and only the eigenbasis view exists.

        >>> Problem.from_data(np.random.default_rng(0).normal(size=(5, 8))).wide
        True
        """
        return self.cov is None

    def check_basis(self, basis: str) -> None:
        """Raise ``ValueError`` when ``basis`` is unknown, ``"data"`` without the covariance (wide
        data), or ``"eigen"`` with fewer eigenpairs than the ``min(N, d)`` that span the data.

        >>> Problem.from_data(np.random.default_rng(0).normal(size=(5, 8))).check_basis("data")
        Traceback (most recent call last):
        ...
        ValueError: with d = 8 features and only N = 5 samples the d x d covariance is not formed; train in the eigenbasis (basis 'eigen')
        """
        if basis not in BASES:
            raise ValueError(f"unknown basis {basis!r}; choose one of {', '.join(BASES)}")
        if basis == "data" and self.wide:
            raise ValueError(
                f"with d = {self.d} features and only N = {self.n} samples the d x d covariance "
                "is not formed; train in the eigenbasis (basis 'eigen')"
            )
        if basis == "eigen" and len(self.eigenvalues) < min(self.n, self.d):
            raise ValueError(
                f"the problem holds {len(self.eigenvalues)} eigenpairs, fewer than the min(N, d) = "
                f"{min(self.n, self.d)} directions the data may vary in; build it with all of them "
                "(Problem.from_dataset without eigenpairs)"
            )

    def moments_in(self, basis: str) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, cov)`` in ``basis``: ``S`` in the data basis, or in the eigenbasis the mean's
        coordinates ``U^T mean`` and the diagonal of ``S`` as the vector of eigenvalues.

        >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
        >>> problem.moments_in("eigen")[1].round(3)  # S is diagonal in its eigenbasis
        array([9.259, 3.988, 0.94 ])
        """
        self.check_basis(basis)
        if basis == "data":
            return self.mean, self.cov
        return self.mean @ self.eigenvectors, self.eigenvalues

    def coordinates(self, basis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, mean, cov)`` in ``basis``: the data as given, or their coordinates ``X U`` along the
        eigenvectors, with :meth:`moments_in` that basis.

        >>> problem = Problem.from_data(np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
        >>> X, mean, cov = problem.coordinates("eigen")
        >>> bool(np.allclose(np.cov(X.T, bias=True), np.diag(cov)))
        True
        """
        mean, cov = self.moments_in(basis)
        return (self.dataset.X if basis == "data" else self.dataset.X @ self.eigenvectors), mean, cov
