"""The documentation's structure (pure text; ``mkdocs build --strict`` in the README's test command checks
links, anchors and the API reference): every committed figure is in the README's gallery and on a docs
page, every docs page is in the site's navigation, and the griffe extension that renders docstrings for
the API reference fences doctests and turns Sphinx roles into code."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = sorted(p.name for p in (ROOT / "figures").glob("*.png"))
PAGES = sorted((ROOT / "docs").glob("*.md"))


def test_every_figure_is_in_the_gallery_with_a_sentence():
    readme = (ROOT / "README.md").read_text()
    gallery = readme[readme.index("## Figures") :]
    gallery = gallery[: gallery.index("\n## ", 1)]
    rows = [line for line in gallery.splitlines() if line.startswith("| <img ")]
    shown = {re.search(r'src="figures/([^"]+)"', row).group(1): row for row in rows}
    assert sorted(shown) == FIGURES, "each figures/*.png needs one row of the README's gallery"
    for name, row in shown.items():
        sentence = row.split("|")[2]
        assert sentence.strip().endswith(").") and "](docs/" in sentence, f"{name}: a sentence and a link"


def test_every_figure_is_shown_on_a_docs_page():
    text = "".join(page.read_text() for page in PAGES)
    missing = [name for name in FIGURES if f"](../figures/{name})" not in text]
    assert not missing, f"figures shown on no docs page: {missing}"


def test_every_docs_page_is_in_the_navigation():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:") :]
    missing = [page.name for page in PAGES if f": docs/{page.name}\n" not in nav]
    assert not missing, f"docs pages missing from mkdocs.yml's nav: {missing}"


@pytest.fixture(scope="module")
def griffe_markdown():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("griffe_markdown", ROOT / "scripts" / "griffe_markdown.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_doctests_are_fenced_and_roles_become_code(griffe_markdown):
    text = "Train:\n>>> f(1)\n[(1.0, 'agrees')]\n\nSee :func:`linear_vae.training.train.train_sweep` and :mod:`~a.b`."
    assert griffe_markdown.to_markdown(text) == (
        "Train:\n\n```pycon\n>>> f(1)\n[(1.0, 'agrees')]\n```\n\nSee `linear_vae.training.train.train_sweep` and `a.b`."
    )
    fenced = "```pycon\n>>> f(1)\n```"
    assert griffe_markdown.to_markdown(fenced) == fenced
    indented = "    >>> g()\n    2"
    assert griffe_markdown.to_markdown(indented) == "    ```pycon\n    >>> g()\n    2\n    ```"
