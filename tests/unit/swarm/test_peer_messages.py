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


class _KeyLearnedLater:
    """Credentials that know no server key for the address until a background probe learns it."""

    def __init__(self):
        import zmq

        self.public, self.secret = zmq.curve_keypair()
        self.server, _ = zmq.curve_keypair()
        self.learned = False
        self.asked = 0

    def server_key(self, host, port, node_id=None, context=None, wait=True):
        self.asked += 1
        return self.server if self.learned else None

    def knows(self, host, port):
        return self.learned


def test_a_peer_whose_key_was_being_probed_is_connected_once_learned_not_at_the_next_retry():
    import socket

    import zmq

    with socket.socket() as s:  # a port nothing listens on: the connection only has to be made
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = zmq.Context()
    key = _KeyLearnedLater()
    peer = Peer("127.0.0.1", port)
    lost: list[str] = []

    def on_lost(p, why):
        p.state, p.problem = "dead", why
        lost.append(why)

    connections = Connections(context, key, {("127.0.0.1", port): peer}, [], lost=on_lost)
    try:
        connections.tend()
        assert peer.state == "dead" and "no member node of the swarm answers" in lost[0]
        connections.tend()  # the key still unknown: no new attempt before RETRY_EVERY
        assert key.asked == 1 and peer.state == "dead"
        key.learned = True  # the probe in the background found the key the node serves with
        connections.tend()
        assert key.asked == 2 and peer.state == "connecting" and not peer.keyless
    finally:
        connections.close()
        context.destroy(0)
