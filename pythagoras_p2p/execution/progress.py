"""A one-line progress bar for ``sync_parallel``, drawn on stderr only when it is a terminal."""

from __future__ import annotations

import sys
import time

from ..defaults import PROGRESS_REDRAW_EVERY as _REDRAW_EVERY

__all__ = ["ProgressBar"]

_WIDTH = 30


class ProgressBar:
    """``name  [#####.....]  37/100  1.2s`` (``name  37 done  1.2s`` while the total is not
    known: calls from a generator); a no-op when disabled or when stderr is not a TTY."""

    def __init__(self, name: str, total: int | None, done: int = 0, *,
                 enabled: bool | None = None):
        stream = sys.stderr
        if enabled is None:
            enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.enabled = enabled and (total is None or done < total)
        self.name, self.total, self.done = name, total, done
        self.stream = stream
        self.started = time.monotonic()
        self._drawn = 0.0
        if self.enabled:
            self._draw()

    def advance(self, n: int) -> None:
        self.done += n
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
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
