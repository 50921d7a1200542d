"""linear-vae: posterior collapse in the linear VAE, in closed form and by gradient training.

Reproduction of Lucas, Tucker, Grosse & Norouzi, *Don't Blame the ELBO! A Linear VAE
Perspective on Posterior Collapse* (NeurIPS 2019).  Importing the package switches JAX to
float64 (see :mod:`linear_vae.core.precision`).
"""

from linear_vae.core import precision  # noqa: F401  (must run before any JAX array is made)

__version__ = "0.1.0"

from linear_vae.estimator import LinearVAE  # noqa: E402  (the scikit-learn-style estimator)

__all__ = ["LinearVAE", "__version__"]
