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

References: docs/theory.md (T6).
"""

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")


def assert_float64(*arrays) -> None:
    """Raise ``AssertionError`` if any array is not float64 (used by tests and the trainer)."""
    for a in arrays:
        if jnp.asarray(a).dtype != jnp.float64:
            raise AssertionError(f"expected float64, got {jnp.asarray(a).dtype}")
