"""Copies of results arriving from other members: ``sync``, ``offer`` and ``replicate``.

A part of :class:`~.handlers.Handlers` (held as ``handlers.receiving``, beside its ``values``).
A copy enters the store only once it is proven: each small value is checked against its
address by the node's checker process (never unpickled here), a large one arrived as ``put``
chunks checked the same way; then the results of one message are journaled in one append.

The small copies of a message are acknowledged before they are checked — a caller waits for
its result's second copy, and the check is a process hop — but not before they are as durable
as a journaled result: written with one ``write()`` to a file of ``HOME/unchecked``, removed
once they are checked and journaled (a node that restarts checks what it finds there first).
Until then they are not in the store: no lookup or call is answered from them. A copy that does
not match its address is refused and logged; when the store has no room for them, the copies
are refused with a log line and nothing is written.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pythagoras_p2p.defaults import STORE_HEADROOM, store_cap
from pythagoras_p2p.execution.outcomes import Ok
from pythagoras_p2p.net import wire
from pythagoras_p2p.net.wire import _is_address
from pythagoras_p2p.store.core import Store
from pythagoras_p2p.store.journal import Journal, encode_meta, read_records, write_records
from pythagoras_p2p.swarm.homes import RANGES, RangeDigests, check_digests
from pythagoras_p2p.trust import Members
from pythagoras_p2p.trust.provenance import refusal

from .logonce import LogOnce
from .outbox import Outbox
from .replication import BATCH, Traffic
from .state import CacheFacts, Counters
from .uploads import Upload

__all__ = ["Copies", "CopyChecks", "Repair"]

log = logging.getLogger(__name__)

_MAX_OFFER = 65536
_MAX_META = 64 * 1024
_unchecked_names = itertools.count()


class _Arrival:
    """The copies of one ``replicate`` message, until each is checked."""

    def __init__(self, ident: bytes | None, request_id: int, waiting: int):
        self.ident, self.request_id, self.waiting = ident, request_id, waiting
        self.unchecked: Path | None = None  # the file that keeps the small copies meanwhile
        self.small: list = []  # (call, address, packed, meta JSON) proven
        self.large: list = []
        self.refused: list[str] = []
        self.had = 0  # copies it held already


class CopyChecks(Protocol):
    """How received copies are checked against their addresses (by the node's checker)."""

    def check_values(self, values: list[tuple[bytes, bytes]], done: Callable[[set[int]], None]) -> None:
        """Check each ``(address, packed)``; ``done(bad)`` runs on the node's thread with the
        positions of those that do not match."""


class Repair(Protocol):
    """What the copies arriving need of the node's repair (:class:`~.repair.Repairer`)."""

    def pair_digests(self, member: str, members: list) -> RangeDigests | None:
        """This node's digests of the calls it shares with ``member``."""

    def poke(self) -> None:
        """Results arrived: look again soon."""


class Copies:
    """Serving ``sync``, ``offer`` and ``replicate``: a part of :class:`~.handlers.Handlers`."""

    def __init__(self, node_id: str, home: Path, store: Store, journal: Journal, outbox: Outbox,
                 checks: CopyChecks, repair: Repair, uploads: dict[tuple[bytes, bytes], Upload],
                 entry: Callable[[bytes], Ok | None], members: Callable[[], Members | None],
                 cache_facts: CacheFacts, traffic: Traffic, counts: Counters, log_once: LogOnce):
        self.node_id = node_id
        self.unchecked = home / "unchecked"  # copies acknowledged, not yet checked
        self.store = store
        self.journal = journal
        self.outbox = outbox
        self.checks = checks
        self.repair = repair
        self.uploads = uploads  # the values' uploads in progress: large values of copies
        self.entry = entry  # the stored (or journaled) result of a call
        self.members = members  # the swarm's member list as the node knows it now
        self.cache_facts = cache_facts
        self.traffic = traffic
        self.counts = counts
        self.log_once = log_once

    def on_sync(self, ident: bytes, msg: wire.Message) -> None:
        """Which ranges differ between the asker's digests and this node's, for the calls
        of which both are homes (all of them when the two see different members)."""
        digests = check_digests(msg.fields.get("digests"))
        members = msg.fields.get("members")
        sender = msg.fields.get("node")
        if digests is None or not isinstance(members, list) or not isinstance(sender, str):
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, "sync: node, members and digests expected")
            return
        mine = self.repair.pair_digests(sender, members)
        differ = list(range(RANGES)) if mine is None else mine.differing(digests)
        self.outbox.send(ident, wire.build("ok", msg.id, differ=differ))

    def on_offer(self, ident: bytes, msg: wire.Message) -> None:
        """The offered calls this node holds no result of (body: raw 32-byte addresses)."""
        raw = bytes(msg.bodies[0]) if len(msg.bodies) == 1 else b""
        if len(msg.bodies) != 1 or len(raw) % 32 or len(raw) > 32 * _MAX_OFFER:
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED,
                              f"offer: one body of at most {_MAX_OFFER} 32-byte addresses expected")
            return
        calls = [raw[i: i + 32] for i in range(0, len(raw), 32)]
        journal = self.journal
        lacking = [c for c in self.store.lacking(calls) if journal.pending(c) is None]
        self.outbox.send(ident, wire.build("ok", msg.id, [b"".join(lacking)]))

    def on_replicate(self, ident: bytes, msg: wire.Message) -> None:
        entries = _entries(msg)
        if isinstance(entries, str):
            self.counts.rejected += 1
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, f"replicate: {entries}")
            return
        fresh = [e for e in entries if self.entry(e[0]) is None]
        fresh, unproven = self._of_members(fresh)
        incoming = sum(len(e[2]) for e in fresh if e[2] is not None)
        if fresh and not self._room_for(incoming):
            self.traffic.refused += len(fresh)
            self.log_once("replicas:full", "refusing copies of results from other members: the "
                          "store is at its cap (PYTHAGORAS_STORE_MAX_SIZE); `pythagoras-node cache "
                          "gc` makes room")
            self.outbox.error(ident, msg.id, wire.ERR_STORE,
                              f"node {self.node_id} has no room for copies (its store is full)")
            return
        arrival = _Arrival(ident, msg.id, 0)
        arrival.had = len(entries) - len(fresh) - len(unproven)
        arrival.refused.extend(unproven)
        small = [e for e in fresh if e[2] is not None]
        for entry in fresh:
            if entry[2] is not None:
                continue
            address = entry[1]
            if self.store.has_value(address):
                arrival.large.append(entry)
                continue
            upload = self.uploads.get((ident, address))
            if upload is None:
                arrival.refused.append(entry[0].hex())
                continue
            arrival.waiting += 1
            upload.after.append(lambda ok, entry=entry: self._large_checked(arrival, entry, ok))
        if small:
            try:
                arrival.unchecked = self._keep_unchecked(small)
            except OSError as exc:  # the disk is full: no part of them is kept
                self.traffic.refused += len(fresh)
                self.log_once("replicas:unchecked", "cannot keep copies of results: %s", exc)
                self.outbox.error(ident, msg.id, wire.ERR_STORE,
                                  f"node {self.node_id} cannot keep copies: {exc}")
                return
            if not arrival.waiting:  # durable now: acknowledged, checked next
                self.outbox.send(ident, wire.build("ok", msg.id, stored=len(small),
                                            held=len(small) + arrival.had, refused=arrival.refused))
                arrival.ident = None
            self._check(arrival, small)
        else:
            self._settle(arrival)

    def _of_members(self, entries: list) -> tuple[list, list[str]]:
        """The copies whose signature shows a member of the swarm computed them, and the calls
        (hex) of the others, refused and logged (:func:`~pythagoras_p2p.trust.provenance.refusal`)."""
        members = self.members()
        if members is None or not entries:
            return entries, []
        kept, refused = [], []
        for entry in entries:
            why = refusal(json.loads(entry[3]), entry[0], entry[1], members)
            if why is None:
                kept.append(entry)
                continue
            refused.append(entry[0].hex())
            self.log_once(f"replica-origin:{why[:40]}", "refused a copy of result %s: %s",
                          entry[0].hex()[:16], why)
        return kept, refused

    def _keep_unchecked(self, small: list) -> Path:
        self.unchecked.mkdir(exist_ok=True)
        path = self.unchecked / f"{os.getpid()}-{next(_unchecked_names)}.copies"
        write_records(path, [(c, a, b, {}) for c, a, b, _ in small], [m for *_, m in small])
        return path

    def _check(self, arrival: _Arrival, small: list) -> None:
        arrival.waiting += 1
        self.checks.check_values([(e[1], e[2]) for e in small],
                                 lambda bad: self._small_checked(arrival, small, bad))

    def check_unchecked(self) -> None:
        """At start: the copies a previous run acknowledged but had not checked yet."""
        folder = self.unchecked
        for path in sorted(folder.glob("*.copies")) if folder.is_dir() else ():
            small = [(c, a, b, encode_meta(m)) for c, a, b, m in read_records(path) if b is not None]
            arrival = _Arrival(None, 0, 0)
            arrival.unchecked = path
            if small:
                self._check(arrival, small)
            else:
                path.unlink(missing_ok=True)

    def _small_checked(self, arrival: _Arrival, small: list, bad: set) -> None:
        for i, entry in enumerate(small):
            if i in bad:
                arrival.refused.append(entry[0].hex())
                self.log_once(f"replica-bad:{entry[1].hex()[:16]}", "refused a copy of result %s: "
                              "its bytes do not have the address %s", entry[0].hex()[:16],
                              entry[1].hex()[:16])
            else:
                arrival.small.append(entry)
        arrival.waiting -= 1
        self._settle(arrival)

    def _large_checked(self, arrival: _Arrival, entry: tuple, ok: bool) -> None:
        if ok:
            arrival.large.append(entry)
        else:
            arrival.refused.append(entry[0].hex())
        arrival.waiting -= 1
        self._settle(arrival)

    def _settle(self, arrival: _Arrival) -> None:
        """Keep what was proven, once everything of the message is checked; answer."""
        if arrival.waiting:
            return
        stored = 0
        try:
            if arrival.small:
                records = [(c, a, b, json.loads(m)) for c, a, b, m in arrival.small]
                self.journal.append(records, [m for _, _, _, m in arrival.small])
                stored += len(records)
            if arrival.large:
                self.store.put_results([(c, a, None, json.loads(m)) for c, a, _, m in arrival.large])
                stored += len(arrival.large)
        except Exception as exc:  # the disk is full, or the store refused a write
            self.traffic.refused += len(arrival.small) + len(arrival.large)
            self.log_once("replicas:store", "cannot keep copies of results: %s", exc)
            if arrival.ident is not None:
                self.outbox.error(arrival.ident, arrival.request_id, wire.ERR_STORE,
                                  f"node {self.node_id} cannot keep copies: {exc}")
            return
        finally:
            if arrival.unchecked is not None:  # journaled, refused, or cannot be kept
                arrival.unchecked.unlink(missing_ok=True)
        self.traffic.copies_received += stored
        self.traffic.bytes_received += sum(len(e[2]) for e in arrival.small)
        self.traffic.refused += len(arrival.refused)
        if stored:
            self.repair.poke()
        if arrival.ident is None:  # acknowledged already (or found at start)
            return
        self.outbox.send(arrival.ident, wire.build("ok", arrival.request_id, stored=stored,
                                            held=stored + arrival.had, refused=arrival.refused))

    def _room_for(self, incoming: int) -> bool:
        """Whether copies of ``incoming`` bytes fit under the store's cap."""
        _, size = self.cache_facts.value
        return size + incoming <= store_cap() - STORE_HEADROOM


def _entries(msg: wire.Message) -> list | str:
    """The (call, address, packed|None, meta JSON) of a ``replicate`` message, or why not."""
    if not msg.bodies:
        return "a body with the list of results expected"
    try:
        head = json.loads(bytes(msg.bodies[0]))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "the list of results is not JSON"
    if not isinstance(head, list) or len(head) > 2 * BATCH:
        return f"the list of results must be a list of at most {2 * BATCH}"
    blobs = iter(msg.bodies[1:])
    entries = []
    for item in head:
        if not (isinstance(item, dict) and _is_address(item.get("call"))
                and _is_address(item.get("address")) and isinstance(item.get("large"), bool)
                and isinstance(item.get("meta"), dict)):
            return "each result needs call, address, large and meta"
        meta = encode_meta(item["meta"])
        if len(meta) > _MAX_META:
            return "a result's meta is too large"
        blob = None
        if not item["large"]:
            blob = next(blobs, None)
            if blob is None:
                return "fewer value bodies than small results"
            blob = bytes(blob)
        entries.append((bytes.fromhex(item["call"]), bytes.fromhex(item["address"]), blob, meta))
    if next(blobs, None) is not None:
        return "more value bodies than small results"
    return entries
