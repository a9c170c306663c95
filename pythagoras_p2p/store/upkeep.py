"""What maintenance reads and writes of a whole store: its usage, a snapshot of its values and
results, and the records a maintenance transaction deletes.

Nothing outside the store touches a table or a transaction: ``cache stats|verify|gc``,
``listing`` and the node read a :class:`Snapshot` and delete through an :class:`Upkeep`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from . import log as results_log
from . import room

if TYPE_CHECKING:
    from .env import StoreEnvironment

__all__ = ["Usage", "Snapshot", "Upkeep", "usage", "snapshot"]


class Usage(NamedTuple):
    """Entries and space of a store's environment, read in one transaction."""

    results: int
    values: int
    functions: int
    lmdb_bytes: int  # pages in use by the tables
    map_size: int


@dataclass
class Snapshot:
    """The values and results of a store (and, if asked, the metadata) as one read transaction
    saw them: what ``cache verify`` and ``cache gc`` decide by."""

    values: dict[bytes, bytes]  # value address → raw record of the ``values`` table
    results: list[tuple[bytes, bytes]]  # (call address, value address) of every live result
    meta: dict[bytes, dict] = field(default_factory=dict)  # call address → metadata
    lmdb_bytes: int = 0
    inline: dict[bytes, bytes] = field(default_factory=dict)  # call → value record in its log record
    bad: list[tuple[bytes, bytes]] = field(default_factory=list)  # (position, record) failing its check
    stray: list[bytes] = field(default_factory=list)  # positions of records no index entry names

    def value_record(self, call: bytes, address: bytes) -> bytes | None:
        """The value record a result reads: the one in its log record, else the table's."""
        return self.inline.get(call) or self.values.get(address)


def used_bytes(env: StoreEnvironment, txn: Any) -> int:
    """Bytes of the pages the tables use, seen from ``txn``."""
    used = 0
    for db in env.tables():
        st = txn.stat(db)
        used += (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]
    return used


def usage(env: StoreEnvironment) -> Usage:
    """How many results, values and functions are stored, and the space LMDB uses."""
    def read(txn):
        return (env.log.count(txn), txn.stat(env.values)["entries"],
                txn.stat(env.functions)["entries"], used_bytes(env, txn))

    results, values, functions, used = env.read(read)
    return Usage(results, values, functions, used, env.map_size())


def snapshot(env: StoreEnvironment, *, meta: bool = False) -> Snapshot:
    """Every value record and result (and with ``meta``, the metadata) in one read transaction;
    log records that fail their check, or that no index entry names, are listed apart."""
    def read(txn):
        snap = Snapshot(dict(txn.cursor(db=env.values)), [], {}, used_bytes(env, txn))
        index = env.index
        for key, record in env.log.records(txn):
            if not results_log.check(record):
                snap.bad.append((key, record))
                continue
            call, address, value, _, raw_meta = results_log.decode(record)
            if txn.get(call, None, index) != key:
                snap.stray.append(key)
                continue
            snap.results.append((call, address))
            if value:
                snap.inline[call] = value
            if meta:
                snap.meta[call] = json.loads(raw_meta)
        return snap

    return env.read(read)


class Upkeep:
    """The records a maintenance write transaction reads and deletes (see
    :meth:`StoreEnvironment.maintain`); it decides what to delete, this only carries it out."""

    __slots__ = ("_txn", "_env")

    def __init__(self, txn: Any, env: StoreEnvironment):
        self._txn = txn
        self._env = env

    def value_record(self, address: bytes) -> bytes | None:
        """The raw record of a value in the ``values`` table as it is now, or None."""
        return self._txn.get(address, db=self._env.values)

    def delete_value(self, address: bytes) -> None:
        """Delete a value's record (its files are the caller's to remove after the commit)."""
        env = self._env
        record = self._txn.get(address, db=env.values)
        if record is not None:
            room.forget_file(self._txn, env.info, env.blobs, address, record)
            self._txn.delete(address, db=env.values)

    def result(self, call: bytes) -> bytes | None:
        """The value address a call's result names now, or None."""
        return self._env.log.address(self._txn, call)

    def result_value(self, call: bytes) -> bytes | None:
        """The value record a call's result reads now (its own, else the table's), or None."""
        found = self._env.log.lookup(self._txn, call)
        return None if found is None else found.record

    def delete_result(self, call: bytes) -> None:
        """Delete a call's result: its record (with its metadata and trace) and its index entry."""
        self._env.log.delete(self._txn, call)

    def delete_records(self, keys: list[bytes]) -> int:
        """Delete log records found damaged or named by no index entry (by their positions),
        those that are still so; returns how many."""
        txn, env = self._txn, self._env
        removed = 0
        for key in keys:
            record = txn.get(key, None, env.log_db)
            if record is None:
                continue
            if results_log.check(record):
                removed += env.log.delete_stray(txn, [key])
                continue
            call = results_log.call_of(record)
            if txn.get(call, None, env.index) == key:
                txn.delete(call, db=env.index)
            txn.delete(key, db=env.log_db)
            removed += 1
        return removed

    def named_values(self) -> set[bytes]:
        """The addresses of the ``values`` table that some result reads now (a result whose
        value is inside its own record names none)."""
        named = set()
        for record in self._env.log.live(self._txn):
            _, address, value, _, _ = results_log.decode(record)
            if not value:
                named.add(address)
        return named
