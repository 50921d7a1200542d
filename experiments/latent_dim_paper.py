"""Regenerate figures/latent_dim_paper.png and figures/latent_dim_paper.json: `python experiments/latent_dim_paper.py [--quick] [--out DIR]`.

The paper's configuration is `linear_vae/experiments/latent_dim_paper.py`; run and figure are those of
`linear_vae/experiments/latent_dim.py`; this script and `linear-vae reproduce --only latent_dim_paper` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("latent_dim_paper")
