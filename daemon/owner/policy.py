"""Whether a node takes calls now, and why not: its owner's pause, the owner's load, the
battery, memory. Looked at once a second by the node's housekeeping.

A node that is *paused* answers new ``run`` requests with ``paused`` (the client places them
elsewhere and asks again later), hands the calls queued here back the same way, and lets the
running ones finish at low priority, or hands them back too with ``--preempt`` (their workers
are stopped; nothing of them is stored). It still answers lookups, keeps replicas and sends
values. ``status`` shows the state, why, and since when; pings carry it to the other nodes.

The battery sensor is psutil's; tests give a state through ``PYTHAGORAS_TEST_BATTERY`` (a file
holding ``battery`` or ``mains``), not a setting for users.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .manual import read_pause
from .watcher import OwnerWatch

__all__ = ["OwnerConfig", "Policy", "RESUME_AFTER", "on_battery"]

#: Seconds the owner's load must stay below the threshold before a node paused for it resumes.
RESUME_AFTER = 5.0
_TEST_BATTERY = "PYTHAGORAS_TEST_BATTERY"


@dataclass
class OwnerConfig:
    """How a node treats its machine's owner. These defaults are a server's (a node made in
    code); ``pythagoras-node start`` defaults to a laptop's: it yields to its owner, pauses on
    battery and keeps 2 GB free (see the CLI)."""

    low_priority: bool = True  # workers at nice 10 and idle I/O (--priority low|normal)
    yield_to_owner: bool = False  # pause while the owner's programs are busy (--yield-to-owner)
    owner_busy: float = 0.5  # cores of the owner's load that pause the node (--owner-busy)
    preempt: bool = False  # paused: hand running calls back too (--preempt)
    on_battery: str = "run"  # "pause" or "run" (--on-battery)
    keep_free: int = 0  # bytes of memory no call may start into (--keep-free)
    speculate: bool = True  # run clients' copies of stragglers on idle workers (--no-speculate)

    def as_dict(self) -> dict:
        return asdict(self)


def on_battery() -> bool:
    """Whether this machine runs on battery now (False when it has none or cannot tell)."""
    given = os.environ.get(_TEST_BATTERY)
    if given:
        try:
            return Path(given).read_text().strip() == "battery"
        except OSError:
            return False
    try:
        import psutil

        battery = psutil.sensors_battery()
    except Exception:  # no sensor support on this system
        return False
    return battery is not None and battery.power_plugged is False


def _available_memory() -> int:
    import psutil

    return psutil.virtual_memory().available


class Policy:
    """The node's state for its owner: :attr:`reason` is None while it takes calls."""

    def __init__(self, home: Path, config: OwnerConfig, own_pids: Callable[[], Iterable[int]]):
        self.home = Path(home)
        self.config = config
        self.watch = OwnerWatch(own_pids) if config.yield_to_owner else None
        self.reason: str | None = None  # why the node takes no call now
        self.since = time.time()  # when the current state began
        self.manual: dict | None = None
        self.available = _available_memory() if config.keep_free else None
        self._owner_busy = False
        self._calm_since: float | None = None
        self.look()

    @property
    def paused(self) -> bool:
        return self.reason is not None

    def look(self) -> bool:
        """Look at everything again; True when the state changed (paused or resumed)."""
        self.manual = read_pause(self.home)
        reason = self._why()
        changed = (reason is None) != (self.reason is None)
        if changed:
            self.since = time.time()
        self.reason = reason
        return changed

    def _why(self) -> str | None:
        if self.manual is not None:
            until = self.manual["until"]
            return "paused by its owner" + ("" if until is None else
                                            f" until {time.strftime('%H:%M', time.localtime(until))}")
        if self.watch is not None and self._busy_owner(self.watch):
            return f"owner busy ({self.watch.load:.1f} cores of other programs)"
        if self.config.on_battery == "pause" and on_battery():
            return "on battery"
        if self.config.keep_free:
            self.available = _available_memory()
            if self.available < self.config.keep_free:
                return (f"memory low ({_gb(self.available)} available, keeps "
                        f"{_gb(self.config.keep_free)} free)")
        return None

    def _busy_owner(self, watch: OwnerWatch) -> bool:
        """Busy once the smoothed load passes the threshold; calm again once it stayed below
        for :data:`RESUME_AFTER` seconds."""
        load = watch.sample()
        now = time.monotonic()
        if load > self.config.owner_busy:
            self._owner_busy, self._calm_since = True, None
        elif self._owner_busy:
            self._calm_since = self._calm_since or now
            if now - self._calm_since >= RESUME_AFTER:
                self._owner_busy = False
        return self._owner_busy

    def room_for(self, memory: float) -> str | None:
        """Why a call asking for ``memory`` bytes may not start now (None: it may)."""
        if not self.config.keep_free or not memory or self.available is None:
            return None
        if self.available < self.config.keep_free + memory:
            return (f"it asks for {_gb(memory)} of memory and this machine has "
                    f"{_gb(self.available)} available, keeping {_gb(self.config.keep_free)} free")
        return None

    def as_dict(self) -> dict:
        """What ``status`` shows: the state, why, since when, and every setting."""
        return {
            "state": "paused" if self.paused else "taking calls", "why": self.reason,
            "since": round(self.since, 1),
            "paused_until": (self.manual or {}).get("until"),
            "owner_load": None if self.watch is None else round(self.watch.load, 2),
            "available_memory": self.available,
            **self.config.as_dict(),
        }


def _gb(n: float) -> str:
    return f"{n / (1 << 30):.1f} GB"
