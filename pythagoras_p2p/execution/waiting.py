"""How a sync caller waits for a run of calls: the part of :class:`~.runs.CallRun` that
``sync_remote`` and each window of ``sync_parallel`` drive on the caller's thread, and the
rules of ``sync_parallel`` for exceptions, timeouts and Ctrl-C."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..store.core import MISSING

__all__ = ["CANCELLED", "Waiting"]

CANCELLED = object()  # a slot nobody wants any more: its outcome is dropped, never stored


class Waiting:
    """Waiting on the caller's thread, for :class:`~.runs.CallRun` (its base class)."""

    # What it uses of the run:
    fn: Any
    results: list
    errors: set
    positions: list
    open: int
    pumping: Any
    all_done: Any
    _dropped: bool
    launch: Callable[[], None]
    pump: Callable[[float | None], None]
    unwant_all: Callable[[], None]
    close: Callable[[], None]

    @property
    def running(self) -> bool:
        """Whether the run still waits for outcomes of its own batch (the run's)."""
        raise NotImplementedError

    def wait(self, *, return_exceptions: bool, timeout: float | None) -> list:
        """Launch and pump on this thread until every call has ended; the results in input
        order, with ``sync_parallel``'s rules for exceptions, timeouts and Ctrl-C (see
        :func:`~.windows.run_calls` for many calls)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.launch()
        self.finish(deadline)
        out, late, first_error = self.ordered(timeout)
        if not return_exceptions and (late or first_error) is not None:
            raise late or first_error
        return out

    def finish(self, deadline: float | None) -> bool:
        """Pump on this thread until every call has ended, or until ``deadline`` (a monotonic
        time) passed: the calls still open are then let go of. Whether it passed."""
        expired = False
        try:
            with self.pumping:
                while self.running:
                    if deadline is None:
                        self.pump(None)
                        continue
                    left = deadline - time.monotonic()
                    self.pump(max(0.0, left))
                    if left <= 0 and self.running:
                        expired = True
                        break
            if not expired and self.open:  # joined calls of other runs
                expired = not self.all_done.wait(
                    None if deadline is None else max(0.0, deadline - time.monotonic()))
        except BaseException:
            self._leave()
            raise
        if expired:
            self._leave()
        return expired

    def expire(self) -> None:
        """The deadline passed before this run was launched: only stored calls are answered."""
        self.unwant_all()
        self.close()

    def ordered(self, timeout: float | None) -> tuple[list, TimeoutError | None, Any]:
        """The results in input order, with a ``TimeoutError`` in the place of each call given
        up at the deadline; that error (or None); and the first exception in input order (or
        None). ``sync_parallel`` without ``return_exceptions`` raises the one, else the other."""
        results, errors = self.results, self.errors
        if not (errors or self.open or self._dropped):  # all returned
            return [results[slot] for slot in self.positions], None, None
        out = []
        first_error = late = None
        for slot in self.positions:
            value = results[slot]
            if value is MISSING or value is CANCELLED:  # given up at the timeout
                if late is None:
                    late = TimeoutError(f"{self.fn.name}: calls still running after "
                                        f"timeout={timeout} s were cancelled")
                value = late
            elif first_error is None and slot in errors:
                first_error = value
            out.append(value)
        return out, late, first_error

    def _leave(self) -> None:
        """The sync caller stops waiting: let go of its calls; one still wanted by another run
        goes on, driven by the collector."""
        self.unwant_all()
        if self.running:
            from .futures import collector

            collector().adopt(self, launched=True)
        else:
            self.close()
