"""One validation path for user-facing arguments.

Every check raises :class:`ValueError` with a single line that says what is wrong and what to
change, naming parameters in backquotes (```latent_dim```); the CLI maps each to its option
(``--latent-dim``, :data:`linear_vae.cli.OPTIONS`), prints the line after ``error:`` and exits
with status 2.  Library functions below the
boundary (the CLI, :class:`linear_vae.data.problem.Problem`, :func:`linear_vae.analysis.analyze`,
:meth:`linear_vae.training.train.TrainConfig.validate`, :func:`linear_vae.verification.verify.run_verification`) assume
valid input.
"""

from __future__ import annotations

import math

import numpy as np


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)`` if it is finite and > 0, else raise ``ValueError`` naming the parameter.

    >>> check_positive("beta", 2)
    2.0
    >>> check_positive("beta", 0.0)
    Traceback (most recent call last):
    ...
    ValueError: `beta` must be finite and > 0, got 0.0; pass a positive number
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r}; pass a positive number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be finite and > 0, got {value}; pass a positive number")
    return value


def check_latent_dim(latent_dim: int, d: int) -> int:
    """Return ``latent_dim`` if ``1 <= latent_dim <= d``, else raise ``ValueError``.

    >>> check_latent_dim(5, d=4)
    Traceback (most recent call last):
    ...
    ValueError: `latent_dim` 5 is out of range for data with d = 4 features; pass 1 <= `latent_dim` <= 4
    """
    if isinstance(latent_dim, bool) or int(latent_dim) != latent_dim:
        raise ValueError(f"`latent_dim` must be an integer, got {latent_dim!r}")
    latent_dim = int(latent_dim)
    if latent_dim < 1 or latent_dim > d:
        raise ValueError(
            f"`latent_dim` {latent_dim} is out of range for data with d = {d} features; pass 1 <= `latent_dim` <= {d}"
        )
    return latent_dim


def check_count(name: str, count: int, limit: int, what: str) -> int:
    """Return ``count`` if it is an integer with ``1 <= count <= limit``, else raise ``ValueError`` naming the
    parameter and ``what`` the limit is (latent dimensions of the models of docs/theory.md (T17)).

    >>> check_count("d2", 3, limit=2, what="d1: z2 has no more dimensions than z1")
    Traceback (most recent call last):
    ...
    ValueError: `d2` = 3 is out of range: pass 1 <= `d2` <= 2 (d1: z2 has no more dimensions than z1)
    """
    if isinstance(count, bool) or int(count) != count:
        raise ValueError(f"`{name}` must be an integer, got {count!r}")
    count = int(count)
    if not 1 <= count <= limit:
        raise ValueError(f"`{name}` = {count} is out of range: pass 1 <= `{name}` <= {limit} ({what})")
    return count


def validate_data(X) -> None:
    """Check that ``X`` is a usable data matrix; raise ``ValueError`` otherwise.

    Parameters
    ----------
    X : array_like
        Candidate data, shape ``(N, d)``.

    Raises
    ------
    ValueError
        Not 2-D or not numeric, no features, fewer than 2 samples, NaN or inf values (with
        their count and the position of the first), or all samples identical (zero
        covariance).

    Examples
    --------
    >>> validate_data(np.ones((3, 2)))
    Traceback (most recent call last):
    ...
    ValueError: all samples are identical; the covariance is zero
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"data must be 2-D (samples, features), got shape {X.shape}; reshape it")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"data must be numeric, got dtype {X.dtype}")
    N, d = X.shape
    if d == 0:
        raise ValueError(f"data has {N} samples but no features; pass at least one column")
    if N < 2:
        raise ValueError(f"data has {N} sample(s); a covariance needs at least 2 samples")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"data contains {int(bad.sum())} NaN/inf value(s); the first is {X[row, col]} "
            f"at row {row}, column {col} (0-based); remove or impute them"
        )
    if np.all(X == X[0]):
        raise ValueError("all samples are identical; the covariance is zero")
