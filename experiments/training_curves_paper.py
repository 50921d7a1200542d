"""Regenerate figures/training_curves_paper.png and figures/training_curves_paper.json: `python experiments/training_curves_paper.py [--quick] [--out DIR]`.

The paper's configuration is `linear_vae/experiments/training_curves_paper.py`; run and figure are those of
`linear_vae/experiments/training_curves.py`; this script and `linear-vae reproduce --only training_curves_paper` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("training_curves_paper")
