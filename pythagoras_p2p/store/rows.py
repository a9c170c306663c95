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
from .records import replaces

__all__ = ["put_value_record", "put_value_records"]


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
