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


def test_a_block_is_regenerated_from_its_template_and_a_typed_number_is_stale(sandbox):
    page = "before\n<!-- numbers\nsteps: {r.json:steps|,}\n-->\nsteps: 39,000\n<!-- /numbers -->\nafter\n"
    assert sandbox.stale_blocks(page) == ["steps: {r.json:steps|,}"]
    fresh = sandbox.regenerate(page)
    assert fresh == "before\n<!-- numbers\nsteps: {r.json:steps|,}\n-->\nsteps: 40,000\n<!-- /numbers -->\nafter\n"
    assert sandbox.stale_blocks(fresh) == []


def test_a_missing_key_names_the_file_and_the_key(sandbox):
    with pytest.raises(KeyError, match="r.json has no key 'a.nope'"):
        sandbox.render("{r.json:a.nope}")
