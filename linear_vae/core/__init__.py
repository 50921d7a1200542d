"""Shared utilities that know nothing of any model: argument validation, atomic file writes, the
float64 switch, progress on stderr, and small SPD solves in plain XLA ops.  Imports nothing of
:mod:`linear_vae`."""
