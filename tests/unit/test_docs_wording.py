"""The docs and docstrings speak of the project only: no tracker's issue numbers, and examples
a reader can paste as they are."""

from __future__ import annotations

import re
from pathlib import Path

import pythagoras_p2p

REPO = Path(__file__).resolve().parents[2]
_TRACKER = re.compile(r"\bissue\s*#?\d+|\bthe issue\b|\bissue's\b|\bissues?\s+(?:asked|gives?)\b",
                      re.IGNORECASE)


def _texts():
    yield REPO / "README.md"
    yield from sorted((REPO / "docs").rglob("*.md"))
    for folder in ("pythagoras_p2p", "cli", "daemon", "benchmarks", "tests", "examples"):
        yield from sorted(p for p in (REPO / folder).rglob("*.py") if p != Path(__file__))


def test_no_doc_or_docstring_speaks_of_tracker_issues():
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for path in _texts() if path.exists()
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if _TRACKER.search(line)]
    assert not found, "\n".join(found)


def test_the_package_docstring_example_imports_the_package():
    assert "from pythagoras_p2p import *" in pythagoras_p2p.__doc__
    assert "from . import" not in pythagoras_p2p.__doc__


def test_the_team_guide_is_linked_and_the_readme_first_screen_still_fits():
    readme = (REPO / "README.md").read_text()
    assert "](docs/team.md)" in readme
    guide = (REPO / "docs" / "team.md").read_text()
    for command in ("join TOKEN", "start --detach", "status", "doctor", "stop", "cache gc",
                    "invite", "remove HOSTNAME"):
        assert f"pythagoras-node {command}" in guide, command
    assert "run any code" in guide  # what a member can do, said plainly
    first_screen = readme.split("\n## ", 1)[0].splitlines()
    assert len(first_screen) <= 24 and max(map(len, first_screen)) <= 100
