"""The project's one numerical-precision switch.

Every closed-form value and every trained-versus-analytic comparison in this package is
computed in float64 (docs/theory.md (T6)): float32 ``eigh`` cannot resolve the small
eigenvalues of image data, and a float32 ELBO cannot resolve the 1e-5-nat gaps the trainer is
judged by.  JAX defaults to float32 and may use reduced-precision (TF32/bf16) matrix products
on accelerators, so importing :mod:`linear_vae` switches on

* ``jax_enable_x64``: arrays created by JAX default to float64;
* ``jax_default_matmul_precision = "highest"``: every ``dot``/``matmul`` runs at full
  precision of its input type.

This is the only place the package touches JAX's global configuration.  Code that wants
float32 for speed (the deep VAE) asks for it explicitly with ``dtype=jnp.float32``.

**A global switch, on purpose.**  The switch holds for the whole process, so other JAX code in it
gets float64 by default too.  A scoped float64 context instead would have to wrap every public
function, every jitted program and every array a user passes in, and a program traced under one
setting misbehaves when called under the other; JAX documents the global flag as the way to
work in float64.  So the switch stays global, the README says so in its first lines, and importing
the package after JAX has already run (its backends are initialised) warns once: arrays made
before stay float32, and code that relied on the float32 default now gets float64.

References: docs/theory.md (T6).
"""

import warnings

import jax
import jax.numpy as jnp


def _jax_already_in_use() -> bool:
    """Whether JAX's backends were initialised before this import (it has made arrays or compiled)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without this private helper: stay quiet
        return False


if not jax.config.jax_enable_x64 and _jax_already_in_use():
    warnings.warn(
        "importing linear_vae switches JAX to float64 (jax_enable_x64) for the whole process, after JAX was "
        "already in use here: arrays made before stay float32, and code relying on the float32 default now "
        "gets float64; import linear_vae first, or use it in a process of its own",
        stacklevel=2,
    )
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")


def assert_float64(*arrays) -> None:
    """Raise ``AssertionError`` if any array is not float64 (used by tests and the trainer).

    >>> import numpy as np
    >>> assert_float64(jnp.zeros(2), np.ones(3))  # float64: nothing happens
    >>> assert_float64(jnp.zeros(2, dtype=jnp.float32))
    Traceback (most recent call last):
        ...
    AssertionError: expected float64, got float32
    """
    for a in arrays:
        if jnp.asarray(a).dtype != jnp.float64:
            raise AssertionError(f"expected float64, got {jnp.asarray(a).dtype}")
