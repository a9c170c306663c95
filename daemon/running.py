"""The calls a node runs for its clients: identical calls in flight share one run.

A call asked for while the same call runs here waits for that run: every waiter gets its
printed output and its result. A waiter that cancels stops waiting; the run itself is cancelled
once nobody waits for it. The large arguments a running call reads (its ``refs``) are kept until
it ends, even if their sender releases them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pythagoras_p2p.defaults import NODE_OUTPUT_PIECE as _OUTPUT_PIECE
from pythagoras_p2p.net import wire

__all__ = ["Running", "RunningCalls"]


@dataclass
class Running:
    """One call running here: the worker pool's batch and who waits for its result."""

    batch: Any
    waiters: list = field(default_factory=list)  # (routing id, request id)
    refs: tuple = ()  # addresses of the large arguments it reads
    keep: bool = True  # False: a call not memoized (its result is answered, never stored)
    copied: bool = False  # every waiter keeps a copy on another machine (see replication)
    label: str = ""  # the call, for people: ``f(x=1)``


class RunningCalls:
    """The calls running here, by call address, and their waiters.

    ``send(ident, frames)`` sends one message to a client (the handlers' ``send``);
    ``reply(ident, frames)`` sends a call's result with the others of this turn (``reply``).
    """

    def __init__(self, send: Callable[[bytes, list], None], reply: Callable[[bytes, list], None]):
        self._send = send
        self._reply = reply
        self._calls: dict[bytes, Running] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def join(self, call: bytes, ident: bytes, request_id: int, copied: bool = False) -> bool:
        """Whether ``call`` runs here already; if so, the request waits for that run."""
        running = self._calls.get(call)
        if running is None:
            return False
        running.waiters.append((ident, request_id))
        running.copied = running.copied and copied
        return True

    def add(self, call: bytes, batch: Any, ident: bytes, request_id: int, refs: tuple,
            keep: bool = True, copied: bool = False, label: str = "") -> None:
        """``call`` was handed to the worker pool as ``batch``, for one waiter."""
        self._calls[call] = Running(batch, [(ident, request_id)], refs, keep, copied, label)

    def pop(self, call: bytes) -> Running | None:
        """The ended ``call`` (None if nobody waits for it any more); it runs no longer."""
        return self._calls.pop(call, None)

    def refs_in_use(self) -> set[bytes]:
        """The large arguments the running calls read."""
        return {ref for running in self._calls.values() for ref in running.refs}

    def answer(self, call: bytes, running: Running, bodies: list, fields: dict) -> None:
        """Send every waiter of an ended call its ``result``."""
        for ident, request_id in running.waiters:
            self._reply(ident, wire.build("result", request_id, bodies, call=call, **fields))

    def forward_output(self, call: bytes, where: str, text: str) -> None:
        """What a running call printed, to each of its waiters, in pieces a header has room for."""
        running = self._calls.get(call)
        if running is None:
            return
        for start in range(0, len(text), _OUTPUT_PIECE):
            piece = text[start: start + _OUTPUT_PIECE]
            for ident, request_id in running.waiters:
                self._send(ident, wire.build("output", request_id, call=call, where=where, text=piece))

    def cancel(self, calls: list[bytes], ident: bytes) -> None:
        """Client ``ident`` waits no more for ``calls``; those nobody waits for are cancelled."""
        for call in calls:
            running = self._calls.get(call)
            if running is None:
                continue
            running.waiters = [w for w in running.waiters if w[0] != ident]
            if not running.waiters:
                running.batch.cancel()
                del self._calls[call]

    def hand_back(self, calls: list[bytes], code: str, message: str) -> int:
        """Stop ``calls`` here and tell each waiter ``code`` (it places the call elsewhere);
        nothing of them is kept. How many there were."""
        handed = 0
        for call in calls:
            running = self._calls.pop(call, None)
            if running is None:
                continue
            for ident, request_id in running.waiters:
                self._send(ident, wire.build("error", request_id, code=code, message=message))
            running.batch.cancel()
            handed += 1
        return handed

    def forsake(self, gone: Callable[[bytes], bool], message: str) -> int:
        """Cancel the calls whose every waiter is ``gone(ident)``; each is told ``stale`` (a
        waiter that is in fact still there runs the call elsewhere). How many were dropped."""
        dropped = 0
        for call, running in list(self._calls.items()):
            if running.waiters and all(gone(ident) for ident, _ in running.waiters):
                for ident, request_id in running.waiters:
                    self._send(ident, wire.build("error", request_id, code=wire.ERR_STALE,
                                                 message=message))
                running.batch.cancel()
                del self._calls[call]
                dropped += 1
        return dropped

    def abandon(self, node_id: str) -> None:
        """The node stops: every waiter is told, every run cancelled."""
        for call, running in list(self._calls.items()):
            for ident, request_id in running.waiters:
                self._send(ident, wire.build(
                    "error", request_id, code=wire.ERR_STOPPING,
                    message=f"node {node_id} shut down before {call.hex()[:16]} finished"))
            running.batch.cancel()
        self._calls.clear()
