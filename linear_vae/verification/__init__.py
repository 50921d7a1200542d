"""Trained against closed form: the comparison and its verdicts, ``linear-vae verify`` for the
linear VAE and for the CVAE and HVAE, and constructed hard problems.  Imports
:mod:`linear_vae.training` and the layers below it; not :mod:`linear_vae.deep`."""
