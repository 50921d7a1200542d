"""Regenerate figures/metric_calibration.png and figures/metric_calibration.json: `python experiments/metric_calibration.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/metric_calibration.py`; this script and `linear-vae reproduce --only metric_calibration` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("metric_calibration")
