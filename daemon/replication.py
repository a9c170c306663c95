"""The second copy: a result is acknowledged only once another node holds it too.

When a call ends here and its result is journaled, the node sends the result to one other
member — its first home other than this node — and answers the caller when that member says
the copy is journaled there as well. Results that end in the same turn of the loop travel to
each member in one ``replicate`` message, journaled there in one append: a group commit on both
machines, never one message per result. A large value goes ahead as ``put`` chunks (checked by
the receiver against its address before it is kept). The other homes get their copies from the
background repair (:mod:`.repair`), which this wakes.

A member that does not confirm within :data:`ACK_TIMEOUT` seconds, or is lost, or refuses the
copy, is replaced: the copy goes to the next live member (by the call's rendezvous order) that
was not tried yet, with :data:`ACK_TIMEOUT` seconds again, :data:`ATTEMPTS` members in all. Only
when none of them confirms is the result answered with the one copy it has: counted
(``late_acks`` in ``status``), said once in the log, and copied later by the repair.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pythagoras_p2p.defaults import NODE_LOG_ONCE as _LOG_ONCE
from pythagoras_p2p.net import wire
from pythagoras_p2p.net.transfer import upload_frames
from pythagoras_p2p.store.core import Store
from pythagoras_p2p.swarm.homes import homes
from pythagoras_p2p.swarm.peers import Peer

from .logonce import LogOnce

__all__ = ["SecondCopies", "Peers", "Traffic", "ACK_TIMEOUT", "ATTEMPTS", "entry_frames"]

log = logging.getLogger(__name__)

#: Seconds a member has to confirm a second copy before another member is tried.
ACK_TIMEOUT = 3.0
#: Members tried for the second copy of a result before it is answered with one copy: a
#: caller waits at most ATTEMPTS × ACK_TIMEOUT seconds for it.
ATTEMPTS = 2
#: Most results in one ``replicate`` message (a body frame each, under the frame cap).
BATCH = 512


@dataclass
class Traffic:
    """What this node sent and received of the swarm's copies (``status`` shows it)."""

    copies_sent: int = 0
    copies_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    refused: int = 0  # copies refused: damaged, or no room for them
    late_acks: int = 0  # results answered with one copy: no member confirmed a second in time
    copies_retried: int = 0  # second copies sent to another member after the first failed

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def entry_frames(entries: list[tuple[bytes, bytes, bytes | None, bytes]]) -> list:
    """The bodies of a ``replicate`` message: a JSON list of the results, then the packed
    value of each small one, in order. ``entries``: (call, address, packed or None, meta JSON)."""
    head = [{"call": c.hex(), "address": a.hex(), "large": b is None, "meta": json.loads(m)}
            for c, a, b, m in entries]
    return [wire.compact_json(head).encode(),
            *[b for _, _, b, _ in entries if b is not None]]


@dataclass
class _Outgoing:
    entries: list = field(default_factory=list)  # (call, address, packed|None, meta JSON)
    then: list = field(default_factory=list)  # callbacks once confirmed (or given up)
    tried: list = field(default_factory=list)  # per entry: the members tried before this one


class Peers(Protocol):
    """What the second copies use of the node's peering (:class:`~.peering.Peering`)."""

    def members(self) -> list[str]:
        """The ids of the nodes that hold the swarm's results."""

    def by_id(self, node_id: str) -> Peer | None:
        """The live peer with that node id, if any."""

    def ask(self, peer: Peer, op: str, callback: Callable, bodies: list | tuple = (),
            **fields: Any) -> int:
        """Send a request to ``peer``; ``callback(peer, reply)`` runs with its reply (or None)."""

    def forget_request(self, rid: int) -> None:
        """Its reply, if it ever comes, is ignored."""


class SecondCopies:
    """The node loop's side of replication; see the module docstring."""

    def __init__(self, node_id: str, store: Store, peers: Peers, replicas: int, traffic: Traffic,
                 poke_repair: Callable[[], None]):
        self.node_id = node_id
        self.store = store
        self.peers = peers
        self.log_once = LogOnce(log, _LOG_ONCE)
        self.replicas = replicas
        self.traffic = traffic
        self._poke = poke_repair
        self._outgoing: dict[str, _Outgoing] = {}  # member id → what goes to it this turn
        # request id → (sent, member, then, entries, tried)
        self._waiting: dict[int, tuple[float, str, list[Callable], list, list]] = {}

    def hold(self, call: bytes, address: bytes, blob: bytes | None, meta_raw: bytes,
             then: Callable[[], None]) -> bool:
        """Copy a journaled result to a second member, and run ``then`` once it is there;
        False (and ``then`` is not kept) when no other member can take a copy."""
        self._poke()
        if self.replicas < 2:
            return False
        return self._queue((call, address, blob, meta_raw), then, ())

    def _queue(self, entry: tuple, then: Callable[[], None], tried: tuple) -> bool:
        """Send ``entry`` this turn to its first home other than this node and ``tried`` (or,
        when every home was tried, the next live member by rendezvous order); False if none."""
        me = self.node_id
        members = [m for m in self.peers.members() if m != me and m not in tried]
        ranked = homes(entry[0], members, len(members)) if members else []
        target = ranked[0] if ranked else None
        if target is None:
            return False
        out = self._outgoing.setdefault(target, _Outgoing())
        out.entries.append(entry)
        out.then.append(then)
        out.tried.append(tried)
        return True

    def flush(self) -> None:
        """Send what this turn of the loop gathered (called once per turn)."""
        if self._waiting:
            self._expire()
        if not self._outgoing:
            return
        outgoing, self._outgoing = self._outgoing, {}
        for member, out in outgoing.items():
            peer = self.peers.by_id(member)
            if peer is None:  # lost since: another member, or answered with one copy
                self._retry(member, out.entries, out.then, out.tried, f"member {member} was lost")
                continue
            for start in range(0, len(out.entries), BATCH):
                end = start + BATCH
                self.send(peer, member, out.entries[start:end], out.then[start:end],
                          out.tried[start:end])

    def send(self, peer: Peer, member: str, entries: list, then: list | None = None,
             tried: list | None = None, callback: Callable | None = None) -> int:
        """One ``replicate`` message to ``peer``, the member ``member`` (large values first, as
        chunks); ``then``: callbacks once it is confirmed or given up (``tried``: the members each
        entry was sent to before); ``callback(peer, reply)``: the reply."""
        for _, address, blob, _ in entries:
            if blob is None:
                for offset, total, chunk in upload_frames(self.store, address) or ():
                    peer.send(wire.build("put", 0, [chunk], address=address, offset=offset,
                                         total=total))
                    self.traffic.bytes_sent += len(chunk)
        bodies = entry_frames(entries)
        self.traffic.copies_sent += len(entries)
        self.traffic.bytes_sent += sum(len(b) for b in bodies)
        box: dict = {}
        rid = box["rid"] = self.peers.ask(
            peer, "replicate", lambda p, msg: self._confirmed(box["rid"], p, msg, callback),
            bodies)
        if then is not None:
            self._waiting[rid] = (time.monotonic(), member, then, entries,
                                  tried if tried is not None else [()] * len(entries))
        return rid

    def _confirmed(self, rid: int, peer: Any, msg: Any, callback: Callable | None) -> None:
        if callback is not None:
            callback(peer, msg)
        waiting = self._waiting.pop(rid, None)
        if waiting is None:  # given up already (or nobody waits)
            return
        _, member, then, entries, tried = waiting
        if msg is None or msg.op != "ok":
            why = "it was lost" if msg is None else msg.fields.get("message", msg.op)
            self._retry(member, entries, then, tried, f"member {member} did not keep the copy: {why}")
            return
        for answer in then:
            answer()

    def _retry(self, member: str, entries: list, then: list, tried: list, why: str) -> None:
        """``member`` did not confirm these copies: each goes to another member not tried yet
        (sent with this turn's, or the next turn's, flush), or is answered with one copy."""
        alone: list = []
        for entry, answer, before in zip(entries, then, tried, strict=True):
            before = (*before, member)
            if len(before) < ATTEMPTS and self._queue(entry, answer, before):
                self.traffic.copies_retried += 1
            else:
                alone.append(answer)
        if alone:
            self._give_up(alone, why)

    def _give_up(self, then: list, why: str) -> None:
        self.traffic.late_acks += len(then)
        self.log_once(f"second-copy:{why[:40]}", "%d result(s) answered with one copy (%s); the "
                      "repair copies them", len(then), why)
        for answer in then:
            answer()

    def _expire(self) -> None:
        now = time.monotonic()
        for rid, (sent, member, then, entries, tried) in list(self._waiting.items()):
            if now - sent > ACK_TIMEOUT:
                del self._waiting[rid]
                self.peers.forget_request(rid)
                self._retry(member, entries, then, tried,
                            f"member {member} did not confirm within {ACK_TIMEOUT:g} s")

    def release_all(self) -> None:
        """The node stops: answer whoever still waits for a second copy."""
        for waiting in self._waiting.values():
            for answer in waiting[2]:
                answer()
        self._waiting.clear()
        for out in self._outgoing.values():  # retries not sent yet
            for answer in out.then:
                answer()
        self._outgoing.clear()
