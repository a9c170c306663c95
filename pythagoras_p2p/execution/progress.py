"""A one-line progress bar for ``sync_parallel``, drawn on stderr only when it is a terminal;
and the runs open in this process, which a swarm client tells the nodes (``open_runs``) so
``pythagoras-node dashboard`` shows how far along each is."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import weakref
from typing import Any

from ..defaults import PROGRESS_REDRAW_EVERY as _REDRAW_EVERY

__all__ = ["ProgressBar", "open_runs"]

_WIDTH = 30
_ENDED_SHOWN = 3.0  # seconds a closed run is still reported (its last count reaches the nodes)
_bars: weakref.WeakSet = weakref.WeakSet()  # every bar not yet collected
_bars_lock = threading.Lock()
_numbers = itertools.count(1)


class ProgressBar:
    """``name  [#####.....]  37/100  1.2s`` (``name  37 done  1.2s`` while the total is not
    known: calls from a generator); a no-op when disabled or when stderr is not a TTY."""

    def __init__(self, name: str, total: int | None, done: int = 0, *,
                 enabled: bool | None = None, owner: Any = None):
        stream = sys.stderr
        if enabled is None:
            enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.enabled = enabled and (total is None or done < total)
        self.name, self.total, self.done = name, total, done
        self.failed = 0  # of the calls done, those that raised
        self.owner = owner  # whose runs: a cloud's Collaborators (see open_runs)
        self.ended: float | None = None  # when it was closed (monotonic)
        self.id = f"{os.getpid():x}.{next(_numbers)}"
        self.stream = stream
        self.started = time.monotonic()
        self._drawn = 0.0
        with _bars_lock:
            _bars.add(self)
        if self.enabled:
            self._draw()

    def advance(self, n: int, failed: int = 0) -> None:
        """``n`` more calls are done, ``failed`` of them with an exception."""
        self.done += n
        self.failed += failed
        if self.enabled and (time.monotonic() - self._drawn >= _REDRAW_EVERY
                             or self.done == self.total):
            self._draw()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        if self.total is None:
            self.stream.write(f"\r{self.name}  {self.done} done  {self._drawn - self.started:.1f}s")
            self.stream.flush()
            return
        filled = int(_WIDTH * self.done / self.total)
        line = (
            f"\r{self.name}  [{'#' * filled}{'.' * (_WIDTH - filled)}]  "
            f"{self.done}/{self.total}  {self._drawn - self.started:.1f}s"
        )
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.ended is None:
            self.ended = time.monotonic()
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False


def open_runs(owner: Any) -> list[dict]:
    """The runs of ``owner`` (a cloud's collaborators) open now, or closed moments ago: what a
    swarm client adds to its pings (see ``daemon/reports.py`` for how a node reads them)."""
    now = time.monotonic()
    with _bars_lock:
        bars = [bar for bar in _bars if bar.owner is owner
                and (bar.ended is None or now - bar.ended < _ENDED_SHOWN)]
    return [{"run": bar.id, "function": bar.name, "total": bar.total, "done": bar.done,
             "failed": bar.failed, "elapsed": round(now - bar.started, 1),
             "ended": bar.ended is not None} for bar in bars]
