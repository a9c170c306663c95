"""The LMDB environment under a store: opening it, map growth, reader slots, fork safety, the gate.

:class:`StoreEnvironment` opens ``home/store`` with its named tables (``values``, ``functions``,
``info``, and the results' ``log`` and ``index``: :mod:`.log`), checks the store format
(converting a store of format 2 once), and runs every read and write transaction of this
process through its :class:`~.gate.Gate`. :class:`pythagoras_p2p.store.core.Store` holds one and
builds values, results and functions on it; what maintenance reads and deletes is :mod:`.upkeep`.

Many processes open one store at once (user processes, workers, the node); reads take one short
read transaction and no lock, writes are LMDB transactions serialized by LMDB's own lock.

Durability: ``sync=True, metasync=False``. A commit writes and fdatasyncs its data pages and
writes the meta page without a sync of its own. A crash of any process loses nothing committed;
a power loss can undo at most the last transaction but cannot corrupt the environment.

The map starts small and doubles on demand up to the cap less a headroom; the headroom is kept for
``pythagoras-node cache gc``. Reaching it, or a disk that fills under a commit, raises
:class:`StoreFullError`, never a corrupt store.
LMDB allows one environment per file per process, so open environments are kept in a registry
(:func:`shared`), and closed and reopened around ``fork()``.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from ..defaults import MAP_SIZE_INITIAL, MAX_READERS, STORE_HEADROOM, store_cap
from ..errors import StoreError, StoreFullError
from ..identity.inputs import exclude_root
from . import room
from .gate import Gate
from .log import Entry, ResultLog, convert, progress_bar

__all__ = ["STORE_FORMAT", "ReadersBusyError", "StoreEnvironment", "shared", "full_message"]

STORE_FORMAT = b"3"
#: Formats this version opens: the results of a store of format 2 (tables ``results``, ``meta``,
#: ``traced``) are moved into the log once (:func:`.log.convert`); the value records of format 1
#: (without a checksum) count as absent, and ``cache gc`` removes them.
_UPGRADABLE = (b"1", b"2")
#: A conversion of more results than this shows a progress bar on a terminal.
_PROGRESS_FROM = 10_000

# How LMDB reports a disk that filled under a commit: a short write of its pages is EIO (seen
# on a full tmpfs); the transaction is aborted and the environment stays usable.
_DISK_FULL = ("No space left on device", "Input/output error", "Disk quota exceeded")


class ReadersBusyError(StoreError):
    """Every reader slot of the store is held by a live process: a read cannot begin now, and
    will once one of them ends its read (nothing is lost, nothing need be repaired)."""


# The stores open in this process, by (pid, home): each holds its environment as ``.env``.
_STORES: dict[tuple[int, str], Any] = {}
_STORES_LOCK = threading.Lock()


# An LMDB environment must not be used across fork(), and closing an inherited one in the child
# would release the parent's reader slots. So the parent closes its environments just before a
# fork, once no transaction runs, and both sides open them again; Store objects stay valid.
def _before_fork() -> None:
    _STORES_LOCK.acquire()
    for store in _STORES.values():
        store.env._gate.hold()
        store.env._env.close()


def _after_fork_in_parent() -> None:
    try:
        for store in _STORES.values():
            try:
                store.env._open()
            finally:
                store.env._gate.release()
    finally:
        _STORES_LOCK.release()


def _after_fork_in_child() -> None:
    global _STORES_LOCK
    _STORES_LOCK = threading.Lock()
    stores = list(_STORES.values())
    _STORES.clear()
    for store in stores:
        store.env._gate = Gate()
        _STORES[(os.getpid(), str(store.env.home))] = store
        store.env._open()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)

_E = TypeVar("_E")
_T = TypeVar("_T")


def shared(home: str, make: Callable[[Path], _E]) -> _E:
    """This process's store of ``home`` (an object holding its environment as ``.env``), made
    by ``make(Path(home))`` the first time."""
    key = (os.getpid(), home)
    store = _STORES.get(key)
    if store is None:
        with _STORES_LOCK:
            store = _STORES.get(key)
            if store is None:
                store = _STORES[key] = make(Path(home))
    return store


class StoreEnvironment:
    """The LMDB environment of one home and the transactions on it (see the module docstring)."""

    def __init__(self, home: Path):
        self.home = home
        self.path = home / "store"
        self.blobs = home / "blobs"
        self.cap = store_cap()
        exclude_root(home)  # what a call reads of the store is not an input of it
        self._gate = Gate()
        self.log = ResultLog(self)
        self._open()
        self._convert()

    def _open(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.blobs.mkdir(exist_ok=True)
            env = lmdb.open(
                str(self.path), map_size=min(MAP_SIZE_INITIAL, self.cap - STORE_HEADROOM),
                max_dbs=12, max_readers=MAX_READERS, sync=True, metasync=False,
                readahead=False, meminit=False,
            )
        except lmdb.ReadersFullError:
            raise StoreError(
                f"every reader slot of the store at {self.path} is taken (MDB_READERS_FULL), "
                f"most likely by processes killed while reading; a running node frees them "
                f"within a second, or stop the processes using this home and try again"
            ) from None
        except (OSError, lmdb.Error) as exc:
            raise StoreError(
                f"cannot open the store at {self.path} ({exc}); check that PYTHAGORAS_HOME "
                f"points to a writable directory on a local file system"
            ) from None
        env.set_mapsize(0)  # adopt the size another process may have grown the map to
        env.reader_check()  # clear reader slots of processes that died
        self._env = env
        self.values = env.open_db(b"values")
        self.functions = env.open_db(b"functions")
        self.info = env.open_db(b"info")
        self.log_db = env.open_db(b"log")
        self.index = env.open_db(b"index")
        # The tables of results before the log (store format 2): emptied by the conversion.
        self.legacy_results = env.open_db(b"results")
        self.legacy_meta = env.open_db(b"meta")
        self.legacy_traced = env.open_db(b"traced")
        with env.begin(write=True) as txn:
            found = txn.get(b"format", db=self.info)
            if found is not None and found not in _UPGRADABLE and found != STORE_FORMAT:
                raise StoreError(
                    f"the store at {self.path} has format {found!r}, this version reads "
                    f"{STORE_FORMAT!r}; use a matching pythagoras_p2p or another PYTHAGORAS_HOME"
                )
            if room.file_bytes(txn, self.info) is None:  # written before files were counted
                room.count_files(txn, self.values, self.info, self.blobs)

    def _convert(self) -> None:
        """Move the results of a store of format 2 into the log (once; a progress bar on a
        terminal when there are many), then mark the store with this format."""
        waiting = self.read(lambda txn: txn.stat(self.legacy_results)["entries"])
        if waiting:
            show = progress_bar(str(self.path)) if (
                waiting >= _PROGRESS_FROM and sys.stderr.isatty()) else None
            convert(self, show)

        def mark(txn):
            if txn.get(b"format", db=self.info) != STORE_FORMAT:
                txn.put(b"format", STORE_FORMAT, db=self.info)

        if self.read(lambda txn: txn.get(b"format", db=self.info)) != STORE_FORMAT:
            self.write(mark, admin=True)

    def tables(self) -> tuple:
        """The handles of every table (for the space they use)."""
        return (self.values, self.functions, self.info, self.log_db, self.index,
                self.legacy_results, self.legacy_meta, self.legacy_traced)

    def map_size(self) -> int:
        return self._env.info()["map_size"]

    # ------------------------------------------------------------------ transactions

    def lookup(self, call: bytes) -> Entry | None:
        """The stored result of a call as a hit reads it, or None: the hit path's read, without a
        closure per call. The table handles are read inside the gate: a fork or a resize reopens
        the environment, and with it the handles."""
        gate = self._gate
        gate.enter()
        try:
            with self._env.begin() as txn:
                return self.log.lookup(txn, call)
        except (lmdb.MapResizedError, lmdb.ReadersFullError):
            pass
        finally:
            gate.leave()
        return self.read(lambda txn: self.log.lookup(txn, call))  # the careful way

    def read(self, fn: Callable[[Any], _T]) -> _T:
        """``fn(txn)`` in one read transaction (no lock), retried after a resize of the map."""
        gate = self._gate
        gate.enter()
        try:
            with self._env.begin() as txn:
                return fn(txn)
        except lmdb.MapResizedError:
            resized = True
        except lmdb.ReadersFullError:
            # Processes killed while reading keep their slots until someone clears them.
            if not self._env.reader_check():
                raise ReadersBusyError(
                    f"every reader slot of the store at {self.path} is held by a running "
                    f"process (MDB_READERS_FULL, {MAX_READERS} slots): try again once some of "
                    f"the processes using this home have finished reading") from None
            resized = False
        finally:
            gate.leave()
        if resized:
            self._gate.resize(lambda: self._env.set_mapsize(0))
        return self.read(fn)

    def write(self, fn: Callable[[Any], _T], *, admin: bool = False) -> _T:
        """Run ``fn(txn)`` in one write transaction, growing the map as needed."""
        while True:
            self._gate.enter()
            try:
                txn = self._env.begin(write=True)
                try:
                    result = fn(txn)
                except BaseException:
                    self._gate.close()  # see Gate: readers must pause for the abort to go through
                    try:
                        txn.abort()
                    finally:
                        self._gate.open()
                    raise
                txn.commit()
                return result
            except lmdb.MapFullError:
                grow = True
            except lmdb.MapResizedError:
                grow = False
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise StoreFullError(full_message(self, "the disk is full")) from None
                raise
            except lmdb.Error as exc:
                if not any(text in str(exc) for text in _DISK_FULL):
                    raise
                raise StoreFullError(full_message(self, f"the disk is full ({exc})")) from None
            finally:
                self._gate.leave()
            if grow:
                self._grow(admin)
            else:
                self._gate.resize(lambda: self._env.set_mapsize(0))

    def _grow(self, admin: bool) -> None:
        """Double the map, up to the cap less the value files (and, unless ``admin``, less the
        headroom: ``cache gc`` can always run)."""
        files = self.file_bytes()
        limit = self.cap if admin else self.cap - STORE_HEADROOM - files
        size = self._env.info()["map_size"]
        if size >= limit:
            raise StoreFullError(full_message(self, self._cap_reached(files)))
        self._gate.resize(lambda: self._env.set_mapsize(min(limit, size * 2)))

    def file_bytes(self) -> int:
        """The bytes of the value files under ``blobs/`` (see :mod:`.room`)."""
        return self.read(lambda txn: room.file_bytes(txn, self.info)) or 0

    def check_room(self, extra: int) -> None:
        """Raise :class:`StoreFullError` unless a new value file of ``extra`` bytes fits below
        the cap less the headroom, beside LMDB's pages (up to the last one used) and the files."""
        def read(txn):
            pages = (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]
            return pages, room.file_bytes(txn, self.info) or 0

        pages, files = self.read(read)
        if pages + files + extra > self.cap - STORE_HEADROOM:
            raise StoreFullError(full_message(self, self._cap_reached(files, extra)))

    def _cap_reached(self, files: int, extra: int = 0) -> str:
        more = f"; a value of {extra} bytes does not fit" if extra else ""
        return (f"it reached its cap of {self.cap} bytes (value files take {files} bytes, "
                f"{STORE_HEADROOM} are kept for `cache gc`{more})")

    # ------------------------------------------------------------------ upkeep

    def function_records(self) -> list[tuple[bytes, bytes]]:
        """Every (key, record) of the functions table, from one read transaction."""
        return self.read(lambda txn: list(txn.cursor(db=self.functions)))

    def reader_check(self) -> int:
        """Free the reader slots of processes that died while reading; returns how many."""
        return self._env.reader_check()

    def close(self) -> None:
        """Close this process's environment (it is reopened by the next
        :func:`~pythagoras_p2p.store.core.open_store`)."""
        with _STORES_LOCK:
            _STORES.pop((os.getpid(), str(self.home)), None)
        self._env.close()


def full_message(store: StoreEnvironment, why: str) -> str:
    """The message of a :class:`StoreFullError`: what is full, why, and how to make room."""
    return (
        f"the store at {store.path} is full: {why}. Nothing stored was lost. Make room with "
        f"`pythagoras-node cache gc` (PYTHAGORAS_HOME={store.home}), or raise "
        f"PYTHAGORAS_STORE_MAX_SIZE"
    )
