"""The deep-VAE study of :mod:`linear_vae.experiments.deep_vae` on Fashion-MNIST: the same code and
settings on the shipped 5,000-image Fashion-MNIST subset (4,000 training / 1,000 held-out images),
which stands in for the paper's CelebA (not shippable offline).
"""

from __future__ import annotations

from linear_vae.experiments.deep_vae import CONFIG as MNIST_CONFIG
from linear_vae.experiments.deep_vae import QUICK, plot, run, table

NAME = "deep_vae_fashion"
TITLE = (
    "Deep Gaussian VAE on Fashion-MNIST: collapse against sigma2, learned sigma2, KL annealing, with seeds, "
    "next to the linear VAE"
)
CONFIG = {**MNIST_CONFIG, "data": "fashion_mnist"}

__all__ = ["CONFIG", "NAME", "QUICK", "TITLE", "plot", "run", "table"]
