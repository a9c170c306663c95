"""Which queued tasks a worker pool sends next: leases taken, stored results answered, tasks set
aside, and tasks that ask for resources sent as they come free.

A part of :class:`~.pool.WorkerPool` (its base class). A pool given the leases of its home takes
each call's lease as it sends the task to a worker (one store read for a chunk of them); a task
whose result another process stored meanwhile is answered with a :class:`~.outcomes.Stored`
outcome, and one whose call another process is computing is set aside and looked at again after
1 ms, then twice as long each time up to 64 ms, while the other tasks run; one set aside for
longer than :func:`~pythagoras_p2p.stalls.check_every` takes the lease over if its holder is
stopped. See :mod:`pythagoras_p2p.store.leases`.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..defaults import POOL_BATCH_SECONDS as _BATCH_SECONDS
from ..defaults import POOL_FAST_TASK as _FAST_TASK
from ..defaults import POOL_MAX_CHUNK as _MAX_CHUNK
from ..defaults import POOL_SPIN as _SPIN
from ..defaults import POOL_SPIN_TASK as _SPIN_TASK
from ..stalls import check_every
from ..store.leases import FIRST_DELAY, MAX_DELAY
from .outcomes import RESOURCES, Refused, Stored

if TYPE_CHECKING:
    from .worker_process import WorkerProcess

__all__ = ["Feeding", "chunk_size"]


def chunk_size(mean: float, queued: int, workers: int) -> int:
    """How many fast tasks to send one worker in one message: as many as take about
    :data:`POOL_BATCH_SECONDS` at the running mean duration (as joblib's auto batching sizes its
    batches), at most :data:`POOL_MAX_CHUNK`, and no more than an even share of half the queue:
    the last tasks of a run are split among the workers, so none is left holding the tail."""
    by_time = int(_BATCH_SECONDS / mean) if mean > 0 else _MAX_CHUNK
    return max(1, min(_MAX_CHUNK, by_time, queued // (2 * workers)))


class Feeding:
    """Choosing the next tasks to send, for :class:`~.pool.WorkerPool`."""

    # What it uses of the pool:
    _queue: Any  # deque of (batch, task) to send
    _aside: list  # heap of (due, n, delay, batch, task, since): leased by another process
    _order: Any  # a counter that breaks ties in the heap
    _leases: Any  # the home's leases, or None (a node's pool leases nothing)
    _ledger: Any  # the machine's resources, or None (nothing asks for any)
    _needy: Any  # deque of (batch, task) asking for resources not free yet
    _held: dict  # seq -> [needs, gpus, tasks left] of the hold it runs under
    _workers: list
    _mean: float  # running mean task duration
    _seq: int
    _spin_until: float
    size: int
    label: str
    _store: Any
    _send: Callable[[WorkerProcess, tuple], None]  # a message to a worker's pipe

    def _claim(self, entries: list, delay: float = FIRST_DELAY, since: float | None = None) -> list:
        """Those of ``entries`` (batch, task) to send now, each one's lease taken for its batch.

        A result stored meanwhile is delivered instead (:class:`~.outcomes.Stored`); an entry leased
        elsewhere is set aside for ``delay``, or its lease taken over from a stopped holder if it
        has waited since ``since``. One read of the store for them all.
        """
        taken = self._leases.take_each([(task.call, batch) for batch, task in entries])
        stored = self._store.get_results([task.call for _, task in entries])
        now = time.monotonic()
        if since is None:
            since = now
        elif now - since >= check_every():
            taken = [mine or (task.call not in stored and self._leases.take_over(task.call, batch))
                     for (batch, task), mine in zip(entries, taken, strict=True)]
        send = []
        for (batch, task), mine in zip(entries, taken, strict=True):
            if task.call in stored:
                if mine:
                    self._leases.release([task.call], batch)
                batch.deliver(task.tid, Stored(stored[task.call]))
            elif mine:
                send.append((batch, task))
            else:
                entry = (now + delay, next(self._order), min(2 * delay, MAX_DELAY))
                heapq.heappush(self._aside, (*entry, batch, task, since))
        return send

    def _recheck_aside(self) -> None:
        """Tasks set aside whose time has come: queued first if their lease came free."""
        now = time.monotonic()
        while self._aside and self._aside[0][0] <= now:
            _, _, delay, batch, task, since = heapq.heappop(self._aside)
            if batch.wanted(task):
                self._queue.extendleft(self._claim([(batch, task)], delay, since))

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

    # ------------------------------------------------------------------ calls asking for resources

    def _feed_needy(self) -> None:
        """Send tasks that ask for resources to idle workers as their resources come free (in
        order, but one that does not fit yet does not hold back the others).

        A worker runs its tasks one after another, so while calls are fast it gets a chunk of
        tasks asking for the same resources under one hold, kept until the last of them ends.
        """
        idle = [w for w in self._workers if not w.inflight and w.usable]
        busy = len(self._workers) - len(idle)
        waiting: deque = deque()
        fast = self._mean < _FAST_TASK
        while self._needy and idle:
            batch, task = self._needy.popleft()
            if not batch.wanted(task):
                continue
            gpus = self._ledger.take(task.needs, busy)
            if gpus is None:
                waiting.append((batch, task))
                continue
            chunk = [(batch, task)]
            if fast:  # more of the same needs, to run one by one under this hold
                size = chunk_size(self._mean, len(self._needy), self.size)
                while self._needy and len(chunk) < size and self._needy[0][1].needs == task.needs:
                    chunk.append(self._needy.popleft())
            if self._leases is not None:
                chunk = self._claim(chunk)  # stored meanwhile, or leased elsewhere: not sent
            if not chunk:
                self._ledger.give(task.needs, gpus)
                continue
            worker = idle.pop()
            busy += 1
            hold = [task.needs, gpus, len(chunk)]
            cuda = ",".join(map(str, gpus)) if self._ledger.has_gpus else None
            tasks = []
            for item in chunk:
                self._seq += 1
                worker.inflight[self._seq] = item
                self._held[self._seq] = hold
                tasks.append((self._seq, item[1].fp, item[1].call, item[1].payload, item[1].label,
                              cuda))
            self._send(worker, ("run", tasks))
            if self._mean < _SPIN_TASK:
                self._spin_until = time.monotonic() + _SPIN
        self._needy.extendleft(reversed(waiting))

    def _set_aside_needy(self, batch: Any, task: Any) -> None:
        """A task asking for resources: it waits for them, or fails at once if this machine
        could never give them."""
        lacking = self._ledger.could_ever(task.needs)
        if lacking:
            batch.deliver(task.tid, Refused(RESOURCES, (
                f"{task.label} asks for more than {self.label} has ({'; '.join(lacking)}): run "
                f"it on a swarm where a node has it (`pythagoras-node start` on that machine), "
                f"or ask for less (resources=)")))
        else:
            self._needy.append((batch, task))

    def _let_go(self, seq: int) -> None:
        """The task ``seq`` ended: its hold is let go with the last task under it."""
        hold = self._held.pop(seq, None)
        if hold is not None:
            hold[2] -= 1
            if not hold[2]:
                self._ledger.give(hold[0], hold[1])
