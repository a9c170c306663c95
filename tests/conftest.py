"""Shared fixtures: every test gets its own PYTHAGORAS_HOME, and clouds are closed after it.

Helpers live in ``helpers.py`` (import them from there: several folders have a conftest).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The nodes tests start share this machine with the tests' own clients and with each other:
# none of those is an owner to yield to, and their workers at nice 10 would wait behind every
# other process of a busy machine, stretching the timings tests measure (tests of yielding and
# of priority set these themselves).
os.environ.setdefault("PYTHAGORAS_YIELD_TO_OWNER", "0")
os.environ.setdefault("PYTHAGORAS_PRIORITY", "normal")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh PYTHAGORAS_HOME for this test (set in the environment too)."""
    path = tmp_path / "home"
    monkeypatch.setenv("PYTHAGORAS_HOME", str(path))
    return path


@pytest.fixture
def cloud(home):
    """A LocalCloud with two workers in this test's home."""
    from pythagoras_p2p import LocalCloud

    c = LocalCloud(home=home, workers=2)
    yield c
    c.close()
