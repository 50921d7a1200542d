"""Figure 1 in the paper's setting: the landscape around a zero column of W on MNIST.

The paper perturbs a zero column of a stationary pPCA decoder on MNIST along two principal
directions and plots the marginal likelihood around it (its caption, as read for this project and
not re-checked against the PDF, names ``u_5`` and ``u_7``; its ``sigma2`` values are not sourced here).  Here: MNIST-1000
(seeded), the stationary point with columns ``u_j sqrt(lambda_j - sigma2)`` for ``j = 1..4`` and a
zero fifth column, moved to ``a u_5 + b u_7``, at three ``sigma2`` read off the spectrum
(``lambda_4 = 2.80``, ``lambda_5 = 2.59``, ``lambda_7 = 1.70``): below ``lambda_7`` (both directions
ascend: a saddle, and a local minimum on this slice), between ``lambda_7`` and ``lambda_5`` (only ``u_5``
ascends) and between ``lambda_5`` and ``lambda_4`` (a maximum: there ``#{lambda_i > sigma2} = 4``, so it
is the global one, docs/theory.md (T2.4)).

Run and figure are :mod:`linear_vae.experiments.landscape`'s; only the configuration differs.
"""

from __future__ import annotations

from linear_vae.experiments.landscape import plot, run  # noqa: F401  (the experiment itself)

NAME = "landscape_paper"
TITLE = "MLL and ELBO around a zero column of W on MNIST, perturbed along u5 and u7 (the paper's Figure 1)"

CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,  # seeded random 1,000 of the shipped digits
    "latent_dim": 5,  # columns on u_1..u_4, the fifth zero
    "used_directions": [0, 1, 2, 3],
    "directions": [4, 6],  # 0-based: the zero column moves along a u_5 + b u_7
    "sigma2s": [1.2, 2.0, 2.7],  # < lambda_7 = 1.70; in (lambda_7, lambda_5 = 2.59); in (lambda_5, lambda_4 = 2.80)
    "extent": 1.5,  # a, b in [-extent, extent]
    "grid_points": 41,
    "fd_step": 1e-3,
    "basis": "eigen",
}
QUICK = {"grid_points": 21}
