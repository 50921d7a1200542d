"""Regenerate figures/stationary_points.{png,json}: `python experiments/stationary_points.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/stationary_points.py`; this script and `linear-vae reproduce --only stationary_points` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("stationary_points")
