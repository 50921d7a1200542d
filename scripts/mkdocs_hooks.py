"""mkdocs hook: the site is built from the repository's files at their own paths, so that every relative
link means the same on GitHub and in the built site, and ``mkdocs build --strict`` checks it.

mkdocs reads its pages from ``docs_dir`` (``docs/``) and refuses the repository root as ``docs_dir``.
But the README, the front page, links ``docs/*.md`` and ``figures/*.png``, and the pages under
``docs/`` link ``../figures/*.png`` and ``../README.md``: paths from where each file lies in the
repository, as GitHub resolves them.  This hook replaces the files mkdocs found in ``docs/`` by the
same files named by their paths from the repository root, plus the README (which mkdocs serves as
the home page, ``index.html``), the figures and the few other files the pages link (:data:`EXTRA`).
mkdocs then resolves every link as GitHub does and, with ``--strict``, fails on one that points
nowhere.  The pages' addresses in the site follow: ``/`` (the README), ``/docs/theory/``,
``/figures/collapse_threshold.png``.

mkdocs checks Markdown links and images but not raw HTML, so :func:`on_page_markdown` checks the
``<img src="...">`` of the README's figure gallery (HTML there, for the width) the same way.

``mkdocs.yml`` names this file under ``hooks:``; it needs nothing but mkdocs.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.site")  # under "mkdocs": a warning fails --strict
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"")

ROOT = Path(__file__).resolve().parent.parent

#: Files outside ``docs/`` and ``figures/`` that the pages link, served as they are (``.md`` as pages).
EXTRA = ("benchmarks/results.md", "notebooks/tour.ipynb")


def site_sources() -> list[str]:
    """Every file of the site, as a path from the repository root."""
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    figures = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "figures").glob("*.png"))
    return ["README.md", *pages, *figures, *EXTRA]


def on_files(files, config):
    docs_dir = Path(config["docs_dir"]).resolve()
    for file in list(files):
        if file.abs_src_path and docs_dir in Path(file.abs_src_path).resolve().parents:
            files.remove(file)  # the theme's own files stay
    for path in site_sources():
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    """Warn (an error with ``--strict``) on an ``<img src>`` that names no file of the site."""
    for src in IMG_SRC.findall(markdown):
        if "://" in src or src.startswith("/"):
            continue
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), src))
        if files.get_file_from_path(target) is None:
            log.warning(
                "Doc file '%s' shows an image '%s', but '%s' is not a file of the site", page.file.src_uri, src, target
            )
    return markdown
