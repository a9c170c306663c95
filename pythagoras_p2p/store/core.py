"""The local store: values, results, functions and metadata of one home, by content address.

A :class:`Store` is made of collaborators held as attributes, each in its own module:

* ``env``     the LMDB environment under ``home/store`` (:mod:`.env`): opening it, map growth up
  to the cap, reader slots, fork safety, durability, every transaction;
* ``values``  values by address (:mod:`.values`): small ones in the ``values`` table, large ones
  as files in ``blobs/`` (:mod:`.blobs`), written once and never modified, so a reader can map
  them for as long as it likes; transient argument copies;
* ``env.log`` results (:mod:`.log`): one record per result, appended to a log in arrival order
  (the value inline when it is small, the metadata and the trace of the inputs it read), and
  an index from call address to the record's position;
* function records by the hash of their bytes in the ``functions`` table, checked when read
  (:mod:`.functions`); store format and counters in ``info``.

A hit is one read transaction with two lookups (index, log record); storing a group of results
is one write transaction (one ``fdatasync``) appending their records at the end of the log.

Every value is checked when read: its record keeps a blake3 checksum of its packed bytes, taken
when it was written, and a value whose bytes no longer match is never returned. It is logged,
removed, and counts as missing, so the call that wanted it is computed again. A result that keeps
a trace of the files and environment variables it read counts as missing once one of them
changed here (see :mod:`..identity.inputs`).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from blake3 import blake3

from ..defaults import home_dir
from ..errors import StoreError, StoreFullError
from ..identity.encoding import Address
from ..identity.inputs import encode_trace, holds_raw
from . import log as results_log
from . import room, upkeep
from .env import StoreEnvironment, shared
from .functions import drop_damaged, record_matches
from .holds import Holds
from .packing import INBAND, unpack
from .records import INLINE, SUM, encode_meta, live, sum_matches
from .rows import put_value_records
from .upkeep import Snapshot, Upkeep, Usage
from .values import MISSING, Values

__all__ = ["MISSING", "Store", "open_store", "ResultRecord", "warn_not_stored"]

log = logging.getLogger(__name__)

_INLINE_BYTE = INLINE[0]
_INBAND_BYTE = INBAND[0]


class ResultRecord(NamedTuple):
    """A result to store: its call, its value's address, the packed value (bytes, or the parts
    :func:`~.packing.pack_parts` gives; None when the value is stored already) and metadata."""

    call: Address
    address: Address
    value: bytes | list | None
    meta: dict


def open_store(home: str | os.PathLike | None = None) -> Store:
    """The store of ``home`` for this process (LMDB allows one environment per file per process)."""
    return shared(str(home_dir(home)), Store)


class Store:
    """Values, results, functions and metadata of one home. Use :func:`open_store` to get one."""

    def __init__(self, home: Path):
        self.env = StoreEnvironment(home)
        self.values = Values(self.env)
        self.home, self.path, self.blobs, self.cap = home, self.env.path, self.env.blobs, self.env.cap

    # ------------------------------------------------------------------ results

    def get_result(self, call: Address) -> Any:
        """The stored result of a call, or :data:`MISSING`. One read transaction, no lock."""
        found = self.env.lookup(call)
        if found is None or found.record is None:
            return MISSING
        if found.trace is not None and not holds_raw(found.trace):
            return MISSING
        return self._decode_live(found.address, found.record, call)

    def _decode_live(self, address: Address, record: bytes, call: Address) -> Any:
        """The value of a raw record just read for ``call``, or :data:`MISSING` (absent, or
        damaged: a damaged value inside the result's own record is removed with the result)."""
        if record[0] == _INLINE_BYTE:  # the hit of a small result: checked here, with no call more
            view = memoryview(record)[1 + SUM:]
            if blake3(view).digest(SUM) == record[1:1 + SUM]:
                return pickle.loads(view[1:]) if view[0] == _INBAND_BYTE else unpack(view)
            self._remove_damaged(call, address, record)
            return MISSING
        checked = live(record)
        return MISSING if checked is None else self.values.decode(address, checked)

    def _remove_damaged(self, call: Address, address: Address, record: bytes) -> None:
        """Remove a result whose own value is damaged (unless it was stored again meanwhile):
        it counts as missing, and whoever wants it computes it again."""
        log.warning(
            "value %s of result %s in the store at %s is damaged (its bytes do not match the "
            "checksum taken when it was stored): it was removed and will be computed again; if "
            "this happens again, check the disk and run `pythagoras-node cache verify --repair`",
            address.hex(), call.hex(), self.path)

        def delete(txn):
            found = self.env.log.lookup(txn, call)
            if found is not None and found.record == record:
                self.env.log.delete(txn, call)

        try:
            self.env.write(delete, admin=True)
        except StoreError as exc:  # it is not returned either way
            log.warning("could not remove damaged result %s: %s", call.hex(), exc)

    def get_results(self, calls: Iterable[Address]) -> dict[Address, Any]:
        """Stored results of many calls in one read transaction; misses are left out."""
        calls = list(calls)
        return {call: value for call, value in zip(calls, self.results_of(calls), strict=True)
                if value is not MISSING}

    def results_of(self, calls: list[Address]) -> list[Any]:
        """The stored result of each call, in order (:data:`MISSING` for a miss), from one read
        transaction: the bulk hits of a rerun, with no object made per call but its value."""
        decode, missing = self._decode_live, MISSING
        entries = self.env.read(lambda txn: self.env.log.lookup_many(txn, calls))
        return [missing if entry is None or entry[1] is None
                or (entry[2] is not None and not holds_raw(entry[2]))
                else decode(entry[0], entry[1], call)
                for call, entry in zip(calls, entries, strict=True)]

    def result_entry(self, call: Address) -> tuple[Address, bytes] | None:
        """(value address, raw value record) of a stored result, without decoding it. An inline
        value is checked (a large one is checked by whoever receives its file)."""
        found = self.env.read(lambda txn: self.env.log.lookup(txn, call))
        if found is None:
            return None
        record = live(found.record)
        if record is None:
            return None
        if record[:1] == INLINE and not sum_matches(memoryview(record)[1 + SUM:], record):
            self._remove_damaged(call, found.address, record)
            return None
        return found.address, record

    def result_calls(self) -> list[Address]:
        """Every call with a stored result (one read transaction over the index)."""
        return self.env.read(self.env.log.calls)

    def lacking(self, calls: Iterable[Address]) -> list[Address]:
        """Those of ``calls`` with no stored result (one read transaction)."""
        has = self.env.log.has
        return self.env.read(lambda txn: [c for c in calls if not has(txn, c)])

    def get_meta(self, call: Address) -> dict | None:
        """The metadata stored with a call's result (checked with its record), or None."""
        record = self.env.read(lambda txn: self.env.log.record(txn, call))
        if record is None or not results_log.check(record):
            return None
        return json.loads(results_log.meta_of(record))

    def put_results(self, records: Iterable[ResultRecord | tuple]) -> None:
        """Store results, their values and metadata atomically, in one transaction.

        Each record is a :class:`ResultRecord` (or a tuple of its fields); a small packed value
        goes into the result's own log record, a large one is written to its file (and synced)
        before the transaction that names it commits, once there is room below the cap for all
        of them (else :class:`StoreFullError`, and nothing is written).
        """
        records = list(records)
        values = self.values
        sizes = room.new_files(((r[1], r[2]) for r in records), values.new_file)
        if sizes:  # room for them all, or none is written
            self.env.check_room(sum(sizes.values()))
        table: list[tuple[Address, bytes]] = []  # records of the ``values`` table
        entries: list[tuple[Address, Address, bytes, bytes, bytes]] = []
        for call, address, blob, meta in records:
            if blob is None:  # stored already; a transient copy (an argument) is kept for good
                value_record = values.durable_record(address)
            else:
                value_record = values.make_record(address, blob, room_checked=True)
            inline = b""
            if value_record is not None:
                if value_record[:1] == INLINE:
                    inline = value_record
                else:
                    table.append((address, value_record))
            trace = meta.get("inputs") if type(meta) is dict else None
            entries.append((call, address, inline, encode_trace(trace) if trace else b"",
                            encode_meta(meta)))
        table.sort()
        encode = results_log.encode
        appended = [(e[0], encode(*e)) for e in entries]
        env = self.env

        def write(txn):
            if table:
                fresh = put_value_records(txn, env.values, table)
                if sizes:
                    room.count(txn, env.info, sum(sizes.get(a, 0) for a in fresh))
            env.log.append(txn, appended)

        env.write(write)

    # ------------------------------------------------------------------ values

    def has_value(self, address: Address) -> bool:
        return self.values.has(address)

    def get_value(self, address: Address) -> Any:
        """A stored value by its address, or :data:`MISSING`. Large values read the file in place."""
        return self.values.get(address)

    def value_record(self, address: Address) -> bytes | None:
        """The raw record of a stored value (see :meth:`inline_blob`), or None."""
        return self.values.value_record(address)

    @staticmethod
    def inline_blob(record: bytes) -> bytes | None:
        """The packed value inside a record, or None when the value lives in its own file."""
        return Values.inline_blob(record)

    def packed(self, address: Address, record: bytes) -> memoryview | None:
        """The checked packed bytes of a value record, or None (see :meth:`.Values.packed`)."""
        return self.values.packed(address, record)

    def checked_view(self, address: Address, record: bytes, *,
                     always: bool = False) -> memoryview | None:
        """See :meth:`.Values.checked_view`."""
        return self.values.checked_view(address, record, always=always)

    def put_value(self, address: Address, blob: bytes | list, *, durable: bool = True) -> None:
        """Store one packed value under its address (see :meth:`.Values.put_value`)."""
        self.values.put_value(address, blob, durable=durable)

    def adopt_file(self, address: Address, path: str | os.PathLike, *, durable: bool = True) -> None:
        """Store the packed value in file ``path`` (verified by the caller) under ``address``."""
        self.values.adopt_file(address, path, durable=durable)

    def blob_path(self, address: Address, *, transient: bool = False) -> Path:
        return self.values.blob_path(address, transient=transient)

    def record_path(self, address: Address, record: bytes) -> Path:
        return self.values.record_path(address, record)

    def unlink_files(self, address: Address, record: bytes) -> None:
        self.values.unlink_files(address, record)

    @property
    def holds(self) -> Holds:
        return self.values.holds

    def keep_transient(self, address: Address, make_parts: Callable[[], list]) -> bool:
        """See :meth:`.Values.keep_transient`."""
        return self.values.keep_transient(address, make_parts)

    def release_transient(self, addresses: Iterable[Address]) -> None:
        self.values.release_transient(addresses)

    def drop_transient(self, addresses: Iterable[Address]) -> int:
        """See :meth:`.Values.drop_transient`."""
        return self.values.drop_transient(addresses)

    # ------------------------------------------------------------------ functions

    def has_function(self, key: Address) -> bool:
        """Whether a record is stored under ``key`` (unchecked: :meth:`get_function` checks)."""
        return self.env.read(lambda txn: txn.get(key, db=self.env.functions) is not None)

    def get_function(self, key: Address) -> bytes | None:
        """The packed record of a function by its record key, or None. Its bytes are hashed
        again: a damaged record is removed and raises
        :class:`~.functions.DamagedRecordError` (it is never loaded)."""
        record = self.env.read(lambda txn: txn.get(key, db=self.env.functions))
        if record is None or record_matches(key, record):
            return record
        raise drop_damaged(self.env, key, record)

    def put_function(self, key: Address, record: bytes) -> None:
        """Store a function record under its key (:func:`~.functions.record_key`)."""
        self.env.write(lambda txn: txn.put(key, record, db=self.env.functions))

    def function_records(self) -> list[tuple[bytes, bytes]]:
        return self.env.function_records()

    # ------------------------------------------------------------------ the whole store

    def usage(self) -> Usage:
        return upkeep.usage(self.env)

    def snapshot(self, *, meta: bool = False) -> Snapshot:
        return upkeep.snapshot(self.env, meta=meta)

    def maintain(self, fn: Callable[[Upkeep], Any]) -> Any:
        """Run ``fn(upkeep)`` in one write transaction that may use the headroom kept for
        ``cache gc`` (so it runs on a full store), and return what it returns."""
        return self.env.write(lambda txn: fn(Upkeep(txn, self.env)), admin=True)

    def check_room(self, extra: int) -> None:
        self.env.check_room(extra)

    def file_bytes(self) -> int:
        return self.env.file_bytes()

    def reader_check(self) -> int:
        return self.env.reader_check()

    def close(self) -> None:
        """Close this process's environment (the next :func:`open_store` opens it again)."""
        self.env.close()


def warn_not_stored(function_name: str, count: int, exc: StoreFullError) -> None:
    """Say once that results computed for a caller (and returned to it) were not kept."""
    what = f"result of {function_name}" if count == 1 else f"results of {count} calls of {function_name}"
    log.warning("%s not stored: %s", what, exc)
