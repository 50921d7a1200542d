"""Regenerate figures/landscape_paper.png and figures/landscape_paper.json: `python experiments/landscape_paper.py [--quick] [--out DIR]`.

The paper's configuration is `linear_vae/experiments/landscape_paper.py`; run and figure are those of
`linear_vae/experiments/landscape.py`; this script and `linear-vae reproduce --only landscape_paper` both run it.
"""

from linear_vae.cli import script_main

if __name__ == "__main__":
    script_main("landscape_paper")
