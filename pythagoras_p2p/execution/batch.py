"""Batches of tasks: the calls of one ``sync_parallel`` (or ``sync_remote``) and their outcomes.

A :class:`Batch` is shared by the thread that submitted it and the thread serving it (the
worker pool's supervisor, or the swarm dispatcher): tasks are pulled from its source only as
workers need them (:meth:`.task_queue.TaskQueue.refill`), and outcomes are queued for the caller or handed to a
callback. Printed output of its calls goes to ``on_output``, or to :func:`print_output`.
Every kind of batch (this one, the inline one of a worker, Dask's) counts what it still owes
its caller with a :class:`Tally`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .outcomes import Outcome

__all__ = ["Batch", "TaskPool", "Tally", "print_output"]


class TaskPool(Protocol):
    """What a batch needs of the pool (worker pool, swarm dispatcher) it was submitted to."""

    @property
    def alive(self) -> bool:
        """Whether it still takes tasks (not closed)."""

    def cancel(self, batch: Batch, tids: frozenset[int] | None = None) -> None:
        """Drop the tasks of ``batch`` (only ``tids`` of it, if given), queued or running."""


class Tally:
    """Which tasks of a batch still owe its caller an outcome.

    ``remaining`` counts down as outcomes are returned and as tasks are cancelled one by one
    (:meth:`drop`); the outcome of a dropped task is never returned (:meth:`take`). The batch
    that holds it serializes the calls (under its lock, or on one thread).
    """

    __slots__ = ("remaining", "dropped", "taken")

    def __init__(self, count: int):
        self.remaining = count
        self.dropped: set[int] = set()  # tasks cancelled one by one
        self.taken: set[int] = set()  # tasks whose outcome was returned

    @property
    def finished(self) -> bool:
        return self.remaining <= 0

    def drop(self, tids: Iterable[int]) -> list[int]:
        """Cancel these tasks; returns those not cancelled or answered before."""
        new = [t for t in dict.fromkeys(tids) if t not in self.dropped and t not in self.taken]
        self.dropped.update(new)
        self.remaining -= len(new)
        return new

    def take(self, outcomes: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """``(task id, outcome)`` pairs to return: those of dropped tasks left out."""
        if self.dropped:
            outcomes = [item for item in outcomes if item[0] not in self.dropped]
        self.taken.update(item[0] for item in outcomes)
        self.remaining -= len(outcomes)
        return outcomes

    def end(self) -> None:
        """The batch was cancelled as a whole: nothing more is owed."""
        self.remaining = 0


class Batch:
    """The tasks of one ``sync_parallel`` (or ``sync_remote``) call, and their outcomes.

    ``drive``: how a thread waiting for outcomes runs the pool's I/O loop meanwhile (the swarm
    dispatcher's ``drive_until``), or None when the pool's own thread serves it (the worker
    pool)."""

    eager = False  # its tasks run whether or not anyone asks for their outcomes

    def __init__(self, pool: TaskPool, count: int, on_outcome=None, on_output=None, tasks=(),
                 drive: Callable[[Callable[[], bool]], None] | None = None):
        self.pool = pool
        self.drive = drive
        self.tally = Tally(count)
        self.cancelled = False
        self.source = iter(tasks)  # tasks not yet queued: pulled as workers need them
        self.error: BaseException | None = None  # raised by the source while making a task
        self.on_outcome = on_outcome  # called (on the pool's thread) instead of queueing
        self.on_output = on_output  # called with (where, text) instead of printing
        self.on_ready: Callable[[], None] | None = None  # called (on the pool's thread) after
        # outcomes were queued
        self._outcomes: deque = deque()
        self._cond = threading.Condition()

    @property
    def finished(self) -> bool:
        return self.tally.finished

    def deliver(self, tid: int, outcome: Outcome) -> None:
        if self.on_outcome is not None:
            self.tally.remaining -= 1
            self.on_outcome(tid, outcome)
            return
        with self._cond:
            self._outcomes.append((tid, outcome))
            self._cond.notify()
        if self.on_ready is not None:
            self.on_ready()

    def set_notify(self, on_ready) -> None:
        """Call ``on_ready()`` whenever outcomes arrive from now on (and now, if some wait)."""
        self.on_ready = on_ready
        if self._outcomes:
            on_ready()

    def next_outcomes(self, timeout: float | None = None) -> list:
        """Wait for outcomes and return every one that arrived: at least one, or none when
        ``timeout`` seconds passed first.

        A pool that can (the swarm dispatcher) runs its I/O loop on this thread meanwhile.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        drive = self.drive
        if drive is not None and not self._outcomes:
            drive(lambda: bool(self._outcomes) or self.error is not None
                  or (deadline is not None and time.monotonic() >= deadline))
        with self._cond:
            while not self._outcomes:
                if self.error is not None:
                    raise self.error
                if not self.pool.alive:
                    raise RuntimeError("the worker pool was closed while calls were running")
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    return []
                self._cond.wait(wait)
            out = self.tally.take(list(self._outcomes))
            self._outcomes.clear()
        return out

    def pull(self, n: int) -> list:
        """Up to ``n`` more tasks from the source (on the pool's thread)."""
        tasks = []
        try:
            for _ in range(n):
                tasks.append(next(self.source))
        except StopIteration:
            self.source = iter(())
        except Exception as exc:  # making a task failed (an argument that cannot be stored...)
            self.source = iter(())
            with self._cond:
                self.error = exc
                self._cond.notify()
        return tasks

    def cancel(self) -> None:
        """Drop queued tasks and stop the workers running this batch's tasks."""
        if not self.cancelled and not self.tally.finished:
            self.cancelled = True
            if self.pool.alive:
                self.pool.cancel(self)

    def cancel_tasks(self, tids: list[int]) -> None:
        """Drop these tasks (queued or running: stopped where they run); no outcome of theirs
        is returned. The others go on."""
        with self._cond:
            new = self.tally.drop(tids)
        if new and not self.cancelled and self.pool.alive:
            self.pool.cancel(self, frozenset(new))

    def wanted(self, task) -> bool:
        """Whether ``task`` (of this batch) is still to run."""
        return not self.cancelled and task.tid not in self.tally.dropped


def print_output(where: str, text: str) -> None:
    """Print what a call printed on ``where`` to stderr, each line prefixed by ``[where]``."""
    stream = sys.stderr
    lines = text.splitlines(keepends=True)
    stream.write("".join(f"[{where}] {line}" for line in lines))
    if not text.endswith("\n"):
        stream.write("\n")
    stream.flush()
