"""Stragglers at the tail of a ``sync_parallel``: a second copy on an idle peer, first result wins.

When nothing is left to place and a peer has a free slot, a call that has run on another peer
for much longer than this batch's calls take (:data:`SLOWER_THAN` × their median, and at least
:data:`AT_LEAST` seconds) is also sent to the idle peer. Whichever copy answers first is the
result (stored once by the caller); the other copy is cancelled on its peer, and its reply, if it
still comes, is ignored. A slow or overloaded machine then delays a batch by about the time the
call takes elsewhere, not by its own slowness. Only calls whose large arguments the idle peer
already holds are copied, so a copy never waits for an upload. A call that asks for resources
(a GPU, memory) is never copied, each call at most once, and the node takes a copy only on an
idle worker with nothing queued, never while paused or started with ``--no-speculate``
(``status`` counts them: ``speculative``, ``speculative_won``).
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from statistics import median
from typing import Any

from ..defaults import STRAGGLER_AT_LEAST as AT_LEAST
from ..defaults import STRAGGLER_SLOWER_THAN as SLOWER_THAN

__all__ = ["Stragglers", "SLOWER_THAN", "AT_LEAST"]

_KEEP = 64  # durations kept per batch for the median
#: Seconds of work each worker of a peer is given at once when calls are short (see ``depth``).
QUEUED_WORK = 0.05
#: Most calls in flight per worker of a peer.
MAX_DEPTH = 64


class Stragglers:
    """Owned by the swarm dispatcher (its I/O loop): when calls were placed, how long a batch's
    calls take, and which calls run twice."""

    def __init__(self) -> None:
        self.placed_at: dict[int, float] = {}  # request id -> when it was sent
        self._mean = 1.0  # running mean of all calls' durations: assumed slow until seen
        #: Calls in flight per worker of a peer: one at a time while calls are long (or not yet
        #: seen), as many as make QUEUED_WORK seconds of work while they are short.
        self.depth = 1
        self._durations: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._twins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # batch -> {tid: peers}
        self._settled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # batch -> {tid}
        self._copied: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # batch -> {tid}

    def placed(self, rid: int) -> None:
        self.placed_at[rid] = time.monotonic()

    def observe(self, batch: Any, duration: Any) -> None:
        if isinstance(duration, (int, float)) and duration >= 0:
            self._durations.setdefault(batch, deque(maxlen=_KEEP)).append(float(duration))
            self._mean = 0.9 * self._mean + 0.1 * float(duration)
            self.depth = max(1, min(MAX_DEPTH, int(QUEUED_WORK / max(self._mean, 1e-6))))

    def candidate(self, peers: list, free: list, free_slots) -> tuple | None:
        """(batch, task, target peer) of the oldest straggler worth a copy, or None."""
        now = time.monotonic()
        oldest = None
        limits: dict = {}  # batch -> age beyond which its calls are stragglers (None: no data)
        for peer in peers:
            for rid, (batch, task) in peer.inflight.items():
                if batch not in limits:
                    seen = self._durations.get(batch)
                    limits[batch] = max(AT_LEAST, SLOWER_THAN * median(seen)) if seen else None
                limit = limits[batch]
                age = now - self.placed_at.get(rid, now)
                if (limit is None or age < limit or not batch.wanted(task) or task.needs
                        or task.tid in self._twins.get(batch, ())
                        or task.tid in self._copied.get(batch, ())):
                    continue
                targets = [p for p in free if p is not peer and free_slots(p) > 0
                           and all(r in p.values for r in task.refs)
                           and (not (task.needs or task.requires)
                                or (p.can_ever_run(task) and p.fits_now(task)))]
                if targets and (oldest is None or age > oldest[0]):
                    oldest = (age, batch, task, max(targets, key=free_slots), peer)
        if oldest is None:
            return None
        _, batch, task, target, source = oldest
        self._twins.setdefault(batch, {})[task.tid] = {source, target}
        self._copied.setdefault(batch, set()).add(task.tid)
        return batch, task, target

    def settle(self, peer: Any, batch: Any, task: Any) -> tuple[bool, list]:
        """A copy of ``task`` answered from ``peer``: (deliver it?, the other peers running it)."""
        if task.tid in self._settled.get(batch, ()):
            return False, []  # the other copy won
        twins = self._twins.get(batch, {}).pop(task.tid, None)
        if twins is None:
            return True, []
        self._settled.setdefault(batch, set()).add(task.tid)
        return True, [p for p in twins if p is not peer]

    def running_elsewhere(self, peer: Any, batch: Any, task: Any) -> bool:
        """Whether another copy of ``task`` still runs on a peer other than ``peer`` (which
        dropped its copy); if so, that copy is now the only one."""
        twins = self._twins.get(batch, {}).get(task.tid)
        if not twins:
            return False
        twins.discard(peer)
        if len(twins) == 1:
            del self._twins[batch][task.tid]
        return bool(twins)

    def forget(self, rid: int) -> None:
        self.placed_at.pop(rid, None)
