"""What a node tells ``pythagoras-node dashboard`` beyond its heartbeat facts: the runs its
callers say they are in (done of total, failed), and the last calls that failed here.

A swarm client adds its runs to the ``ping`` it sends each node about once a second while any
run is open (``caller``: who it is, for people; ``runs``: one entry per open ``sync_parallel``
or ``async_parallel``, see :func:`pythagoras_p2p.execution.progress.open_runs`). A node of an
earlier release ignores those fields, and a client of one sends none: nothing else changes.
What a client said is shown while it keeps saying it (:data:`FORGET_AFTER`).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any

from pythagoras_p2p.execution.outcomes import Crashed, Failed

__all__ = ["Reports", "FORGET_AFTER"]

#: Seconds after which a caller's runs it stopped reporting are no longer shown.
FORGET_AFTER = 3.0
_CALLERS = 256  # connections remembered at most
_RUNS = 64  # runs of one caller kept at most
_FAILURES = 20  # failed calls kept
_TRACEBACK = 6000  # characters of a traceback kept (its end: where it was raised)


class Reports:
    """Runs reported by callers (by connection), and the calls that failed here lately."""

    def __init__(self) -> None:
        self._callers: OrderedDict[bytes, tuple[float, str, list[dict]]] = OrderedDict()
        self.failures: deque[dict] = deque(maxlen=_FAILURES)

    def heard(self, ident: bytes, caller: Any, runs: Any) -> None:
        """A ``ping`` from ``ident`` carried these fields (either may be missing or malformed:
        what does not parse is left out, never refused)."""
        if caller is None and runs is None:
            return
        name = caller[:120] if isinstance(caller, str) else ""
        kept = [run for run in (_run(r) for r in runs[:_RUNS]) if run is not None] \
            if isinstance(runs, list) else []
        self._callers[ident] = (time.monotonic(), name, kept)
        self._callers.move_to_end(ident)
        while len(self._callers) > _CALLERS:
            self._callers.popitem(last=False)

    def names(self) -> dict[str, str]:
        """Who each caller is, by the short id ``status`` shows (its connection's last 8 hex)."""
        return {ident.hex()[-8:]: name for ident, (_, name, _) in self._callers.items() if name}

    def runs(self) -> list[dict]:
        """The runs reported within the last :data:`FORGET_AFTER` seconds, each with its caller."""
        now = time.monotonic()
        out = []
        for ident, (at, name, runs) in list(self._callers.items()):
            if now - at > FORGET_AFTER:
                del self._callers[ident]
                continue
            out += [{**run, "caller": ident.hex()[-8:], "who": name} for run in runs]
        return out

    def ended(self, node_id: str, label: str, outcome: Any) -> None:
        """A call run here ended: kept when it raised, or crashed its worker every time."""
        if not isinstance(outcome, (Failed, Crashed)):
            return
        traceback = getattr(outcome, "traceback", "") or ""
        self.failures.append({
            "t": round(time.time(), 1), "node": node_id, "call": label[:200],
            "error": getattr(outcome, "type_name", "crashed"),
            "message": str(getattr(outcome, "message", ""))[:1000],
            "traceback": traceback[-_TRACEBACK:], "where": getattr(outcome, "where", "") or "",
        })


def _run(entry: Any) -> dict | None:
    """One run as a caller reported it, checked field by field, or None."""
    if not isinstance(entry, dict):
        return None
    run, fn = entry.get("run"), entry.get("function")
    total = entry.get("total")
    counts = [entry.get(k, 0) for k in ("done", "failed")]
    elapsed = entry.get("elapsed", 0.0)
    if not (isinstance(run, str) and isinstance(fn, str)
            and (total is None or _count(total)) and all(map(_count, counts))
            and isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool)):
        return None
    return {"run": run[:32], "function": fn[:200], "total": total, "done": counts[0],
            "failed": counts[1], "elapsed": round(max(0.0, float(elapsed)), 1),
            "ended": entry.get("ended") is True}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
