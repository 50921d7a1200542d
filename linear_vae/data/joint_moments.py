"""Second moments of paired data ``(x, y)``: all that the conditional and hierarchical closed forms need.

The linear CVAE, the two-level HVAE and the scaled-prior VAE of Wang & Ziyin see the data only
through ``A = E[x x^T]``, ``C = E[x y^T]`` and ``B = E[y y^T]`` (docs/theory.md (T17)).  With biases
(the default) these are *centred* moments, the 1/N covariances of (T1): every bias of those models
absorbs a mean, and at the optimum the rest of the model sees the data minus their means.  Without
biases they are the *uncentred* moments ``(1/N) sum_n x_n x_n^T`` and so on.

Singular ``A``.  When ``x`` has constant coordinates (MNIST's border pixels) ``A`` is singular, and
``v^T A v = E (v^T x)^2 = 0`` says ``x`` never moves along a null vector ``v``.  Every formula is then
taken on the range of ``A``: the pseudo-inverse ``A^+`` and ``A^{-1/2}`` on the non-zero eigenvalues
only, those above the round-off bound :func:`linear_vae.data.moments.rank_tolerance`.

References: docs/theory.md (T17.1); Dang et al. 2024 (arXiv:2306.05023); Wang & Ziyin 2022 (arXiv:2205.04009).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from linear_vae.core.validation import validate_data
from linear_vae.data.moments import canonical_signs, eigen_decomposition, rank_tolerance


class JointMoments(NamedTuple):
    """``A = E[x x^T]``, ``C = E[x y^T]``, ``B = E[y y^T]`` of ``N`` pairs (1/N normalisation).

    Attributes
    ----------
    xx : (d_x, d_x) ``A``.
    xy : (d_x, d_y) ``C``.
    yy : (d_y, d_y) ``B``.
    mean_x, mean_y : (d_x,), (d_y,) sample means (zeros when unknown); the optimum's biases use them.
    n : number of pairs ``N`` (0 when the moments were given as matrices).
    centred : whether ``A, C, B`` are centred (a model with biases) or raw (a model without).
    """

    xx: np.ndarray
    xy: np.ndarray
    yy: np.ndarray
    mean_x: np.ndarray
    mean_y: np.ndarray
    n: int
    centred: bool

    @classmethod
    def from_data(cls, X, Y, *, centred: bool = True) -> "JointMoments":
        """Moments of the rows of ``X`` (N, d_x) and ``Y`` (N, d_y), centred (with biases) or raw (without).

        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 3))
        >>> moments = JointMoments.from_data(X, X[:, :2] + 0.1 * rng.normal(size=(200, 2)))
        >>> moments.n, moments.xy.shape, moments.xy.round(2)[:2]
        (200, (3, 2), array([[ 1.02, -0.02],
               [-0.  ,  0.99]]))

        References: docs/theory.md (T17.1).
        """
        for name, rows in (("x", X), ("y", Y)):
            try:
                validate_data(rows)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"x has {X.shape[0]} rows but y has {Y.shape[0]}; pass the same samples, one pair per row")
        mean_x, mean_y = X.mean(axis=0), Y.mean(axis=0)
        if centred:
            X, Y = X - mean_x, Y - mean_y
        n = X.shape[0]
        xx, yy = X.T @ X / n, Y.T @ Y / n
        return cls((xx + xx.T) / 2, X.T @ Y / n, (yy + yy.T) / 2, mean_x, mean_y, n, centred)

    @classmethod
    def from_matrices(cls, xx, xy, yy, *, mean_x=None, mean_y=None, centred: bool = True) -> "JointMoments":
        """Moments given directly; checks shapes, finiteness and symmetry (one-line ``ValueError``).

        >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
        >>> moments.n, moments.centred, moments.mean_x
        (0, True, array([0., 0.]))

        References: docs/theory.md (T17.1).
        """
        xx, xy, yy = (np.asarray(m, dtype=np.float64) for m in (xx, xy, yy))
        for name, m in (("xx", xx), ("xy", xy), ("yy", yy)):
            if m.ndim != 2:
                raise ValueError(f"`{name}` must be a 2-D matrix, got shape {m.shape}")
            if not np.all(np.isfinite(m)):
                raise ValueError(f"`{name}` contains NaN or inf; pass finite second moments")
        d_x, d_y = xx.shape[0], yy.shape[0]
        if xx.shape != (d_x, d_x) or yy.shape != (d_y, d_y):
            raise ValueError(f"`xx` {xx.shape} and `yy` {yy.shape} must be square; pass E[x x^T] and E[y y^T]")
        if xy.shape != (d_x, d_y):
            raise ValueError(f"`xy` has shape {xy.shape} but E[x y^T] must be ({d_x}, {d_y}) for these `xx`, `yy`")
        for name, m in (("xx", xx), ("yy", yy)):
            if not np.allclose(m, m.T, rtol=1e-12, atol=1e-12 * max(1.0, float(np.max(np.abs(m))))):
                raise ValueError(f"`{name}` is not symmetric; pass a second-moment matrix")
        mean_x = np.zeros(d_x) if mean_x is None else np.asarray(mean_x, dtype=np.float64)
        mean_y = np.zeros(d_y) if mean_y is None else np.asarray(mean_y, dtype=np.float64)
        if mean_x.shape != (d_x,) or mean_y.shape != (d_y,):
            raise ValueError(f"`mean_x` {mean_x.shape} and `mean_y` {mean_y.shape} must be ({d_x},) and ({d_y},)")
        return cls((xx + xx.T) / 2, xy, (yy + yy.T) / 2, mean_x, mean_y, 0, centred)

    @property
    def d_x(self) -> int:
        """``d_x``, the dimension of ``x``.

        >>> JointMoments.from_matrices(np.eye(3), np.ones((3, 2)), 4 * np.eye(2)).d_x
        3
        """
        return self.xx.shape[0]

    @property
    def d_y(self) -> int:
        """``d_y``, the dimension of ``y``.

        >>> JointMoments.from_matrices(np.eye(3), np.ones((3, 2)), 4 * np.eye(2)).d_y
        2
        """
        return self.yy.shape[0]


def range_of_xx(moments: JointMoments) -> tuple[np.ndarray, np.ndarray]:
    """``(phi, V)``: the eigenvalues of ``A`` above :func:`linear_vae.data.moments.rank_tolerance` and their
    eigenvectors (d_x, r), the range of ``A`` on which every pseudo-inverse is taken.

    >>> moments = JointMoments.from_matrices(np.diag([4.0, 0.0]), np.zeros((2, 1)), np.eye(1))
    >>> phi, V = range_of_xx(moments)  # x never moves along its second coordinate
    >>> phi, V
    (array([4.]), array([[1.],
           [0.]]))

    References: docs/theory.md (T17.1).
    """
    spectrum = eigen_decomposition(moments.xx)
    keep = spectrum.eigenvalues > rank_tolerance(spectrum.eigenvalues)  # none when A = 0
    return spectrum.eigenvalues[keep], spectrum.eigenvectors[:, keep]


def inverse_sqrt_xx(moments: JointMoments) -> np.ndarray:
    """``A^{-1/2}`` on the range of ``A``: ``V diag(phi^{-1/2}) V^T`` (zero on its null space).

    >>> inverse_sqrt_xx(JointMoments.from_matrices(np.diag([4.0, 0.0]), np.zeros((2, 1)), np.eye(1)))
    array([[0.5, 0. ],
           [0. , 0. ]])

    References: docs/theory.md (T17.1).
    """
    phi, V = range_of_xx(moments)
    return (V / np.sqrt(phi)) @ V.T


def regression_map(moments: JointMoments) -> np.ndarray:
    """``C^T A^+`` (d_y, d_x): the least-squares prediction ``y_hat(x) = C^T A^+ x`` of ``y`` from ``x``.

    >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
    >>> regression_map(moments)  # y_hat = x / 2
    array([[0.5, 0. ],
           [0. , 0.5]])

    References: docs/theory.md (T17.1).
    """
    phi, V = range_of_xx(moments)
    return (moments.xy.T @ V / phi) @ V.T


def whitened_cross(moments: JointMoments) -> np.ndarray:
    """``Z = C^T A^{-1/2}`` (d_y, d_x), with ``A^{-1/2}`` on the range of ``A``; ``Z Z^T = C^T A^+ C``.

    >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
    >>> whitened_cross(moments)
    array([[1. , 0. ],
           [0. , 0.5]])

    References: docs/theory.md (T17.1).
    """
    return moments.xy.T @ inverse_sqrt_xx(moments)


def residual_moment(moments: JointMoments) -> np.ndarray:
    """``S = B - C^T A^+ C`` (d_y, d_y): the second moment of the residual ``y - C^T A^+ x``.

    Formed as ``B - Z Z^T`` (``Z`` of :func:`whitened_cross`) and symmetrised.

    >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
    >>> residual_moment(moments)  # diag(3 - 1, 2 - 0.25)
    array([[2.  , 0.  ],
           [0.  , 1.75]])

    References: docs/theory.md (T17.1, T17.3).
    """
    Z = whitened_cross(moments)
    S = moments.yy - Z @ Z.T
    return (S + S.T) / 2


class CrossSpectrum(NamedTuple):
    """The singular value decomposition ``Z = P diag(sqrt(variances)) R^T`` of ``Z = C^T A^{-1/2}``.

    Attributes
    ----------
    variances : (r,) squared singular values, descending (variance units), ``r = min(d_x, d_y)``.
    left : (d_y, r) ``P``, canonically signed (:func:`linear_vae.data.moments.canonical_signs`).
    right : (d_x, r) ``R``, signed to match ``left``.
    """

    variances: np.ndarray
    left: np.ndarray
    right: np.ndarray


def cross_spectrum(moments: JointMoments) -> CrossSpectrum:
    """The singular values (squared) and vectors of ``Z = C^T A^{-1/2}``.

    >>> moments = JointMoments.from_matrices(np.diag([4.0, 1.0]), np.diag([2.0, 0.5]), np.diag([3.0, 2.0]))
    >>> cross_spectrum(moments).variances
    array([1.  , 0.25])

    References: docs/theory.md (T17.2, T17.4).
    """
    P, singular, Rt = np.linalg.svd(whitened_cross(moments), full_matrices=False)
    signed = canonical_signs(P)
    flips = np.sum(signed * P, axis=0)  # +-1 per column
    return CrossSpectrum(singular**2, signed, Rt.T * flips)
