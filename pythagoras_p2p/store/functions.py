"""Function records in the store: each under the hash of its own bytes, checked when read.

A function record (made by :func:`pythagoras_p2p.function.function_record`) is what a worker
loads to run a function: its pickle, its source, the fingerprint it was made for, the user
modules it was made with. It is stored under its *record key*, ``blake3(RECORD_TAG + record)``,
never under the fingerprint: a fingerprint that missed an edit would otherwise name the record
stored first, and a worker in a later process would run that old code on new arguments. Keyed by
its bytes, a record is exactly what the caller has now, and two versions of a function never
share a key. The fingerprint travels inside the record (results are stored under it, as before).

The key is also its checksum: a record read back is hashed again, and one whose bytes no longer
match (a byte changed on disk) is never loaded. It is logged, removed, and reported as damaged,
so the call that wanted it fails with that message and the caller stores the record again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from blake3 import blake3

from ..errors import PythagorasError, StoreError
from .env import StoreEnvironment

__all__ = ["RECORD_TAG", "DamagedRecordError", "record_key", "record_matches", "drop_damaged",
           "sendable_record", "damaged_records", "remove_records"]

log = logging.getLogger(__name__)


class _Records(Protocol):
    """What of a store these functions use beyond its environment (the store's own reads)."""

    path: Path

    def get_function(self, key: bytes) -> bytes | None: ...

#: Prefixed to a record before hashing it: a new layout of records gets a new tag (and so keys
#: that never collide with the old ones).
RECORD_TAG = b"pythagoras-record-1\0"


class DamagedRecordError(StoreError):
    """A function record whose bytes no longer hash to its key (it was removed when found)."""


def record_key(record: bytes | memoryview) -> bytes:
    """The key a function record is stored, sent and loaded under: the hash of its bytes."""
    hasher = blake3(RECORD_TAG)
    hasher.update(record)
    return hasher.digest()


def record_matches(key: bytes, record: bytes | memoryview) -> bool:
    """Whether ``record`` is the record ``key`` names."""
    return record_key(record) == key


def sendable_record(store: _Records, key: bytes, label: str) -> bytes:
    """The record ``key`` names, checked, to send to a peer; raises
    :class:`~pythagoras_p2p.errors.PythagorasError` saying why when there is none."""
    record = store.get_function(key)  # raises DamagedRecordError (a PythagorasError)
    if record is None:
        raise PythagorasError(f"the record of the function of {label} is not in the store at "
                              f"{store.path}; call again (the caller stores it again)")
    return record


def damaged_message(key: bytes, where: object) -> str:
    return (f"the record of function {key.hex()[:16]} in the store at {where} is damaged (its "
            f"bytes do not hash to its key): it was removed and was not run. Call again: the "
            f"caller stores it again. If this happens again, check the disk and run "
            f"`pythagoras-node cache verify --repair`")


def drop_damaged(store: StoreEnvironment, key: bytes, record: bytes) -> DamagedRecordError:
    """Remove a damaged record (unless it was rewritten meanwhile); the error to raise."""
    message = damaged_message(key, store.path)
    log.warning("%s", message)

    try:
        remove_records(store, {key: record})
    except StoreError as exc:  # it is never loaded either way
        log.warning("could not remove damaged function record %s: %s", key.hex(), exc)
    return DamagedRecordError(message)


def damaged_records(store: StoreEnvironment) -> tuple[int, dict[bytes, bytes]]:
    """How many function records the store holds, and those whose bytes do not hash to their
    key (damaged, or stored under a fingerprint by an earlier version): key -> record."""
    def read(txn):
        count, bad = 0, {}
        for key, record in txn.cursor(db=store.functions):
            count += 1
            if not record_matches(key, record):
                bad[key] = record
        return count, bad

    return store.read(read)


def remove_records(store: StoreEnvironment, found: dict[bytes, bytes]) -> int:
    """Delete the records ``found`` (key -> record as found), those still as they were found;
    returns how many."""
    def delete(txn):
        removed = 0
        for key, record in found.items():
            if txn.get(key, db=store.functions) == record:
                txn.delete(key, db=store.functions)
                removed += 1
        return removed

    return store.write(delete, admin=True) if found else 0
