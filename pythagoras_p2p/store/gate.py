"""The gate every transaction of a store passes in this process: many at once, or a map resize
(or a fork) alone."""

from __future__ import annotations

import threading

__all__ = ["Gate"]


class Gate:
    """Lets many transactions of this process run at once, and a map resize (or a fork) run alone.

    It can also make new transactions wait for a moment without waiting for running ones: with
    py-lmdb 3.0, aborting a write transaction waits for a moment when no read transaction of this
    process runs, which two threads reading in turn may never leave it.
    """

    __slots__ = ("_cond", "_inside", "_closed", "_exclusive")

    # A transaction that starts takes no lock while the gate is open (the hit path starts one per
    # call): it appends to ``_inside`` — one item per running transaction; ``list.append`` and
    # ``list.pop`` are atomic — and only then looks at ``_closed``. Whoever closes the gate sets
    # ``_closed`` and only then counts ``_inside``. So either the newcomer sees the gate closed
    # (and steps back to wait), or the closer counts it (and waits for it to leave).

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside: list = []
        self._closed = 0
        self._exclusive = threading.Lock()

    def enter(self) -> None:
        self._inside.append(None)
        if self._closed:
            self.leave()
            with self._cond:
                while self._closed:
                    self._cond.wait()
                self._inside.append(None)

    def leave(self) -> None:
        self._inside.pop()
        if self._closed:
            with self._cond:
                self._cond.notify_all()

    def close(self) -> None:
        """Make new transactions wait until :meth:`open`; running ones go on."""
        with self._cond:
            self._closed += 1

    def open(self) -> None:
        with self._cond:
            self._closed -= 1
            if not self._closed:
                self._cond.notify_all()

    def hold(self) -> None:
        """Wait until no transaction runs, and keep new ones waiting until :meth:`release`."""
        self._exclusive.acquire()
        self.close()
        with self._cond:
            while self._inside:
                self._cond.wait(0.01)  # a leaver that saw the gate open notifies no one

    def release(self) -> None:
        self.open()
        self._exclusive.release()

    def resize(self, action) -> None:
        self.hold()
        try:
            action()
        finally:
            self.release()
