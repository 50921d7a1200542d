"""Regenerate figures/encoders.{png,json}: `python experiments/encoders.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/encoders.py`; this script and `linear-vae reproduce --only encoders` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("encoders")
