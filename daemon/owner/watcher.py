"""How busy the owner keeps this machine: processor time used by processes that are not the node's.

Once a second the node reads the machine's busy time (``/proc/stat`` through psutil: user,
nice, system and interrupt time of every core) and the processor time of its own processes
(itself, its workers, its checker); the owner's load is the difference, in cores, smoothed over
a few seconds (an exponential mean) so a compiler's burst or a window opening does not pause
the node, and a build or a video call does. Processes a call started count as the node's too
(looked for only while something besides the node is busy: that walks every process). Each look reads one small file per process of the
node (some ten microseconds each): an idle node spends far less than a thousandth of a core on it.

Tests name the owner's processes instead (``PYTHAGORAS_TEST_OWNER_PIDS``: a file of pids, one
a line): then only those count, whatever else runs on the machine. Not a setting for users.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

__all__ = ["OwnerWatch", "SMOOTHING"]

#: Weight of the newest sample in the smoothed load: with one sample a second, a load that
#: starts now is seen at half its size after one second and three quarters after two.
SMOOTHING = 0.5
_TEST_PIDS = "PYTHAGORAS_TEST_OWNER_PIDS"
#: Cores of load beyond the node's own processes above which their descendants are looked for
#: too (processes a call started): a walk of every process, so only when something is busy.
_LOOK_AT_CHILDREN = 0.1


def _machine_busy() -> float:
    """Seconds of processor time every core spent running something, since boot."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def _descendants(pids: list[int]) -> list[int]:
    """Processes started by ``pids`` (the node's first: its workers' children included), not
    ``pids`` themselves."""
    import psutil

    try:
        found = psutil.Process(pids[0]).children(recursive=True)
    except (psutil.Error, IndexError):
        return []
    known = set(pids)
    return [p.pid for p in found if p.pid not in known]


class _Times:
    """Processor seconds used by a changing set of processes, since the last look."""

    def __init__(self, new_counts_whole: bool):
        self._procs: dict[int, psutil.Process] = {}
        self._seen: dict[int, float] = {}
        self._whole = new_counts_whole  # a process first seen now: all it used counts

    def delta(self, pids: Iterable[int]) -> float:
        import psutil

        used, seen = 0.0, {}
        for pid in pids:
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                t = proc.cpu_times()
            except (psutil.Error, OSError):
                self._procs.pop(pid, None)
                continue
            total = t.user + t.system
            before = self._seen.get(pid, 0.0 if self._whole else total)
            used += max(0.0, total - before)
            seen[pid] = total
        for gone in set(self._procs) - set(seen):
            del self._procs[gone]
        self._seen = seen
        return used


class OwnerWatch:
    """The owner's smoothed load in cores; :meth:`sample` once a second or so."""

    def __init__(self, own_pids: Callable[[], Iterable[int]]):
        self.own_pids = own_pids
        self.load = 0.0  # cores, smoothed
        self.last = 0.0  # cores, the latest sample
        self._test_pids = os.environ.get(_TEST_PIDS)
        self._own = _Times(new_counts_whole=True)
        self._owner = _Times(new_counts_whole=False)
        self._kids = _Times(new_counts_whole=True)
        self._at = time.monotonic()
        self._busy = 0.0 if self._test_pids else _machine_busy()
        self._own.delta(self.own_pids())

    def sample(self) -> float:
        """Take one sample; the smoothed load after it."""
        now = time.monotonic()
        elapsed = now - self._at
        if elapsed <= 0.05:
            return self.load
        self._at = now
        if self._test_pids:
            used = self._owner.delta(self._named())
        else:
            busy = _machine_busy()
            pids = list(self.own_pids())
            used = max(0.0, busy - self._busy - self._own.delta(pids))
            self._busy = busy
            if used / elapsed > _LOOK_AT_CHILDREN:  # the calls' own subprocesses are no owner's
                used = max(0.0, used - self._kids.delta(_descendants(pids)))
        self.last = used / elapsed
        self.load = SMOOTHING * self.last + (1 - SMOOTHING) * self.load
        return self.load

    def _named(self) -> list[int]:
        if self._test_pids is None:
            return []
        try:
            with open(self._test_pids) as f:
                return [int(line) for line in f if line.strip().isdigit()]
        except OSError:
            return []
