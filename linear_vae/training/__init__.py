"""Gradient training of the linear models: the solvers (trust-region Newton on the projected
objective, Adam, SGD), the convergence test, the one model-agnostic training loop, the single
configuration trainer and the sweep driver, the CVAE and HVAE objectives, and Theorem 1 checked on
the projected objective.  Imports only :mod:`linear_vae.theory` and the layers below it."""
