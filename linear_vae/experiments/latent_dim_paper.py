"""Figure 2 in the paper's setting: MLL and optimal ELBO against the latent dimension, up to K = 300.

The paper plots, for MNIST, the optimal ELBO and the marginal likelihood of the pPCA solutions for
K up to 300, with sigma2 learned (the MLE) and with sigma2 fixed, among others at the MLE value
of a smaller K.  Here: the seeded MNIST-1000, the closed form at every K from 0 to 300 for
learned sigma2, for sigma2 = 1 and for sigma2 fixed at the MLE of K = 50
(``sigma2* = mean(lambda_51..784) = 0.0115``, 214 eigenvalues above it, so that curve flattens at
K = 214), in absolute nats per datapoint beside the gain over K = 0.  Trained points (Newton to
convergence) are few and at K = 64: a Newton run at K = 300 had not finished after 15 minutes on
2 cores.

Run and figure are :mod:`linear_vae.experiments.latent_dim`'s; only the configuration differs.
"""

from __future__ import annotations

from linear_vae.experiments.latent_dim import plot, run  # noqa: F401  (the experiment itself)

NAME = "latent_dim_paper"
TITLE = "ELBO and marginal likelihood against the number of latent dimensions up to K = 300 (the paper's Figure 2)"

CONFIG = {
    "data": "mnist",
    "n": 1000,
    "subset_seed": 0,  # seeded random 1,000 of the shipped digits
    "max_latent_dim": 300,  # closed form at every K = 0..300
    "trained_latent_dims": [64],  # few and cheap: Newton, to convergence
    "sigma2s": [1.0],  # #{lambda > 1} = 12
    "mle_sigma2_latent_dims": [50],  # sigma2 fixed at the MLE sigma2* of K = 50
    "initial_sigma2": 1.0,
    "optimizer": "newton",
    "steps": 500,
    "seed": 0,
    "gain_tol": 1e-12,
    "basis": "eigen",
    "k_axis": "linear",  # as the paper
}
QUICK = {"trained_latent_dims": []}  # closed form only: the full run has the trained points
