"""The deep (non-linear) Gaussian VAE and the stopping rule for runs with no closed form to check
against.  Imports :mod:`linear_vae.training` (the loop and the divergence rule, never the linear
trainer) and the layers below it; not :mod:`linear_vae.verification`."""
