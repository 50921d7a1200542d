"""Regenerate figures/collapse_threshold.png and figures/collapse_threshold.json: `python experiments/collapse_threshold.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/collapse_threshold.py`; this script and `linear-vae reproduce --only collapse_threshold` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("collapse_threshold")
