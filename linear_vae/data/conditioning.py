"""Pairs ``(x, y)`` for the conditional and hierarchical models: the condition ``x`` a model sees and
the target ``y`` it generates.

* :func:`image_split`: both from one image, as Dang et al. (2024, Section 5) do on MNIST: ``x`` the
  bottom-left quarter and ``y`` the other three (``"quarter"``), or ``x`` the left half and ``y`` the
  right (``"half"``).
* :func:`correlated_condition`: a synthetic condition ``x = a y + sqrt(1 - a^2) e`` with ``e`` standard
  normal noise, whose share ``a`` of ``y`` sets how much of ``y``'s variance ``x`` explains (their
  synthetic families: ``a`` = 1/8, 1/4, 1/2; ``a = 1`` is ``x = y``, ``a = 0`` independent).

Only second moments of the pairs enter the closed forms (:class:`linear_vae.data.joint_moments.JointMoments`,
docs/theory.md (T17.1)).
"""

from __future__ import annotations

import math

import numpy as np

SPLITS = ("quarter", "half")


def image_split(X: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from square images stored one per row (``d = side^2``, row-major): ``"quarter"``
    gives ``x`` the bottom-left ``side/2 x side/2`` block and ``y`` the other three quarters (in
    row-major order), ``"half"`` gives ``x`` the left ``side/2`` columns and ``y`` the right ones.

    >>> X = np.arange(16.0).reshape(1, 16)  # one 4 x 4 image: rows 0-3, pixel values 0..15
    >>> x, y = image_split(X, "quarter")
    >>> x, y
    (array([[ 8.,  9., 12., 13.]]), array([[ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7., 10., 11., 14., 15.]]))
    >>> image_split(X, "half")[0]
    array([[ 0.,  1.,  4.,  5.,  8.,  9., 12., 13.]])

    References: docs/theory.md (T17.1); Dang et al. 2024, Section 5.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    X = np.asarray(X, dtype=np.float64)
    side = math.isqrt(X.shape[1])
    if side * side != X.shape[1] or side % 2:
        raise ValueError(
            f"--split needs square images with an even side, one per row; rows of {X.shape[1]} values are not"
        )
    rows, cols = np.divmod(np.arange(X.shape[1]), side)
    half = side // 2
    condition = (cols < half) & (rows >= half) if split == "quarter" else cols < half
    return X[:, condition], X[:, ~condition]


def correlated_condition(Y: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """``x = a y + sqrt(1 - a^2) e``, ``e ~ N(0, I)`` drawn with ``seed``, for ``0 <= a = share <= 1``:
    a condition that explains the fraction ``a^2 / (a^2 + (1 - a^2) / Var y)`` of each coordinate's
    variance (all of it at ``a = 1``, none at ``a = 0``).

    >>> Y = np.random.default_rng(1).normal(size=(5000, 3))
    >>> x = correlated_condition(Y, 0.5)
    >>> bool(np.allclose(np.corrcoef(x[:, 0], Y[:, 0])[0, 1], 0.5, atol=0.03))
    True
    >>> bool(np.array_equal(correlated_condition(Y, 1.0), Y))
    True

    References: docs/theory.md (T17.1); Dang et al. 2024, Section 5.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"`share` must lie in [0, 1], got {share}")
    Y = np.asarray(Y, dtype=np.float64)
    noise = np.random.default_rng(seed).normal(size=Y.shape)
    return share * Y + math.sqrt(1.0 - share**2) * noise
