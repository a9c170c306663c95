"""What a store holds per function, one stored call in detail, and forgetting results.

Backs ``f.lookup(**kw)``, ``f.forget(**kw)``, ``f.forget_all()`` and ``pythagoras-node cache ls``
and ``cache forget``. Forgetting deletes results (and their metadata); the values they named are
reclaimed by ``cache gc`` once no result names them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from ..identity.inputs import changed
from .core import Store
from .records import encode_meta, is_inline, live

__all__ = ["StoredCall", "FunctionEntry", "Version", "stored_call", "listing", "stored_versions",
           "forget", "forget_function", "functions_named", "forget_plan", "copy_entry",
           "computed_by"]

UNKNOWN = "(unknown)"  # results stored without metadata (by an earlier release)


@dataclass(frozen=True, repr=False)
class StoredCall:
    """A stored result: where and when it was computed, how long it took, how large it is.

    ``started`` and ``stored`` are aware datetimes in UTC (None when the result was stored
    without them); ``as_dict()`` gives them as ISO 8601 strings, ready for JSON."""

    address: str  # the call address, hex
    function: str
    computed_on: str | None  # host
    worker: str | None
    started: datetime | None  # when the call began, UTC
    duration: float | None  # seconds
    stored: datetime | None  # when its result was stored, UTC
    nbytes: int  # of the stored value
    # The files ({path: [blake3, size, mtime_ns, ino, dev, ctime_ns] or None when absent}) and
    # environment variables ({name: value or None}) the call read, checked before each hit
    # (identity/inputs.py); None when it read none, or when they are not tracked.
    inputs: dict | None = None
    inputs_tracked: bool = True  # False: add_pure_function(track_inputs=False), nothing checked
    inputs_changed: tuple[str, ...] = ()  # what of them changed here: the next call recomputes
    # The member that computed it, as its signature says ({"key_id", "host"}); None: unsigned
    # (computed in a home without member keys, or by an earlier release).
    computed_by: dict | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        for name in ("started", "stored"):
            if out[name] is not None:
                out[name] = out[name].isoformat()
        return out

    def __repr__(self) -> str:
        from .maintenance import human_bytes

        when = self.started or self.stored
        parts = [f"computed on {self.computed_on or UNKNOWN}"
                 + (f" by {self.worker}" if self.worker else "")]
        if self.computed_by:
            parts.append(f"member {self.computed_by.get('key_id') or '?'}")
        if when is not None:
            parts.append(f"at {when:%Y-%m-%d %H:%M:%S} UTC")
        if self.duration is not None:
            parts.append(f"in {self.duration * 1000:.1f} ms" if self.duration < 1
                         else f"in {self.duration:.2f} s")
        parts.append(human_bytes(self.nbytes))
        if not self.inputs_tracked:
            parts.append("inputs not tracked")
        elif self.inputs_changed:
            parts.append(f"changed since: {', '.join(self.inputs_changed)}")
        return f"<StoredCall {self.function} {self.address[:16]}: {', '.join(parts)}>"


def computed_by(meta: dict | None) -> dict | None:
    """Who computed a result, as its metadata says (``{"key_id", "host"}``, without the
    signature, which :mod:`pythagoras_p2p.trust.provenance` makes and checks); None: unsigned."""
    found = (meta or {}).get("computed_by")
    if not isinstance(found, dict):
        return None
    return {"key_id": found.get("key_id"), "host": found.get("host")}


def _utc(seconds: object) -> datetime | None:
    """Seconds since the epoch, as stored in a result's metadata, as an aware UTC datetime."""
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return datetime.fromtimestamp(seconds, tz=UTC)
    return None


@dataclass
class FunctionEntry:
    """The results of one function (all its versions) in a store."""

    function: str
    results: int = 0
    nbytes: int = 0
    last_stored: float | None = None
    # who computed them: [{"key_id", "host", "results"}], most first (key_id None: unsigned)
    computed_by: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _value_size(store: Store, address: bytes, record: bytes | None) -> int:
    record = live(record)
    if record is None:
        return 0
    if is_inline(record):
        return len(record)
    try:
        return store.record_path(address, record).stat().st_size
    except OSError:
        return 0


def stored_call(store: Store, call: bytes, function: str,
                tracked: bool = True) -> StoredCall | None:
    """The stored result of ``call``, described, or None; nothing is read but metadata (and
    the files and variables it read, to say which changed). ``tracked``: whether the function
    records its inputs."""
    entry = store.result_entry(call)
    if entry is None:
        return None
    address, record = entry
    meta = store.get_meta(call) or {}
    trace = meta.get("inputs") or None
    return StoredCall(
        address=call.hex(), function=meta.get("function", function), computed_on=meta.get("host"),
        worker=meta.get("worker"), started=_utc(meta.get("started")),
        duration=meta.get("duration"), stored=_utc(meta.get("stored")), nbytes=_value_size(store, address, record),
        inputs=trace, inputs_tracked=tracked, inputs_changed=tuple(changed(trace)),
        computed_by=computed_by(meta),
    )


def listing(store: Store, name: str | None = None) -> list[FunctionEntry]:
    """Per function (or only ``name``): how many results, their size, when the last was stored."""
    snap = store.snapshot(meta=True)
    entries: dict[str, FunctionEntry] = {}
    members: dict[str, dict[tuple, int]] = {}
    for call, address in snap.results:
        function = snap.meta.get(call, {}).get("function", UNKNOWN)
        if name is not None and function != name:
            continue
        entry = entries.setdefault(function, FunctionEntry(function))
        who = computed_by(snap.meta.get(call)) or {}
        counts = members.setdefault(function, {})
        counts[who.get("key_id"), who.get("host")] = counts.get((who.get("key_id"), who.get("host")), 0) + 1
        entry.results += 1
        entry.nbytes += _value_size(store, address, snap.value_record(call, address))
        stored = snap.meta.get(call, {}).get("stored")
        if stored is not None and (entry.last_stored is None or stored > entry.last_stored):
            entry.last_stored = stored
    for function, counts in members.items():
        entries[function].computed_by = [
            {"key_id": key_id, "host": host, "results": n}
            for (key_id, host), n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return sorted(entries.values(), key=lambda e: e.function)


@dataclass
class Version:
    """One version (fingerprint) of a function in a store: how many results, how large, when
    they were stored; ``manifest`` (label -> digest of each part of the fingerprint, from the
    function's record; None for a record made before manifests) and ``calls`` ((call, metadata)
    of each result) are for ``explain``."""

    function: str
    fingerprint: str  # hex
    results: int = 0
    nbytes: int = 0
    first_stored: float | None = None
    last_stored: float | None = None
    manifest: dict | None = field(default=None, repr=False)
    calls: list = field(default_factory=list, repr=False)
    newest: bool = False  # the version of its function stored last (older ones are likely stale)

    def as_dict(self) -> dict:
        return {"function": self.function, "fingerprint": self.fingerprint,
                "results": self.results, "nbytes": self.nbytes,
                "first_stored": self.first_stored, "last_stored": self.last_stored,
                "newest": self.newest}


def stored_versions(store: Store, name: str | None = None) -> list[Version]:
    """The stored versions of every function (or of ``name``), oldest first per function."""
    snap = store.snapshot(meta=True)
    manifests = _manifests(store)
    versions: dict[tuple[str, str], Version] = {}
    for call, address in snap.results:
        meta = snap.meta.get(call, {})
        function = meta.get("function", UNKNOWN)
        if name is not None and function != name:
            continue
        fp = meta.get("fingerprint") or UNKNOWN
        version = versions.get((function, fp))
        if version is None:
            version = versions[function, fp] = Version(function, fp, manifest=manifests.get(fp))
        version.results += 1
        version.nbytes += _value_size(store, address, snap.value_record(call, address))
        version.calls.append((call, meta))
        stored = meta.get("stored")
        if isinstance(stored, (int, float)):
            if version.first_stored is None or stored < version.first_stored:
                version.first_stored = stored
            if version.last_stored is None or stored > version.last_stored:
                version.last_stored = stored
    newest: dict[str, Version] = {}
    for version in versions.values():
        best = newest.get(version.function)
        if best is None or (version.last_stored or 0.0) > (best.last_stored or 0.0):
            newest[version.function] = version
    for version in newest.values():
        version.newest = True
    return sorted(versions.values(), key=lambda v: (v.function, v.first_stored or 0.0))


def _manifests(store: Store) -> dict[str, dict]:
    """fingerprint (hex) -> the manifest its function record carries (records without one, or
    that cannot be read, are left out: ``explain`` then says it cannot compare parts)."""
    from .packing import unpack

    found = {}
    for key, record in store.function_records():
        try:
            fields = unpack(record)
            fp, manifest = fields.get("fp", key), fields.get("manifest")
        except Exception:  # a damaged record: cache verify reports it
            continue
        if isinstance(manifest, dict) and isinstance(fp, bytes):
            found[fp.hex()] = manifest
    return found


def forget(store: Store, calls: Iterable[bytes]) -> int:
    """Delete the results of ``calls`` (those stored); returns how many were deleted."""
    wanted = list(calls)

    def delete(upkeep) -> int:
        gone = 0
        for call in wanted:
            if upkeep.result(call) is not None:
                upkeep.delete_result(call)
                gone += 1
        return gone

    return store.maintain(delete) if wanted else 0


def forget_function(store: Store, name: str) -> int:
    """Delete every result of the function whose qualified name (``module.qualname``, as
    :func:`listing` shows it) is ``name``, every version of it; no other function's."""
    snap = store.snapshot(meta=True)
    return forget(store, [call for call, _ in snap.results
                          if snap.meta.get(call, {}).get("function") == name])


def functions_named(store: Store, name: str) -> list[str]:
    """The stored functions ``name`` may have meant: those whose qualified name ends with
    ``.name`` (a function given by its short name), for a message that lists them."""
    tail = "." + name
    return sorted({meta.get("function", UNKNOWN) for meta in store.snapshot(meta=True).meta.values()
                   if str(meta.get("function", "")).endswith(tail)})


def forget_plan(store: Store, name: str, *, delete: bool) -> dict:
    """What forgetting the function ``name`` deletes here (``versions``, as dicts; when there
    are none, ``similar``: the functions the name may have meant), and with ``delete`` how many
    results it deleted (``forgot``): a node's answer to ``cache forget --swarm``."""
    versions = [v.as_dict() for v in stored_versions(store, name)]
    return {"versions": versions, "similar": [] if versions else functions_named(store, name),
            "forgot": forget_function(store, name) if delete and versions else 0}


def copy_entry(store: Store, call: bytes) -> tuple[bytes, bytes, bytes | None, bytes] | None:
    """What a copy of a stored result carries to another node: (call, value address, packed
    value, checked — None when it lives in a file, sent in chunks — metadata JSON); None if it
    is gone."""
    found = store.result_entry(call)
    if found is None:
        return None
    address, record = found
    blob = None
    if is_inline(record):
        view = store.packed(address, record)
        if view is None:
            return None
        blob = bytes(view)
    meta = store.get_meta(call)
    return call, address, blob, encode_meta(meta if meta is not None else {})
