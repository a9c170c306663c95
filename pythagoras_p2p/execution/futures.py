"""Futures of calls, and the thread that drives the runs nobody waits on.

``async_remote``/``async_parallel`` return :class:`CallFuture` objects: real
:class:`concurrent.futures.Future` instances, so ``wait``, ``as_completed``, ``result(timeout)``
and ``exception()`` work as with any executor. Two things differ, both as a user of a cluster
expects:

* ``cancel()`` also cancels a call that is already running — its worker or peer stops it and
  nothing is stored — unless another future (or another run) still waits for the same call;
* callbacks added with ``add_done_callback`` run on a thread of their own, never on the thread
  that takes outcomes, so a slow callback delays other callbacks, not other calls.

The :class:`Collector` (one daemon thread per process) launches each asynchronous run and takes
its outcomes as its backend delivers them; a process that exits with futures pending cancels
their calls first, on peers too, so nothing it started keeps running anywhere.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any

# The runs served here are .runs.CallRun objects (not imported: runs imports this module).
CallRun = Any

__all__ = ["CallFuture", "Collector", "collector"]

log = logging.getLogger(__name__)


_ENDED = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class CallFuture(Future):
    """The future result of one call; see the module docstring for how it differs.

    The futures of one run share one condition (``run.condition``) instead of a lock and
    condition each — 1.2 kB a future, most of what 200,000 futures cost. A waiter is therefore
    woken when any future of the run settles, so :meth:`result` and :meth:`exception` wait in
    a loop until their own future is done; ``wait`` and ``as_completed`` use waiters of their
    own, which only the future they wait on tells.
    """

    def __init__(self, run: CallRun, slot: int):
        # Future.__init__'s fields, with the run's condition for a new one of its own
        self._condition = run.condition
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters: list = []
        self._done_callbacks: list = []
        self._run = run
        self.slot = slot

    def _until_ended(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._state not in _ENDED:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return  # Future.result(0) raises TimeoutError
                self._condition.wait(left)

    def result(self, timeout: float | None = None) -> Any:
        self._until_ended(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._until_ended(timeout)
        return super().exception(0)

    @property
    def label(self) -> str:
        """The call this future stands for, as messages name it: ``f(x=1)``."""
        from .tasks import describe_call

        return describe_call(self._run.fn.name, self._run.unique[self.slot][1])

    def cancel(self) -> bool:
        """Cancel the call: queued, it never runs; running, it is stopped where it runs (on a
        peer too) unless another future waits for the same call. False once it has ended."""
        if not super().cancel():  # its state stays PENDING until its outcome is in
            return False
        self._run.unwant(self.slot)
        return True

    def add_done_callback(self, fn) -> None:
        """Call ``fn(future)`` once this future is done: at once (here) if it is, else on the
        process's callback thread."""
        if self.done():
            super().add_done_callback(fn)
        else:
            super().add_done_callback(lambda future: _callbacks().put(fn, future))

    def _settle(self, value: Any, error: bool) -> None:
        try:
            if error:
                self.set_exception(value)
            else:
                self.set_result(value)
        except InvalidStateError:  # cancelled meanwhile: its result is nobody's
            pass

    def __repr__(self) -> str:
        return f"<CallFuture {self.label} {self._state.lower()}>"


class _Callbacks:
    """One thread that runs the done-callbacks of futures, in the order they became due."""

    def __init__(self) -> None:
        self._queue: deque = deque()
        self._cond = threading.Condition()
        threading.Thread(target=self._loop, name="pythagoras-callbacks", daemon=True).start()

    def put(self, fn, future: Future) -> None:
        with self._cond:
            self._queue.append((fn, future))
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                fn, future = self._queue.popleft()
            try:
                fn(future)
            except Exception:  # as concurrent.futures does: logged, the others still run
                log.exception("exception calling callback for %r", future)


class Collector:
    """Launches asynchronous runs and takes their outcomes, on one daemon thread."""

    def __init__(self) -> None:
        self._due: deque = deque()  # (run, launch?) to look at
        self._queued: set = set()
        self._runs: set = set()  # runs still waiting for outcomes
        self._cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="pythagoras-futures", daemon=True)
        self.thread.start()

    def adopt(self, run: CallRun, *, launched: bool) -> None:
        """Drive ``run`` from now on (launching it first unless ``launched``)."""
        with self._cond:
            self._runs.add(run)
            self._due.append((run, not launched))
            self._cond.notify()

    def _ready(self, run: CallRun) -> None:
        """Outcomes of ``run`` arrived (called on whichever thread delivered them)."""
        with self._cond:
            if run not in self._queued:
                self._queued.add(run)
                self._due.append((run, False))
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
                run, launch = self._due.popleft()
                self._queued.discard(run)
            try:
                self._serve(run, launch)
            except Exception as exc:  # making a task failed (an argument that cannot be sent)
                run.fail(exc)
            except BaseException:  # noqa: BLE001 - a failed turn must not end the thread
                log.exception("the futures of %s could not be served", run.fn.name)
                run.abandon()
            if not run.running:
                with self._cond:
                    self._runs.discard(run)

    def _serve(self, run: CallRun, launch: bool) -> None:
        if launch:
            run.launch()
        if not run.running:
            return
        if run.batch.on_ready is None:  # from now on its backend tells when outcomes arrive
            run.batch.set_notify(lambda: self._ready(run))
        if not run.pumping.acquire(blocking=False):
            return  # a sync caller pumps it; it hands the run over when it leaves
        try:
            eager = run.batch.eager  # runs its tasks only when asked (inline)
            run.pump(None if eager else 0)
        finally:
            run.pumping.release()
        if eager and run.running:
            self._ready(run)

    def close(self) -> None:
        """At exit: cancel every call the pending futures stand for, everywhere."""
        with self._cond:
            runs, self._runs = list(self._runs), set()
        for run in runs:
            try:
                run.abandon()
            except Exception:  # exiting: whatever could be cancelled was
                pass


_state: dict[str, Any] = {"collector": None, "callbacks": None}
_lock = threading.Lock()


def _once(key: str, make):
    """The process's one ``key`` object, made by ``make()`` the first time it is asked for."""
    found = _state[key]
    if found is None:
        with _lock:
            found = _state[key]
            if found is None:
                found = _state[key] = make()
    return found


def collector() -> Collector:
    """The process's collector (started at the first asynchronous run)."""
    def make() -> Collector:
        made = Collector()
        atexit.register(made.close)  # registered after the pools and connections: runs first
        return made

    return _once("collector", make)


def _callbacks() -> _Callbacks:
    return _once("callbacks", _Callbacks)
