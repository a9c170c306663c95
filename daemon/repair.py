"""Anti-entropy: every result this node holds reaches each of its ``R`` homes, in the background.

A thread of its own (with its own sockets to the members, so the node's loop never waits for
it) runs *rounds*: after a result is stored here, when the members change, and every
:data:`EVERY` seconds otherwise. A round reads the calls of the store, computes their homes
among the members (:mod:`pythagoras_p2p.swarm.homes`), and with each other member ``Q``:

1. ``sync``: for the calls of which both this node and ``Q`` are homes, one digest per range of
   the address space; ``Q`` answers the ranges where its own digest differs;
2. ``offer``: the calls of those ranges (and the calls this node holds without being one of
   their homes — results computed here, or everything when the node stops), as raw addresses,
   up to :data:`OFFER` per message; ``Q`` answers the ones it lacks;
3. ``replicate``: those results, in batches (large values as chunks first), at most
   ``rate`` bytes per second.

So a node that joins receives its share from the others, a node that died is replaced by the
next home of each of its calls, and ``pythagoras-node stop`` hands over what it holds (a round
with itself left out of the members) before it exits. Nothing is sent per result: a quiet
swarm exchanges one ``sync`` per pair of members per round.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pythagoras_p2p.net import wire
from pythagoras_p2p.net.rpc import client_socket
from pythagoras_p2p.net.sockets import endpoint
from pythagoras_p2p.net.transfer import upload_frames
from pythagoras_p2p.store.env import ReadersBusyError
from pythagoras_p2p.store.listing import copy_entry
from pythagoras_p2p.swarm.homes import RangeDigests, homes
from pythagoras_p2p.trust.provenance import vouch_raw

from .replication import BATCH, Traffic, entry_frames

if TYPE_CHECKING:
    import zmq

    from pythagoras_p2p.net.security import SwarmKey
    from pythagoras_p2p.store.core import Store
    from pythagoras_p2p.trust import Members, Trust

__all__ = ["Repairer", "View", "EVERY"]

log = logging.getLogger(__name__)

#: Seconds between rounds of a quiet node (a stored result or a change of members starts one sooner).
EVERY = 5.0
#: Most call addresses in one ``offer``.
OFFER = 16384
#: Most bytes of values in one ``replicate`` message.
BATCH_BYTES = 8 << 20
#: Seconds to wait for a member's answer before the round goes on without it (sooner when
#: the member leaves the view: it stopped, or fell silent).
ANSWER_WITHIN = 10.0


@dataclass(frozen=True)
class View:
    """The members as the node's loop last saw them: ids, and where each listens."""

    members: tuple[str, ...] = ()
    where: dict = field(default_factory=dict)  # id → (host, port)
    changed: float = 0.0  # monotonic time of the last change


@dataclass
class Facts:
    """What the last round found (``status`` shows it)."""

    held: int = 0  # results in the store
    homed: int = 0  # of which this node is a home
    under: int = 0  # copies a home lacked, not yet delivered
    round_s: float = 0.0
    work_s: float = 0.0  # of which this node worked (the rest: waiting for members' answers)
    rounds: int = 0
    settled_at: float = -1.0  # start of the last round that reached every member
    handover: str = ""

    def as_dict(self) -> dict:
        return {"held": self.held, "homed": self.homed, "under_replicated": self.under,
                "round_s": round(self.round_s, 3), "rounds": self.rounds,
                "handover": self.handover}


class NodeSide(Protocol):
    """What the repair uses of its node (:class:`~pythagoras_p2p.daemon.node.Node`)."""

    @property
    def node_id(self) -> str: ...

    @property
    def key(self) -> SwarmKey: ...

    @property
    def context(self) -> zmq.Context: ...

    @property
    def store(self) -> Store: ...

    @property
    def trust(self) -> Trust: ...  # its keys sign the copies that leave

    @property
    def members(self) -> Members | None: ...

    @property
    def peering(self) -> Any: ...  # .peering.Peering: whether the members are found (discovered)


class Repairer:
    """The anti-entropy thread of one node; see the module docstring."""

    def __init__(self, node: NodeSide, replicas: int, traffic: Traffic, rate: float):
        self.node = node
        self.replicas = replicas
        self.traffic = traffic
        self.rate = rate  # bytes per second of values sent, at most
        self.view = View(changed=time.monotonic())
        self.facts = Facts()
        self.digests: tuple[tuple[str, ...], dict[str, RangeDigests]] = ((), {})
        self._homes: dict[bytes, tuple[str, ...]] = {}
        self._homes_for: tuple[str, ...] = ()
        self._confirmed: set[bytes] = set()  # calls held here, not homed, known at all homes
        self._sockets: dict[tuple[str, int], Any] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._leaving = threading.Event()
        self.left = threading.Event()  # the hand-over round is over
        self._ids = 0
        self._member = ""  # the member being asked
        self._waited = 0.0  # seconds of this round spent waiting for answers
        self._thread = threading.Thread(target=self._run, name="pythagoras-repair", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the node's side

    def poke(self) -> None:
        self._wake.set()

    def see(self, members: tuple[str, ...], where: dict) -> None:
        """The node's loop saw these members (called each tick; cheap when nothing changed)."""
        if members != self.view.members or where != self.view.where:
            self.view = View(members, dict(where), time.monotonic())
            self._wake.set()

    def settled(self) -> bool:
        """Whether this node has had time to find the members (:meth:`Peering.discovered`)
        and a round that began after the last change of members has reached them all: then a
        result is on its homes, or on its way (a lookup may trust them). A node that has just
        started is not settled: what it knows of the swarm, and what it holds, may be partial."""
        return self.node.peering.discovered() and self.facts.settled_at >= self.view.changed

    def pair_digests(self, member: str, members: list) -> RangeDigests | None:
        """This node's digests of the calls it shares with ``member``, if computed for the
        same members as the asker's."""
        seen, by_member = self.digests
        if tuple(members) != seen:
            return None
        return by_member.get(member, RangeDigests())

    def hand_over(self) -> None:
        """Start the last round: copy what would fall under ``R`` copies without this node."""
        self._leaving.set()
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        last, seen = 0.0, None
        while not self._stop.is_set():
            # A big store does not spin the processor: rounds start at most every ten times
            # the work the last one took; a change of members starts one at once.
            pause = min(30.0, max(1.0, 10 * self.facts.work_s))
            self._wake.wait(EVERY)
            self._wake.clear()
            if self._stop.is_set():
                break
            wait = pause - (time.monotonic() - last)
            if wait > 0 and self.view is seen and not self._leaving.is_set():
                if self._stop.wait(wait):
                    break
            last, seen = time.monotonic(), self.view
            leaving = self._leaving.is_set()
            try:
                self._round(leaving)
            except ReadersBusyError as exc:  # live processes hold every reader slot for now
                log.info("repair round postponed: %s", exc)
            except Exception as exc:  # a bug or a store error: say it, try again next round
                log.warning("repair round failed: %r", exc)
            if leaving:
                self.left.set()
                break
        for sock in self._sockets.values():
            sock.close(0)
        self._sockets.clear()

    def _round(self, leaving: bool) -> None:
        started = time.monotonic()
        self._waited = 0.0
        view = self.view
        me = self.node.node_id
        members = tuple(m for m in view.members if not (leaving and m == me))
        others = [m for m in members if m != me and m in view.where]
        calls = self.node.store.result_calls()
        if members != self._homes_for:
            self._homes, self._homes_for, self._confirmed = {}, members, set()
        table = self._homes
        if len(table) > 2 * len(calls):
            table.clear()
        digests = {m: RangeDigests() for m in others}
        spread: list[bytes] = []  # held here but not homed here: offered to every home
        homed = 0
        for call in calls:
            hs = table.get(call)
            if hs is None:
                hs = table[call] = tuple(homes(call, members, self.replicas)) if members else ()
            if me in hs:
                homed += 1
                for h in hs:
                    if h != me and h in digests:
                        digests[h].add(call)
            elif call not in self._confirmed:
                spread.append(call)
        self.digests = (members, digests)
        self.facts.held, self.facts.homed = len(calls), homed
        if leaving:
            log.info("handing over %d result(s) to %d member(s) before stopping", len(spread),
                     len(others))
            self.facts.handover = f"0/{len(spread)}"
        reached = 0
        under = 0
        for member in others:
            try:
                sent, lacked = self._exchange(member, view.where[member], digests[member], spread,
                                              members, leaving)
            except _Unanswered as exc:
                log.info("repair: member %s did not answer (%s); trying again next round",
                         member, exc)
                continue
            reached += 1
            under += lacked - sent
        confirmed_round = reached == len(others)
        if confirmed_round:
            self._confirmed.update(spread)
        self.facts.under = under
        self.facts.round_s = time.monotonic() - started
        self.facts.work_s = self.facts.round_s - self._waited
        self.facts.rounds += 1
        if confirmed_round and view is self.view:
            self.facts.settled_at = started
        if leaving:
            self.facts.handover = f"done: {len(spread)} result(s) offered to {reached} member(s)"
            log.info("hand-over %s", self.facts.handover)

    def _exchange(self, member: str, where: tuple, digests: RangeDigests, spread: list,
                  members: tuple, leaving: bool) -> tuple[int, int]:
        """One member: compare, offer, copy. (copies sent, copies it lacked)."""
        sock = self._socket(where)
        me = self.node.node_id
        self._member = member
        reply = self._ask(sock, "sync", node=me, members=list(members), digests=digests.to_wire())
        differ = set(reply.fields.get("differ") or [])
        offer = []
        if differ:
            offer = [c for c in self._homes_for_pair(member) if c[0] in differ]
        offer += [c for c in spread if member in self._homes.get(c, ())]
        lacked = sent = 0
        for start in range(0, len(offer), OFFER):
            chunk = offer[start: start + OFFER]
            reply = self._ask(sock, "offer", bodies=[b"".join(chunk)])
            wanted = bytes(reply.bodies[0]) if reply.bodies else b""
            want = [wanted[i: i + 32] for i in range(0, len(wanted) - 31, 32)]
            lacked += len(want)
            sent += self._copy(sock, want, member)
            if leaving:
                self.facts.handover = f"{start + len(chunk)}/{len(offer)} offered to {member}"
        return sent, lacked

    def _homes_for_pair(self, member: str) -> list[bytes]:
        me = self.node.node_id
        return [c for c, hs in self._homes.items() if me in hs and member in hs]

    def _copy(self, sock: Any, want: list[bytes], member: str) -> int:
        """Send the results ``want`` to a member in batches; how many it kept."""
        store = self.node.store
        kept = 0
        batch, size = [], 0
        signed_only = self.node.members is not None
        for i, call in enumerate(want):
            entry = copy_entry(store, call)
            if entry is not None:  # signed as it leaves, if a client of this home computed it
                entry = (*entry[:3], vouch_raw(entry[3], call, entry[1], self.node.trust.keys))
                if signed_only and b'"sig"' not in entry[3]:
                    entry = None  # unsigned (from before member keys): members refuse it
            if entry is not None:
                batch.append(entry)
                size += len(entry[2]) if entry[2] is not None else 0
            if batch and (len(batch) >= BATCH or size >= BATCH_BYTES or i == len(want) - 1):
                kept += self._send(sock, batch, size)
                batch, size = [], 0
        return kept

    def _send(self, sock: Any, entries: list, size: int) -> int:
        started = time.monotonic()
        for _, address, blob, _ in entries:
            if blob is None:
                for offset, total, chunk in upload_frames(self.node.store, address) or ():
                    sock.send_multipart(wire.build("put", 0, [chunk], address=address,
                                                   offset=offset, total=total), copy=False)
                    size += len(chunk)
        bodies = entry_frames(entries)
        reply = self._ask(sock, "replicate", bodies=bodies)
        self.traffic.copies_sent += len(entries)
        self.traffic.bytes_sent += size
        if self.rate > 0:  # at most ``rate`` bytes per second
            rest = size / self.rate - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)
                self._waited += rest
        return int(reply.fields.get("held", reply.fields.get("stored", 0)))

    # ------------------------------------------------------------------ requests

    def _socket(self, where: tuple[str, int]) -> Any:
        sock = self._sockets.get(where)
        if sock is None:
            server = self.node.key.server_key(*where, context=self.node.context)
            sock = self._sockets[where] = client_socket(self.node.context, self.node.key, server)
            sock.connect(endpoint(*where))
        return sock

    def _ask(self, sock: Any, op: str, bodies: list | tuple = (), **fields: Any) -> wire.Message:
        self._ids += 1
        rid = self._ids
        sock.send_multipart(wire.build(op, rid, list(bodies), **fields), copy=False)
        asked = time.monotonic()
        deadline = asked + ANSWER_WITHIN
        try:
            return self._answer(sock, op, rid, deadline)
        finally:
            self._waited += time.monotonic() - asked

    def _answer(self, sock: Any, op: str, rid: int, deadline: float) -> wire.Message:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set() or not sock.poll(int(min(left, 0.2) * 1000)):
                if left <= 0 or self._stop.is_set():
                    self._drop(sock)
                    raise _Unanswered(f"no answer to {op} within {ANSWER_WITHIN:g} s")
                if self._member not in self.view.members:
                    self._drop(sock)
                    raise _Unanswered(f"it left while asked for {op}")
                continue
            try:
                reply = wire.parse(sock.recv_multipart())
            except wire.WireError:
                continue
            if reply.id != rid:
                continue  # a late answer to an earlier request, or to a put chunk
            if reply.op == "error":
                raise _Unanswered(f"{op}: {reply.fields['message']}")
            return reply

    def _drop(self, sock: Any) -> None:
        for where, s in list(self._sockets.items()):
            if s is sock:
                del self._sockets[where]
        sock.close(0)


class _Unanswered(Exception):
    pass
