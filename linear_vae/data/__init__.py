"""Data: file readers, the shipped and synthetic data sets, sample moments, the one
:class:`~linear_vae.data.problem.Problem` everything builds on, and the moments of (x, y) pairs.
Imports only :mod:`linear_vae.core`."""
