"""Socket helpers every ZeroMQ user of the package shares: endpoints, and draining a socket."""

from __future__ import annotations

from typing import Any

__all__ = ["endpoint", "waiting_messages"]


def endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def waiting_messages(sock: Any, *, limit: int = 256, copy: bool = True):
    """The messages waiting on ``sock`` now, up to ``limit``, never blocking.

    It asks the socket whether another message waits (``EVENTS``) rather than ending on a
    failed receive: a raised ``zmq.Again`` costs more than the rest of a small message's way
    through the loop. A caller that closes ``sock`` while it iterates must stop iterating.
    """
    import zmq

    for _ in range(limit):
        try:
            yield sock.recv_multipart(zmq.NOBLOCK, copy=copy)
        except zmq.Again:  # woken by a poll for nothing (rare): nothing waits after all
            return
        if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
