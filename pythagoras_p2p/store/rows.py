"""Rows of the store's tables, read and written inside a transaction.

py-lmdb lets go of Python's lock in every call into LMDB and must take it back behind whatever
other thread of the process runs meanwhile: a ``put`` costs ~2 µs alone and ~300 µs beside one
busy thread. So the functions that write many rows make one call per table (``putmulti``, keys
in order), whatever the number of rows. Reads are no better in bulk: ``getmulti`` lets go of the
lock for each key too, and builds a pair per key, so many rows are read with ``get`` one by one
(~1.8 µs a stored result against ~2.9 µs through ``getmulti``).
"""

from __future__ import annotations

from ..identity.encoding import Address
from .records import live, replaces

__all__ = ["lookup_results", "put_traces", "put_value_record", "put_value_records", "result_record"]


def lookup_results(txn, calls: list[Address], results_db, values_db, traced_db) -> list:
    """For each call, in order: None (no result), or (value address, raw value record or None,
    trace or None). Many calls of a store where no result has a trace are read without looking
    for one (one look at the table's size instead of a ``get`` per call)."""
    get = txn.get
    records = []
    if len(calls) > 16 and not txn.stat(traced_db)["entries"]:
        for call in calls:
            address = get(call, None, results_db)
            records.append(None if address is None else
                           (address, get(address, None, values_db), None))
        return records
    for call in calls:
        address = get(call, None, results_db)
        records.append(None if address is None else
                       (address, get(address, None, values_db), get(call, None, traced_db)))
    return records


def put_traces(txn, traced_db, calls: list[tuple[Address, Address]],
               traces: list[tuple[Address, bytes]]) -> None:
    """Write the traces of results being stored, and delete the trace of an earlier result of
    the same call that a result without one replaces (it no longer says what the result read).
    While no result has a trace, that costs one look at the table's size."""
    if traces:
        txn.cursor(db=traced_db).putmulti(traces)
    if len(traces) == len(calls) or not txn.stat(traced_db)["entries"]:
        return
    traced = {call for call, _ in traces}
    stale = [call for call, _ in txn.cursor(db=traced_db).getmulti(
        [call for call, _ in calls if call not in traced])]
    for call in stale:
        txn.delete(call, db=traced_db)


def result_record(txn, call: Address, results_db, values_db) -> tuple[Address, bytes] | None:
    """(value address, value record) of a stored result, or None."""
    address = txn.get(call, db=results_db)
    if address is None:
        return None
    record = live(txn.get(address, db=values_db))
    return None if record is None else (address, record)


def put_value_record(txn, db, address: Address, record: bytes) -> bool:
    """Keep an existing record, unless it is transient and ``record`` is not, or it is a
    transient record of an earlier boot (which counts as absent). True if there was none."""
    if txn.put(address, record, db=db, overwrite=False):
        return True
    existing = txn.get(address, db=db)
    if existing is not None and replaces(existing, record):
        txn.put(address, record, db=db)
    return False


def put_value_records(txn, db, records: list[tuple[Address, bytes]]) -> list[Address]:
    """:func:`put_value_record` for many ``(address, record)``: one call into LMDB looks for
    those already there, one writes the rest. Returns the addresses that had no record."""
    cursor = txn.cursor(db=db)
    existing = dict(cursor.getmulti([address for address, _ in records]))
    chosen: dict[Address, bytes] = {}
    for address, record in records:
        old = chosen.get(address, existing.get(address))
        if old is None or replaces(old, record):
            chosen[address] = record
    if chosen:
        cursor.putmulti(list(chosen.items()))
    return [address for address in chosen if address not in existing]
