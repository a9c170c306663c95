"""The local store: values, results, functions and metadata of one home, by content address.

Layout under ``home/store`` (an LMDB environment) and ``home/blobs`` (large values):

* ``values``    value address → a checksum and the packed value, or a checksum and a marker
  saying the value lives in ``blobs/``;
* ``results``   call address → value address of the result;
* ``meta``      call address → JSON: function, host, pid, when, how long;
* ``functions`` record key → packed record of the function (name, fingerprint, source,
  cloudpickle): keyed by the hash of its own bytes, checked when read (:mod:`.functions`);
* ``traced``    call address → the trace of the files and environment variables its result
  was computed from (:mod:`..identity.inputs`), only for results that read some: a hit is
  answered only while it holds;
* ``info``      store format version and counters.

The environment itself (opening it, map growth up to the cap, reader slots, fork safety,
durability, the reads and writes of maintenance) is :mod:`.env`; reaching the cap raises
:class:`StoreFullError`. The layout of a value record (inline, file, transient; the checksum;
the boot id) is :mod:`.records`. Values larger than :data:`INLINE_VALUE_LIMIT` are files in
``blobs/`` (:mod:`.blobs`), written once and never modified, so a reader can map them for as
long as it likes: a running task never holds an LMDB read transaction, and numpy arguments are
read in place.

Every value is checked when read: its record keeps a blake3 checksum of its packed bytes,
taken when it was written, and a value whose bytes no longer match is never returned. It is
logged, removed, and counts as missing, so the call that wanted it is computed again.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blake3 import blake3

from ..defaults import INLINE_VALUE_LIMIT, home_dir
from ..errors import StoreError, StoreFullError
from ..identity.encoding import Address
from ..identity.inputs import encode_trace, holds_raw
from . import blobs, room
from .env import StoreEnvironment, full_message, shared
from .functions import drop_damaged, record_matches
from .holds import Holds
from .packing import INBAND, unpack
from .records import (
    INLINE,
    SUM,
    TRANSIENT,
    Damaged,
    checksum,
    encode_meta,
    file_record,
    inline_record,
    inline_value,
    live,
    stored_sum,
    sum_matches,
)
from .rows import lookup_results, put_traces, put_value_record, put_value_records, result_record

__all__ = ["MISSING", "Store", "open_store", "ResultRecord", "warn_not_stored"]

log = logging.getLogger(__name__)

_INLINE_BYTE = INLINE[0]
_INBAND_BYTE = INBAND[0]
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

    The environment, its transactions (``_read``, ``_write``), the reads and writes of
    maintenance and ``close`` are those of :class:`~pythagoras_p2p.store.env.StoreEnvironment`.
    A store *is* its environment (rather than having one) because the registry of open
    environments, the reopening around ``fork()`` and ``close`` act on the object callers hold.
    """

    # ------------------------------------------------------------------ reads

    def get_result(self, call: Address) -> Any:
        """The stored result of a call, or :data:`MISSING`. One read transaction, no lock.

        A result that keeps a trace of the files and environment variables it read counts as
        missing once one of them changed here (see :mod:`..identity.inputs`)."""
        found = self._read_result(call)
        if found is None:
            return MISSING
        address, record, trace = found
        if trace is not None and not holds_raw(trace):
            return MISSING
        return self._decode_live(address, record)

    def _decode_live(self, address: Address, record: bytes) -> Any:
        """The value of a raw record just read, or :data:`MISSING` (absent, or damaged)."""
        if record[0] == _INLINE_BYTE:  # the hit of a small result: checked here, with no call more
            view = memoryview(record)[1 + SUM:]
            if blake3(view).digest(SUM) == record[1:1 + SUM]:
                return pickle.loads(view[1:]) if view[0] == _INBAND_BYTE else unpack(view)
        kept = live(record)
        return MISSING if kept is None else self._decode(address, kept)

    def get_results(self, calls: Iterable[Address]) -> dict[Address, Any]:
        """Stored results of many calls in one read transaction; misses are left out."""
        calls = list(calls)
        return {call: value for call, value in zip(calls, self.results_of(calls), strict=True)
                if value is not MISSING}

    def results_of(self, calls: list[Address]) -> list[Any]:
        """The stored result of each call, in order (:data:`MISSING` for a miss), from one read
        transaction: the bulk hits of a rerun, with no object made per call but its value."""
        decode, missing = self._decode_live, MISSING
        return [missing if entry is None or entry[1] is None
                or (entry[2] is not None and not holds_raw(entry[2]))
                else decode(entry[0], entry[1])
                for entry in self._read(lambda txn: lookup_results(
                    txn, calls, self._results, self._values, self._traced))]

    def has_value(self, address: Address) -> bool:
        return self.value_record(address) is not None

    def get_value(self, address: Address) -> Any:
        """A stored value by its address, or :data:`MISSING`. Large values read the file in place."""
        record = self.value_record(address)
        return MISSING if record is None else self._decode(address, record)

    def has_function(self, key: Address) -> bool:
        """Whether a record is stored under ``key`` (unchecked: :meth:`get_function` checks)."""
        return self._read(lambda txn: txn.get(key, db=self._functions) is not None)

    def get_function(self, key: Address) -> bytes | None:
        """The packed record of a function by its record key, or None. Its bytes are hashed
        again: a damaged record is removed and raises
        :class:`~.functions.DamagedRecordError` (it is never loaded)."""
        record = self._read(lambda txn: txn.get(key, db=self._functions))
        if record is None or record_matches(key, record):
            return record
        raise drop_damaged(self, key, record)

    def result_entry(self, call: Address) -> tuple[Address, bytes] | None:
        """(value address, raw value record) of a stored result, without decoding it. An inline
        value is checked (a large one is checked by whoever receives its file)."""
        found = self._read(lambda txn: result_record(txn, call, self._results, self._values))
        if found is None or (found[1][:1] == INLINE and self.packed(*found) is None):
            return None
        return found

    def result_calls(self) -> list[Address]:
        """Every call with a stored result (one read transaction over the keys)."""
        return self._read(lambda txn: list(txn.cursor(db=self._results).iternext(values=False)))

    def lacking(self, calls: Iterable[Address]) -> list[Address]:
        """Those of ``calls`` with no stored result (one read transaction)."""
        return self._read(lambda txn: [c for c in calls if txn.get(c, db=self._results) is None])

    def value_record(self, address: Address) -> bytes | None:
        """The raw record of a stored value (see :meth:`inline_blob`), or None.

        A transient value counts while its file exists: :meth:`drop_transient` may remove it.
        """
        record = live(self._read(lambda txn: txn.get(address, db=self._values)))
        if record is not None and record[:1] == TRANSIENT and not self.record_path(address, record).exists():
            return None
        return record

    @staticmethod
    def inline_blob(record: bytes) -> bytes | None:
        """The packed value inside a record, or None when the value lives in its own file."""
        return inline_value(record)

    def packed(self, address: Address, record: bytes) -> memoryview | None:
        """The packed bytes of a value record (a large value's file mapped, not read), checked
        against the record's checksum; None if the value is gone, or was damaged (it is then
        logged and removed, so that whoever wanted it computes it again)."""
        try:
            return self.checked_view(address, record)
        except Damaged as exc:
            self._remove_damaged(address, record, str(exc))
            return None

    def checked_view(self, address: Address, record: bytes) -> memoryview | None:
        """The packed bytes of a value record, or None if it is a transient copy dropped
        meanwhile; raises :class:`~.records.Damaged` when they do not match the record's
        checksum (and leaves the value alone: :meth:`packed` removes it)."""
        view: memoryview | None
        if record[:1] == INLINE:
            view = memoryview(record)[1 + SUM:]
        else:
            view = blobs.map_blob(self.blobs, address, record)
            if view is None:
                return None
        if not sum_matches(view, record):
            raise Damaged("its bytes do not match the checksum taken when it was stored")
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
            room.forget_file(txn, self._info, self.blobs, address, record)
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
        size = path.stat().st_size
        if size <= INLINE_VALUE_LIMIT:
            blob = path.read_bytes()
            path.unlink()
            self.put_value(address, blob)
            return
        if not durable:
            record = self.value_record(address)
            if record is not None and record[:1] != TRANSIENT:  # kept for good already
                path.unlink()
                return
        target = self.blob_path(address, transient=not durable)
        try:
            if self._new_file(address):
                self.check_room(size)
            sum_ = blobs.adopt(path, target, durable=durable)
        except OSError as exc:
            raise self._write_error(target, exc) from None
        except StoreFullError:
            path.unlink(missing_ok=True)
            raise
        record = file_record(address, sum_, durable)
        self._write(lambda txn: self._put_value_record(txn, address, record, size))

    def get_meta(self, call: Address) -> dict | None:
        raw = self._read(lambda txn: txn.get(call, db=self._meta))
        return None if raw is None else json.loads(raw)

    def _decode(self, address: Address, record: bytes) -> Any:
        if record[:1] == INLINE:  # the hit of a small result: checked here, with no call more
            inline = memoryview(record)[1 + SUM:]
            if blake3(inline).digest(SUM) == record[1:1 + SUM]:
                return unpack(inline)
        view = self.packed(address, record)  # mapped copy-on-write: writable, no copy made
        return MISSING if view is None else unpack(view, writable=not view.readonly)

    def blob_path(self, address: Address, *, transient: bool = False) -> Path:
        """The file of a large value: ``blobs/ab/abcd…``, with ``.n`` for a transient copy."""
        return blobs.blob_path(self.blobs, address, transient=transient)

    def record_path(self, address: Address, record: bytes) -> Path:
        """The file that holds the value of a (non-inline) record."""
        return blobs.record_path(self.blobs, address, record)

    def unlink_files(self, address: Address, record: bytes) -> None:
        """Remove the files of a deleted value record (see :func:`.blobs.unlink_files`)."""
        blobs.unlink_files(self.blobs, address, record)

    # ------------------------------------------------------------------ writes

    def put_results(self, records: Iterable[ResultRecord]) -> None:
        """Store results, their values and metadata atomically, in one transaction.

        Each record is ``(call, value_address, packed_value_or_None, meta)``; large packed values
        are written to their file (and synced) before the transaction that names them commits,
        once there is room below the cap for all of them (else :class:`StoreFullError`, and
        nothing is written).
        """
        records = list(records)
        sizes = room.new_files(((a, b) for _, a, b, _ in records), self._new_file)
        if sizes:  # room for them all, or none is written
            self.check_room(sum(sizes.values()))
        calls, values, metas, traces = [], [], [], []
        for call, address, blob, meta in records:
            if blob is None:  # stored already; a transient copy (an argument) is kept for good
                value_record = self._durable_record(address)
            else:
                value_record = self._value_record(address, blob, room_checked=True)
            if value_record is not None:
                values.append((address, value_record))
            calls.append((call, address))
            metas.append((call, encode_meta(meta)))
            trace = meta.get("inputs") if type(meta) is dict else None
            if trace:
                traces.append((call, encode_trace(trace)))
        values.sort()  # neighbours in the tree: one cursor walks them in order
        calls.sort()
        metas.sort()
        traces.sort()

        def write(txn):
            if values:
                fresh = put_value_records(txn, self._values, values)
                if sizes:
                    room.count(txn, self._info, sum(sizes.get(a, 0) for a in fresh))
            txn.cursor(db=self._results).putmulti(calls)
            txn.cursor(db=self._meta).putmulti(metas)
            put_traces(txn, self._traced, calls, traces)

        self._write(write)

    def put_value(self, address: Address, blob: bytes | list, *, durable: bool = True) -> None:
        """Store one packed value (bytes, or the parts :func:`pack_parts` gives) under its address.

        ``durable=False`` is for values kept only while this machine runs (arguments on their way
        to workers and peers): a large one's file is not fsynced, and after a reboot the value
        counts as absent. A durable write upgrades such a record.
        """
        record = self._value_record(address, blob, durable)
        if record is not None:
            size = room.nbytes(blob) if record[:1] != INLINE else 0
            self._write(lambda txn: self._put_value_record(txn, address, record, size))

    def put_function(self, key: Address, record: bytes) -> None:
        """Store a function record under its key (:func:`~.functions.record_key`)."""
        self._write(lambda txn: txn.put(key, record, db=self._functions))

    def _durable_record(self, address: Address) -> bytes | None:
        """The record that makes a value stored here durable, if it is only a transient copy
        (an argument that also became a result); None if it is durable already or absent."""
        record = self.value_record(address)
        if record is None or record[:1] != TRANSIENT:
            return None
        if not self._write_blob_file(address, None, durable=True):
            return None  # its copy was dropped meanwhile: the result names an absent value
        return file_record(address, stored_sum(record), True)

    def _live_transient(self, address: Address) -> bool:
        """Whether a transient copy of this boot is here: its ``.n`` file is complete (one left
        by an earlier boot may be torn, and is never reused)."""
        record = self.value_record(address)
        return record is not None and record[:1] == TRANSIENT

    def _value_record(self, address: Address, blob: bytes | list | None,
                      durable: bool = True, *, room_checked: bool = False) -> bytes | None:
        if blob is None:
            return None
        parts = blob if isinstance(blob, list) else [blob]
        size = sum(memoryview(p).nbytes for p in parts)
        sum_ = checksum(parts)
        if size <= INLINE_VALUE_LIMIT:
            return inline_record(sum_, parts)
        if not room_checked and self._new_file(address):
            self.check_room(size)
        self._write_blob_file(address, parts, durable)
        return file_record(address, sum_, durable)

    def _put_value_record(self, txn, address: Address, record: bytes, size: int) -> None:
        """Record one value in ``txn``; a file of ``size`` bytes counts if none named it yet."""
        if put_value_record(txn, self._values, address, record) and size:
            room.count(txn, self._info, size)

    def _new_file(self, address: Address) -> bool:
        """Whether storing this large value writes a file (none of it is here yet)."""
        return not self.blob_path(address).exists() and not self._live_transient(address)

    def _write_blob_file(self, address: Address, parts: list | None, durable: bool = True) -> bool:
        """Write a large value's file (see :func:`.blobs.write_blob_file`); returns whether it
        is there."""
        try:
            return blobs.write_blob_file(self.blobs, address, parts, durable,
                                         lambda: self._live_transient(address))
        except OSError as exc:
            raise self._write_error(self.blob_path(address), exc) from None

    def _write_error(self, target: Path, exc: OSError) -> StoreError:
        if exc.errno == errno.ENOSPC:
            return StoreFullError(full_message(self, "the disk is full"))
        return StoreError(f"cannot write {target} ({exc}); check the disk and permissions")

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
            if record is not None and record[:1] != TRANSIENT:
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
                if record is not None and record[:1] == TRANSIENT:
                    room.forget_file(txn, self._info, self.blobs, address, record)
                    txn.delete(address, db=self._values)
                    dropped.append(address)

        with holds.taking([a for a in addresses if holds.release(a)]) as wanted:
            if wanted:
                self._write(write)
            for address in dropped:
                self.blob_path(address, transient=True).unlink(missing_ok=True)
        return len(dropped)



def warn_not_stored(function_name: str, count: int, exc: StoreFullError) -> None:
    """Say once that results computed for a caller (and returned to it) were not kept."""
    what = f"result of {function_name}" if count == 1 else f"results of {count} calls of {function_name}"
    log.warning("%s not stored: %s", what, exc)
