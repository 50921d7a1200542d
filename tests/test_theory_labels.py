"""The labels of docs/theory.md and their citations agree, both ways (pure text, no imports of the package).

* Every label that docs/theory.md defines (in a ``## (Tn)`` or ``### (Tn.m)`` heading) is cited by at least one
  docstring, string or comment of a module in ``linear_vae/``.
* Every label cited in ``linear_vae/``, ``tests/``, ``experiments/``, ``benchmarks/``, ``scripts/``,
  ``notebooks/``, ``docs/`` or README.md is defined, and every citation follows the grammar stated at
  the top of docs/theory.md: the path, one space, then one pair of parentheses holding labels separated
  by ``", "``.  Cross-references inside docs/theory.md must name defined labels too.
* The headings are numbered in order, each sub-label under its own section, the summary table lists
  exactly the defined labels, and every label without sub-labels states its source.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"
CITING_DIRS = ("linear_vae", "tests", "experiments", "benchmarks", "scripts", "notebooks", "docs")
CITING_FILES = ("README.md",)
SUFFIXES = {".py", ".md", ".ipynb", ".txt"}

LABEL = r"T\d+(?:\.\d+)?"
HEADING = re.compile(rf"^(#{{2,3}}) \(({LABEL})\) \S", re.MULTILINE)
# The path, whitespace (a docstring may wrap there), then the parenthesised label list.
CITATION = re.compile(r"docs/theory\.md\s+\(([^)]*)\)")
LABEL_LIST = re.compile(rf"^{LABEL}(?:, {LABEL})*$")
CROSS_REFERENCE = re.compile(r"(?<![A-Za-z0-9_&])(T\d+(?:\.\d+)?)(?![0-9])")


def _defined() -> list[tuple[str, str]]:
    """``(heading level, label)`` for every labelled heading of docs/theory.md, in order."""
    return [(m.group(1), m.group(2)) for m in HEADING.finditer(THEORY.read_text())]


def _labels_in(text: str, where: str) -> set[str]:
    """Labels cited in ``text``; a citation that breaks the grammar is an error."""
    labels = set()
    for m in CITATION.finditer(text):
        inside = " ".join(m.group(1).split())  # a wrapped docstring line may break inside the list
        assert LABEL_LIST.match(inside), (
            f"{where}: malformed citation {m.group(0)!r} (see the grammar in docs/theory.md)"
        )
        labels.update(inside.split(", "))
    return labels


def _python_docs(path: Path) -> str:
    """The strings and comments of a Python file: where its docstrings and comments live."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return "\n".join(t.string for t in tokens if t.type in (tokenize.STRING, tokenize.COMMENT))


def _citing_files() -> list[Path]:
    files = [ROOT / name for name in CITING_FILES if (ROOT / name).exists()]
    for directory in CITING_DIRS:
        files += [
            p
            for p in sorted((ROOT / directory).rglob("*"))
            if p.suffix in SUFFIXES and p.is_file() and p != THEORY and ".ipynb_checkpoints" not in p.parts
        ]
    return files


def test_headings_are_numbered_in_order_with_sources():
    defined = _defined()
    labels = [label for _, label in defined]
    assert labels, "docs/theory.md defines no labels"
    assert len(labels) == len(set(labels)), f"duplicate labels: {labels}"
    # Sections are arranged in the reading order the page's contents list gives (their numbers stay
    # as first given, since code cites them); every section appears once, and within a section the
    # sub-labels run 1, 2, 3, ...
    reading = [int(n) for n in re.findall(r"\[\(T(\d+)\) ", THEORY.read_text().split("| Label |")[0])]
    sections = [int(label[1:]) for level, label in defined if level == "##"]
    assert sections == reading, "the sections must follow the reading order of the contents list"
    assert sorted(sections) == list(range(1, len(sections) + 1)), "section numbers must run 1..n"
    section, sub = 0, 0
    for level, label in defined:
        parts = [int(p) for p in label[1:].split(".")]
        if level == "##":
            assert len(parts) == 1, f"({label}) is a sub-label in a section heading"
            section, sub = parts[0], 0
        else:
            assert parts == [section, sub + 1], f"sub-label ({label}) out of order under (T{section})"
            sub += 1
    text = THEORY.read_text()
    starts = [m.start() for m in HEADING.finditer(text)] + [len(text)]
    for i, (_, label) in enumerate(defined):
        is_parent = i + 1 < len(defined) and defined[i + 1][1].startswith(label + ".")
        if not is_parent:
            assert "Source:" in text[starts[i] : starts[i + 1]], f"({label}) does not state its source"


def test_summary_table_lists_every_label():
    table = "\n".join(line for line in THEORY.read_text().splitlines() if line.startswith("|"))
    listed = set(re.findall(rf"\(({LABEL})\)", table))
    assert listed == {label for _, label in _defined()}


def test_every_label_is_cited_in_the_library():
    cited = set()
    for path in sorted((ROOT / "linear_vae").rglob("*.py")):
        cited |= _labels_in(_python_docs(path), str(path.relative_to(ROOT)))
    uncited = [label for _, label in _defined() if label not in cited]
    assert not uncited, f"labels of docs/theory.md cited by no docstring or comment in linear_vae/: {uncited}"


def test_every_citation_names_a_defined_label():
    defined = {label for _, label in _defined()}
    unknown = {}
    for path in _citing_files():
        where = str(path.relative_to(ROOT))
        missing = _labels_in(path.read_text(errors="replace"), where) - defined
        if missing:
            unknown[where] = sorted(missing)
    assert not unknown, f"citations of labels that docs/theory.md does not define: {unknown}"


def test_cross_references_inside_the_theory_exist():
    defined = {label for _, label in _defined()}
    referenced = set(CROSS_REFERENCE.findall(THEORY.read_text()))
    assert referenced <= defined, f"docs/theory.md refers to undefined labels: {sorted(referenced - defined)}"


def test_every_label_an_experiment_cites_is_implemented_in_the_library():
    """A result an experiment relies on lives in the library, where every user can call it: each label
    cited in ``linear_vae/experiments/`` is cited outside it too (a section, such as (T15), by itself
    or by one of its sub-labels)."""
    experiments = ROOT / "linear_vae" / "experiments"
    in_experiments, in_library = set(), set()
    for path in sorted((ROOT / "linear_vae").rglob("*.py")):
        labels = _labels_in(_python_docs(path), str(path.relative_to(ROOT)))
        (in_experiments if experiments in path.parents else in_library).update(labels)
    covered = in_library | {label.split(".")[0] for label in in_library}
    missing = sorted(in_experiments - covered)
    assert not missing, f"labels cited only by experiments, not by the library: {missing}"
