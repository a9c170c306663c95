"""The LMDB environment under a store: opening it, map growth, reader slots, fork safety, the gate.

It also gives maintenance its reads and writes of whole databases (:meth:`~StoreEnvironment.usage`,
:meth:`~StoreEnvironment.snapshot`, :meth:`~StoreEnvironment.maintain`), so that nothing outside
the store touches a database or a transaction.

:class:`StoreEnvironment` opens ``home/store`` with its six named databases, checks the store
format, and runs every read and write transaction of this process through :class:`_Gate`;
:class:`pythagoras_p2p.store.core.Store` builds values, results and functions on top of it.

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
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import lmdb

from ..defaults import MAP_SIZE_INITIAL, MAX_READERS, STORE_HEADROOM, store_cap
from ..errors import StoreError, StoreFullError
from ..identity.inputs import exclude_root
from . import room

__all__ = ["STORE_FORMAT", "ReadersBusyError", "StoreEnvironment", "Usage", "Snapshot", "Upkeep",
           "shared", "full_message"]

STORE_FORMAT = b"2"
#: Formats this version opens: a store of format 1 (value records without a checksum) is
#: marked 2 on open; its records count as absent, and ``cache gc`` removes them.
_UPGRADABLE = (b"1",)

# How LMDB reports a disk that filled under a commit: a short write of its pages is EIO (seen
# on a full tmpfs); the transaction is aborted and the environment stays usable.
_DISK_FULL = ("No space left on device", "Input/output error", "Disk quota exceeded")


class ReadersBusyError(StoreError):
    """Every reader slot of the store is held by a live process: a read cannot begin now, and
    will once one of them ends its read (nothing is lost, nothing need be repaired)."""


class _Gate:
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


_STORES: dict[tuple[int, str], StoreEnvironment] = {}
_STORES_LOCK = threading.Lock()


# An LMDB environment must not be used across fork(), and closing an inherited one in the child
# would release the parent's reader slots. So the parent closes its environments just before a
# fork, once no transaction runs, and both sides open them again; Store objects stay valid.
def _before_fork() -> None:
    _STORES_LOCK.acquire()
    for store in _STORES.values():
        store._gate.hold()
        store._env.close()


def _after_fork_in_parent() -> None:
    try:
        for store in _STORES.values():
            try:
                store._open()
            finally:
                store._gate.release()
    finally:
        _STORES_LOCK.release()


def _after_fork_in_child() -> None:
    global _STORES_LOCK
    _STORES_LOCK = threading.Lock()
    stores = list(_STORES.values())
    _STORES.clear()
    for store in stores:
        store._gate = _Gate()
        _STORES[(os.getpid(), str(store.home))] = store
        store._open()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)

_E = TypeVar("_E", bound="StoreEnvironment")


def shared(home: str, make: Callable[[Path], _E]) -> _E:
    """This process's environment of ``home``, made by ``make(Path(home))`` the first time."""
    key = (os.getpid(), home)
    store = _STORES.get(key)
    if store is None:
        with _STORES_LOCK:
            store = _STORES.get(key)
            if store is None:
                store = _STORES[key] = make(Path(home))
    return store  # type: ignore[return-value]


class Usage(NamedTuple):
    """Entries and space of a store's environment, read in one transaction."""

    results: int
    values: int
    functions: int
    lmdb_bytes: int  # pages in use by the six databases
    map_size: int


@dataclass
class Snapshot:
    """The values and results of a store (and, if asked, the metadata) as one read transaction
    saw them: what ``cache verify`` and ``cache gc`` decide by."""

    values: dict[bytes, bytes]  # value address → raw record (see records.live)
    results: list[tuple[bytes, bytes]]  # (call address, value address)
    meta: dict[bytes, dict] = field(default_factory=dict)  # call address → metadata
    lmdb_bytes: int = 0


class Upkeep:
    """The records a maintenance write transaction reads and deletes (see
    :meth:`StoreEnvironment.maintain`); it decides what to delete, this only carries it out."""

    __slots__ = ("_txn", "_env")

    def __init__(self, txn: Any, env: StoreEnvironment):
        self._txn = txn
        self._env = env

    def value_record(self, address: bytes) -> bytes | None:
        """The raw record of a value as it is now, or None."""
        return self._txn.get(address, db=self._env._values)

    def delete_value(self, address: bytes) -> None:
        """Delete a value's record (its files are the caller's to remove after the commit)."""
        env = self._env
        record = self._txn.get(address, db=env._values)
        if record is not None:
            room.forget_file(self._txn, env._info, env.blobs, address, record)
            self._txn.delete(address, db=env._values)

    def result(self, call: bytes) -> bytes | None:
        """The value address a call's result names now, or None."""
        return self._txn.get(call, db=self._env._results)

    def delete_result(self, call: bytes) -> None:
        """Delete a call's result, its metadata and its trace."""
        self._txn.delete(call, db=self._env._results)
        self._txn.delete(call, db=self._env._meta)
        self._txn.delete(call, db=self._env._traced)

    def named_values(self) -> set[bytes]:
        """The value addresses that some result names now."""
        return {address for _, address in self._txn.cursor(db=self._env._results)}


class StoreEnvironment:
    """The LMDB environment of one home and the transactions on it (see the module docstring)."""

    def __init__(self, home: Path):
        self.home = home
        self.path = home / "store"
        self.blobs = home / "blobs"
        self.cap = store_cap()
        exclude_root(home)  # what a call reads of the store is not an input of it
        self._gate = _Gate()
        self._open()

    def _open(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.blobs.mkdir(exist_ok=True)
            env = lmdb.open(
                str(self.path), map_size=min(MAP_SIZE_INITIAL, self.cap - STORE_HEADROOM),
                max_dbs=8, max_readers=MAX_READERS, sync=True, metasync=False,
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
        self._values = env.open_db(b"values")
        self._results = env.open_db(b"results")
        self._meta = env.open_db(b"meta")
        self._functions = env.open_db(b"functions")
        self._info = env.open_db(b"info")
        # call → trace of the run-time inputs its result was computed from (identity/inputs.py),
        # for those results only that have one; a store made before it gains it, empty.
        self._traced = env.open_db(b"traced")
        with env.begin(write=True) as txn:
            found = txn.get(b"format", db=self._info)
            if found is None or found in _UPGRADABLE:
                txn.put(b"format", STORE_FORMAT, db=self._info)
            elif found != STORE_FORMAT:
                raise StoreError(
                    f"the store at {self.path} has format {found!r}, this version reads "
                    f"{STORE_FORMAT!r}; use a matching pythagoras_p2p or another PYTHAGORAS_HOME"
                )
            if room.file_bytes(txn, self._info) is None:  # written before files were counted
                room.count_files(txn, self._values, self._info, self.blobs)

    # ------------------------------------------------------------------ transactions

    def _read_result(self, call: bytes) -> tuple[bytes, bytes, bytes | None] | None:
        """``(value address, raw value record, trace or None)`` of a stored result, or None:
        the hit path's read, without a closure per call. The database handles are read inside
        the gate: a fork or a resize reopens the environment, and with it the handles."""
        gate = self._gate
        gate.enter()
        try:
            with self._env.begin() as txn:
                address = txn.get(call, db=self._results)
                if address is None:
                    return None
                record = txn.get(address, db=self._values)
                return None if record is None else (address, record,
                                                    txn.get(call, db=self._traced))
        except (lmdb.MapResizedError, lmdb.ReadersFullError):
            pass
        finally:
            gate.leave()

        def read(txn):
            address = txn.get(call, db=self._results)
            record = None if address is None else txn.get(address, db=self._values)
            return None if record is None else (address, record, txn.get(call, db=self._traced))

        return self._read(read)  # the map grew, or the reader table was full: the careful way

    def _read(self, fn):
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
        return self._read(fn)

    def _write(self, fn, *, admin: bool = False):
        """Run ``fn(txn)`` in one write transaction, growing the map as needed."""
        while True:
            self._gate.enter()
            try:
                txn = self._env.begin(write=True)
                try:
                    result = fn(txn)
                except BaseException:
                    self._gate.close()  # see _Gate: readers must pause for the abort to go through
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
        return self._read(lambda txn: room.file_bytes(txn, self._info)) or 0

    def check_room(self, extra: int) -> None:
        """Raise :class:`StoreFullError` unless a new value file of ``extra`` bytes fits below
        the cap less the headroom, beside LMDB's pages (up to the last one used) and the files."""
        def read(txn):
            pages = (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]
            return pages, room.file_bytes(txn, self._info) or 0

        pages, files = self._read(read)
        if pages + files + extra > self.cap - STORE_HEADROOM:
            raise StoreFullError(full_message(self, self._cap_reached(files, extra)))

    def _cap_reached(self, files: int, extra: int = 0) -> str:
        more = f"; a value of {extra} bytes does not fit" if extra else ""
        return (f"it reached its cap of {self.cap} bytes (value files take {files} bytes, "
                f"{STORE_HEADROOM} are kept for `cache gc`{more})")

    # ------------------------------------------------------------------ upkeep

    def _used_bytes(self, txn) -> int:
        """Bytes of the pages the databases use, seen from ``txn``."""
        used = 0
        for db in (self._values, self._results, self._meta, self._functions, self._info,
                   self._traced):
            st = txn.stat(db)
            used += (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]
        return used

    def usage(self) -> Usage:
        """How many results, values and functions are stored, and the space LMDB uses."""
        def read(txn):
            return (txn.stat(self._results)["entries"], txn.stat(self._values)["entries"],
                    txn.stat(self._functions)["entries"], self._used_bytes(txn))

        results, values, functions, used = self._read(read)
        return Usage(results, values, functions, used, self._env.info()["map_size"])

    def snapshot(self, *, meta: bool = False) -> Snapshot:
        """Every value record and result (and with ``meta``, the metadata) in one read transaction."""
        def read(txn):
            metas = {k: json.loads(v) for k, v in txn.cursor(db=self._meta)} if meta else {}
            return Snapshot(dict(txn.cursor(db=self._values)), list(txn.cursor(db=self._results)),
                            metas, self._used_bytes(txn))

        return self._read(read)

    def function_records(self) -> list[tuple[bytes, bytes]]:
        """Every (key, record) of the functions table, from one read transaction."""
        return self._read(lambda txn: list(txn.cursor(db=self._functions)))

    def maintain(self, fn: Callable[[Upkeep], Any]) -> Any:
        """Run ``fn(upkeep)`` in one write transaction that may use the headroom kept for
        ``cache gc`` (so it runs on a full store), and return what it returns."""
        return self._write(lambda txn: fn(Upkeep(txn, self)), admin=True)

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
