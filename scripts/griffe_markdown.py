"""Griffe extension for the API reference (``docs/api.md``, mkdocstrings): the docstrings are written
for ``help()`` and doctest, in numpy style with reStructuredText touches; this makes the few constructs
that Markdown would mangle render as meant, without changing a docstring.

* A doctest run (lines from one starting ``>>>`` up to the next blank line) outside a fenced block
  becomes a fenced ``pycon`` block.  numpy style parses ``>>>`` only in an *Examples* section;
  elsewhere Markdown would run the lines together into one paragraph, and an output such as
  ``[(1.0, 0, 'agrees')]`` would be read as a cross-reference.
* A Sphinx role (``:func:`linear_vae.training.train.train_sweep```, ``:class:`...```, ``:mod:`...```, ...)
  becomes inline code.

``mkdocs.yml`` loads it under the python handler's ``extensions``; it needs nothing but griffe.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|obj|exc|const|ref|term):`~?([^`]+)`")


def fence_doctests(text: str) -> str:
    """``text`` with every doctest run outside a fence put in a ```` ```pycon ```` fence of its indent."""
    out, lines, i, fenced = [], text.split("\n"), 0, False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        run = []
        while i < len(lines) and lines[i].strip():
            run.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        if out and out[-1].strip():
            out.append("")  # a fence must not continue a paragraph
        out += [f"{indent}```pycon", *(f"{indent}{r}" for r in run), f"{indent}```"]
    return "\n".join(out)


def to_markdown(text: str) -> str:
    return ROLE.sub(r"`\1`", fence_doctests(text))


class DocstringMarkdown(griffe.Extension):
    """Rewrites each docstring (its text only; the source stays as it is) before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
