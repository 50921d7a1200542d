"""Constructed hard problems for convergence tests and benchmarks of the linear-VAE trainer.

The shipped data (MNIST digits, the default synthetic spectrum ``8 * 0.75**i``) are benign: their
eigenvalues are well separated and of order one.  Training can still go wrong on spectra where

* two eigenvalues are nearly equal (ratio <= 1.05).  Inside the active set the rotation between
  the two directions is almost free: for the ELBO, and for gradient methods on it, its curvature
  is proportional to ``(lambda_i - lambda_j)^2``, close to zero.  Where the pair straddles the
  latent dimension ``k`` (``lambda_k / lambda_{k+1} <= 1.05``) the model must choose the larger
  of two almost equal directions, and where it straddles the collapse threshold
  ``t = beta sigma2`` one direction must stay active and the other collapse;
* the eigenvalues span several decades, so the curvature ratio ``lambda_1 / min |lambda_i - t|``
  (the condition number of the Newton system) is in the thousands;
* the data are on their raw scale (eigenvalues in the hundreds, a mean far from zero), so no
  tolerance can silently assume values of order one;
* some features are constant (exactly zero variance, like the border pixels of MNIST), so the
  covariance is singular and a learned ``sigma2`` is pulled down by zero eigenvalues;
* ``d`` is large (200), the latent dimension too (16), and ``sigma2`` is learned at beta = 30.

Every case is *well posed* in the sense of the convergence contract: for every beta of the case,
``|lambda_i - beta sigma2| >= 0.02 beta sigma2`` for every ``i <= k`` (with learned sigma2, at the
learned value of :func:`linear_vae.theory.optimum.learned_sigma2`, which must exist: ``sum_{i>k} lambda_i
> 0`` and ``d > beta m`` for the ``m`` active dimensions).  Within 2% of a threshold the optimum
is too flat to be located to 1e-6 nats by any optimiser's own convergence test;
:func:`check_well_posed` checks the margin on the sample spectrum of the constructed data.

Data come from :func:`linear_vae.data.datasets.make_synthetic` (whose ``1/N`` sample covariance has the
prescribed eigenvalues exactly, up to float64 round-off), with constant columns appended where a
case needs zero eigenvalues.  Each ``make`` is deterministic (a fixed seed).

Cases sharing ``(d, latent_dim, learned or fixed sigma2, number of betas)`` share one compiled
training program, so the fixed-sigma2 cases at d = 64 and the learned-sigma2 cases at d = 64 cost
one compilation each in a test session.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from linear_vae.data.datasets import Dataset, make_synthetic
from linear_vae.theory.optimum import beta_elbo_optimum, learned_sigma2, threshold_distance

#: Smallest relative distance ``|lambda_i - beta sigma2| / (beta sigma2)``, ``i <= k``, of a well-posed case.
WELL_POSED_MARGIN = 0.02


class HardCase(NamedTuple):
    """One constructed problem: data, latent dimension, sigma2 (or None: learned) and the betas to train."""

    name: str  # short identifier, e.g. "near-equal-pairs"
    description: str  # one line: what makes it hard
    latent_dim: int
    sigma2: float | None  # None: sigma2 learned
    betas: tuple[float, ...]
    make: Callable[[], Dataset]  # deterministic (fixed seed)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _geometric(first: float, last: float, count: int) -> np.ndarray:
    """``count`` values falling geometrically from ``first`` to ``last`` (both included)."""
    return first * (last / first) ** (np.arange(count) / max(count - 1, 1))


def _with_constant_columns(dataset: Dataset, values, offset: float = 0.0) -> Dataset:
    """``dataset`` shifted by ``offset`` with one constant column appended per entry of ``values``.

    The constant columns have exactly zero sample variance (the mean of N equal floats is that
    float), so the covariance gains exact zero rows and columns and the spectrum exact zeros.
    """
    n = dataset.n
    constant = np.broadcast_to(np.asarray(values, dtype=np.float64), (n, len(values)))
    X = np.hstack([dataset.X + offset, constant])
    spectrum = np.concatenate([dataset.population_eigenvalues, np.zeros(len(values))])
    return Dataset(X=X, labels=None, name=dataset.name, is_image=False, population_eigenvalues=spectrum)


def _synthetic(name: str, spectrum, n: int, seed: int) -> Dataset:
    dataset = make_synthetic(np.asarray(spectrum, dtype=np.float64), n=n, seed=seed)
    return Dataset(
        X=dataset.X,
        labels=None,
        name=f"hard:{name}",
        is_image=False,
        population_eigenvalues=dataset.population_eigenvalues,
    )


# --------------------------------------------------------------------------------------------
# The spectra
# --------------------------------------------------------------------------------------------

#: near-equal-pairs: k = 8; pairs (12, 11.6), (6, 5.8) and (3.075, 2.93) inside the top k, and
#: (1.6, 1.55) across the latent boundary; beta sigma2 = 3 lies between 3.075 and 2.93.
NEAR_EQUAL_PAIRS = np.r_[40.0, 12.0, 11.6, 6.0, 5.8, 3.075, 2.93, 1.6, 1.55, _geometric(1.2, 0.05, 55)]

#: three-decades: k = 8, the top eight eigenvalues 1000 .. 0.3 (3.5 decades), the tail down to 1e-3.
THREE_DECADES = np.r_[1000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 1.0, 0.3, _geometric(0.25, 1e-3, 56)]

#: raw-scale: k = 8, eigenvalues in the hundreds with pairs (900, 870) and (400, 392) inside the
#: top k and (120, 117) across the latent boundary; 48 informative features, 16 constant ones.
RAW_SCALE = np.r_[900.0, 870.0, 520.0, 400.0, 392.0, 260.0, 180.0, 120.0, 117.0, _geometric(90.0, 2.0, 39)]
#: the values of the 16 constant columns of raw-scale (blank pixels, dark and saturated)
RAW_CONSTANTS = (0.0,) * 8 + (255.0,) * 8
#: the mean offset of raw-scale's informative features (grey-level pixels)
RAW_OFFSET = 128.0

#: boundary-pair-learned: k = 8, pair (29, 30) inside the top k, (4.2, 4.0) at k = 6, 7 and
#: (3.0, 2.9) across the latent boundary.  The tail's last value 0.1788 was solved for (brentq) so
#: that the learned beta sigma2 at beta = 3 falls at the geometric middle of 4.2 and 4.0:
#: learned sigma2 and the collapse threshold then sit between two eigenvalues 5% apart.
BOUNDARY_PAIR = np.r_[50.0, 30.0, 29.0, 16.0, 9.0, 4.2, 4.0, 3.0, 2.9, _geometric(2.8, 0.1788, 55)]

#: wide: k = 16, top eigenvalues 2000 .. 0.96 (3.3 decades) with pairs (2000, 1905), (40, 38.5)
#: and (1.0, 0.96) inside the top k and (0.96, 0.93) across the latent boundary; 184 informative
#: features (the tail down to 2e-3) and 16 constant ones: d = 200.
WIDE = np.r_[
    2000.0,
    1905.0,
    800.0,
    400.0,
    200.0,
    100.0,
    60.0,
    40.0,
    38.5,
    20.0,
    10.0,
    6.0,
    3.0,
    2.0,
    1.0,
    0.96,
    0.93,
    _geometric(0.8, 0.002, 167),
]
WIDE_CONSTANTS = (0.0,) * 16


def _near_equal_pairs() -> Dataset:
    return _synthetic("near-equal-pairs", NEAR_EQUAL_PAIRS, n=500, seed=101)


def _three_decades() -> Dataset:
    return _synthetic("three-decades", THREE_DECADES, n=500, seed=102)


def _raw_scale() -> Dataset:
    return _with_constant_columns(_synthetic("raw-scale", RAW_SCALE, n=500, seed=103), RAW_CONSTANTS, RAW_OFFSET)


def _boundary_pair() -> Dataset:
    return _synthetic("boundary-pair-learned", BOUNDARY_PAIR, n=500, seed=104)


def _wide() -> Dataset:
    return _with_constant_columns(_synthetic("wide", WIDE, n=1000, seed=105), WIDE_CONSTANTS)


def hard_cases() -> list[HardCase]:
    """The constructed hard problems (every one well posed, see :func:`check_well_posed`).

    * ``near-equal-pairs`` (d = 64, k = 8, sigma2 = 1 fixed, beta 0.5, 1, 3, 30): three pairs of
      eigenvalues 2-5% apart inside the top k and one across the latent boundary; at beta = 3 the
      threshold ``t = 3`` lies between 3.075 and 2.93, so one member of a near-equal pair is
      active and the other collapsed, each about 2.4% from the threshold.
    * ``three-decades`` (d = 64, k = 8, sigma2 = 0.08 fixed, beta 0.5, 1, 3, 30): the top k
      eigenvalues fall from 1000 to 0.3 (the tail on to 1e-3) and ``t`` is as small as 0.04, so
      the Newton system's curvature ratio ``lambda_1 / min |lambda_i - t|`` reaches 1.7e4 (beta
      = 3, ``t = 0.24`` against ``lambda_8 = 0.3``) and ``lambda_1 / t`` 2.5e4.
    * ``raw-scale`` (d = 64 with 16 constant columns, k = 8, sigma2 = 25 fixed, beta 0.5, 1, 3,
      30): eigenvalues in the hundreds, the mean at 128 and columns fixed at 0 and 255, with
      near-equal pairs inside the top k and across the latent boundary.
    * ``raw-scale-learned``: the same data with sigma2 learned (beta 0.5, 1, 3); the zero
      eigenvalues of the constant columns enter the learned sigma2.
    * ``boundary-pair-learned`` (d = 64, k = 8, sigma2 learned, beta 0.5, 1, 3): at beta = 3 the
      learned ``beta sigma2`` falls between the eigenvalues 4.2 and 4.0, so sigma2 and the
      active set are decided together between two directions 5% apart.
    * ``wide`` (d = 200 with 16 constant columns, k = 16, sigma2 learned, beta 0.5, 1, 3, 30): the
      largest problem, 3.3 decades in the top k, near-equal pairs inside and across the latent
      boundary, and learned sigma2 at beta = 30 (5 active dimensions, ``d > beta m`` holds).

    >>> [(case.name, case.latent_dim, case.sigma2) for case in hard_cases()[:4]]
    [('near-equal-pairs', 8, 1.0), ('three-decades', 8, 0.08), ('raw-scale', 8, 25.0), ('raw-scale-learned', 8, None)]
    """
    return [
        HardCase(
            "near-equal-pairs",
            "eigenvalue pairs 2-5% apart inside the top k, across k, and around beta sigma2 = 3",
            8,
            1.0,
            (0.5, 1.0, 3.0, 30.0),
            _near_equal_pairs,
        ),
        HardCase(
            "three-decades",
            "top-k eigenvalues from 1000 to 0.3, beta sigma2 down to 0.04: curvature ratio up to 1.7e4",
            8,
            0.08,
            (0.5, 1.0, 3.0, 30.0),
            _three_decades,
        ),
        HardCase(
            "raw-scale",
            "eigenvalues in the hundreds, mean 128, 16 constant columns, near-equal pairs, fixed sigma2",
            8,
            25.0,
            (0.5, 1.0, 3.0, 30.0),
            _raw_scale,
        ),
        HardCase(
            "raw-scale-learned",
            "raw-scale data with sigma2 learned: zero eigenvalues of constant columns enter sigma2",
            8,
            None,
            (0.5, 1.0, 3.0),
            _raw_scale,
        ),
        HardCase(
            "boundary-pair-learned",
            "learned beta sigma2 at beta = 3 between eigenvalues 4.2 and 4.0; pair across k",
            8,
            None,
            (0.5, 1.0, 3.0),
            _boundary_pair,
        ),
        HardCase(
            "wide",
            "d = 200 (16 constant), k = 16, 3.3 decades, near-equal pairs, learned sigma2 up to beta 30",
            16,
            None,
            (0.5, 1.0, 3.0, 30.0),
            _wide,
        ),
    ]


# --------------------------------------------------------------------------------------------
# Well-posedness
# --------------------------------------------------------------------------------------------


def initial_sigma2s(case: HardCase, eigenvalues) -> list[float]:
    """The ``sigma2s`` argument of a sweep over ``case.betas``: the fixed sigma2, or where it is
    learned its starting value, the mean eigenvalue ``tr S / d``.

    >>> near_equal, _, _, raw_learned = hard_cases()[:4]
    >>> initial_sigma2s(near_equal, [4.0, 2.0]), initial_sigma2s(raw_learned, [4.0, 2.0])  # fixed; learned from tr S / d
    ([1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0])
    """
    start = case.sigma2 if case.sigma2 is not None else float(np.mean(eigenvalues))
    return [float(start)] * len(case.betas)


def check_well_posed(
    eigenvalues, latent_dim: int, beta: float, sigma2: float | None, margin: float = WELL_POSED_MARGIN
) -> float:
    """Raise ``ValueError`` unless the problem is well posed; return its
    :func:`~linear_vae.theory.optimum.threshold_distance`.

    Well posed: with fixed ``sigma2``, ``|lambda_i - beta sigma2| >= margin * beta sigma2`` for
    every ``i <= k``.  With learned sigma2 (``sigma2=None``) the learned value must exist
    (``sum_{i > k} lambda_i > 0`` and ``d > beta m``, ``m`` the active dimensions at it) and the
    margin holds at it.

    >>> round(check_well_posed([4.0, 2.0, 1.0, 0.5], latent_dim=2, beta=1.0, sigma2=1.5), 6)
    0.333333
    >>> check_well_posed([4.0, 2.0, 1.0, 0.5], latent_dim=2, beta=1.0, sigma2=1.99)
    Traceback (most recent call last):
        ...
    ValueError: beta = 1.0, sigma2 = 1.99: an eigenvalue within 0.50% of beta sigma2 (at least 2% needed)

    References: docs/theory.md (T4.3, T4.4).
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    if sigma2 is None:
        if not np.sum(eigenvalues[latent_dim:]) > 0:
            raise ValueError(f"no learned sigma2: the eigenvalues beyond k = {latent_dim} sum to 0")
        value = learned_sigma2(eigenvalues, latent_dim, beta)
        m = beta_elbo_optimum(eigenvalues, latent_dim, beta, value).active_dims
        if not len(eigenvalues) > beta * m:
            raise ValueError(f"no learned sigma2: d = {len(eigenvalues)} <= beta m = {beta} * {m}")
    else:
        value = float(sigma2)
    found = threshold_distance(eigenvalues, latent_dim, beta, value)
    if not found >= margin:
        raise ValueError(
            f"beta = {beta}, sigma2 = {value:.6g}: an eigenvalue within {found:.2%} of "
            f"beta sigma2 (at least {margin:.0%} needed)"
        )
    return found
