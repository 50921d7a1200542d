"""Regenerate figures/rate_distortion.png and figures/rate_distortion.json: `python experiments/rate_distortion.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/rate_distortion.py`; this script and `linear-vae reproduce --only rate_distortion` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("rate_distortion")
