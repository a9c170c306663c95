"""Which queued tasks a worker pool sends next: leases taken, stored results answered, tasks set aside.

A part of :class:`~.pool.WorkerPool` (its base class). A pool given the leases of its home takes
each call's lease as it sends the task to a worker (one store read for a chunk of them); a task
whose result another process stored meanwhile is answered with a :class:`~.outcomes.Stored`
outcome, and one whose call another process is computing is set aside and looked at again after
1 ms, then twice as long each time up to 64 ms, while the other tasks run. See
:mod:`pythagoras_p2p.store.leases`.
"""

from __future__ import annotations

import heapq
import time
from typing import Any

from ..store.leases import FIRST_DELAY, MAX_DELAY
from .outcomes import Stored

__all__ = ["Feeding"]


class Feeding:
    """Choosing the next tasks to send, for :class:`~.pool.WorkerPool`."""

    # What it uses of the pool:
    _queue: Any  # deque of (batch, task) to send
    _aside: list  # heap of (due, n, delay, batch, task): leased by another process
    _order: Any  # a counter that breaks ties in the heap
    _leases: Any  # the home's leases, or None (a node's pool leases nothing)
    _ledger: Any  # the machine's resources, or None (nothing asks for any)
    _store: Any

    def _claim(self, entries: list, delay: float = FIRST_DELAY) -> list:
        """Those of ``entries`` (batch, task) to send now, each one's lease taken for its batch.

        A result stored meanwhile is delivered instead (:class:`~.outcomes.Stored`); an entry leased
        elsewhere is set aside for ``delay``. One read of the store for them all.
        """
        taken = self._leases.take_each([(task.call, batch) for batch, task in entries])
        stored = self._store.get_results([task.call for _, task in entries])
        send = []
        for (batch, task), mine in zip(entries, taken, strict=True):
            if task.call in stored:
                if mine:
                    self._leases.release([task.call], batch)
                batch.deliver(task.tid, Stored(stored[task.call]))
            elif mine:
                send.append((batch, task))
            else:
                entry = (time.monotonic() + delay, next(self._order), min(2 * delay, MAX_DELAY))
                heapq.heappush(self._aside, (*entry, batch, task))
        return send

    def _recheck_aside(self) -> None:
        """Tasks set aside whose time has come: queued first if their lease came free."""
        now = time.monotonic()
        while self._aside and self._aside[0][0] <= now:
            _, _, delay, batch, task = heapq.heappop(self._aside)
            if batch.wanted(task):
                self._queue.extendleft(self._claim([(batch, task)], delay))

    def _next_chunk(self, size: int) -> list:
        """Up to ``size`` queued tasks to send to one worker (cancelled ones dropped, leases
        taken); tasks answered from the store or set aside do not leave the worker idle."""
        queue = self._queue
        entries: list = []
        while queue and not entries:
            while queue and len(entries) < size:
                entry = queue.popleft()
                if not entry[0].wanted(entry[1]):
                    continue
                if entry[1].needs and self._ledger is not None:
                    self._set_aside_needy(*entry)  # sent alone when its resources are free
                    continue
                entries.append(entry)
            if entries and self._leases is not None:
                entries = self._claim(entries)
        return entries

    def _take_back_aside(self) -> None:
        """Queue the tasks set aside again (to fail them with the others)."""
        self._queue.extend((entry[3], entry[4]) for entry in self._aside)
        self._aside.clear()
        self._queue.extend(self._needy)
        self._needy.clear()
