"""What a node sends on its ROUTER socket: answers now, and call results gathered per turn.

Every part of the node that answers a request holds the one :class:`Outbox` (never the socket,
never the node). A node's tests replace :meth:`Outbox.send` on the instance to see what it sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pythagoras_p2p.net import wire

__all__ = ["Outbox", "Socket"]


class Socket(Protocol):
    """The node's ROUTER socket, as the outbox uses it."""

    def send_multipart(self, msg_parts: Sequence[Any], flags: int = ..., copy: bool = ...) -> object: ...


class Outbox:
    """``send`` and ``error`` go now; ``reply`` (a call's result) goes at :meth:`flush`, at
    the end of the node loop's turn, with the other results of that turn to the same client."""

    def __init__(self, socket: Socket):
        self._socket = socket
        self._replies: dict[bytes, list[list]] = {}  # results to send at the end of this turn

    def send(self, ident: bytes, frames: list) -> None:
        self._socket.send_multipart([ident, *frames], copy=False)

    def error(self, ident: bytes, request_id: int, code: str, message: str) -> None:
        self.send(ident, wire.build("error", request_id, code=code, message=message))

    def reply(self, ident: bytes, frames: list) -> None:
        """Send a call's result with the others of this turn of the node's loop (:meth:`flush`)."""
        self._replies.setdefault(ident, []).append(frames)

    def flush(self) -> None:
        """Send the results of this turn: to each client, as few ``many`` messages as hold them
        (a client running many short calls gets one message per turn, not one per call)."""
        if self._replies:
            replies, self._replies = self._replies, {}
            for ident, queued in replies.items():
                for frames in wire.bundle(queued):
                    self.send(ident, frames)
