"""Fixtures for swarm tests: a LAN of network-namespace hosts, each running a real node.

Helpers live in ``netns.py`` and ``clients.py`` (a test module cannot import from a conftest:
several folders have one).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from netns import Lan, start_lan  # noqa: E402


@pytest.fixture
def lan_factory(tmp_path):
    """``lan_factory(n)`` → a started Lan of n hosts sharing one swarm key; torn down after."""
    made: list[Lan] = []

    def make(count: int, *, workers: int = 2, start: bool = True,
             node_env: dict[int, dict] | None = None) -> Lan:
        lan = start_lan(tmp_path / f"lan{len(made)}", count, workers=workers, start=start,
                        node_env=node_env)
        made.append(lan)
        return lan

    yield make
    for lan in made:
        lan.close()
