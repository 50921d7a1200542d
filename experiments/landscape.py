"""Regenerate figures/landscape.png and figures/landscape.json: `python experiments/landscape.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/landscape.py`; this script and `linear-vae reproduce --only landscape` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("landscape")
