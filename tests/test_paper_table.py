"""The "paper, side by side" table of docs/paper.md (``scripts/paper_table.py``): up to date with the
committed ``figures/*.json``, its numbers read from those files, written only between its markers."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def paper_table():
    spec = importlib.util.spec_from_file_location("paper_table", ROOT / "scripts" / "paper_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_paper_page_table_is_up_to_date(paper_table, capsys):
    status = paper_table.main(["--check"])
    assert status == 0, capsys.readouterr().err + " (run python scripts/paper_table.py and commit docs/paper.md)"


def test_every_experiment_without_a_json_reads_not_yet_run(paper_table, tmp_path):
    section = paper_table.build_section(tmp_path)  # an empty figures directory
    for name in paper_table.all_names():
        assert f"`{name}`: not yet run" in section or f"| `{name}` | " in section
    assert section.count("not yet run") == len(paper_table.all_names())
    assert "CelebA remains undone" in section


def test_the_here_column_is_read_from_the_json(paper_table, tmp_path):
    """Change a number in a copy of a committed JSON: the table must change with it."""
    source = ROOT / "figures" / "identifiability.json"
    if not source.is_file():
        pytest.skip("figures/identifiability.json is not committed")
    payload = json.loads(source.read_text())
    payload["results"]["models"]["ppca"]["off_diagonal_ratio"][0] = 0.777  # a value no run produces
    (tmp_path / "identifiability.json").write_text(json.dumps(payload))
    assert "0.78" in paper_table.build_section(tmp_path)
    shutil.copy(source, tmp_path / "identifiability.json")
    assert "–0.78" not in paper_table.build_section(tmp_path)


def test_quick_budget_json_is_refused(paper_table, tmp_path):
    payload = json.loads((ROOT / "figures" / "identifiability.json").read_text())
    payload["quick"] = True
    (tmp_path / "identifiability.json").write_text(json.dumps(payload))
    with pytest.raises(SystemExit, match="quick-budget"):
        paper_table.build_section(tmp_path)


def test_write_touches_only_the_text_between_the_markers(paper_table, tmp_path):
    page = tmp_path / "paper.md"
    before, after = "# Title\n\nintro\n", "\n## Next\n\ntail\n"
    page.write_text(f"{before}{paper_table.START}\nstale table\n{paper_table.END}{after}")
    figures = tmp_path / "figures"
    figures.mkdir()
    assert paper_table.main(["--page", str(page), "--figures", str(figures), "--check"]) == 1
    assert paper_table.main(["--page", str(page), "--figures", str(figures)]) == 0
    text = page.read_text()
    assert text.startswith(before + paper_table.START) and text.endswith(paper_table.END + after)
    assert "stale table" not in text and "### The paper, side by side" in text
    assert paper_table.main(["--page", str(page), "--figures", str(figures), "--check"]) == 0
    assert list(tmp_path.glob("*.tmp")) == []  # the atomic write left no temporary file


def test_missing_markers_are_reported(paper_table, tmp_path):
    page = tmp_path / "paper.md"
    page.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        paper_table.main(["--page", str(page), "--figures", str(tmp_path)])
