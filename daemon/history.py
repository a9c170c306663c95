"""The last minutes of the swarm as this node sees it, for ``pythagoras-node dashboard``'s plots.

Once a second the node sums what it knows of every member (itself, and each peer from its last
heartbeat): calls answered, calls run, hits, and workers busy. Counters are cumulative per node,
so each sample holds what changed since the one before, node by node (a node that restarted
counts from zero again; one that left stops counting). Kept in memory only, for
:data:`KEEP_SECONDS`: a bounded deque, about 60 kB.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["History", "KEEP_SECONDS"]

#: How far back the plots go (seconds).
KEEP_SECONDS = 15 * 60

#: The names of a sample's fields, in order (what ``status`` sends as ``series.fields``).
FIELDS = ("t", "calls", "done", "hits", "busy", "workers", "nodes")


class History:
    """Samples of the swarm: ``(t, calls, done, hits, busy, workers, nodes)`` with ``t`` in
    seconds since the epoch, ``calls``/``done``/``hits`` counted since the sample before (calls
    sent to the nodes, calls run to the end, calls answered from a store), ``busy``/``workers``
    summed over the members and ``nodes`` how many there were."""

    def __init__(self, keep: float = KEEP_SECONDS, every: float = 1.0):
        self.every = every
        self.samples: deque[tuple] = deque(maxlen=max(2, int(keep / max(every, 0.1)) + 1))
        self._last: dict[str, tuple[int, int, int]] = {}  # node id -> (asked, done, hits) seen
        self._at = -1e18  # when the last sample was taken (seconds since the epoch)

    def sample(self, rows: list[dict], now: float | None = None) -> bool:
        """Add one sample from ``status`` rows (this node and its live peers), at most one per
        ``every`` seconds; whether one was added."""
        now = time.time() if now is None else now
        if 0 <= now - self._at < self.every * 0.9:  # (a clock set back samples at once)
            return False
        self._at = now
        calls = done = hits = busy = workers = 0
        seen: dict[str, tuple[int, int, int]] = {}
        for row in rows:
            counts = (_int(row.get("asked")), _int(row.get("tasks_done")), _int(row.get("hits")))
            node = str(row.get("id"))
            before = self._last.get(node)
            seen[node] = counts
            busy += _int(row.get("workers_busy"))
            workers += _int(row.get("workers_total"))
            if before is None:
                continue  # its first sample: what it counted before is not of these minutes
            d = [now_ - then if now_ >= then else now_ for now_, then in zip(counts, before, strict=True)]
            calls, done, hits = calls + d[0], done + d[1], hits + d[2]
        self._last = seen
        self.samples.append((round(now, 1), calls, done, hits, busy, workers, len(rows)))
        return True

    def since(self, after: float | None) -> list[tuple]:
        """The samples newer than ``after`` (every one kept when None), oldest first."""
        if after is None:
            return list(self.samples)
        out = []
        for sample in reversed(self.samples):
            if sample[0] <= after:
                break
            out.append(sample)
        out.reverse()
        return out


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
