"""A fair share between teammates: the calls queued at a node are served caller by caller.

Each client keeps a bounded window of calls in flight per node, but one teammate running four
client processes, or calls of a minute each, would still fill the node's workers before a
colleague's short calls. So a node keeps the calls it cannot start yet in one queue per caller
(per connection: a client process) and starts them by *deficit round robin* weighted by their
durations: each turn a caller is credited as much time as the costliest caller's call takes,
and starts calls while its credit covers them (a caller of 0.2 s calls starts five for another's
one of 1 s). Durations are learned per caller from its calls that ended here.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FairShare"]

_KEEP_IDLE = 64  # callers remembered (for status) once they have nothing here


@dataclass
class _Caller:
    queue: deque = field(default_factory=deque)  # (call, task)
    deficit: float = 0.0
    mean: float | None = None  # seconds its calls took here, smoothed
    running: int = 0
    done: int = 0

    def cost(self, default: float) -> float:
        return max(1e-3, self.mean if self.mean is not None else default)


class FairShare:
    """Calls waiting for a worker, by caller; :meth:`pop` gives the next to start."""

    def __init__(self) -> None:
        self._callers: OrderedDict[bytes, _Caller] = OrderedDict()
        self._ring: deque[bytes] = deque()  # callers with queued calls, in turn order
        self._where: dict[bytes, bytes] = {}  # queued call -> its caller
        self.mean: float | None = None  # any caller's calls, smoothed: a newcomer's cost

    def __len__(self) -> int:
        return len(self._where)

    def _caller(self, ident: bytes) -> _Caller:
        caller = self._callers.get(ident)
        if caller is None:
            caller = self._callers[ident] = _Caller()
            while len(self._callers) > _KEEP_IDLE:
                old = next((k for k, c in self._callers.items() if not c.queue and not c.running), None)
                if old is None:
                    break
                del self._callers[old]
        return caller

    def push(self, ident: bytes, call: bytes, task: Any) -> None:
        caller = self._caller(ident)
        if not caller.queue:
            self._ring.append(ident)
        caller.queue.append((call, task))
        self._where[call] = ident

    def pop(self) -> tuple[bytes, bytes, Any] | None:
        """``(caller, call, task)`` to start now, or None when nothing waits."""
        if not self._ring:
            return None
        default = self.mean if self.mean is not None else 1.0
        quantum = max(self._callers[i].cost(default) for i in self._ring)
        while self._ring:
            ident = self._ring[0]
            caller = self._callers[ident]
            cost = caller.cost(default)
            if caller.deficit + 1e-9 >= cost:
                caller.deficit -= cost
                call, task = caller.queue.popleft()
                del self._where[call]
                caller.running += 1
                if not caller.queue:
                    self._ring.popleft()
                    caller.deficit = 0.0  # credit is not saved up while idle
                return ident, call, task
            caller.deficit += quantum
            self._ring.rotate(-1)
        return None  # pragma: no cover - a caller in the ring always has a call queued

    def remove(self, call: bytes) -> bool:
        """Drop a queued call (cancelled, or handed back); whether it was queued."""
        ident = self._where.pop(call, None)
        if ident is None:
            return False
        caller = self._callers[ident]
        caller.queue = deque(item for item in caller.queue if item[0] != call)
        if not caller.queue:
            self._ring.remove(ident)
            caller.deficit = 0.0
        return True

    def take_all(self) -> list[bytes]:
        """Every queued call, dropped from the queue (the node hands them back)."""
        calls = list(self._where)
        for call in calls:
            self.remove(call)
        return calls

    def ended(self, ident: bytes, duration: float | None) -> None:
        """A call started for ``ident`` ended (``duration``: seconds it ran, if known)."""
        caller = self._callers.get(ident)
        if caller is None:
            return
        caller.running = max(0, caller.running - 1)
        caller.done += 1
        if isinstance(duration, (int, float)) and duration >= 0:
            caller.mean = duration if caller.mean is None else 0.8 * caller.mean + 0.2 * duration
            self.mean = duration if self.mean is None else 0.8 * self.mean + 0.2 * duration

    def rows(self) -> list[dict]:
        """Per caller serving now: running and queued calls, calls done (``status``)."""
        return [{"caller": ident.hex()[-8:], "running": c.running, "queued": len(c.queue),
                 "done": c.done}
                for ident, c in self._callers.items() if c.running or c.queue]
