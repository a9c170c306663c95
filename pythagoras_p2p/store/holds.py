"""Which transient argument copies of a store are in use, by any process of its home.

A large argument is kept in the store while the calls that read it run (a *transient* copy,
see :mod:`pythagoras_p2p.store.core`), and dropped when they end. Two callers may pass the same
value at once, from two processes or two threads: the copy is shared, and the first to finish
must not drop it under the other. So every caller *holds* the copies its calls read, and a copy
is dropped only by whoever can take it exclusively.

A hold is a read lock on one byte of ``store/transient.lock``, at an offset taken from the
value's address; dropping takes the write lock on that byte without waiting, so it fails while
anyone holds it. The locks are open-file-description locks (``F_OFD_SETLK``): shared by every
process of the home, never confused between threads or file descriptors of one process, and
released by the kernel when a process dies, so a killed caller holds nothing. Within a process
one lock per address is counted (each ``sync_parallel`` that holds it adds one). No thread
waits for a lock while holding this object's own lock, so two processes that each drop one
copy and hold the other's never wait for each other. Two addresses sharing a byte (1 in 2^56)
only make a drop wait for the next ``cache gc``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError

__all__ = ["Holds", "LockFile", "byte_of"]

_FLOCK = struct.Struct("@hhqqi4x")  # struct flock on Linux: type, whence, start, len, pid


def byte_of(address: bytes) -> int:
    """The byte of a lock file that stands for ``address`` (one of 2^56)."""
    return int.from_bytes(address[:7], "little")


class LockFile:
    """A lock file of a home, opened once per process, whose bytes carry OFD locks."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._pid = -1
        self._fd = -1

    def _file(self) -> int:
        if self._fd < 0:  # not open yet, or forgotten after a fork
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open {self.path} ({exc}); check that the store's "
                                 f"home is writable by this user") from None
            self._pid = os.getpid()
        return self._fd

    def set(self, kind: int, offset: int, *, wait: bool) -> bool:
        """Set lock ``kind`` (``F_RDLCK``, ``F_WRLCK``, ``F_UNLCK``) on one byte; False when
        another open file description holds a conflicting lock (and ``wait`` is False)."""
        command = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK
        try:
            fcntl.fcntl(self._file(), command, _FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):  # held by another
                return False
            raise
        return True

    def held_by_another(self, kind: int, offset: int) -> bool:
        """Whether another open file description holds a lock on byte ``offset`` that conflicts
        with one of ``kind``."""
        reply = fcntl.fcntl(self._file(), fcntl.F_OFD_GETLK, _FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))
        return _FLOCK.unpack(reply)[0] != fcntl.F_UNLCK

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited descriptor (the parent's keeps its locks)."""
        if self._fd >= 0 and self._pid != os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._pid = self._fd = -1


class Holds:
    """The holds of this process on the transient copies of one store."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = LockFile(self.path)
        self._reset()
        _ALL.add(self)

    def _reset(self) -> None:
        self._lock = threading.Condition()
        self._counts: dict[bytes, int] = {}  # held here, and how many times
        self._pending: set[bytes] = set()  # a thread here waits for the read lock
        self._taken: set[bytes] = set()  # being dropped by a thread here

    def _set(self, kind: int, address: bytes, *, wait: bool) -> bool:
        return self.file.set(kind, byte_of(address), wait=wait)

    def hold(self, address: bytes) -> None:
        """Hold ``address`` (waiting while someone drops it)."""
        with self._lock:
            while address in self._taken or address in self._pending:
                self._lock.wait()
            if address in self._counts:
                self._counts[address] += 1
                return
            self._pending.add(address)
        try:
            self._set(fcntl.F_RDLCK, address, wait=True)  # not under our lock: see above
        except BaseException:
            with self._lock:
                self._pending.discard(address)
                self._lock.notify_all()
            raise
        with self._lock:
            self._pending.discard(address)
            self._counts[address] = 1
            self._lock.notify_all()

    def release(self, address: bytes) -> bool:
        """Let go of one hold of ``address``; True when this process no longer holds it."""
        with self._lock:
            count = self._counts.get(address, 0)
            if count > 1:
                self._counts[address] = count - 1
                return False
            if count == 1:
                del self._counts[address]
                self._set(fcntl.F_UNLCK, address, wait=False)
            return address not in self._pending

    def take(self, address: bytes) -> bool:
        """Take ``address`` exclusively, to drop it, if nobody (here or elsewhere) holds it."""
        with self._lock:
            if address in self._counts or address in self._taken or address in self._pending:
                return False
            if not self._set(fcntl.F_WRLCK, address, wait=False):
                return False
            self._taken.add(address)
            return True

    def give_back(self, address: bytes) -> None:
        """End what :meth:`take` began."""
        with self._lock:
            self._taken.discard(address)
            self._set(fcntl.F_UNLCK, address, wait=False)
            self._lock.notify_all()

    @contextmanager
    def taking(self, addresses: Iterable[bytes]) -> Iterator[set[bytes]]:
        """The addresses among ``addresses`` that nobody holds, taken for the block (to drop
        them): no caller can hold one until the block ends."""
        taken = {a for a in addresses if self.take(a)}
        try:
            yield taken
        finally:
            for address in taken:
                self.give_back(address)

    def _forget_after_fork(self) -> None:
        """In a forked child: it holds nothing (the parent's holds stay the parent's)."""
        self.file.forget_after_fork()
        self._reset()


_ALL: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for holds in list(_ALL):
        holds._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
