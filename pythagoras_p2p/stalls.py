"""Whether a process makes progress: one stopped (SIGSTOP, a debugger) is *stalled*.

A worker or a lease holder that is stopped keeps whatever waits on it waiting forever: a call
sent to it never returns, a lease it holds is never let go. Time alone cannot tell such a process
from a busy one (a call may rightly run for hours), and a heartbeat thread cannot either: a call
in native code that holds the GIL for minutes starves the thread as surely as SIGSTOP does. The
kernel can: ``/proc/PID/stat`` says whether a process is stopped (``T``, or ``t`` stopped by a
tracer) and how much processor time it has used. A process is stalled when every look at it for
:data:`STALLED_AFTER` seconds found it stopped and its processor time did not move (a process
traced by ``strace`` is stopped at each system call, but between them it runs). A process
that is merely slow, sleeping, or waiting for input is never stalled.

Each look reads one small file (~10 µs), and only processes that something waits on are looked
at, at most every :data:`STALL_CHECK_EVERY` seconds. Linux only: elsewhere nothing is ever stalled.
"""

from __future__ import annotations

import time

from .defaults import STALL_CHECK_EVERY, STALLED_AFTER

__all__ = ["STALLED_AFTER", "STALL_CHECK_EVERY", "StallWatch", "process_state"]

_STOPPED = ("T", "t")


def process_state(pid: int) -> tuple[str, int, int] | None:
    """``(state letter, processor ticks used, start time)`` of ``pid``, or None if it is gone
    (or this system has no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2:].split()  # the name may hold spaces and parentheses
    return fields[0].decode(), int(fields[11]) + int(fields[12]), int(fields[19])


class StallWatch:
    """Looks at processes and says which are stalled; one per waiter, called from one thread."""

    def __init__(self, after: float = STALLED_AFTER, *, fresh: float = 0.0):
        self.after = after
        self.fresh = fresh  # a verdict younger than this (seconds) is given again without a look
        self._since: dict[int, tuple[float, int, int]] = {}  # pid -> (first seen stopped, ticks, start)
        self._verdicts: dict[int, tuple[float, bool]] = {}  # pid -> (when, stalled)

    def stalled(self, pid: int, now: float | None = None) -> bool:
        """Look at ``pid`` now: True once it has been stopped, without using the processor, at
        every look for :attr:`after` seconds (a process that is gone is not stalled: whatever
        it held, the kernel has let go)."""
        now = time.monotonic() if now is None else now
        if self.fresh:
            verdict = self._verdicts.get(pid)
            if verdict is not None and now - verdict[0] < self.fresh:
                return verdict[1]
        stalled = self._look(pid, now)
        if self.fresh:
            self._verdicts[pid] = (now, stalled)
        return stalled

    def _look(self, pid: int, now: float) -> bool:
        state = process_state(pid)
        if state is None or state[0] not in _STOPPED:
            self._since.pop(pid, None)
            return False
        seen = self._since.get(pid)
        if seen is None or seen[1] != state[1] or seen[2] != state[2]:
            self._since[pid] = (now, state[1], state[2])
            return False
        return now - seen[0] >= self.after

    def forget(self, pid: int) -> None:
        self._since.pop(pid, None)
        self._verdicts.pop(pid, None)

    def keep_only(self, pids) -> None:
        """Forget every process but ``pids`` (those no longer waited on)."""
        for table in (self._since, self._verdicts):
            for pid in [p for p in table if p not in pids]:
                del table[pid]


def check_every() -> float:
    """Seconds between looks at a process something waits on."""
    return min(STALL_CHECK_EVERY, STALLED_AFTER / 2)
