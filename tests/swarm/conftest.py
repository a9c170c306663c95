"""Fixtures for swarm tests: a LAN of network-namespace hosts, each running a real node."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import wait_for  # noqa: E402
from netns import Lan, namespaces_available  # noqa: E402

_REASON = namespaces_available()


@pytest.fixture
def lan_factory(tmp_path):
    """``lan_factory(n)`` → a started Lan of n hosts sharing one swarm key; torn down after."""
    if _REASON is not None:
        pytest.skip(f"swarm tests need network namespaces: {_REASON}")
    from pythagoras_p2p.security import create_key

    made = []

    def make(count: int, *, workers: int = 2, start: bool = True) -> Lan:
        lan = Lan(count, tmp_path / f"lan{len(made)}").__enter__()
        made.append(lan)
        create_key(lan.hosts[0].home, name="swarm-test")
        for host in lan.hosts[1:]:
            shutil.copy(lan.hosts[0].home / "swarm.key", host.home / "swarm.key")
        if start:
            for host in lan.hosts:
                host.start_node(workers=workers)
            wait_for(lambda: all(h.node_info() for h in lan.hosts), 30, message="every node to serve")
        return lan

    yield make
    for lan in made:
        lan.close()
