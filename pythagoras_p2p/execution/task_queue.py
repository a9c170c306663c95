"""The tasks waiting to be sent, and the requests that reach them: one queue for the worker pool
and the swarm dispatcher.

Both pools own their queue on one thread (the pool's supervisor, the dispatcher's I/O loop);
other threads hand them requests (:class:`Submit`, :class:`Cancel`, :class:`Close`, and the
dispatcher's :class:`OnLoop`) through a :class:`~.mailbox.Mailbox`. Requests are treated as
immutable but not frozen (a frozen dataclass costs more to make, and a node makes one per call).
A submitted batch becomes a *source*: its tasks are made only as workers or peers need them
(:meth:`TaskQueue.refill`), so a run of a million calls never holds a million tasks. A cancelled
batch's tasks leave the queue (:meth:`TaskQueue.cancel`); when nothing will ever run them,
:meth:`TaskQueue.fail_all` ends every queued and unmade task with one outcome (:func:`closed`
once the cloud is closed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .outcomes import CLOSED, Outcome, Refused

if TYPE_CHECKING:
    from .batch import Batch
    from .tasks import Task

__all__ = ["TaskQueue", "Submit", "Cancel", "Close", "OnLoop", "Request", "closed"]


@dataclass(slots=True)
class Submit:
    """Queue the tasks of ``batch``."""

    batch: Batch


@dataclass(slots=True)
class Cancel:
    """Drop the tasks of ``batch`` (only ``tids`` of it, if given), wherever they are; ``told()``
    (if any) once whatever runs them has been told to stop."""

    batch: Batch
    tids: frozenset[int] | None = None
    told: Callable[[], None] | None = None

    def covers(self, batch: Batch, task: Task) -> bool:
        """Whether ``task`` of ``batch`` is one of those cancelled."""
        return batch is self.batch and (self.tids is None or task.tid in self.tids)

    def covers_key(self, key: tuple[Batch, int]) -> bool:
        """The same, for a ``(batch, task id)`` key."""
        return key[0] is self.batch and (self.tids is None or key[1] in self.tids)


@dataclass(slots=True)
class Close:
    """Stop: the loop ends after this request."""


@dataclass(slots=True)
class OnLoop:
    """Run ``fn()`` on the loop's thread (it may touch what the loop owns)."""

    fn: Callable[[], None]


Request = Submit | Cancel | Close | OnLoop


def closed(task: Task) -> Outcome:
    """The outcome of a task its cloud was closed before it ran: refused (it never ran, so it
    did not crash anything), raised as a :class:`~pythagoras_p2p.errors.PythagorasError`."""
    return Refused(CLOSED, f"{task.label} was not run: the cloud was closed")


class TaskQueue:
    """Tasks to send, ``(batch, task)`` in order, and the batches still making tasks."""

    __slots__ = ("entries", "sources")

    def __init__(self) -> None:
        self.entries: deque[tuple[Batch, Task]] = deque()
        self.sources: deque[Batch] = deque()  # batches whose tasks are made only as needed

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, batch: Batch) -> None:
        """A submitted batch: its tasks are made as they are needed."""
        self.sources.append(batch)

    def refill(self, want: int | None) -> None:
        """Make tasks from the sources until the queue holds ``want`` (None: all of them)."""
        entries, sources = self.entries, self.sources
        while sources and (want is None or len(entries) < want):
            batch = sources[0]
            room = 1024 if want is None else want - len(entries)
            tasks = [] if batch.cancelled else batch.pull(room)
            if tasks:
                entries.extend((batch, t) for t in tasks)
            else:
                sources.popleft()

    def put_back(self, entries: Iterable[tuple[Batch, Task]]) -> None:
        """Tasks taken out (from a lost worker or peer) go first again, in their order."""
        self.entries.extendleft(reversed(list(entries)))

    def cancel(self, cancel: Cancel) -> None:
        """Drop the queued tasks ``cancel`` covers, and its batch's unmade ones if all of it is."""
        kept = [entry for entry in self.entries if not cancel.covers(*entry)]
        if len(kept) != len(self.entries):
            self.entries.clear()
            self.entries.extend(kept)
        if cancel.tids is None:
            self.sources = deque(b for b in self.sources if b is not cancel.batch)

    def fail_all(self, outcome: Callable[[Task], Outcome]) -> None:
        """End every queued task and every task still to be made with ``outcome(task)``."""
        self.refill(None)
        entries = self.entries
        while entries:
            batch, task = entries.popleft()
            batch.deliver(task.tid, outcome(task))
