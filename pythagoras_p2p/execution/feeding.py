"""Which queued tasks a worker pool sends next, and to which worker: leases taken, stored results
answered, tasks set aside, and tasks that ask for resources sent as they come free.

:class:`Feeder` is held by :class:`~.pool.WorkerPool` (its ``feeder``); it chooses, and the pool
sends (the ``run`` it is given) and supervises. A pool given the leases of its home takes each
call's lease as it sends the task to a worker (one store read for a chunk of them); a task whose
result another process stored meanwhile is answered with a :class:`~.outcomes.Stored` outcome,
and one whose call another process is computing is set aside and looked at again after 1 ms,
then twice as long each time up to 64 ms, while the other tasks run; one set aside for longer
than :func:`~pythagoras_p2p.stalls.check_every` takes the lease over if its holder is stopped.
See :mod:`pythagoras_p2p.store.leases`. :class:`Pace` is how long calls take lately, and so how
many tasks go to a worker at once.
"""

from __future__ import annotations

import heapq
import itertools
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
from ..store.leases import FIRST_DELAY, MAX_DELAY, WATCH_EVERY
from .outcomes import RESOURCES, Refused, Stored
from .task_queue import Cancel, TaskQueue

if TYPE_CHECKING:
    from ..resources import Ledger
    from ..store.core import Store
    from ..store.leases import Leases
    from .batch import Batch
    from .tasks import Task
    from .worker_process import WorkerProcess

__all__ = ["Feeder", "Pace", "chunk_size"]

Entry = tuple["Batch", "Task"]
#: How the pool sends a chunk of tasks to a worker: (worker, chunk, the GPUs the calls may see
#: (None: say nothing of them), the resources hold they run under, or None).
Run = Callable[["WorkerProcess", list[Entry], "str | None", "list | None"], None]


def chunk_size(mean: float, queued: int, workers: int) -> int:
    """How many fast tasks to send one worker in one message: as many as take about
    :data:`POOL_BATCH_SECONDS` at the running mean duration (as joblib's auto batching sizes its
    batches), at most :data:`POOL_MAX_CHUNK`, and no more than an even share of half the queue:
    the last tasks of a run are split among the workers, so none is left holding the tail."""
    by_time = int(_BATCH_SECONDS / mean) if mean > 0 else _MAX_CHUNK
    return max(1, min(_MAX_CHUNK, by_time, queued // (2 * workers)))


class Pace:
    """The running mean duration of a pool's calls, and until when an outcome is due soon."""

    __slots__ = ("mean", "spin_until")

    def __init__(self) -> None:
        self.mean = 1.0  # start by assuming slow calls
        self.spin_until = 0.0  # see WorkerPool.expecting_soon

    def observe(self, duration: float) -> None:
        self.mean = 0.8 * self.mean + 0.2 * duration

    @property
    def short(self) -> bool:
        """Calls take so little that tasks go to workers in chunks."""
        return self.mean < _FAST_TASK

    @property
    def fast(self) -> bool:
        """Calls take so little that an outcome is worth spinning for."""
        return self.mean < _SPIN_TASK

    def sent(self) -> None:
        """Tasks went to a worker: while calls are fast, their outcomes are due within ``_SPIN``."""
        if self.mean < _SPIN_TASK:
            self.spin_until = time.monotonic() + _SPIN


class Feeder:
    """The tasks of a worker pool not yet sent; see the module docstring."""

    def __init__(self, queue: TaskQueue, pace: Pace, run: Run, *, size: int, label: str,
                 leases: Leases | None, store: Store | None, ledger: Ledger | None):
        self.queue = queue
        self.pace = pace
        self.run = run
        self.size = size
        self.label = label
        self.leases = leases  # None: this pool's owner does not lease calls (a node)
        self.store = store
        self.ledger = ledger  # this machine's resources, and what running calls hold
        self.aside: list = []  # heap of (due, n, delay, batch, task, since) leased elsewhere
        self.needy: deque[Entry] = deque()  # asking for resources not free yet
        self.held: dict[int, list] = {}  # seq -> [needs, gpus, tasks left] of its hold
        self._order = itertools.count()  # breaks ties in the heap

    def feed(self, workers: list[WorkerProcess]) -> None:
        """Send workers what they can take now."""
        self.queue.refill(self.size * 2 * _MAX_CHUNK)
        if self.aside:
            self._recheck_aside()
        if self.needy:
            self._feed_needy(workers)
        self._feed_plain(workers)
        if self.needy:  # tasks asking for resources met while feeding the others
            self._feed_needy(workers)

    def timeout(self, longest: float) -> float:
        """How long the pool may wait: until the next set-aside task is due, and while its
        leases are kept to this process, until it looks for others again."""
        if self.leases is not None and self.leases.solo:
            longest = min(longest, WATCH_EVERY)
        if not self.aside:
            return longest
        return min(longest, max(0.0, self.aside[0][0] - time.monotonic()))

    def _feed_plain(self, workers: list[WorkerProcess]) -> None:
        queue = self.queue.entries
        if not queue:
            return
        short = self.pace.short
        ledger = self.ledger
        visible_gpus = "" if ledger is not None and ledger.has_gpus else None  # none asked: none seen
        # cpus held beyond one per busy worker (calls asking for several): idle workers kept idle
        extra = int(ledger.used.get("cpus", 0)) if ledger is not None else 0
        busy = sum(1 for w in workers if w.inflight) if extra else 0
        for worker in sorted(workers, key=lambda w: len(w.inflight)):  # idle ones first
            if not queue:
                return
            if not worker.usable:
                continue
            if extra and not worker.inflight:
                if busy + extra >= len(workers):
                    continue
                busy += 1
            chunk = self._next_chunk(chunk_size(self.pace.mean, len(queue), self.size) if short else 1)
            if chunk:
                self.run(worker, chunk, visible_gpus, None)

    def _claim(self, entries: list[Entry], delay: float = FIRST_DELAY,
               since: float | None = None) -> list[Entry]:
        """Those of ``entries`` (batch, task) to send now, each one's lease taken for its batch.

        A result stored meanwhile is delivered instead (:class:`~.outcomes.Stored`); an entry leased
        elsewhere is set aside for ``delay``, or its lease taken over from a stopped holder if it
        has waited since ``since``. One read of the store for them all.
        """
        leases, store = self.leases, self.store
        assert leases is not None and store is not None
        taken = leases.take_each([(task.call, batch) for batch, task in entries])
        stored = store.get_results([task.call for _, task in entries])
        now = time.monotonic()
        if since is None:
            since = now
        elif now - since >= check_every():
            taken = [mine or (task.call not in stored and leases.take_over(task.call, batch))
                     for (batch, task), mine in zip(entries, taken, strict=True)]
        send = []
        for (batch, task), mine in zip(entries, taken, strict=True):
            if task.call in stored:
                if mine:
                    leases.release([task.call], batch)
                batch.deliver(task.tid, Stored(stored[task.call]))
            elif mine:
                send.append((batch, task))
            else:
                entry = (now + delay, next(self._order), min(2 * delay, MAX_DELAY))
                heapq.heappush(self.aside, (*entry, batch, task, since))
        return send

    def _recheck_aside(self) -> None:
        """Tasks set aside whose time has come: queued first if their lease came free."""
        now = time.monotonic()
        while self.aside and self.aside[0][0] <= now:
            _, _, delay, batch, task, since = heapq.heappop(self.aside)
            if batch.wanted(task):
                self.queue.put_back(self._claim([(batch, task)], delay, since))

    def _next_chunk(self, size: int) -> list[Entry]:
        """Up to ``size`` queued tasks to send to one worker (cancelled ones dropped, leases
        taken); tasks answered from the store or set aside do not leave the worker idle."""
        queue = self.queue.entries
        entries: list = []
        while queue and not entries:
            while queue and len(entries) < size:
                entry = queue.popleft()
                if not entry[0].wanted(entry[1]):
                    continue
                if entry[1].needs and self.ledger is not None:
                    self._set_aside_needy(*entry)  # sent alone when its resources are free
                    continue
                entries.append(entry)
            if entries and self.leases is not None:
                entries = self._claim(entries)
        return entries

    def take_back(self) -> None:
        """Queue the tasks set aside again (to fail them with the others)."""
        self.queue.entries.extend((entry[3], entry[4]) for entry in self.aside)
        self.aside.clear()
        self.queue.entries.extend(self.needy)
        self.needy.clear()

    def cancel(self, cancel: Cancel) -> None:
        """Drop the tasks ``cancel`` covers, queued, set aside or waiting for resources."""
        self.queue.cancel(cancel)
        self.needy = deque(entry for entry in self.needy if not cancel.covers(*entry))
        self.aside = [entry for entry in self.aside if not cancel.covers(entry[3], entry[4])]
        heapq.heapify(self.aside)

    # ------------------------------------------------------------------ calls asking for resources

    def _feed_needy(self, workers: list[WorkerProcess]) -> None:
        """Send tasks that ask for resources to idle workers as their resources come free (in
        order, but one that does not fit yet does not hold back the others).

        A worker runs its tasks one after another, so while calls are fast it gets a chunk of
        tasks asking for the same resources under one hold, kept until the last of them ends.
        """
        ledger = self.ledger
        assert ledger is not None
        idle = [w for w in workers if not w.inflight and w.usable]
        busy = len(workers) - len(idle)
        waiting: deque[Entry] = deque()
        short = self.pace.short
        while self.needy and idle:
            batch, task = self.needy.popleft()
            if not batch.wanted(task):
                continue
            gpus = ledger.take(task.needs, busy)
            if gpus is None:
                waiting.append((batch, task))
                continue
            chunk = [(batch, task)]
            if short:  # more of the same needs, to run one by one under this hold
                size = chunk_size(self.pace.mean, len(self.needy), self.size)
                while self.needy and len(chunk) < size and self.needy[0][1].needs == task.needs:
                    chunk.append(self.needy.popleft())
            if self.leases is not None:
                chunk = self._claim(chunk)  # stored meanwhile, or leased elsewhere: not sent
            if not chunk:
                ledger.give(task.needs, gpus)
                continue
            busy += 1
            visible_gpus = ",".join(map(str, gpus)) if ledger.has_gpus else None
            self.run(idle.pop(), chunk, visible_gpus, [task.needs, gpus, len(chunk)])
        self.needy.extendleft(reversed(waiting))

    def _set_aside_needy(self, batch: Any, task: Any) -> None:
        """A task asking for resources: it waits for them, or fails at once if this machine
        could never give them."""
        assert self.ledger is not None
        lacking = self.ledger.could_ever(task.needs)
        if lacking:
            batch.deliver(task.tid, Refused(RESOURCES, (
                f"{task.label} asks for more than {self.label} has ({'; '.join(lacking)}): run "
                f"it on a swarm where a node has it (`pythagoras-node start` on that machine), "
                f"or ask for less (resources=)")))
        else:
            self.needy.append((batch, task))

    def let_go(self, seq: int) -> None:
        """The task ``seq`` ended: its hold is let go with the last task under it."""
        hold = self.held.pop(seq, None)
        if hold is not None:
            hold[2] -= 1
            if not hold[2]:
                assert self.ledger is not None
                self.ledger.give(hold[0], hold[1])
