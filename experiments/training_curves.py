"""Regenerate figures/training_curves.png and figures/training_curves.json: `python experiments/training_curves.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/training_curves.py`; this script and `linear-vae reproduce --only training_curves` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("training_curves")
