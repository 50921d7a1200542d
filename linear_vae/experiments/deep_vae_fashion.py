"""The deep-VAE study of :mod:`linear_vae.experiments.deep_vae` on Fashion-MNIST: the same code on
the shipped 5,000-image Fashion-MNIST subset (4,000 training / 500 validation / 500 test images),
which stands in for the paper's CelebA (not shippable offline), with 3 seeds where MNIST has 5 and
the learned-sigma2 step sizes cut to Adam at 1e-3 and the exact update (to fit its time budget).
"""

from __future__ import annotations

from linear_vae.experiments.deep_vae import CONFIG as MNIST_CONFIG
from linear_vae.experiments.deep_vae import QUICK, RESUMABLE, SCHEMA, plot, report, run, table

NAME = "deep_vae_fashion"
TITLE = (
    "Deep Gaussian VAE on Fashion-MNIST, every run stopped by rule: collapse against sigma2, learned sigma2, "
    "KL annealing, next to the linear VAE"
)
CONFIG = {
    **MNIST_CONFIG,
    "data": "fashion_mnist",
    "fixed_seeds": [0, 1, 2],
    "sigma2_step_sizes": [1e-3, "exact"],
}

__all__ = ["CONFIG", "NAME", "QUICK", "RESUMABLE", "SCHEMA", "TITLE", "plot", "report", "run", "table"]
