"""Regenerate figures/collapse_fraction.png and figures/collapse_fraction.json: `python experiments/collapse_fraction.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/collapse_fraction.py`; this script and `linear-vae reproduce --only collapse_fraction` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("collapse_fraction")
