"""Write the numbers in the README's and the docs' prose from the JSONs the commands wrote.

A generated block holds its template in an HTML comment (invisible on the rendered page) and the
text made from it below, up to the closing marker::

    <!-- numbers
    Newton's checks take {benchmarks/results.json:sweep_newton.trace.checks_share_of_training|%}
    of its training clock.
    -->
    Newton's checks take 56% of its training clock.
    <!-- /numbers -->

Each ``{...}`` names a JSON file (relative to the repository root) and a dotted key in it (list
items by index, ``*`` for every item, ``2-5`` for items 2, 3 and 4), or several of these and numbers joined by ``+ - * /``
(left to right: ``{A:x / B:y|.1f}``, ``{1 - A:x|%}``), or ``min``/``max`` of a list (``{max A:x}``), ``maxabs`` the largest absolute value in a list
(nested lists flattened: ``{maxabs A:x}``; lists combine item by item, so
``{maxabs A:x - A:y}`` is the largest difference of two lists), and a
format after ``|``: a Python format spec (``.2f``, ``,.0f``, ``.1e``), or ``%`` (a fraction as a
whole percentage), ``us`` (seconds as whole microseconds, with thousands separators), ``~.1e`` (scientific with a short exponent, ``3e5``, ``1.2e-6``), ``G``
(per second as billions, one decimal) or ``len`` (the length of a list).  Nothing between the markers is typed by hand: it is
regenerated from the template.

A *report* block is a whole passage written by the experiment that made a JSON: its module's
``report(payload)`` (for example :func:`linear_vae.experiments.deep_vae.report`, which states a
direction only where two 95% intervals separate)::

    <!-- report figures/deep_vae.json -->
    ...
    <!-- /report -->

(Not ``numbers.py``: run as a script, that name would shadow the standard library's ``numbers``
module, which numpy imports.)

Usage::

    python scripts/generated_numbers.py            # rewrite every block of README.md and docs/*.md
    python scripts/generated_numbers.py --check    # exit 1 naming each stale block

Pages are rewritten atomically, with the usual permissions (:func:`linear_vae.core.io.atomic_write_bytes`).
"""

from __future__ import annotations

import argparse
import json
import operator
import re
import sys
from functools import lru_cache
from pathlib import Path

from linear_vae.core.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- numbers\n(?P<template>.*?)\n-->\n)(?P<text>.*?)(<!-- /numbers -->)", re.S)
FIELD = re.compile(r"\{(?P<expr>[^{}|]+)(?:\|(?P<spec>[^{}]+))?\}")
REPORT = re.compile(r"(<!-- report (?P<path>[\w./-]+\.json) -->\n)(?P<text>.*?)(<!-- /report -->)", re.S)
VALUE = re.compile(r"\s*(?P<path>[\w./-]+\.json):(?P<key>[\w.*\-]+)\s*")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@lru_cache(maxsize=None)
def load(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def lookup(path: str, key: str):
    """The value at dotted ``key`` of the JSON at ``path`` (a ``KeyError`` naming both if absent).

    Keys are matched greedily, so a key that itself contains dots (``1e-05``, ``0.01``) is found."""
    node, parts = load(path), key.split(".")
    every = [i for i, part in enumerate(parts) if part == "*" or re.fullmatch(r"\d*-\d*", part)]
    if every:  # every item of a list, items.*.field, or of a slice of it, items.0-3.field (items 0, 1, 2)
        star = every[0]
        items = lookup(path, ".".join(parts[:star]))
        if parts[star] != "*":
            start, stop = (int(n) if n else None for n in parts[star].split("-"))
            items = items[start:stop]
        rest = ".".join(parts[star + 1 :])
        return [_field(item, rest, path, key) for item in items]
    while parts:
        for n in range(len(parts), 0, -1):
            name = ".".join(parts[:n])
            if isinstance(node, dict) and name in node:
                node, parts = node[name], parts[n:]
                break
            if isinstance(node, list) and name.isdigit() and int(name) < len(node):
                node, parts = node[int(name)], parts[n:]
                break
        else:
            raise KeyError(f"{path} has no key {key!r}")
    return node


def _field(item, rest: str, path: str, key: str):
    for name in rest.split(".") if rest else []:
        if not isinstance(item, dict) or name not in item:
            raise KeyError(f"{path} has no key {key!r}")
        item = item[name]
    return item


def evaluate(expr: str) -> float:
    """Operands (``file.json:key``, or a number) joined by `` + ``, `` - ``, `` * ``, `` / ``, taken
    left to right; ``min A`` / ``max A`` of a list."""
    expr = expr.strip()
    for name, function in (("min ", min), ("max ", max), ("maxabs ", lambda v: max(map(abs, _flat(v))))):
        if expr.startswith(name):
            return function(evaluate(expr[len(name) :]))
    tokens = re.split(r" ([-+*/]) ", expr)
    value = operand(tokens[0])
    for op, token in zip(tokens[1::2], tokens[2::2]):
        right = operand(token)
        value = _apply(op, value, right)
    return value


def _apply(op: str, left, right):
    """``left op right``, item by item where either is a list (nested lists of the same shape)."""
    if isinstance(left, list) or isinstance(right, list):
        lefts = left if isinstance(left, list) else [left] * len(right)
        rights = right if isinstance(right, list) else [right] * len(left)
        return [_apply(op, a, b) for a, b in zip(lefts, rights, strict=True)]
    return {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](left, right)


def _flat(value) -> list:
    return [x for item in value for x in _flat(item)] if isinstance(value, list) else [value]


def operand(token: str):
    match = VALUE.fullmatch(token)
    if match:
        return lookup(match["path"], match["key"])
    try:
        return float(token)
    except ValueError:
        raise ValueError(f"cannot read {token!r}: write file.json:dotted.key or a number") from None


def formatted(value, spec: str | None) -> str:
    if spec == "%":
        return f"{100 * value:.0f}%"
    if spec == "us":
        return f"{value * 1e6:,.0f}"
    if spec == "len":
        return str(len(value))
    if spec and spec.startswith("~"):  # scientific with a short exponent: 3e5, 1.2e-6
        mantissa, exponent = format(value, spec[1:]).split("e")
        return f"{mantissa}e{int(exponent)}"
    if spec == "G":
        return f"{value / 1e9:.1f}"
    return format(value, spec or "")


def render(template: str) -> str:
    """The text a template gives, ending in a newline (the closing marker has a line of its own)."""
    return FIELD.sub(lambda m: formatted(evaluate(m["expr"]), m["spec"]), template) + "\n"


def report(path: str) -> str:
    """The passage the experiment module that wrote ``path`` makes of it (``report(payload)``)."""
    import importlib

    payload = load(path)
    module = importlib.import_module(f"linear_vae.experiments.{payload['name']}")
    return module.report(payload)


def regenerate(text: str) -> str:
    """``text`` with every block's generated part made again from its template or its JSON."""
    text = BLOCK.sub(lambda m: m.group(1) + render(m["template"]) + m.group(4), text)
    return REPORT.sub(lambda m: m.group(1) + report(m["path"]) + m.group(4), text)


def stale_blocks(text: str) -> list[str]:
    """The first line of each block whose text is not what its template or its JSON gives."""
    stale = [m["template"].splitlines()[0] for m in BLOCK.finditer(text) if m["text"] != render(m["template"])]
    return stale + [f"report {m['path']}" for m in REPORT.finditer(text) if m["text"] != report(m["path"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any block is stale; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        text = page.read_text()
        if args.check:
            stale += [f"{page.relative_to(ROOT)}: {first}" for first in stale_blocks(text)]
        elif regenerate(text) != text:
            atomic_write_bytes(page, regenerate(text).encode())
            print(f"rewrote {page.relative_to(ROOT)}")
    if stale:
        print(
            "stale generated numbers (run python scripts/generated_numbers.py):\n  " + "\n  ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
