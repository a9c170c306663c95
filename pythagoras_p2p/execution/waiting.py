"""How a sync caller waits for a run of calls: a :class:`SyncWait` holds the
:class:`~.runs.CallRun` that ``sync_remote`` (or one window of ``sync_parallel``) drives on the
caller's thread, and keeps the rules of ``sync_parallel`` for exceptions, timeouts and Ctrl-C."""

from __future__ import annotations

import time
from typing import Any

from ..store.core import MISSING
from .runs import CANCELLED, CallRun

__all__ = ["SyncWait"]


class SyncWait:
    """The sync caller's wait for one run, on the caller's own thread."""

    __slots__ = ("run",)

    def __init__(self, run: CallRun):
        self.run = run

    def wait(self, *, return_exceptions: bool, timeout: float | None) -> list:
        """Launch and pump on this thread until every call has ended; the results in input
        order, with ``sync_parallel``'s rules for exceptions, timeouts and Ctrl-C (see
        :func:`~.windows.run_calls` for many calls)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.run.launch()
        self.finish(deadline)
        out, late, first_error = self.ordered(timeout)
        if not return_exceptions and (late or first_error) is not None:
            raise late or first_error
        return out

    def finish(self, deadline: float | None) -> bool:
        """Pump on this thread until every call has ended, or until ``deadline`` (a monotonic
        time) passed: the calls still open are then let go of. Whether it passed."""
        expired = False
        run = self.run
        try:
            with run.pumping:
                while run.running:
                    if deadline is None:
                        run.pump(None)
                        continue
                    left = deadline - time.monotonic()
                    run.pump(max(0.0, left))
                    if left <= 0 and run.running:
                        expired = True
                        break
            if not expired and run.open:  # joined calls of other runs
                expired = not run.all_done.wait(
                    None if deadline is None else max(0.0, deadline - time.monotonic()))
        except BaseException:
            self.leave()
            raise
        if expired:
            self.leave()
        return expired

    def expire(self) -> None:
        """The deadline passed before this run was launched: only stored calls are answered."""
        self.run.unwant_all()
        self.run.close()

    def ordered(self, timeout: float | None) -> tuple[list, TimeoutError | None, Any]:
        """The results in input order, with a ``TimeoutError`` in the place of each call given
        up at the deadline; that error (or None); and the first exception in input order (or
        None). ``sync_parallel`` without ``return_exceptions`` raises the one, else the other."""
        run = self.run
        results, errors = run.results, run.errors
        if not (errors or run.open or run.dropped):  # all returned
            return [results[slot] for slot in run.positions], None, None
        out = []
        first_error = late = None
        for slot in run.positions:
            value = results[slot]
            if value is MISSING or value is CANCELLED:  # given up at the timeout
                if late is None:
                    late = TimeoutError(f"{run.fn.name}: calls still running after "
                                        f"timeout={timeout} s were cancelled")
                value = late
            elif first_error is None and slot in errors:
                first_error = value
            out.append(value)
        return out, late, first_error

    def leave(self) -> None:
        """The sync caller stops waiting: let go of its calls; one still wanted by another run
        goes on, driven by the collector."""
        run = self.run
        run.unwant_all()
        if run.running:
            from .futures import collector

            collector().adopt(run, launched=True)
        else:
            run.close()
