"""The local store: values, results, functions and metadata of one home, by content address.

Layout under ``home/store`` (an LMDB environment) and ``home/blobs`` (large values):

* ``values``    value address → a checksum and the packed value, or a checksum and a marker
  saying the value lives in ``blobs/``;
* ``results``   call address → value address of the result;
* ``meta``      call address → JSON: function, host, pid, when, how long;
* ``functions`` fingerprint → packed record of the function (name, source, cloudpickle);
* ``info``      store format version and counters.

The environment itself (opening it, map growth up to the cap, reader slots, fork safety,
durability) is :mod:`pythagoras_p2p.store.env`; reaching the cap raises :class:`StoreFullError`.
Values larger than :data:`INLINE_VALUE_LIMIT` are files in ``blobs/``, written once (temporary
name, fsync, rename) and never modified, so a reader can map them for as long as it likes: a
running task never holds an LMDB read transaction, and numpy arguments are read in place.

Every value is checked when read: its record keeps a blake3 checksum of its packed bytes,
taken when it was written, and a value whose bytes no longer match is never returned. It is
logged, removed, and counts as missing, so the call that wanted it is computed again.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blake3 import blake3

from ..defaults import INLINE_VALUE_LIMIT, home_dir
from ..errors import StoreError, StoreFullError
from ..identity.encoding import Address
from .env import StoreEnvironment, full_message, shared
from .holds import Holds
from .packing import unpack

__all__ = ["MISSING", "Store", "open_store", "ResultRecord", "warn_not_stored"]

log = logging.getLogger(__name__)

# Value records (store format 2), each with the checksum of the packed bytes (_SUM bytes):
#   _INLINE    + checksum + packed value
#   _FILE      + checksum + address             the value is the file blobs/ab/<address>
#   _TRANSIENT + boot id + checksum + address   the same, kept for this boot only: an argument
#       on its way to a worker or a peer, whose file is not fsynced, so after a restart of the
#       machine the record counts as absent
# Records of format 1 (tags i, f, n: no checksum) count as absent; `cache gc` removes them.
_INLINE = b"I"
_FILE = b"F"
_TRANSIENT = b"N"
_SUM = 16
_THREADS_FROM = 8 << 20  # blake3 uses every core from here on (on a fresh map, threads only pay above)


def checksum(parts: list) -> bytes:
    """The checksum a value record keeps of its packed bytes (given as the parts of them)."""
    big = sum(memoryview(p).nbytes for p in parts) >= _THREADS_FROM
    hasher = blake3(max_threads=blake3.AUTO) if big else blake3()
    for part in parts:
        hasher.update(part)
    return hasher.digest(_SUM)


def _stored_sum(record: bytes) -> bytes:
    """The checksum kept in a value record."""
    return record[1:1 + _SUM] if record[:1] == _INLINE else record[-32 - _SUM:-32]


def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))
    except (OSError, ValueError):
        return os.urandom(16)  # unknown: transient values live as long as this process


_BOOT = _boot_id()


def live(record: bytes | None) -> bytes | None:
    """``record``, or None when it is a transient value of an earlier boot or has the layout of
    an earlier store format."""
    if record is None or record[:1] not in (_INLINE, _FILE, _TRANSIENT):
        return None
    if record[:1] == _TRANSIENT and record[1:17] != _BOOT:
        return None
    return record


class _Damaged(Exception):
    """A stored value whose bytes are not those it was written with (the text says how)."""


_HOST = socket.gethostname()
_HOLDS_LOCK = threading.Lock()  # Store.holds is made once per store and process


class _Missing:
    """Sentinel for "not in the store" (``None`` is a legitimate stored value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

# (call address, value address, packed value or None when already stored, metadata)
ResultRecord = tuple[Address, Address, "bytes | list | None", dict]  # value: packed, its parts, or stored


def open_store(home: str | os.PathLike | None = None) -> Store:
    """The store of ``home`` for this process (LMDB allows one environment per file per process)."""
    return shared(str(home_dir(home)), Store)


class Store(StoreEnvironment):
    """Values, results, functions and metadata of one home. Use :func:`open_store` to get one.

    The environment, its transactions (``_read``, ``_write``) and ``close`` are those of
    :class:`~pythagoras_p2p.store.env.StoreEnvironment`.
    """

    # ------------------------------------------------------------------ reads

    def get_result(self, call: Address) -> Any:
        """The stored result of a call, or :data:`MISSING`. One read transaction, no lock."""
        found = self._read(lambda txn: _result_record(txn, call, self._results, self._values))
        if found is None:
            return MISSING
        return self._decode(*found)

    def get_results(self, calls: Iterable[Address]) -> dict[Address, Any]:
        """Stored results of many calls in one read transaction; misses are left out."""
        def lookup(txn):
            found = {}
            for call in calls:
                entry = _result_record(txn, call, self._results, self._values)
                if entry is not None:
                    found[call] = entry
            return found

        values = {call: self._decode(*entry) for call, entry in self._read(lookup).items()}
        return {call: value for call, value in values.items() if value is not MISSING}

    def has_value(self, address: Address) -> bool:
        return self.value_record(address) is not None

    def get_value(self, address: Address) -> Any:
        """A stored value by its address, or :data:`MISSING`. Large values read the file in place."""
        record = self.value_record(address)
        return MISSING if record is None else self._decode(address, record)

    def has_function(self, fp: Address) -> bool:
        return self._read(lambda txn: txn.get(fp, db=self._functions) is not None)

    def get_function(self, fp: Address) -> bytes | None:
        """The packed record of a function by fingerprint, or None."""
        return self._read(lambda txn: txn.get(fp, db=self._functions))

    def result_entry(self, call: Address) -> tuple[Address, bytes] | None:
        """(value address, raw value record) of a stored result, without decoding it. An inline
        value is checked (a large one is checked by whoever receives its file)."""
        found = self._read(lambda txn: _result_record(txn, call, self._results, self._values))
        if found is None or (found[1][:1] == _INLINE and self.packed(*found) is None):
            return None
        return found

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
        return record[1 + _SUM:] if record[:1] == _INLINE else None

    def packed(self, address: Address, record: bytes) -> memoryview | None:
        """The packed bytes of a value record (a large value's file mapped, not read), checked
        against the record's checksum; None if the value is gone, or was damaged (it is then
        logged and removed, so that whoever wanted it computes it again)."""
        try:
            return self._checked_view(address, record)
        except _Damaged as exc:
            self._remove_damaged(address, record, str(exc))
            return None

    def _checked_view(self, address: Address, record: bytes) -> memoryview | None:
        """The packed bytes of a value record, or None if it is a transient copy dropped
        meanwhile; raises ``_Damaged`` when they do not match the record's checksum."""
        if record[:1] == _INLINE:
            view = memoryview(record)[1 + _SUM:]
        else:
            view = self._map_blob(address, record)
            if view is None:
                return None
        if view.nbytes >= _THREADS_FROM:
            found = blake3(view, max_threads=blake3.AUTO).digest(_SUM)
        else:
            found = blake3(view).digest(_SUM)
        if found != _stored_sum(record):
            raise _Damaged("its bytes do not match the checksum taken when it was stored")
        return view

    def _remove_damaged(self, address: Address, record: bytes, why: str) -> None:
        """Remove a damaged value (unless it was rewritten meanwhile) and its files: every
        result that names it then counts as missing until it is stored again."""
        log.warning(
            "value %s in the store at %s is damaged (%s): it was removed and will be computed "
            "again; if this happens again, check the disk and run `pythagoras-node cache verify "
            "--repair`", address.hex(), self.path, why)

        def delete(txn):
            if txn.get(address, db=self._values) != record:
                return False
            txn.delete(address, db=self._values)
            return True

        try:
            if self._write(delete, admin=True):
                self.unlink_files(address, record)
        except StoreError as exc:  # it is not returned either way
            log.warning("could not remove damaged value %s: %s", address.hex(), exc)

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
        if not durable:
            record = self.value_record(address)
            if record is not None and record[:1] != _TRANSIENT:  # kept for good already
                path.unlink()
                return
        target = self.blob_path(address, transient=not durable)
        try:
            target.parent.mkdir(exist_ok=True)
            with open(path, "rb") as f:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    sum_ = checksum([view])
                if durable:
                    os.fdatasync(f.fileno())
            os.replace(path, target)
            if durable:
                _fsync_dir(target.parent)  # the name too survives a power cut before the commit
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise self._write_error(target, exc) from None
        record = _file_record(address, sum_, durable)
        self._write(lambda txn: _put_value_record(txn, self._values, address, record))

    def get_meta(self, call: Address) -> dict | None:
        raw = self._read(lambda txn: txn.get(call, db=self._meta))
        return None if raw is None else json.loads(raw)

    def _decode(self, address: Address, record: bytes) -> Any:
        if record[:1] == _INLINE:  # the hit of a small result: checked here, with no call more
            view = memoryview(record)[1 + _SUM:]
            if blake3(view).digest(_SUM) == record[1:1 + _SUM]:
                return unpack(view)
        view = self.packed(address, record)
        return MISSING if view is None else unpack(view)

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

    def unlink_files(self, address: Address, record: bytes) -> None:
        """Remove the files of a deleted value record: a transient one's ``.n`` copy only (its
        durable name may have been linked meanwhile by a writer about to record it), a durable
        one's both names."""
        if record[:1] == _INLINE:
            return
        for transient in (False, True) if record[:1] != _TRANSIENT else (True,):
            self.blob_path(address, transient=transient).unlink(missing_ok=True)

    def _map_blob(self, address: Address, record: bytes) -> memoryview | None:
        """A large value's file, mapped; None if it is a transient copy dropped meanwhile."""
        try:
            with open(self.record_path(address, record), "rb") as f:
                return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        except FileNotFoundError:
            if record[:1] == _TRANSIENT:
                return None
            raise _Damaged("its file is missing") from None
        except ValueError:  # mmap refuses an empty file
            raise _Damaged("its file is empty") from None
        except OSError as exc:
            raise StoreError(
                f"value {address.hex()[:16]} is recorded but its file cannot be read ({exc}); "
                f"check the permissions of {self.blobs}"
            ) from None

    # ------------------------------------------------------------------ writes

    def put_results(self, records: Iterable[ResultRecord]) -> None:
        """Store results, their values and metadata atomically, in one transaction.

        Each record is ``(call, value_address, packed_value_or_None, meta)``; large packed values
        are written to their file (and synced) before the transaction that names them commits.
        """
        rows = []
        for call, address, blob, meta in records:
            if blob is None:  # stored already; a transient copy (an argument) is kept for good
                value_record = self._durable_record(address)
            else:
                value_record = self._value_record(address, blob)
            rows.append((call, address, value_record, meta))

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

    def _durable_record(self, address: Address) -> bytes | None:
        """The record that makes a value stored here durable, if it is only a transient copy
        (an argument that also became a result); None if it is durable already or absent."""
        record = self.value_record(address)
        if record is None or record[:1] != _TRANSIENT:
            return None
        if not self._write_blob_file(address, None, durable=True):
            return None  # its copy was dropped meanwhile: the result names an absent value
        return _file_record(address, _stored_sum(record), True)

    def _live_transient(self, address: Address) -> bool:
        """Whether a transient copy of this boot is here: its ``.n`` file is complete (one left
        by an earlier boot may be torn, and is never reused)."""
        record = self.value_record(address)
        return record is not None and record[:1] == _TRANSIENT

    def _value_record(self, address: Address, blob: bytes | list | None,
                      durable: bool = True) -> bytes | None:
        if blob is None:
            return None
        parts = blob if isinstance(blob, list) else [blob]
        size = sum(memoryview(p).nbytes for p in parts)
        sum_ = checksum(parts)
        if size <= INLINE_VALUE_LIMIT:
            return b"".join([_INLINE, sum_, *parts])
        self._write_blob_file(address, parts, durable)
        return _file_record(address, sum_, durable)

    def _write_blob_file(self, address: Address, parts: list | None, durable: bool = True) -> bool:
        """Write a large value's file: durable ones fsynced under their address, transient ones
        (not fsynced) beside it with ``.n``, so that dropping a transient copy never touches a
        durable file. A durable write over a transient copy of this boot hard-links it instead
        of rewriting. With no ``parts``, only such a copy can be made durable; returns whether
        the file is there."""
        target = self.blob_path(address)
        transient = self.blob_path(address, transient=True)
        try:
            target.parent.mkdir(exist_ok=True)
            if not durable:
                if not (target.exists() or self._live_transient(address)):
                    self._write_new_file(transient, parts, durable=False)
                return True
            if not target.exists():
                try:
                    if not self._live_transient(address):
                        raise FileNotFoundError(transient)  # absent, or left by an earlier boot
                    os.link(transient, target)
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    if parts is None:
                        return False
                    self._write_new_file(target, parts, durable=True)
                    return True
            with open(target, "rb") as f:  # written earlier as a transient copy, perhaps
                os.fdatasync(f.fileno())
            _fsync_dir(target.parent)
            return True
        except OSError as exc:
            for stray in target.parent.glob(f".{target.name}*.{os.getpid()}.*.tmp"):
                stray.unlink(missing_ok=True)
            raise self._write_error(target, exc) from None

    def _write_error(self, target: Path, exc: OSError) -> StoreError:
        if exc.errno == errno.ENOSPC:
            return StoreFullError(full_message(self, "the disk is full"))
        return StoreError(f"cannot write {target} ({exc}); check the disk and permissions")

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

    @property
    def holds(self) -> Holds:
        """Which transient copies this process's calls read (see :mod:`pythagoras_p2p.store.holds`)."""
        holds = self.__dict__.get("_holds")
        if holds is None:
            with _HOLDS_LOCK:  # one per store and process, however many threads ask first
                holds = self.__dict__.get("_holds")
                if holds is None:
                    holds = self.__dict__["_holds"] = Holds(self.path / "transient.lock")
        return holds

    def keep_transient(self, address: Address, make_parts) -> bool:
        """Have a copy of a large argument here for as long as this process's calls read it:
        hold it, and write it (``make_parts()``, kept for this boot only) if it is not here.
        True if it is held (:meth:`drop_transient` or :meth:`release_transient` ends that),
        False if the value is durable here and needs no hold."""
        self.holds.hold(address)
        try:
            record = self.value_record(address)
            if record is not None and record[:1] != _TRANSIENT:
                self.holds.release(address)
                return False
            if record is None:
                self.put_value(address, make_parts(), durable=False)
        except BaseException:
            self.holds.release(address)
            raise
        return True

    def release_transient(self, addresses: Iterable[Address]) -> None:
        """This process's calls no longer read these copies; someone else may drop them."""
        for address in addresses:
            self.holds.release(address)

    def drop_transient(self, addresses: Iterable[Address]) -> int:
        """Let go of this process's holds on the transient copies (arguments on their way to
        workers) among ``addresses`` and remove those nobody else holds; durable values are
        never touched. Returns how many were removed."""
        holds = self.holds
        dropped: list[Address] = []

        def write(txn):
            for address in wanted:
                record = txn.get(address, db=self._values)
                if record is not None and record[:1] == _TRANSIENT:
                    txn.delete(address, db=self._values)
                    dropped.append(address)

        with holds.taking([a for a in addresses if holds.release(a)]) as wanted:
            if wanted:
                self._write(write)
            for address in dropped:
                self.blob_path(address, transient=True).unlink(missing_ok=True)
        return len(dropped)



def _file_record(address: Address, sum_: bytes, durable: bool) -> bytes:
    """The record of a value kept in its own file (durable, or for this boot only)."""
    return _FILE + sum_ + address if durable else _TRANSIENT + _BOOT + sum_ + address


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _result_record(txn, call: Address, results_db, values_db) -> tuple[Address, bytes] | None:
    """(value address, value record) of a stored result, or None."""
    address = txn.get(call, db=results_db)
    if address is None:
        return None
    record = live(txn.get(address, db=values_db))
    return None if record is None else (address, record)


def _put_value_record(txn, db, address: Address, record: bytes) -> None:
    """Keep an existing record, unless it is transient and ``record`` is not, or it is a
    transient record of an earlier boot (which counts as absent)."""
    if not txn.put(address, record, db=db, overwrite=False):
        existing = txn.get(address, db=db)
        if existing is None:
            return
        if live(existing) is None or (existing[:1] == _TRANSIENT and record[:1] != _TRANSIENT):
            txn.put(address, record, db=db)


def warn_not_stored(function_name: str, count: int, exc: StoreFullError) -> None:
    """Say once that results computed for a caller (and returned to it) were not kept."""
    what = f"result of {function_name}" if count == 1 else f"results of {count} calls of {function_name}"
    log.warning("%s not stored: %s", what, exc)


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
