"""Regenerate figures/latent_dim.png and figures/latent_dim.json: `python experiments/latent_dim.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/latent_dim.py`; this script and `linear-vae reproduce --only latent_dim` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("latent_dim")
