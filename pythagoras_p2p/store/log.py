"""The results of a store: one record per result in a log kept in arrival order, and an index
from call address to the record's position.

Two tables of the store's LMDB environment:

* ``log``    position (8 bytes, big-endian, increasing in arrival order; written with
  ``MDB_APPEND``, so a group of results fills pages at the end of the tree, never splits one)
  → the result's record;
* ``index``  call address → position of its record (a random key, but 8 bytes of data).

A record holds everything a hit reads, so a hit is two lookups in one read transaction and
nothing else::

    b"R" | checksum (16) | call (32) | value address (32) | value length (4) | trace length (4)
         | value record | trace | metadata (JSON)

The checksum is blake3 of everything after it. The value record is a small value's own record
(:mod:`.records`: its own checksum, checked on every read), or empty when the value lives in the
``values`` table (a large value's file, a value a worker stored). The metadata is keyed by the
record's position: it is the record's tail.

Why LMDB and not files of our own (measured by ``benchmarks/bench_store_floor.py``): a commit
of LMDB is atomic and synced once, so a crash at any point leaves every acknowledged record
and never a torn one, with no recovery to run; a log of our own files needs its own
``fdatasync`` beside the index's, ~4 ms more per group commit (a miss of one call pays it
whole).

A store of format 2 (tables ``results``, ``meta``, ``traced``) is converted when it is first
opened (:func:`convert`), a chunk of results per transaction, each result moved from the old
tables to the log in the same transaction: at every commit each result is in exactly one place.
"""

from __future__ import annotations

import functools
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from blake3 import blake3

from ..identity.encoding import Address
from .records import SUM

__all__ = ["RESULT", "Entry", "encode", "decode", "check", "call_of", "address_of", "meta_of",
           "ResultLog", "convert"]

RESULT = b"R"
_HEAD = struct.Struct("<II")
_VALUE_AT = 1 + SUM + 64 + _HEAD.size  # where the value record starts
_KEY = struct.Struct(">Q")
_CHUNK = 20_000  # results moved per transaction when a format-2 store is converted


class Entry(NamedTuple):
    """A stored result as a hit reads it: its value's address, the value's record (None when
    the value is absent) and the trace of the inputs it read (None when it read none)."""

    address: Address
    record: bytes | None
    trace: bytes | None


def encode(call: Address, address: Address, value_record: bytes, trace: bytes, meta: bytes) -> bytes:
    """The log record of one result (see the module docstring)."""
    body = b"".join((call, address, _HEAD.pack(len(value_record), len(trace)), value_record,
                     trace, meta))
    return RESULT + blake3(body).digest(SUM) + body


def check(record: bytes) -> bool:
    """Whether a log record is whole: its tag and lengths are right and its checksum matches."""
    if len(record) < _VALUE_AT or record[:1] != RESULT:
        return False
    vlen, tlen = _HEAD.unpack_from(record, 1 + SUM + 64)
    if _VALUE_AT + vlen + tlen > len(record):
        return False
    return blake3(memoryview(record)[1 + SUM:]).digest(SUM) == record[1:1 + SUM]


def call_of(record: bytes) -> Address:
    return record[1 + SUM:1 + SUM + 32]


def address_of(record: bytes) -> Address:
    return record[1 + SUM + 32:1 + SUM + 64]


def decode(record: bytes) -> tuple[Address, Address, bytes, bytes, bytes]:
    """(call, value address, value record or b"", trace or b"", metadata JSON) of a record."""
    vlen, tlen = _HEAD.unpack_from(record, 1 + SUM + 64)
    trace_at = _VALUE_AT + vlen
    return (record[1 + SUM:1 + SUM + 32], record[1 + SUM + 32:1 + SUM + 64],
            record[_VALUE_AT:trace_at], record[trace_at:trace_at + tlen],
            record[trace_at + tlen:])


def meta_of(record: bytes) -> bytes:
    """The metadata JSON of a record."""
    vlen, tlen = _HEAD.unpack_from(record, 1 + SUM + 64)
    return record[_VALUE_AT + vlen + tlen:]


# Offsets in a record, named once: the hit path (every memo hit) reads them, not sums them.
_CALL_AT, _ADDRESS_AT, _LENGTHS_AT = 1 + SUM, 1 + SUM + 32, 1 + SUM + 64
_unpack_lengths = _HEAD.unpack_from
# An Entry made without the Python-level ``__new__`` NamedTuple gives it (the hit path's).
_new_entry = functools.partial(tuple.__new__, Entry)


def _entry(record: bytes, get: Callable, values_db: Any) -> Entry:
    vlen, tlen = _unpack_lengths(record, _LENGTHS_AT)
    address = record[_ADDRESS_AT:_LENGTHS_AT]
    trace_at = _VALUE_AT + vlen
    value = record[_VALUE_AT:trace_at] if vlen else get(address, None, values_db)
    return _new_entry((address, value, record[trace_at:trace_at + tlen] if tlen else None))


class ResultLog:
    """The ``log`` and ``index`` tables of one environment, read and written in its
    transactions. It holds the tables' handles (``db``), which the environment renews when
    it is opened again (a fork, a map resize)."""

    __slots__ = ("db",)

    def __init__(self, db: Any):
        self.db = db  # an object with the handles .log_db, .index and .values

    # ------------------------------------------------------------------ reads

    def lookup(self, txn: Any, call: Address) -> Entry | None:
        """The stored result of ``call``, or None."""
        db = self.db
        get = txn.get
        key = get(call, None, db.index)
        if key is None:
            return None
        record = get(key, None, db.log_db)
        if record is None or record[_CALL_AT:_ADDRESS_AT] != call:
            return None  # never another call's result
        return _entry(record, get, db.values)

    def lookup_many(self, txn: Any, calls: Iterable[Address]) -> list[Entry | None]:
        """:meth:`lookup` of many calls, in order, in one transaction."""
        db = self.db
        get = txn.get
        index, log, values = db.index, db.log_db, db.values
        found: list[Entry | None] = []
        append = found.append
        for call in calls:
            key = get(call, None, index)
            record = None if key is None else get(key, None, log)
            append(None if record is None or record[_CALL_AT:_ADDRESS_AT] != call
                   else _entry(record, get, values))
        return found

    def record(self, txn: Any, call: Address) -> bytes | None:
        """The raw log record of ``call``'s result, or None."""
        key = txn.get(call, None, self.db.index)
        record = None if key is None else txn.get(key, None, self.db.log_db)
        return record if record is not None and call_of(record) == call else None

    def address(self, txn: Any, call: Address) -> Address | None:
        """The value address ``call``'s result names, or None."""
        record = self.record(txn, call)
        return None if record is None else address_of(record)

    def has(self, txn: Any, call: Address) -> bool:
        """Whether ``call``'s result is stored: an index entry whose record is that call's (a
        stale entry counts as lacking, so a peer's offer sends the copy that mends it)."""
        return self.record(txn, call) is not None

    def calls(self, txn: Any) -> list[Address]:
        return list(txn.cursor(db=self.db.index).iternext(values=False))

    def count(self, txn: Any) -> int:
        return txn.stat(self.db.index)["entries"]

    def records(self, txn: Any) -> Iterator[tuple[bytes, bytes]]:
        """Every (position, record) of the log, in arrival order, live or not."""
        return iter(txn.cursor(db=self.db.log_db))

    def live(self, txn: Any) -> Iterator[bytes]:
        """Every record the index points to, in arrival order."""
        index = self.db.index
        for key, record in txn.cursor(db=self.db.log_db):
            call = call_of(record)
            if txn.get(call, None, index) == key:
                yield record

    # ------------------------------------------------------------------ writes

    def append(self, txn: Any, records: list[tuple[Address, bytes]]) -> None:
        """Append ``(call, log record)`` in order and point the index at them; a result the
        index named before for the same call is deleted (the last of one call in ``records``
        wins)."""
        if not records:
            return
        if len({call for call, _ in records}) < len(records):
            last: dict[Address, bytes] = {}
            for call, record in records:
                last.pop(call, None)
                last[call] = record
            records = list(last.items())
        db = self.db
        log_cursor = txn.cursor(db=db.log_db)
        at = _KEY.unpack(log_cursor.key())[0] + 1 if log_cursor.last() else 0
        keys = [_KEY.pack(at + i) for i in range(len(records))]
        index_cursor = txn.cursor(db=db.index)
        rows = sorted(zip((call for call, _ in records), keys, strict=True))
        log_cursor.putmulti(list(zip(keys, (record for _, record in records), strict=True)),
                            append=True)
        # New calls (nearly always all of them) in one call into LMDB; only when some were
        # stored before are their entries looked up, pointed at the new records and the old
        # records deleted.
        _, added = index_cursor.putmulti(rows, overwrite=False)
        if added < len(rows):
            fresh = dict(rows)
            for call, old in index_cursor.getmulti(list(fresh)):
                if old != fresh[call]:
                    txn.delete(old, db=db.log_db)
                    txn.put(call, fresh[call], db=db.index)

    def delete(self, txn: Any, call: Address) -> bool:
        """Delete ``call``'s result (its record and its index entry); whether there was one."""
        db = self.db
        key = txn.get(call, None, db.index)
        if key is None:
            return False
        txn.delete(key, db=db.log_db)
        txn.delete(call, db=db.index)
        return True

    def delete_stray(self, txn: Any, keys: Iterable[bytes]) -> int:
        """Delete log records no index entry points to (found by a scan); returns how many."""
        removed = 0
        for key in keys:
            record = txn.get(key, None, self.db.log_db)
            if record is not None and txn.get(call_of(record), None, self.db.index) != key:
                txn.delete(key, db=self.db.log_db)
                removed += 1
        return removed


def convert(env: Any, progress: Callable[[int, int], None] | None = None) -> int:
    """Move the results of a store of format 2 (tables ``results``, ``meta``, ``traced``: the
    environment's handles ``legacy_*``) into the log, a chunk per write transaction of ``env``;
    returns how many were moved. Safe beside other processes doing the same."""
    legacy = env
    total = env.read(lambda txn: txn.stat(legacy.legacy_results)["entries"])
    moved = 0
    while True:
        done = env.write(lambda txn: _convert_chunk(txn, env.log, legacy), admin=True)
        if not done:
            return moved
        moved += done
        if progress is not None:
            progress(moved, total)


def _convert_chunk(txn: Any, log: ResultLog, legacy: Any) -> int:
    from .records import live

    rows = []
    cursor = txn.cursor(db=legacy.legacy_results)
    for call, address in cursor:
        rows.append((call, address))
        if len(rows) >= _CHUNK:
            break
    if not rows:
        return 0
    records = []
    for call, address in rows:
        value = live(txn.get(address, None, legacy.values))
        inline = value if value is not None and value[:1] == b"I" else b""
        trace = txn.get(call, None, legacy.legacy_traced) or b""
        meta = txn.get(call, None, legacy.legacy_meta) or b"{}"
        records.append((call, encode(call, address, inline, trace, meta)))
        txn.delete(call, db=legacy.legacy_results)
        txn.delete(call, db=legacy.legacy_meta)
        txn.delete(call, db=legacy.legacy_traced)
    log.append(txn, records)
    return len(rows)


def progress_bar(what: str) -> Callable[[int, int], None]:
    """A progress line on stderr for a long conversion (``what``: the store's path)."""
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        total = max(total, done, 1)
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\rconverting the results of {what} to the log: "
                         f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} "
                         f"({time.monotonic() - started:.0f} s)")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
