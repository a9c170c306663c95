"""Which processes hold a lease, and whether they make progress: for taking over a lease held
by a stopped process (see :mod:`pythagoras_p2p.store.leases`).

Leases are open-file-description locks, and for those the kernel names no holder: ``F_OFD_GETLK``
and ``/proc/locks`` give pid -1. But ``/proc/PID/fdinfo/FD`` lists the locks held through
descriptor FD of process PID. So the processes that have a lease file open are found once by a
walk of ``/proc/*/fd`` (a few milliseconds; again at most every :data:`RESCAN_EVERY` seconds,
when a lease's holder is not among those known), and a lease's holder is then found by reading
the ``fdinfo`` of their descriptors of that file. A holder this process cannot see (another
user's process, another PID namespace, a system without ``/proc``) is never taken over from:
its lease is waited for, as before.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..stalls import StallWatch

__all__ = ["Holders", "RESCAN_EVERY"]

#: Seconds between two walks of ``/proc`` for the processes that have a lease file open.
RESCAN_EVERY = 5.0
_FRESH = 0.1  # seconds a process's list of locks, or its state, is reused for other leases


class Holders:
    """The holders of leases, and which of them are stalled; used by one thread at a time."""

    def __init__(self, paths: list[Path]):
        self._index = {os.fspath(p): i for i, p in enumerate(paths)}
        self._fds: dict[int, list[tuple[int, int]]] = {}  # pid -> [(fd, index of its file)]
        self._scanned = float("-inf")
        self._locks: dict[tuple[int, int], tuple[float, list]] = {}  # (pid, fd) -> (read at, locks)
        self._stalls = StallWatch(fresh=_FRESH)

    def stalled(self, file: int, offset: int) -> bool:
        """Whether the lease on byte ``offset`` of lock file ``file`` (its index in ``paths``)
        is held, and every process holding it has been stalled (see :mod:`pythagoras_p2p.stalls`)."""
        pids = self._holders(file, offset)
        verdicts = [self._stalls.stalled(pid) for pid in pids]  # each one looked at
        return bool(verdicts) and all(verdicts)

    def _holders(self, file: int, offset: int) -> list[int]:
        found = self._look(file, offset)
        if not found and time.monotonic() - self._scanned >= RESCAN_EVERY:
            self._scan()
            found = self._look(file, offset)
        return found

    def _look(self, file: int, offset: int) -> list[int]:
        now = time.monotonic()
        found = []
        for pid, fds in self._fds.items():
            for fd, index in fds:
                if index == file and any(s <= offset <= e for s, e in self._write_locks(pid, fd, now)):
                    found.append(pid)
                    break
        return found

    def _write_locks(self, pid: int, fd: int, now: float) -> list[tuple[int, int]]:
        """The byte ranges (first, last) write-locked through descriptor ``fd`` of ``pid``."""
        cached = self._locks.get((pid, fd))
        if cached is not None and now - cached[0] < _FRESH:
            return cached[1]
        locks = []
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    # lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:2146902 123 123 (waiters: "->")
                    if line.startswith("lock:") and "->" not in line and " WRITE " in line:
                        first, last = line.split()[-2:]
                        locks.append((int(first), (1 << 63) if last == "EOF" else int(last)))
        except (OSError, ValueError):
            pass
        self._locks[(pid, fd)] = (now, locks)
        return locks

    def _scan(self) -> None:
        """Find the processes (other than this one) that have a lease file open."""
        self._scanned = time.monotonic()
        self._fds.clear()
        self._locks.clear()
        me = os.getpid()
        try:
            entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
        except OSError:
            return
        for name in entries:
            pid = int(name)
            if pid == me:
                continue
            try:
                fds = list(os.scandir(f"/proc/{name}/fd"))
            except OSError:  # gone, or another user's
                continue
            for entry in fds:
                try:
                    index = self._index.get(os.readlink(entry.path))
                except OSError:
                    continue
                if index is not None:
                    self._fds.setdefault(pid, []).append((int(entry.name), index))
        self._stalls.keep_only(self._fds)

