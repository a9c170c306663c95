"""One request to one node, answered or timed out: for the CLI, start-up checks and tests.

The swarm client keeps long-lived connections of its own; this is the simple synchronous path.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import NodeUnreachable
from . import wire
from .security import SwarmKey, curve_client

__all__ = ["NodeUnreachable", "client_socket", "request"]


def client_socket(context: Any, key: SwarmKey) -> Any:
    """A member's DEALER: CURVE with the swarm key, the message cap, IPv4 and IPv6 peers."""
    import zmq

    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.ipv6 = True  # a ``[::1]:7575`` peer connects; IPv4 addresses still do
    sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE + 64 * 1024)
    curve_client(sock, key)
    return sock


def request(address: str, key: SwarmKey, op: str, *, timeout: float = 5.0, bodies: list | tuple = (),
            **fields) -> wire.Message:
    """Send one request to the node at ``address`` (a ``tcp://`` endpoint) and return its reply.

    Raises :class:`NodeUnreachable` after ``timeout`` seconds without an answer, and
    :class:`wire.WireError` when the node answers with an error.
    """
    import zmq

    sock = client_socket(zmq.Context.instance(), key)
    try:
        sock.connect(address)
        sock.send_multipart(wire.build(op, 1, list(bodies), **fields))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000)):
                raise NodeUnreachable(
                    f"no answer from the node at {address} within {timeout:g} s: is "
                    f"`pythagoras-node start` running there, reachable from here, and does this "
                    f"machine hold the same swarm key?"
                )
            reply = wire.parse(sock.recv_multipart())
            if reply.id != 1:
                continue
            if reply.op == "error":
                raise wire.WireError(reply.fields["message"], reply.fields["code"])
            return reply
    finally:
        sock.close(0)
