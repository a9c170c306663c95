"""The tasks of one run of calls on a Dask cluster: streamed into Dask a window at a time.

What :class:`~.dask.DaskExecutor` submits: each task is one Dask task keyed
``<function>-<call address>``; its outcome comes back as the task's result (the function's
exception too), what Dask itself could not run becomes a failed outcome here
(:func:`_failed`), and a task lost with a worker that held its inputs is sent again, up to
:data:`~pythagoras_p2p.defaults.DASK_MAX_ATTEMPTS` times.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..defaults import DASK_MAX_ATTEMPTS as MAX_ATTEMPTS
from ..defaults import DASK_MIN_WINDOW, DASK_POLL_EVERY, DASK_WINDOW_PER_THREAD
from ..execution.batch import Tally, print_output
from ..execution.outcomes import UNREACHABLE, Crashed, Failed, Ok, Outcome, Refused, failure_outcome
from ..execution.tasks import Task
from .dask_worker import run_dask_task

__all__ = ["DaskBatch"]


class DaskBatch:
    """The tasks of one run of calls, streamed into Dask a window at a time."""

    eager = False  # its tasks run whether or not anyone asks for their outcomes

    def __init__(self, cloud: Any, tasks: Iterable[Task], count: int):  # cloud: a DaskCloud
        from distributed import as_completed

        self.cloud = cloud
        self.client = cloud.client
        self.source = iter(tasks)
        self.tally = Tally(count)
        self.workers: Any = _UNKNOWN  # eligible workers, known once the first task is made
        workers = cloud._workers()
        threads = sum(w.get("nthreads", 1) for w in workers.values()) or 1
        self.window = max(DASK_MIN_WINDOW, DASK_WINDOW_PER_THREAD * threads)
        self.inflight: dict[Any, Task] = {}
        self.retry: list[Task] = []
        self.attempts: dict[int, int] = {}
        self.done = as_completed(loop=self.client.loop)
        self.on_ready: Callable[[], None] | None = None  # called (on a Dask thread) as tasks end
        self._lock = threading.Lock()  # cancel_tasks comes from the futures' owners' threads
        self._submit()

    @property
    def finished(self) -> bool:
        return self.tally.finished

    def _submit(self) -> None:
        with self._lock:
            tasks, self.retry = self.retry, []
            for task in self.source:
                if task.tid in self.tally.dropped:
                    continue
                tasks.append(task)
                if len(self.inflight) + len(tasks) >= self.window:
                    break
        if not tasks:
            return
        cloud = self.cloud
        with cloud._dask_lock:
            function = cloud._function_future(tasks[0].fp)
            values = [cloud._value_futures(t.refs) for t in tasks]
            cloud._trim_scattered()
        keys = [self._key(t) for t in tasks]
        if self.workers is _UNKNOWN:
            self.workers = cloud._eligible_workers(tasks[0].requires)
        restrict = {} if self.workers is None else {"workers": self.workers, "allow_other_workers": False}
        if tasks[0].needs:  # Dask's worker resources: only workers declaring them take the task
            restrict["resources"] = cloud._dask_resources(tasks[0], self.workers)
        futures = self.client.map(run_dask_task, [function] * len(tasks), tasks, values, key=keys,
                                  **restrict)
        for future, task in zip(futures, tasks, strict=True):
            self.inflight[future] = task
            self.done.add(future)
            if self.on_ready is not None:
                future.add_done_callback(self._ended)

    def _ended(self, _future: Any) -> None:
        on_ready = self.on_ready
        if on_ready is not None:
            on_ready()

    def set_notify(self, on_ready) -> None:
        """Call ``on_ready()`` as tasks end from now on (and now)."""
        self.on_ready = on_ready
        for future in list(self.inflight):
            future.add_done_callback(self._ended)
        on_ready()

    def _key(self, task: Task) -> str:
        """``<function>-<call address>``: one task for identical calls of every client; a call
        that failed here before gets a key of its own (failures are never answered again)."""
        key = f"{_key_name(task.label)}-{task.call.hex()}"
        if task.call in self.cloud._failed_calls:
            key += f"-again-{os.urandom(6).hex()}"
        return key

    def next_outcomes(self, timeout: float | None = None) -> list:
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while not self.done.has_ready():  # as_completed waits without a deadline
                if any(f.done() for f in list(self.inflight)):
                    break  # as_completed has it in a moment (it hears after on_ready did)
                if time.monotonic() >= deadline:
                    return []
                time.sleep(DASK_POLL_EVERY)
        ready = [f for f in self.done.next_batch(block=True) if f in self.inflight]
        results = self._gather([f for f in ready if f.status == "finished"])
        outcomes = []
        for future in ready:
            with self._lock:
                task = self.inflight.pop(future, None)
            if task is None:  # cancelled meanwhile
                continue
            result = results.get(future)
            if result is not None:
                outcome, printed = result
                if printed:
                    print_output(outcome.where if type(outcome) is Failed else outcome.meta["worker"], printed)
                if type(outcome) is not Ok:
                    self._forget_failed(future, task)
                outcomes.append((task.tid, outcome))
                continue
            if future.status == "cancelled":  # a worker holding its inputs left: send them again
                attempt = self.attempts[task.tid] = self.attempts.get(task.tid, 0) + 1
                if attempt < MAX_ATTEMPTS:
                    self.cloud._forget_lost()
                    self.retry.append(task)
                    continue
            outcomes.append((task.tid, _failed(future, task)))
            self._forget_failed(future, task)
        with self._lock:
            outcomes = self.tally.take(outcomes)
        self._submit()
        return outcomes

    def _forget_failed(self, future: Any, task: Task) -> None:
        self.cloud._failed_calls.add(task.call)
        with contextlib.suppress(Exception):
            future.release()

    def _gather(self, futures: list) -> dict:
        """The results of finished tasks, fetched together; one whose worker died before it was
        fetched is left out (the task then counts as failed)."""
        if not futures:
            return {}
        try:
            return dict(zip(futures, self.client.gather(futures), strict=True))
        except Exception:
            found = {}
            for future in futures:
                with contextlib.suppress(Exception):
                    found[future] = future.result(timeout=self.cloud.connect_timeout)
            return found

    def cancel_tasks(self, tids: list[int]) -> None:
        """Cancel these tasks on the cluster, or drop them before they are submitted."""
        with self._lock:
            wanted = set(self.tally.drop(tids))
            pending = [f for f, t in self.inflight.items() if t.tid in wanted]
            for future in pending:
                del self.inflight[future]
            self.retry = [t for t in self.retry if t.tid not in wanted]
        if pending:
            self.client.cancel(pending)

    def cancel(self) -> None:
        self.tally.end()
        pending = list(self.inflight)
        self.inflight.clear()
        if pending:
            self.client.cancel(pending)


_UNKNOWN = object()


def _failed(future: Any, task: Task) -> Outcome:
    """The outcome of a task that Dask itself could not run."""
    from distributed import KilledWorker

    if future.status == "cancelled":
        return Crashed(f"{task.label} was lost with its Dask worker on {MAX_ATTEMPTS} attempts "
                       f"(the worker running it, or holding its arguments, died each time: does "
                       f"the call kill it?); not retried further")
    if future.status == "finished":
        return Refused(UNREACHABLE, f"{task.label}: its result was lost before it could be "
                                    f"fetched (its Dask worker left); run it again")
    exc = future.exception()
    if isinstance(exc, KilledWorker):
        return Crashed(f"{task.label} killed its Dask worker on every attempt ({exc}); the call "
                       f"was not retried further")
    return failure_outcome(exc, "dask")


def _key_name(label: str) -> str:
    """``f(x=1)`` → ``f``: the task group name Dask shows."""
    return label.partition("(")[0].replace("<locals>.", "") or "call"
