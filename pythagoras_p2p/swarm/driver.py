"""Who runs an I/O loop: the thread waiting for its results, or a background thread.

A client's sockets belong to one loop (:meth:`SwarmDispatcher._turn` is one turn of it). If a
background thread ran every turn, each remote call would cross threads twice: the caller hands
its request over and sleeps, the background thread wakes, sends, receives the reply, and wakes
the caller. On a small machine each crossing costs tens of microseconds, more than the rest of
a fast call. So a thread that waits for a result runs the loop itself (:meth:`Driver.drive_until`)
and the background thread runs it only while nobody waits: it keeps peers alive between calls,
and serves requests that nobody drives (a lookup, a cancel after Ctrl-C).

One lock makes the loop's state single-threaded: whoever holds it runs the turns. The
background thread lets go as soon as a caller asks, and after the last caller leaves it
lingers a few milliseconds before it takes over again, so a loop of ``sync_remote`` calls never
waits for it. A Ctrl-C that arrives while the main thread runs a turn is held until the turn
ends, so no turn is left half done.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from ..defaults import DRIVER_LINGER as LINGER
from ..defaults import DRIVER_SLICE as _SLICE

try:  # the C functions: signal's wrappers also convert handlers to enums, ~7 µs a call
    from _signal import getsignal as _get_handler  # type: ignore[import-not-found]  # no stubs for the C module
    from _signal import signal as _set_handler
except ImportError:  # pragma: no cover - not CPython
    _get_handler, _set_handler = signal.getsignal, signal.signal

__all__ = ["Driver"]

log = logging.getLogger(__name__)


class Driver:
    """Runs ``turn(timeout, ready)`` on the right thread; see the module docstring.

    A turn returns True once the loop is over; ``ready()`` (None on the background thread)
    tells it whether the caller has what it waits for, so it need not wait in its poll.
    ``wake()`` must make a turn that waits return at once (a byte on a pipe it polls).
    ``finish()`` runs once, on the background thread, when the loop is over.
    ``awaiting()`` tells whether the loop waits for replies nobody drives it for (a lookup's):
    the background thread then takes over as soon as the last caller leaves.
    """

    def __init__(self, turn: Callable[[float, Callable[[], bool] | None], bool],
                 wake: Callable[[], None], finish: Callable[[], None], *, name: str, tick: float,
                 awaiting: Callable[[], bool] = lambda: False):
        self._turn = turn
        self._wake = wake
        self._finish = finish
        self._awaiting = awaiting
        self._tick = tick
        self._lock = threading.Lock()  # held by the thread running turns
        self._turn_over = threading.Condition(threading.Lock())  # callers wait here for the lock
        self._waiting = 0  # callers waiting on _turn_over
        self._cond = threading.Condition()  # the background thread waits here while callers drive
        self._callers = 0
        self._last_left = 0.0
        self._asked = False  # a request was queued and no turn has begun since
        self._driver: int | None = None  # ident of the thread running a turn now
        self.over = False
        self.thread = threading.Thread(target=self._background, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def driving_here(self) -> bool:
        """Whether the current thread runs the loop now (a request made from a turn)."""
        return self._driver == threading.get_ident()

    def driving_elsewhere(self) -> bool:
        """Whether another thread runs a turn now (it may be waiting long in its poll)."""
        driver = self._driver
        return driver is not None and driver != threading.get_ident()

    def notify(self) -> None:
        """A request was queued: the background thread stops lingering (nobody may drive)."""
        self._asked = True
        self._wake()
        with self._cond:
            self._cond.notify()

    def _step(self, timeout: float, ready: Callable[[], bool] | None) -> None:
        self._driver = threading.get_ident()
        self._asked = False  # this turn serves what was queued before it
        try:
            if self._turn(timeout, ready):
                self.over = True
        except BaseException as exc:  # a turn left half done: the loop cannot go on
            self.over = True
            if not isinstance(exc, Exception):
                raise
            log.exception("the swarm I/O loop failed")
        finally:
            self._driver = None

    def _background(self) -> None:
        try:
            while not self.over:
                with self._cond:
                    if self._callers:
                        self._cond.wait(self._tick)
                        continue
                    left = LINGER - (time.monotonic() - self._last_left)
                    if left > 0 and not self._asked:
                        self._cond.wait(left)
                        if self._callers:
                            continue
                self._lock.acquire()
                try:
                    if not self.over:
                        self._step(self._tick, None)
                finally:
                    self._release()
        finally:
            self.over = True
            with self._lock:  # a caller's last turn ends first
                self._finish()

    def _release(self) -> None:
        """Let go of the loop after a turn; callers waiting for it look again."""
        self._lock.release()
        if self._waiting:
            with self._turn_over:
                self._turn_over.notify_all()

    def _take_or_wait(self) -> bool:
        """Take the loop, or wait until the turn running now is over (False): the turn may
        have delivered what this caller waits for. Asleep meanwhile, however many wait."""
        if self._lock.acquire(blocking=False):
            return True
        if self._driver == self.thread.ident:
            self._wake()  # the background thread may wait long in its poll
        with self._turn_over:
            self._waiting += 1  # before looking at the lock: a release after it notifies us
            try:
                if self._lock.acquire(blocking=False):
                    return True
                self._turn_over.wait(_SLICE)
                return False
            finally:
                self._waiting -= 1

    def drive_until(self, done: Callable[[], bool]) -> None:
        """Run turns on this thread until ``done()`` or the loop is over.

        Another thread may be running a turn: then this one sleeps until that turn is over and
        looks at ``done()`` before it tries again. SIGINT is held for each
        round of turns, bookkeeping included, and delivered between rounds, when this thread
        no longer counts as a caller: a handler that makes a request is served.
        """
        while not done() and not self.over:
            with _HeldInterrupt() as interrupt:
                with self._cond:
                    self._callers += 1
                try:
                    while not interrupt.caught and not done() and not self.over:
                        if not self._take_or_wait():
                            continue
                        try:
                            if not done() and not self.over:
                                self._step(_SLICE, done)
                        finally:
                            self._release()
                finally:
                    # The background thread is woken only for a request nobody served, or
                    # replies nobody else will read: else it would contend for the
                    # interpreter lock with this thread's next call.
                    with self._cond:
                        self._callers -= 1
                        self._last_left = time.monotonic()
                        if not self._callers and (self._asked or self._awaiting()):
                            self._cond.notify()


class _HeldInterrupt:
    """On the main thread, hold SIGINT back for the block; deliver it when the block ends.

    Delivered means: the handler held back is put back and called (the default one raises
    KeyboardInterrupt). Elsewhere (no signal reaches other threads' code) it does nothing.
    """

    def __init__(self) -> None:
        self._previous = None
        self._caught: list = []

    @property
    def caught(self) -> bool:
        return bool(self._caught)

    def __enter__(self) -> _HeldInterrupt:
        # A handler installed outside Python (None) could not be put back: leave it alone.
        if threading.current_thread() is threading.main_thread() and _get_handler(signal.SIGINT) is not None:
            try:
                self._previous = _set_handler(signal.SIGINT, self._hold)
            except (ValueError, TypeError):  # no signals here (an embedded interpreter)
                self._previous = None
        return self

    def _hold(self, signum: int, frame) -> None:
        self._caught.append((signum, frame))

    def __exit__(self, *exc: object) -> None:
        previous, self._previous = self._previous, None
        if previous is None:
            return
        _set_handler(signal.SIGINT, previous)
        if self._caught and exc[0] is None:
            signum, frame = self._caught[-1]
            if callable(previous):
                previous(signum, frame)  # the default one raises KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt
