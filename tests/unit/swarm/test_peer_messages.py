"""What the swarm client says about a peer: one line per outage, not one per retry."""

from __future__ import annotations

import logging
import types

from pythagoras_p2p.swarm.connections import Connections
from pythagoras_p2p.swarm.peers import Peer


def _hello(connections: Connections, peer: Peer, op: str, **fields) -> None:
    connections._on_hello(peer, types.SimpleNamespace(op=op, fields=fields))


def test_a_peer_that_cannot_take_work_is_reported_once_per_outage(caplog):
    connections = Connections.__new__(Connections)  # only the hello bookkeeping is used
    connections.peers = {}
    connections._told = True  # the swarm is known: no peer is asked for the peers it knows
    peer = Peer("127.0.0.1", 7575)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # the client says hello again every few seconds
            _hello(connections, peer, "error", message="the node is stopping")
        _hello(connections, peer, "error", message="another Python")  # a new problem is news
        _hello(connections, peer, "ok", node="n1", workers=2)  # back
        _hello(connections, peer, "error", message="the node is stopping")  # a new outage
    lines = [r.getMessage() for r in caplog.records if "cannot take work" in r.getMessage()]
    assert len(lines) == 3, lines
    assert "stopping" in lines[0] and "another Python" in lines[1] and "stopping" in lines[2]
