"""Requests handed to a loop's own thread from any other, and the pipe that wakes that loop.

The worker pool's supervisor, the swarm client's I/O loop and the node each own their sockets
or pipes on one thread; other threads never touch them but put a request in the loop's mailbox
and wake it. The loop polls :meth:`Mailbox.fileno` with its other descriptors, and when it is
readable drains it and serves the requests in order.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Mailbox"]


class Mailbox:
    """A loop's requests from other threads, and its wake-up pipe."""

    def __init__(self) -> None:
        self.requests: deque = deque()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        # Never a write to a descriptor close() closed (and reused). Reentrant: a SIGINT handler
        # run while this thread holds it may make a request.
        self._lock = threading.RLock()

    def fileno(self) -> int:
        """The descriptor the loop polls: readable once :meth:`wake` was called."""
        return self._read

    def put(self, request: Any, *, wake: bool = True) -> None:
        """Queue ``request`` for the loop (from any thread) and, unless told not to, wake it."""
        self.requests.append(request)
        if wake:
            self.wake()

    def wake(self) -> None:
        """Make the loop's poll return (a no-op once closed; one pending wake is enough)."""
        with self._lock:
            if self._write < 0:
                return
            try:
                os.write(self._write, b"x")
            except OSError:  # the pipe is full: a wake is pending already
                pass

    def drain(self) -> None:
        """On the loop's thread: consume the wakes, so the next poll waits again."""
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def serve(self, handle: Callable[[Any], bool]) -> bool:
        """On the loop's thread: ``handle`` every queued request in order; True as soon as one
        says the loop is to end (the rest stay queued)."""
        requests = self.requests
        while requests:
            if handle(requests.popleft()):
                return True
        return False

    def close(self) -> None:
        with self._lock:
            for fd in (self._read, self._write):
                if fd >= 0:
                    os.close(fd)
            self._read = self._write = -1
