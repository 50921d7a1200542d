"""Regenerate figures/deep_vae_{active,kl_per_dim,learned,collapse,annealing,rate_distortion}.png and figures/deep_vae.json: `python experiments/deep_vae.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/deep_vae.py`; this script and `linear-vae reproduce --only deep_vae` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("deep_vae")
