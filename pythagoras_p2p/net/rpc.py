"""One request to one node, answered or timed out: for the CLI, start-up checks and tests.

The swarm client keeps long-lived connections of its own; this is the simple synchronous path.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import NodeUnreachable, SecurityError
from . import wire
from .security import SwarmKey, curve_client

__all__ = ["NodeUnreachable", "client_socket", "request"]


def client_socket(context: Any, key: SwarmKey, server_key: bytes | None = None) -> Any:
    """A member's DEALER: CURVE with this machine's keys to the node serving with ``server_key``
    (default: this machine's own node), the message cap, IPv4 and IPv6 peers."""
    import zmq

    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.ipv6 = True  # a ``[::1]:7575`` peer connects; IPv4 addresses still do
    sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE + 64 * 1024)
    curve_client(sock, key, server_key)
    return sock


def request(address: str, key: SwarmKey, op: str, *, timeout: float = 5.0, bodies: list | tuple = (),
            server_key: bytes | None = None, **fields) -> wire.Message:
    """Send one request to the node at ``address`` (a ``tcp://`` endpoint) and return its reply.

    ``server_key``: the node's CURVE public key, when known; else it is found from the member
    list (see :meth:`~pythagoras_p2p.net.security.Credentials.server_key`).

    Raises :class:`NodeUnreachable` after ``timeout`` seconds without an answer, and
    :class:`wire.WireError` when the node answers with an error.
    """
    import zmq

    if server_key is None:
        host, _, port = address.removeprefix("tcp://").rpartition(":")
        server_key = key.server_key(host.strip("[]"), int(port))
    sock = client_socket(zmq.Context.instance(), key, server_key)
    try:
        sock.connect(address)
        sock.send_multipart(wire.build(op, 1, list(bodies), **fields))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000)):
                raise NodeUnreachable(
                    f"no answer from the node at {address} within {timeout:g} s: is "
                    f"`pythagoras-node start` running there, reachable from here, and is this "
                    f"machine a member of its swarm (`pythagoras-node members`)?"
                )
            reply = wire.parse(sock.recv_multipart())
            if reply.id != 1:
                continue
            if reply.op == "error" and reply.fields["code"] == wire.ERR_REMOVED:
                raise SecurityError(reply.fields["message"])
            if reply.op == "error":
                raise wire.WireError(reply.fields["message"], reply.fields["code"])
            return reply
    finally:
        sock.close(0)
