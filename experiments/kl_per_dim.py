"""Regenerate figures/kl_per_dim.png and figures/kl_per_dim.json: `python experiments/kl_per_dim.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/kl_per_dim.py`; this script and `linear-vae reproduce --only kl_per_dim` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("kl_per_dim")
