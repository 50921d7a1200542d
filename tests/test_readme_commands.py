"""Every ``linear-vae`` command shown in a fenced ``console`` or ``bash`` block of the README and
of ``docs/*.md`` is a valid command line (default suite: parsed, which catches a renamed or
ambiguous option in milliseconds) and runs to exit status 0 (``slow``: each trains).

The set-up block under ``<!-- setup-commands -->`` is left out: CI runs it already.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from linear_vae.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every ``$ linear-vae ...`` line in a console or bash block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        text = re.sub(r"<!-- setup-commands -->\s*```[a-z]*\n.*?```", "", text, flags=re.S)
        for block in re.findall(r"```(?:console|bash)\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                if line.startswith("$ linear-vae "):
                    found.append((f"{page.name}: {line}", shlex.split(line[2:])[1:]))
    return found


COMMANDS = shown_commands()


def test_the_pages_show_commands():
    assert len(COMMANDS) >= 2, "the README's examples were not found: has the block format changed?"


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_a_shown_command_parses(where, argv):
    build_parser().parse_args(argv)  # raises UsageError (one line) on an unknown or ambiguous option


@pytest.mark.slow
@pytest.mark.parametrize("where,argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_a_shown_command_runs(where, argv, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "linear_vae.cli", *argv], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{where}: exit {result.returncode}: {result.stderr[-2000:]}"


def test_an_abbreviated_option_is_refused():
    from linear_vae.cli import UsageError

    with pytest.raises(UsageError, match="unrecognized arguments: --sig"):
        build_parser().parse_args(["sweep", "--latent-dim", "2", "--sig", "0.1"])
