"""Looking after a store: statistics, verification, and garbage collection.

These run beside users of the store (they are LMDB transactions like any other) and back the
``pythagoras-node cache stats|verify|gc`` commands. Garbage collection may use the headroom that
ordinary writes leave free, so it can always run on a full store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..defaults import STALE_FILE_AGE as _STALE_TMP
from ..identity.encoding import checked_address
from .blobs import blob_files
from .core import Store
from .functions import damaged_records, remove_records
from .packing import unpack
from .records import is_inline, is_transient, live
from .upkeep import Upkeep

__all__ = ["StoreStats", "VerifyReport", "GcReport", "stats", "verify", "gc", "human_bytes"]


@dataclass
class StoreStats:
    """Sizes and counts of one store."""

    home: str
    results: int
    values: int
    functions: int
    blob_files: int
    blob_bytes: int
    lmdb_bytes: int
    map_size: int
    cap: int

    @property
    def total_bytes(self) -> int:
        return self.lmdb_bytes + self.blob_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}


def stats(store: Store) -> StoreStats:
    files = [p for p, a in blob_files(store.blobs) if a is not None]
    usage = store.usage()
    return StoreStats(
        home=str(store.home), results=usage.results, values=usage.values,
        functions=usage.functions, blob_files=len(files), blob_bytes=sum(_size(p) for p in files),
        lmdb_bytes=usage.lmdb_bytes, map_size=usage.map_size, cap=store.cap,
    )


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class VerifyReport:
    """What :func:`verify` checked and found."""

    results_checked: int = 0
    values_checked: int = 0
    functions_checked: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: int = 0
    #: values whose address came from their pickle and differs here (see checked_address):
    #: not provably damaged, so never deleted
    unverifiable: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: Store, *, repair: bool = False) -> VerifyReport:
    """Check that every value matches its checksum and decodes to its address, that every
    result record of the log is whole (its checksum) and names a stored value (its own, or one
    of the ``values`` table), and that every function record hashes to its key.

    With ``repair``, bad values, damaged result records and the results that name bad values are deleted (results are
    recomputable; a wrong one must never be served), bad function records too (a caller stores
    its record again), and stale temporary files are removed.
    Values and results are read in one transaction, and a repair deletes only what is still as
    it was found: what other processes store meanwhile is left alone.
    """
    report = VerifyReport()
    bad_values: dict[bytes, bytes] = {}  # address -> the record found bad
    files = list(blob_files(store.blobs))  # before the snapshot: a later file is never judged by it
    snapshot = store.snapshot()
    for address, record in snapshot.values.items():
        report.values_checked += 1
        problem = _value_problem(store, address, record)
        if problem == _UNVERIFIABLE:
            report.unverifiable += 1
        elif problem is not None:
            bad_values[address] = record
            report.problems.append(f"value {address.hex()[:16]}: {problem}")
    dangling: list[tuple[bytes, bytes]] = []
    for call, address in snapshot.results:
        report.results_checked += 1
        inline = snapshot.inline.get(call)
        if inline is not None:
            problem = _value_problem(store, address, inline)
            if problem == _UNVERIFIABLE:
                report.unverifiable += 1
            elif problem is not None:
                dangling.append((call, address))
                report.problems.append(f"result {call.hex()[:16]}: its value: {problem}")
        elif address in bad_values or address not in snapshot.values:
            dangling.append((call, address))
            if address not in bad_values:
                report.problems.append(f"result {call.hex()[:16]} names a missing value")
    report.results_checked += len(snapshot.bad)
    report.problems += [f"result record at {int.from_bytes(key, 'big')} of the log is damaged "
                        f"(its checksum or its lengths do not match)" for key, _ in snapshot.bad]
    report.functions_checked, bad_functions = damaged_records(store.env)
    report.problems += [f"function record {key.hex()[:16]}: its bytes do not hash to its key "
                        f"(damaged, or stored by an earlier version)" for key in bad_functions]
    now = time.time()
    stale = [p for p, a in files if a is None and now - _changed(p) > _STALE_TMP]
    if repair:
        removed: list[bytes] = []

        def fix(upkeep):
            for address, record in bad_values.items():
                if upkeep.value_record(address) == record:  # not rewritten meanwhile
                    upkeep.delete_value(address)
                    removed.append(address)
            for call, address in dangling:
                if upkeep.result(call) == address and _unreadable(store, address,
                                                                  upkeep.result_value(call)):
                    upkeep.delete_result(call)
                    report.repaired += 1
            report.repaired += upkeep.delete_records([key for key, _ in snapshot.bad])

        store.maintain(fix)
        for address in removed:
            store.unlink_files(address, bad_values[address])
        for path in stale:
            path.unlink(missing_ok=True)
        report.repaired += len(removed) + len(stale) + remove_records(store.env, bad_functions)
    return report


_UNVERIFIABLE = "unverifiable"


def _value_problem(store: Store, address: bytes, record: bytes) -> str | None:
    """What is wrong with a value record (None: nothing; :data:`_UNVERIFIABLE`: its content
    cannot be hashed to an address again, so only its checksum was checked)."""
    try:
        if live(record) is None:
            raise ValueError("a transient value of an earlier boot, or of an earlier format")
        view = store.checked_view(address, record, always=True)
        if view is None:
            raise ValueError("its transient file was dropped")
        found, derivable = checked_address(unpack(view, writable=False))
        if found != address:
            if not derivable:
                return _UNVERIFIABLE
            raise ValueError("content does not match its address")
    except Exception as exc:
        return str(exc)
    return None


def _unreadable(store: Store, address: bytes, record: bytes | None) -> bool:
    """Whether a result's value (as it reads it now) is absent or bad."""
    return record is None or _value_problem(store, address, record) not in (None, _UNVERIFIABLE)


def _in_use(store: Store, address: bytes, record: bytes, now: float) -> bool:
    """A transient argument copy of this boot, younger than an hour: calls running now may read
    it (their caller drops it when they end); older ones were left by a caller that died."""
    if not is_transient(record) or live(record) is None:
        return False
    try:
        return now - store.record_path(address, record).stat().st_mtime < _STALE_TMP
    except OSError:  # its file is gone: the record is a leftover
        return False


def _changed(path, *, linked: bool = False) -> float:
    """When a file was last written, or (``linked``) also given a new name: a durable name
    linked to an older transient copy has the copy's mtime, but a new ctime."""
    try:
        st = path.stat()
        return max(st.st_mtime, st.st_ctime) if linked else st.st_mtime
    except OSError:
        return time.time()


@dataclass
class GcReport:
    """What :func:`gc` removed (or would remove, with ``dry_run``)."""

    results_removed: int = 0
    values_removed: int = 0
    files_removed: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    last_copies_kept: int = 0  # results kept because no other node holds them (see ``keep``)


def gc(store: Store, *, max_bytes: int | None = None, older_than: float | None = None,
       dry_run: bool = False, keep: Callable[[list[bytes]], set[bytes]] | None = None) -> GcReport:
    """Free space: drop results whose value is absent or unreadable (of an earlier store
    format), results older than ``older_than`` seconds, then the oldest results until the store
    holds at most ``max_bytes``, then every value no result refers to, and stale files.

    It runs beside other users of the store: files are listed before the snapshot it decides
    by, a file with no record is removed only once it is old (a writer records it after
    writing it), and the deleting transaction keeps whatever changed since the snapshot (a
    value rewritten, or named by a result stored meanwhile).

    ``keep(calls)``: of the results it would drop as old or for size, those that must stay
    (the swarm's last copies, when this store is a node's).
    """
    report = GcReport(dry_run=dry_run)
    files = list(blob_files(store.blobs))  # before the snapshot: a later file is never judged by it
    snapshot = store.snapshot(meta=True)
    results, metas, values = snapshot.results, snapshot.meta, snapshot.values
    sizes = {a: (len(r) if is_inline(r) else len(r) + _size(store.record_path(a, r)))
             for a, r in values.items()}
    for call, address in results:  # a value inside a result's record goes with the record
        if call in snapshot.inline:
            sizes.setdefault(address, len(snapshot.inline[call]))
    dangling = [(c, a) for c, a in results if live(snapshot.value_record(c, a)) is None]
    results = [(c, a) for c, a in results if live(snapshot.value_record(c, a)) is not None]
    refs: dict[bytes, int] = {}
    for _, address in results:
        refs[address] = refs.get(address, 0) + 1
    total = snapshot.lmdb_bytes + sum(_size(p) for p, a in files if a is not None)
    unreferenced = total - sum(sizes.get(a, 0) for a in refs)  # freed anyway, with those values
    oldest_first = sorted(results, key=lambda r: metas.get(r[0], {}).get("stored", 0.0))
    drop: list[tuple[bytes, bytes]] = []
    now = time.time()
    for call, address in oldest_first:
        too_old = older_than is not None and now - metas.get(call, {}).get("stored", 0.0) > older_than
        too_big = max_bytes is not None and total - unreferenced > max_bytes
        if not (too_old or too_big):
            continue
        drop.append((call, address))
        refs[address] -= 1
        if refs[address] == 0:
            del refs[address]
            unreferenced += sizes.get(address, 0)
    if keep is not None and drop:
        kept = keep([call for call, _ in drop])
        for call, address in drop:
            if call in kept:
                refs[address] = refs.get(address, 0) + 1
        drop = [(call, address) for call, address in drop if call not in kept]
        report.last_copies_kept = len(kept)
    # What the ``values`` table holds for the results kept, unless they carry their value:
    dropped = set(drop)
    named = {a for c, a in results if c not in snapshot.inline and (c, a) not in dropped}
    garbage = [a for a in values if a not in named and not _in_use(store, a, values[a], now)]
    stale = [p for p, a in files if (a is None and now - _changed(p) > _STALE_TMP)
             or (a is not None and a not in values and now - _changed(p, linked=True) > _STALE_TMP)]
    report.results_removed = len(drop) + len(dangling)
    report.files_removed = len(stale)
    # A transient copy that a caller's running calls hold is in use, however old; the others
    # are taken (no caller can hold them meanwhile) until they are gone.
    transient = [a for a in garbage if is_transient(values[a])]
    with store.holds.taking(transient) as taken:
        garbage = [a for a in garbage if not is_transient(values[a]) or a in taken]
        report.values_removed = len(garbage)
        report.bytes_freed = sum(sizes.get(a, 0) for a in garbage)
        if dry_run:
            return report
        removed: list[bytes] = []

        def delete(upkeep):
            for call, address in drop:
                _delete_result(upkeep, call, address)
            for call, address in dangling:
                if live(upkeep.result_value(call)) is None:  # not stored meanwhile
                    _delete_result(upkeep, call, address)
            upkeep.delete_records([key for key, _ in snapshot.bad] + snapshot.stray)
            if not garbage:
                return
            named = upkeep.named_values()  # now, not then
            for address in garbage:
                if address not in named and upkeep.value_record(address) == values[address]:
                    upkeep.delete_value(address)
                    removed.append(address)

        store.maintain(delete)
        for address in removed:
            store.unlink_files(address, values[address])
    report.values_removed = len(removed)
    report.bytes_freed = sum(sizes.get(a, 0) for a in removed)
    for path in stale:
        path.unlink(missing_ok=True)
    return report


def _delete_result(upkeep: Upkeep, call: bytes, address: bytes) -> None:
    """Delete a result, unless it was stored again, naming another value, since the snapshot."""
    if upkeep.result(call) == address:
        upkeep.delete_result(call)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"

