"""Regenerate figures/identifiability.png and figures/identifiability.json: `python experiments/identifiability.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/identifiability.py`; this script and `linear-vae reproduce --only identifiability` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("identifiability")
