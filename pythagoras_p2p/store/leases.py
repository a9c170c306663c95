"""Which calls of a home are being computed, by any of its processes: per-call leases.

A process that decides to compute a missed call first takes the call's *lease*, and holds it
until the result is committed to the store (or the call failed). Another process of the home
that misses the same call meanwhile finds the lease taken and waits for the result instead of
computing it again; when the lease is let go it finds the result, or, if the holder failed or
died, takes the lease and computes the call itself. So six processes running the same calls
execute each of them once.

A lease is a write lock on one byte of one of the :data:`SHARDS` files of ``store/leases/``, the
file and the offset taken from the call address (one of 2^62), like the holds of
:mod:`pythagoras_p2p.store.holds`: an open-file-description
lock, seen by every process of the home and released by the kernel when its holder dies, so a
killed process holds nothing. The kernel keeps a file's locks in one list that every lock
operation walks, so a process feeding its workers holds its few hundred leases spread over many
files: a lock operation then costs ~2 µs instead of ~9 µs. Two calls sharing a byte only make one
wait for the other: a waiter always reads the store, never trusts the lease, so a collision
never gives a wrong result.

Within a process one descriptor holds every lease, and each lease has an *owner* (a batch of
tasks, one plain call): two threads, or two batches, of one process that want the same call
see each other's lease here, as other processes see it in the kernel.

A process alone on its home does not need the kernel to tell it apart from others, and a lock
operation per call is a fifth of the cost of a trivial call fed to a worker. So every process
that uses leases marks its presence (a read lock on the *presence* byte of
``store/leases/presence.lock``) and holds the *company* byte shared; a worker pool that finds
itself alone turns its hold on the company byte into a write lock (which only succeeds when no
other process holds it) and from then on keeps its leases in this process only: it is *solo*. A
process that arrives marks its presence first, then waits for the company byte; the solo
process looks for others' presence with every chunk of tasks it sends and every
:data:`WATCH_EVERY` while it waits for its workers, and when it finds one it takes in the kernel
the leases it kept to itself, then lets the company byte go shared again — so the newcomer sees
every lease before it takes any. A solo process that holds no lease any more stops being solo.
A newcomer waits at most :data:`JOIN_WAIT` for a solo process that does not answer (one stopped
with SIGSTOP): it may then compute a call that one is computing too, never a wrong result.

A lease held by a process that makes no progress — stopped with SIGSTOP, a frozen laptop's
process — is *taken over*: a waiter that has waited for :func:`~pythagoras_p2p.stalls.check_every`
looks at the holder (found in ``/proc``, see :mod:`.lease_holders`) at that interval, and once the
holder has been stopped for :data:`~pythagoras_p2p.defaults.STALLED_AFTER` seconds it takes the
call's byte of ``over.lock`` instead (the stopped holder's lock cannot be taken from it) and
computes the call. Other waiters then wait for it as for any holder; if it stalls too, the next
one computes the call without a lease. A holder that runs, however slowly, keeps its lease. The
stopped holder, if it is continued, finishes its copy of the call: the call ran twice and its
result is stored again over the first, never a wrong one.

Who takes the lease: the caller's process, never a worker, because the caller commits the
results its workers send back. A plain call ``f(x=1)`` takes it before running ``f`` here; the
worker pool of the embedded default takes it as it sends a task to a worker (and sets aside
tasks leased elsewhere, re-checking them with a growing delay while the others run). A call
nested in a worker never *waits* for a lease: the holder may be the worker's own caller, waiting
for this very worker; it takes a free lease and otherwise computes the call.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..defaults import LEASE_FIRST_DELAY as FIRST_DELAY
from ..defaults import LEASE_JOIN_WAIT as JOIN_WAIT
from ..defaults import LEASE_MAX_DELAY as MAX_DELAY
from ..defaults import LEASE_WATCH_EVERY as WATCH_EVERY
from ..stalls import check_every
from .holds import LockFile
from .lease_holders import Holders

__all__ = ["Leases", "leases_of", "FIRST_DELAY", "MAX_DELAY"]

log = logging.getLogger(__name__)

SHARDS = 64  # lock files the leases of a home are spread over
_PRESENCE, _COMPANY = 0, 1  # the two bytes of presence.lock
_OFFSET = (1 << 56) - 1


class Leases:
    """This process's leases on the calls of one home."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(exist_ok=True)
        except OSError:
            pass  # opening a lock file then says what is wrong, with the fix
        self.files = [LockFile(self.folder / f"{shard:02x}.lock") for shard in range(SHARDS)]
        self.presence = LockFile(self.folder / "presence.lock")
        self.over = LockFile(self.folder / "over.lock")  # leases taken over from stalled holders
        self._reset()

    def _set(self, key: int, kind: int) -> bool:
        """Lock or unlock the byte of the call whose :func:`_key` is ``key``."""
        return self.files[(key >> 56) % SHARDS].set(kind, key & _OFFSET, wait=False)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[int, object] = {}  # key of a call -> who in this process holds it
        self._private: set[int] = set()  # keys taken while solo: not locked in the kernel
        self._over: dict[int, bool] = {}  # keys taken over: True if locked in over.lock
        self._looked: dict[int, float] = {}  # key waited for -> when its holder was looked at
        self._looking = threading.Lock()  # for _holders, never held with _lock
        self._holders: Holders | None = None
        self._joined = False  # presence marked and the company byte held
        self.solo = False  # the company byte held exclusively: no other process uses leases
        self._watched = 0.0

    def take(self, call: bytes, owner: object) -> bool:
        """Take the lease of ``call`` for ``owner`` without waiting; True if ``owner`` holds it."""
        with self._lock:
            self._join()
            return self._take(call, owner)

    def take_each(self, wanted: list[tuple[bytes, object]]) -> list[bool]:
        """:meth:`take` for each ``(call, owner)``, in one go: the way a worker pool takes its
        leases, which keeps them to this process while no other process uses the home."""
        with self._lock:
            self._join()
            if self.solo:
                self._watch()
            elif not self._owners:
                self.solo = self.presence.set(fcntl.F_WRLCK, _COMPANY, wait=False)
            return [self._take(call, owner) for call, owner in wanted]

    def watch(self) -> None:
        """For a solo pool waiting on its workers: look for another process of the home, at
        most every :data:`WATCH_EVERY`."""
        if self.solo and time.monotonic() - self._watched >= WATCH_EVERY:
            with self._lock:
                if self.solo:
                    self._watch()

    def _take(self, call: bytes, owner: object) -> bool:
        key = _key(call)
        holder = self._owners.get(key)
        if holder is not None:
            return holder is owner
        if self.solo:
            self._private.add(key)
        elif not self._set(key, fcntl.F_WRLCK):
            return False
        self._owners[key] = owner
        return True

    def release(self, calls: list[bytes], owner: object) -> None:
        """Let go of the leases ``owner`` holds among ``calls`` (the others are left alone)."""
        with self._lock:
            for call in calls:
                key = _key(call)
                if self._owners.get(key) is owner:
                    self._let_go(key)
            self._settle()

    def release_all(self, owner: object) -> None:
        """Let go of every lease ``owner`` holds (its calls are over, or were cancelled)."""
        with self._lock:
            for key in [k for k, o in self._owners.items() if o is owner]:
                self._let_go(key)
            self._settle()

    def _let_go(self, key: int) -> None:
        del self._owners[key]
        if key in self._over:
            if self._over.pop(key):
                self.over.set(fcntl.F_UNLCK, key & _OFFSET, wait=False)
        elif key in self._private:
            self._private.discard(key)
        else:
            self._set(key, fcntl.F_UNLCK)

    # ------------------------------------------------------------------ alone or not

    def _join(self) -> None:
        """Mark this process's presence and hold the company byte shared (once per process),
        waiting up to :data:`JOIN_WAIT` for a solo process to take its leases into the kernel."""
        if self._joined:
            return
        self.presence.set(fcntl.F_RDLCK, _PRESENCE, wait=False)
        deadline = time.monotonic() + JOIN_WAIT
        delay = FIRST_DELAY
        while not self.presence.set(fcntl.F_RDLCK, _COMPANY, wait=False):
            if time.monotonic() > deadline:
                log.warning("a process of %s keeps its leases to itself and does not answer; "
                            "going on (a call may run twice, its result stays right)", self.folder)
                break
            time.sleep(delay)
            delay = min(2 * delay, 0.016)
        self._joined = True

    def _watch(self) -> None:
        """Solo: if another process has marked its presence, stop being solo."""
        self._watched = time.monotonic()
        if self.presence.held_by_another(fcntl.F_WRLCK, _PRESENCE):
            self._share()

    def _settle(self) -> None:
        """Solo with no lease left: let others in (they would otherwise wait for a watch)."""
        if self.solo and not self._owners:
            self._share()

    def _share(self) -> None:
        """Take the leases kept to this process into the kernel, then the company byte shared:
        a newcomer, waiting for that byte, sees every one of them before it takes any."""
        for key in self._private:
            self._set(key, fcntl.F_WRLCK)  # free: no other process takes leases while we are solo
        self._private.clear()
        self.presence.set(fcntl.F_RDLCK, _COMPANY, wait=False)
        self.solo = False

    # ------------------------------------------------------------------ stalled holders

    def take_over(self, call: bytes, owner: object) -> bool:
        """For a waiter that has waited :func:`~pythagoras_p2p.stalls.check_every` or longer:
        take the lease of ``call`` for ``owner`` if it came free, or if its holder has been
        stalled (stopped) for :data:`~pythagoras_p2p.defaults.STALLED_AFTER` seconds. The
        holder is looked at every :func:`~pythagoras_p2p.stalls.check_every` at most."""
        key = _key(call)
        with self._lock:
            if key in self._owners or self.solo:  # held here: this process makes progress
                return self._take(call, owner)
            if self._set(key, fcntl.F_WRLCK):
                self._owners[key] = owner
                return True
            now = time.monotonic()
            if now - self._looked.get(key, float("-inf")) < check_every():
                return False
            self._looked[key] = now
            if len(self._looked) > 4096:  # keys no longer waited for
                self._looked = {k: t for k, t in self._looked.items() if now - t < 60}
        offset = key & _OFFSET
        if not self._stalled((key >> 56) % SHARDS, offset):
            return False
        with self._lock:
            if key in self._owners:
                return self._owners[key] is owner
            if self.over.set(fcntl.F_WRLCK, offset, wait=False):
                self._over[key] = True
            elif self._stalled(SHARDS, offset):  # the one that took it over is stopped too
                self._over[key] = False
            else:
                return False
            self._owners[key] = owner
            self._looked.pop(key, None)
        log.warning("the process computing call %s makes no progress (it is stopped); "
                    "computing the call here", call.hex()[:16])
        return True

    def _stalled(self, file: int, offset: int) -> bool:
        """Whether the byte ``offset`` of lock file ``file`` (a shard's index, or
        :data:`SHARDS` for ``over.lock``) is held by processes that are all stalled."""
        with self._looking:
            if self._holders is None:
                self._holders = Holders([f.path for f in self.files] + [self.over.path])
            return self._holders.stalled(file, offset)

    def claim(self, call: bytes, owner: object, find: Callable[[], Any], missing: Any, *,
              wait: bool) -> Any:
        """Take the lease of ``call`` for ``owner``, or the result another process stored.

        ``find()`` reads the result (``missing`` when there is none). Returns the result if one
        is stored; otherwise ``missing``, with the lease held, or not held when ``wait`` is
        False and another holds it. Waiting looks again after 1 ms, then twice as long each
        time, up to :data:`MAX_DELAY`.
        """
        delay = FIRST_DELAY
        stalls_from = time.monotonic() + check_every()
        while True:
            if self.take(call, owner) or (wait and time.monotonic() >= stalls_from
                                          and self.take_over(call, owner)):
                found = find()  # the holder before us commits its result before letting go
                if found is not missing:
                    self.release([call], owner)
                return found
            found = find()
            if found is not missing or not wait:
                return found
            time.sleep(delay)
            delay = min(2 * delay, MAX_DELAY)

    def _forget_after_fork(self) -> None:
        """In a forked child: it holds nothing (the parent's leases stay the parent's)."""
        for file in [*self.files, self.presence, self.over]:
            file.forget_after_fork()
        self._reset()


def _key(call: bytes) -> int:
    """Which file (the top byte) and which byte of it (the other seven) stand for ``call``."""
    return int.from_bytes(call[:8], "little")


_BY_PATH: dict[str, Leases] = {}
_BY_PATH_LOCK = threading.Lock()


def leases_of(store_path: Path) -> Leases:
    """The leases of this process on the home whose store is ``store_path`` (one per home, so
    two clouds of one home in one process see each other's)."""
    path = os.path.realpath(Path(store_path) / "leases")
    with _BY_PATH_LOCK:
        leases = _BY_PATH.get(path)
        if leases is None:
            leases = _BY_PATH[path] = Leases(Path(path))
        return leases


def _after_fork_in_child() -> None:
    global _BY_PATH_LOCK
    _BY_PATH_LOCK = threading.Lock()  # another thread may have held it at the fork
    for leases in _BY_PATH.values():
        leases._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
