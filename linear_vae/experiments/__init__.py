"""The paper's posterior-collapse figures, one module each (see :mod:`linear_vae.experiments.runner`)."""
