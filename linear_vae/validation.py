"""One validation path for user-facing arguments.

Every check raises :class:`ValueError` with a single line that says what is wrong and what to
change; the CLI prints it after ``error:`` and exits with status 2.  The data themselves are
validated in :func:`linear_vae.datasets.validate_data`.
"""

from __future__ import annotations

import math


def check_positive(name: str, value: float, flag: str | None = None) -> float:
    """Return ``float(value)`` if it is finite and > 0, else raise ``ValueError``."""
    flag = flag or f"--{name.replace('_', '-')}"
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}; pass a positive number with {flag}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}; pass a positive number with {flag}")
    return value


def check_latent_dim(latent_dim: int, d: int) -> int:
    """Return ``latent_dim`` if ``1 <= latent_dim <= d``, else raise ``ValueError``."""
    if isinstance(latent_dim, bool) or int(latent_dim) != latent_dim:
        raise ValueError(f"latent dimension must be an integer, got {latent_dim!r}; pass --latent-dim K")
    latent_dim = int(latent_dim)
    if latent_dim < 1 or latent_dim > d:
        raise ValueError(
            f"latent dimension {latent_dim} is out of range for data with d = {d} features; "
            f"pass --latent-dim K with 1 <= K <= {d}")
    return latent_dim
