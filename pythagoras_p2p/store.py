"""The local store: one LMDB environment per home holding values, results, functions and metadata.

Layout under ``home/store`` (an LMDB environment) and ``home/blobs`` (large values):

* ``values``    value address → packed value, or a marker saying it lives in ``blobs/``;
* ``results``   call address → value address of the result;
* ``meta``      call address → JSON: function, host, pid, when, how long;
* ``functions`` fingerprint → packed record of the function (name, source, cloudpickle);
* ``info``      store format version and counters.

Many processes open one store at once (user processes, workers, the node); reads take one short
read transaction and no lock, writes are LMDB transactions serialized by LMDB's own lock.

Durability: ``sync=True, metasync=False``. A commit writes and fdatasyncs its data pages and
writes the meta page without a sync of its own. A crash of any process loses nothing committed;
a power loss can undo at most the last transaction but cannot corrupt the environment.

The map starts small and doubles on demand up to the cap less a headroom; the headroom is kept for
``pythagoras-node cache gc``. Reaching it raises :class:`StoreFullError`, never a corrupt store.
Values larger than :data:`INLINE_VALUE_LIMIT` are files in ``blobs/``, written once (temporary
name, fsync, rename) and never modified, so a reader can map them for as long as it likes: a
running task never holds an LMDB read transaction, and numpy arguments are read in place.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb

from .defaults import (
    INLINE_VALUE_LIMIT,
    MAP_SIZE_INITIAL,
    MAX_READERS,
    STORE_HEADROOM,
    home_dir,
    store_cap,
)
from .encoding import Address, unpack
from .errors import StoreError, StoreFullError

__all__ = ["MISSING", "Store", "open_store", "ResultRecord"]

STORE_FORMAT = b"1"
_INLINE = b"i"
_FILE = b"f"
# A value kept for this boot only (an argument on its way to a worker or a peer): its file is
# not fsynced, so after a restart of the machine the record counts as absent.
_TRANSIENT = b"n"


def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))
    except (OSError, ValueError):
        return os.urandom(16)  # unknown: transient values live as long as this process


_BOOT = _boot_id()


def live(record: bytes | None) -> bytes | None:
    """``record``, or None when it is a transient value of an earlier boot."""
    if record is not None and record[:1] == _TRANSIENT and record[1:17] != _BOOT:
        return None
    return record
_HOST = socket.gethostname()


class _Missing:
    """Sentinel for "not in the store" (``None`` is a legitimate stored value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

# (call address, value address, packed value or None when already stored, metadata)
ResultRecord = tuple[Address, Address, "bytes | None", dict]


class _Gate:
    """Lets many transactions of this process run at once, and a map resize (or a fork) run alone.

    It can also make new transactions wait for a moment without waiting for running ones: with
    py-lmdb 3.0, aborting a write transaction waits for a moment when no read transaction of this
    process runs, which two threads reading in turn may never leave it.
    """

    __slots__ = ("_cond", "_active", "_closed", "_exclusive")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._closed = 0
        self._exclusive = threading.Lock()

    def enter(self) -> None:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._closed:
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
            while self._active:
                self._cond.wait()

    def release(self) -> None:
        self.open()
        self._exclusive.release()

    def resize(self, action) -> None:
        self.hold()
        try:
            action()
        finally:
            self.release()


_STORES: dict[tuple[int, str], Store] = {}
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


def open_store(home: str | os.PathLike | None = None) -> Store:
    """The store of ``home`` for this process (LMDB allows one environment per file per process)."""
    path = str(home_dir(home))
    key = (os.getpid(), path)
    store = _STORES.get(key)
    if store is None:
        with _STORES_LOCK:
            store = _STORES.get(key)
            if store is None:
                store = _STORES[key] = Store(Path(path))
    return store


class Store:
    """Values, results, functions and metadata of one home. Use :func:`open_store` to get one."""

    def __init__(self, home: Path):
        self.home = home
        self.path = home / "store"
        self.blobs = home / "blobs"
        self.cap = store_cap()
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
        with env.begin(write=True) as txn:
            found = txn.get(b"format", db=self._info)
            if found is None:
                txn.put(b"format", STORE_FORMAT, db=self._info)
            elif found != STORE_FORMAT:
                raise StoreError(
                    f"the store at {self.path} has format {found!r}, this version reads "
                    f"{STORE_FORMAT!r}; use a matching pythagoras_p2p or another PYTHAGORAS_HOME"
                )

    # ------------------------------------------------------------------ transactions

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
                raise
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
                    raise StoreFullError(_full_message(self, "the disk is full")) from None
                raise
            finally:
                self._gate.leave()
            if grow:
                self._grow(admin)
            else:
                self._gate.resize(lambda: self._env.set_mapsize(0))

    def _grow(self, admin: bool) -> None:
        limit = self.cap if admin else self.cap - STORE_HEADROOM
        size = self._env.info()["map_size"]
        if size >= limit:
            raise StoreFullError(_full_message(self, f"it reached its cap of {self.cap} bytes"))
        self._gate.resize(lambda: self._env.set_mapsize(min(limit, size * 2)))

    # ------------------------------------------------------------------ reads

    def get_result(self, call: Address) -> Any:
        """The stored result of a call, or :data:`MISSING`. One read transaction, no lock."""
        record = self._read(lambda txn: _result_record(txn, call, self._results, self._values))
        if record is None:
            return MISSING
        return self._decode(record)

    def get_results(self, calls: Iterable[Address]) -> dict[Address, Any]:
        """Stored results of many calls in one read transaction; misses are left out."""
        def lookup(txn):
            found = {}
            for call in calls:
                record = _result_record(txn, call, self._results, self._values)
                if record is not None:
                    found[call] = record
            return found

        return {call: self._decode(record) for call, record in self._read(lookup).items()}

    def has_value(self, address: Address) -> bool:
        return self.value_record(address) is not None

    def get_value(self, address: Address) -> Any:
        """A stored value by its address, or :data:`MISSING`. Large values read the file in place."""
        record = self.value_record(address)
        return MISSING if record is None else self._decode(record)

    def has_function(self, fp: Address) -> bool:
        return self._read(lambda txn: txn.get(fp, db=self._functions) is not None)

    def get_function(self, fp: Address) -> bytes | None:
        """The packed record of a function by fingerprint, or None."""
        return self._read(lambda txn: txn.get(fp, db=self._functions))

    def result_entry(self, call: Address) -> tuple[Address, bytes] | None:
        """(value address, raw value record) of a stored result, without decoding it."""
        def read(txn):
            address = txn.get(call, db=self._results)
            if address is None:
                return None
            record = live(txn.get(address, db=self._values))
            return None if record is None else (address, record)

        return self._read(read)

    def value_record(self, address: Address) -> bytes | None:
        """The raw record of a stored value (see :meth:`inline_blob`), or None.

        A transient value counts while its file exists: :meth:`drop_transient` may remove it.
        """
        record = live(self._read(lambda txn: txn.get(address, db=self._values)))
        if record is not None and record[:1] == _TRANSIENT and not self.record_path(address, record).exists():
            return None
        return record

    @staticmethod
    def inline_blob(record: bytes) -> bytes | None:
        """The packed value inside a record, or None when the value lives in its own file."""
        return record[1:] if record[:1] == _INLINE else None

    def adopt_file(self, address: Address, path: str | os.PathLike, *, durable: bool = True) -> None:
        """Store the packed value in file ``path`` (verified by the caller) under ``address``.

        Small values are copied into LMDB; large ones are renamed into ``blobs/``. The file is
        consumed either way.
        """
        path = Path(path)
        if path.stat().st_size <= INLINE_VALUE_LIMIT:
            blob = path.read_bytes()
            path.unlink()
            self.put_value(address, blob)
            return
        target = self.blob_path(address, transient=not durable)
        target.parent.mkdir(exist_ok=True)
        if durable:
            with open(path, "rb") as f:
                os.fdatasync(f.fileno())
        os.replace(path, target)
        record = _FILE + address if durable else _TRANSIENT + _BOOT + address
        self._write(lambda txn: _put_value_record(txn, self._values, address, record))

    def get_meta(self, call: Address) -> dict | None:
        raw = self._read(lambda txn: txn.get(call, db=self._meta))
        return None if raw is None else json.loads(raw)

    def _decode(self, record: bytes) -> Any:
        if record[:1] == _INLINE:
            return unpack(memoryview(record)[1:])
        return unpack(self._map_blob(record[-32:], record))

    def blob_path(self, address: Address, *, transient: bool = False) -> Path:
        """The file of a large value: ``blobs/ab/abcd…``, with ``.n`` for a transient copy."""
        name = address.hex()
        return self.blobs / name[:2] / (name + ".n" if transient else name)

    def record_path(self, address: Address, record: bytes) -> Path:
        """The file that holds the value of a (non-inline) record."""
        if record[:1] == _TRANSIENT:
            path = self.blob_path(address, transient=True)
            if path.exists() or not self.blob_path(address).exists():
                return path
        return self.blob_path(address)  # durable, or transient in the layout of release 0.1.0

    def _map_blob(self, address: Address, record: bytes) -> memoryview:
        try:
            with open(self.record_path(address, record), "rb") as f:
                return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"value {address.hex()[:16]} is recorded but its file cannot be read ({exc}); "
                f"run `pythagoras-node cache verify --repair`"
            ) from None

    # ------------------------------------------------------------------ writes

    def put_results(self, records: Iterable[ResultRecord]) -> None:
        """Store results, their values and metadata atomically, in one transaction.

        Each record is ``(call, value_address, packed_value_or_None, meta)``; large packed values
        are written to their file (and synced) before the transaction that names them commits.
        """
        rows = []
        for call, address, blob, meta in records:
            rows.append((call, address, self._value_record(address, blob), meta))

        def write(txn):
            for call, address, value_record, meta in rows:
                if value_record is not None:
                    _put_value_record(txn, self._values, address, value_record)
                txn.put(call, address, db=self._results)
                txn.put(call, json.dumps(meta, separators=(",", ":")).encode(), db=self._meta)

        self._write(write)

    def put_value(self, address: Address, blob: bytes | list, *, durable: bool = True) -> None:
        """Store one packed value (bytes, or the parts :func:`pack_parts` gives) under its address.

        ``durable=False`` is for values kept only while this machine runs (arguments on their way
        to workers and peers): a large one's file is not fsynced, and after a reboot the value
        counts as absent. A durable write upgrades such a record.
        """
        record = self._value_record(address, blob, durable)
        if record is not None:
            self._write(lambda txn: _put_value_record(txn, self._values, address, record))

    def put_function(self, fp: Address, record: bytes) -> None:
        self._write(lambda txn: txn.put(fp, record, db=self._functions, overwrite=False))

    def _value_record(self, address: Address, blob: bytes | list | None,
                      durable: bool = True) -> bytes | None:
        if blob is None:
            return None
        parts = blob if isinstance(blob, list) else [blob]
        size = sum(memoryview(p).nbytes for p in parts)
        if size <= INLINE_VALUE_LIMIT:
            return _INLINE + b"".join(parts)
        self._write_blob_file(address, parts, durable)
        return _FILE + address if durable else _TRANSIENT + _BOOT + address

    def _write_blob_file(self, address: Address, parts: list, durable: bool = True) -> None:
        """Write a large value's file: durable ones fsynced under their address, transient ones
        (not fsynced) beside it with ``.n``, so that dropping a transient copy never touches a
        durable file. A durable write over a transient copy hard-links it instead of rewriting."""
        target = self.blob_path(address)
        transient = self.blob_path(address, transient=True)
        try:
            target.parent.mkdir(exist_ok=True)
            if not durable:
                if not (target.exists() or transient.exists()):
                    self._write_new_file(transient, parts, durable=False)
                return
            if not target.exists():
                try:
                    os.link(transient, target)
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    self._write_new_file(target, parts, durable=True)
                    return
            with open(target, "rb") as f:  # written earlier as a transient copy, perhaps
                os.fdatasync(f.fileno())
            _fsync_dir(target.parent)
        except OSError as exc:
            for stray in target.parent.glob(f".{target.name}*.{os.getpid()}.*.tmp"):
                stray.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StoreFullError(_full_message(self, "the disk is full")) from None
            raise StoreError(f"cannot write {target} ({exc}); check the disk and permissions") from None

    @staticmethod
    def _write_new_file(path: Path, parts: list, *, durable: bool) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            if durable:
                os.fdatasync(f.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)

    def drop_transient(self, addresses: Iterable[Address]) -> int:
        """Remove the transient copies (arguments on their way to workers) among ``addresses``;
        durable values are never touched. Returns how many were removed."""
        wanted = list(addresses)
        dropped: list[Address] = []

        def write(txn):
            for address in wanted:
                record = txn.get(address, db=self._values)
                if record is not None and record[:1] == _TRANSIENT:
                    txn.delete(address, db=self._values)
                    dropped.append(address)

        if wanted:
            self._write(write)
        for address in dropped:
            self.blob_path(address, transient=True).unlink(missing_ok=True)
        return len(dropped)

    def close(self) -> None:
        """Close this process's environment (it is reopened by the next :func:`open_store`)."""
        with _STORES_LOCK:
            _STORES.pop((os.getpid(), str(self.home)), None)
        self._env.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _result_record(txn, call: Address, results_db, values_db) -> bytes | None:
    address = txn.get(call, db=results_db)
    if address is None:
        return None
    return live(txn.get(address, db=values_db))


def _put_value_record(txn, db, address: Address, record: bytes) -> None:
    """Keep an existing record, unless it is transient and ``record`` is not."""
    if not txn.put(address, record, db=db, overwrite=False) and record[:1] != _TRANSIENT:
        existing = txn.get(address, db=db)
        if existing is not None and existing[:1] == _TRANSIENT:
            txn.put(address, record, db=db)


def _full_message(store: Store, why: str) -> str:
    return (
        f"the store at {store.path} is full: {why}. Nothing stored was lost. Make room with "
        f"`pythagoras-node cache gc` (PYTHAGORAS_HOME={store.home}), or raise "
        f"PYTHAGORAS_STORE_MAX_SIZE"
    )


def result_meta(function_name: str, fp: Address, started: float, duration: float, **extra) -> dict:
    """Metadata recorded beside every result: what ran, where, when and for how long."""
    meta = {
        "function": function_name,
        "fingerprint": fp.hex(),
        "host": _HOST,
        "pid": os.getpid(),
        "started": round(started, 6),
        "duration": round(duration, 6),
        "stored": round(time.time(), 6),
    }
    meta.update(extra)
    return meta
