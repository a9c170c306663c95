"""The calls a cloud's runs execute right now: a later run joins one instead of starting it again.

One :class:`InflightCalls` per cloud, made by the cloud and handed to each of its runs (see
:class:`~.interfaces.Collaborators`). It maps a call address to the run (and that run's slot)
executing it; the run registers its calls when it starts and lets go of each one as it is
resolved or given up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol

__all__ = ["InflightCalls", "Leader"]


class Leader(Protocol):
    """A run executing calls that other runs may join (a :class:`~.runs.CallRun`)."""

    def follow(self, slot: int, run: Leader, their_slot: int) -> bool:
        """``run`` wants ``slot`` too (its ``their_slot``); False once ``slot`` is resolved."""

    def resolve(self, slot: int, value: object, *, error: bool = False) -> None:
        """``slot`` has its result (or its exception)."""

    def unwant(self, slot: int) -> None:
        """One who wanted ``slot`` lets go of it."""


_NOBODY = (None, -1)


class InflightCalls:
    """Call address → ``(run, slot)`` executing it, for the runs of one cloud."""

    def __init__(self) -> None:
        self._calls: dict[bytes, tuple[Leader, int]] = {}
        self._lock = threading.Lock()

    def join_or_register(self, run: Leader, slots: Iterable[tuple[int, bytes]]
                         ) -> tuple[list[int], dict[int, tuple[Leader, int]]]:
        """For each ``(slot, call)`` of ``run``: join the run already executing ``call``, or
        register ``run`` as its executor. Returns the slots ``run`` executes itself, and the
        ``(leader, its slot)`` each joined slot follows."""
        own: list[int] = []
        leaders: dict[int, tuple[Leader, int]] = {}
        calls = self._calls
        with self._lock:
            for slot, call in slots:
                entry = calls.get(call)
                if entry is not None and entry[0].follow(entry[1], run, slot):
                    leaders[slot] = entry
                    continue
                calls[call] = (run, slot)
                own.append(slot)
        return own, leaders

    def leave(self, run: Leader, calls: Iterable[bytes]) -> None:
        """``run`` no longer executes ``calls``: later runs do not join them."""
        registered = self._calls
        with self._lock:
            for call in calls:
                if registered.get(call, _NOBODY)[0] is run:
                    del registered[call]

    def __len__(self) -> int:
        return len(self._calls)
