"""Regenerate figures/escape_time.png and figures/escape_time.json: `python experiments/escape_time.py [--quick] [--out DIR]`.

The experiment itself (configuration, run, figure) reads top to bottom in
`linear_vae/experiments/escape_time.py`; this script and `linear-vae reproduce --only escape_time` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("escape_time")
