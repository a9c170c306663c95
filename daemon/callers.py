"""What a node knows of each connection to it: when it was last heard, and whether its sender gave
the node up (*stale*) or runs another Python (*incompatible*).

A connection silent for longer than clients wait (this node was stopped, or the link cut) is
stale: its sender has placed its calls elsewhere, so the calls that arrive on it late are refused,
not run a second time. Each table is bounded: peers choose their routing ids.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from pythagoras_p2p.defaults import NODE_LOG_ONCE as _MOST
from pythagoras_p2p.defaults import PING_EVERY, SILENT_AFTER

__all__ = ["Callers", "STALE_AFTER"]

#: Seconds of silence on a connection after which its client has given this node up, or is
#: about to: clients ping every PING_EVERY and give a node up after SILENT_AFTER without an
#: answer, counted from its last answer, which may precede this node's last read by a ping.
STALE_AFTER = max(PING_EVERY, SILENT_AFTER - 2 * PING_EVERY)


class Callers:
    """The connections heard (by routing id), the stale ones and those of another Python."""

    def __init__(self) -> None:
        self.heard: OrderedDict[bytes, float] = OrderedDict()  # routing id → last heard
        self.stale: set[bytes] = set()
        self.incompatible: OrderedDict[bytes, str] = OrderedDict()  # routing id → its Python

    def heard_from(self, ident: bytes) -> None:
        """A message arrived on ``ident`` (before it is read)."""
        now = time.monotonic()
        heard = self.heard.get(ident)
        if heard is not None and now - heard > STALE_AFTER:
            self.stale.add(ident)  # its sender gave this node up (and reconnects if it lives)
            if len(self.stale) > _MOST:
                self.stale.pop()
        self.heard[ident] = now
        if len(self.heard) > _MOST:
            self.heard.popitem(last=False)
        else:
            self.heard.move_to_end(ident)

    def speaks(self, ident: bytes, python: str) -> None:
        """``ident`` said it runs Python ``python``, not this node's: its calls are refused."""
        self.incompatible[ident] = python
        if len(self.incompatible) > _MOST:
            self.incompatible.popitem(last=False)

    def gone(self, ident: bytes, now: float) -> bool:
        """Whether the sender on ``ident`` has given this node up (as of ``now``, monotonic)."""
        return ident in self.stale or now - self.heard.get(ident, now) > STALE_AFTER
