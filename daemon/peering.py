"""A node's view of the rest of the swarm: peers found on mDNS or named, and which are alive.

Every node pings every peer it knows once a second over an authenticated ZeroMQ connection and
keeps what the answers say (workers busy, load, tasks done, cache size, hit rate). mDNS only
tells where a peer might be: a peer that has not answered for :data:`SILENT_AFTER` seconds is
left out of ``status`` and of the peer list clients ask for, however long mDNS keeps it listed.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pythagoras_p2p.net import wire
from pythagoras_p2p.net.sockets import waiting_messages
from pythagoras_p2p.swarm.peers import PING_EVERY, RETRY_EVERY, SILENT_AFTER, Peer

from .neighbours import Neighbours
from .state import member_facts

if TYPE_CHECKING:
    import zmq

    from pythagoras_p2p.net.mdns import Browser
    from pythagoras_p2p.net.security import SwarmKey
    from pythagoras_p2p.trust import Members

__all__ = ["Peering"]

log = logging.getLogger(__name__)

_FACTS = ("busy", "workers", "load", "tasks_done", "cache_entries", "cache_bytes", "hit_rate",
          "resources", "in_use", "stopping", "replication", "paused", "paused_since",
          "callers", "speculative", "speculative_won", "hostname", "hits", "asked")
_DEPARTED = 64  # members that left or were lost, remembered (for the dashboard) at most


class NodeSide(Protocol):
    """What the peering uses of its node (:class:`~pythagoras_p2p.daemon.node.Node`)."""

    @property
    def node_id(self) -> str: ...

    @property
    def key(self) -> SwarmKey: ...

    @property
    def context(self) -> zmq.Context: ...

    @property
    def poller(self) -> zmq.Poller: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def repair(self) -> Any: ...  # .repair.Repairer: it is told the members seen (see)

    @property
    def membership(self) -> Any: ...  # .membership.Membership: the member list's versions heard

    @property
    def members(self) -> Members | None: ...

    def pump(self, timeout: float) -> None: ...


class Peering:
    """Owned by the node's loop: sockets to peers, registered in the node's poller."""

    def __init__(self, node: NodeSide, static: list[tuple[str, int]]):
        self.node = node
        self.peers: dict[tuple[str, int], Peer] = {}
        self.facts: dict[int, dict] = {}  # id(peer) → latest ping answer
        # node id → how a member that was live went: ``left`` (it said it was stopping) or
        # ``lost`` (it fell silent), when, and what it was; forgotten once it answers again
        self.departed: dict[str, dict] = {}
        self._announced: set[str] = set()  # node ids seen listed on mDNS
        self.static = list(static)
        self.browser: Browser | None = None
        self.browsing_since: float | None = None  # monotonic time mDNS browsing began
        self.neighbours = Neighbours()  # other swarms' nodes heard on mDNS
        self.left: dict[str, float] = {}  # node id → when it said it was leaving (monotonic)
        self._sockets: dict[Any, Peer] = {}
        self._last_tick = 0.0
        self._ids = itertools.count(2)  # 1 is every ping's
        self._asked: dict[int, tuple[Peer, Callable]] = {}  # request id → (peer, callback)
        for address in self.static:
            self._add(*address)
        self._unmet = set(self.peers)

    def start_browsing(self, interfaces: list[str] | None) -> None:
        from pythagoras_p2p.net.mdns import Browser

        try:
            self.browser = Browser(self.node.key.tag, interfaces, own_id=self.node.node_id)
            self.browsing_since = time.monotonic()
        except Exception as exc:
            log.error("mDNS browsing failed (%s); only named peers are known", exc)

    def _add(self, host: str, port: int) -> Peer:
        peer = self.peers.get((host, port))
        if peer is None:
            peer = self.peers[(host, port)] = Peer(host, port)
        return peer

    def tick(self) -> None:
        """Learn new adverts, (re)connect, ping, and forget the silent. Cheap; call often."""
        now = time.monotonic()
        if now - self._last_tick < 0.25:
            return
        self._last_tick = now
        if self.browser is not None:
            for host, port, node_id in self.browser.reachable_nodes():
                self.node.key.learn(host, port, node_id)
                self._add(host, port)
            self.neighbours.look(self.browser)
            self._announced.update(a.node_id for a in self.browser.snapshot())
        for peer in self.peers.values():
            if peer.node_id == self.node.node_id:
                continue  # ourselves, reached through a named address
            if peer.state in ("new", "dead") and now - peer.connect_started >= RETRY_EVERY:
                self._connect(peer)
            elif peer.state in ("connecting", "ready"):
                if peer.silent_for(now) > SILENT_AFTER:
                    if peer.state == "ready":
                        log.info("peer %s (%s) silent for %.1f s: dropped", peer.node_id,
                                 peer.address, peer.silent_for(now))
                    self._drop(peer)
                elif now - peer.last_sent >= PING_EVERY:
                    peer.send(wire.build("ping", 1))
        self.node.repair.see(tuple(self.members()), self.member_addresses())

    def discovered(self) -> bool:
        """Whether this node has had time to find the swarm: mDNS browsed for
        :data:`~pythagoras_p2p.defaults.MDNS_WAIT` seconds (when it browses), and every named
        peer answered or failed once. Until then its list of members may be partial, so
        lookups are not told it is settled (clients ask the others too)."""
        from pythagoras_p2p.defaults import MDNS_WAIT

        if self.browsing_since is not None and time.monotonic() - self.browsing_since < MDNS_WAIT:
            return False
        if self._unmet:  # named peers that have not yet answered (or failed) once
            self._unmet = {a for a in self._unmet if self.peers[a].state in ("new", "connecting")}
        return not self._unmet

    def ask(self, peer: Peer, op: str, callback: Callable, bodies: list | tuple = (),
            **fields: Any) -> int:
        """Send a request to ``peer``; ``callback(peer, reply)`` runs with its reply, or with
        None if the peer is dropped first."""
        rid = next(self._ids)
        self._asked[rid] = (peer, callback)
        peer.send(wire.build(op, rid, bodies, **fields))
        return rid

    def forget_request(self, rid: int) -> None:
        """Its reply, if it ever comes, is ignored."""
        self._asked.pop(rid, None)

    def member_addresses(self) -> dict[str, tuple[str, int]]:
        """Where each live peer listens, by node id."""
        return {p.node_id: (p.host, p.port) for p in self.alive() if p.node_id is not None}

    def by_id(self, node_id: str) -> Peer | None:
        """The live peer with that node id, if any."""
        return next((p for p in self.alive() if p.node_id == node_id), None)

    def members(self) -> list[str]:
        """The ids of the nodes that hold the swarm's results: this node (unless it stops)
        and every live peer that does not."""
        ids = [] if self.node.stopping else [self.node.node_id]
        ids += [p.node_id for p in self.alive()
                if p.node_id is not None and not self.facts.get(id(p), {}).get("stopping")]
        return sorted(set(ids))

    def say_leaving(self, deadline: float) -> None:
        """Tell every live peer this node is leaving (``pythagoras-node stop``), so they log
        "left" and drop it at once rather than wait for it to fall silent; wait for their
        acknowledgements until ``deadline`` (monotonic), serving meanwhile."""
        told = set()
        for peer in self.alive():
            told.add(self.ask(peer, "leaving", lambda p, reply: None, node=self.node.node_id))
        while told & set(self._asked) and time.monotonic() < deadline:
            self.node.pump(0.05)

    def leaving(self, node_id: str) -> None:
        """Peer ``node_id`` said it is leaving: drop it now, saying so."""
        self.left[node_id] = time.monotonic()
        if len(self.left) > 1024:
            self.left.pop(next(iter(self.left)))
        for peer in [p for p in self.peers.values() if p.node_id == node_id]:
            if peer.state == "ready":
                log.info("peer %s (%s) left", peer.node_id, peer.address)
            self._drop(peer)

    def _connect(self, peer: Peer) -> None:
        self._unregister(peer)
        why = peer.connect(self.node.context, self.node.key)
        if why:  # a name that does not resolve (now): tried again later, like a silent peer
            peer.state, peer.problem = "dead", why
            return
        self.node.poller.register(peer.sock, 1)  # zmq.POLLIN
        self._sockets[peer.sock] = peer
        peer.send(wire.build("ping", 1))

    def _unregister(self, peer: Peer) -> None:
        if peer.sock is not None and peer.sock in self._sockets:
            self.node.poller.unregister(peer.sock)
            del self._sockets[peer.sock]

    def _drop(self, peer: Peer) -> None:
        facts = self.facts.get(id(peer))
        if peer.state == "ready" and facts is not None and peer.node_id != self.node.node_id:
            self.departed.pop(str(peer.node_id), None)
            self.departed[str(peer.node_id)] = {
                "id": peer.node_id, "address": peer.address, "hostname": facts.get("hostname"),
                "state": "left" if peer.node_id in self.left or facts.get("stopping")
                or self._withdrawn(peer.node_id) else "lost",
                "since": round(time.time(), 1),
                "workers_total": facts.get("workers") or 0}
            while len(self.departed) > _DEPARTED:
                del self.departed[next(iter(self.departed))]
        self._unregister(peer)
        peer.close()
        peer.state = "dead"
        self.facts.pop(id(peer), None)
        for rid in [rid for rid, (p, _) in self._asked.items() if p is peer]:
            _, callback = self._asked.pop(rid)
            callback(peer, None)

    def _withdrawn(self, node_id: str | None) -> bool:
        """Whether that node took its mDNS advert back, as a node that stops does (a killed
        one's stays listed for minutes)."""
        if self.browser is None or node_id not in self._announced:
            return False
        return all(a.node_id != node_id for a in self.browser.snapshot())

    def owns(self, sock: Any) -> bool:
        return sock in self._sockets

    def readable(self, sock: Any) -> None:
        peer = self._sockets.get(sock)
        if peer is None:
            return
        for frames in waiting_messages(sock, limit=1 << 30):
            peer.heard()
            try:
                msg = wire.parse(frames)
            except wire.WireError:
                continue
            asked = self._asked.pop(msg.id, None) if msg.id > 1 else None
            if asked is not None:
                asked[1](peer, msg)
                continue
            if msg.op != "ok" or msg.id != 1:
                continue
            if msg.fields.get("node") == self.node.node_id:
                self._drop(peer)  # it is this very node
                peer.node_id = self.node.node_id
                return
            peer.node_id = str(msg.fields.get("node"))
            if peer.node_id in self.left and msg.fields.get("stopping"):
                self._drop(peer)  # it said it left, and it is still on its way out
                continue
            self.left.pop(peer.node_id, None)  # back (started again)
            peer.state = "ready"
            self.departed.pop(peer.node_id, None)
            self.facts[id(peer)] = {k: msg.fields.get(k) for k in _FACTS}
            self.node.key.learn(peer.host, peer.port, peer.node_id)
            self.node.membership.heard_version(peer, msg.fields.get("mv"))

    def drop_removed(self) -> None:
        """Drop the peers whose node was removed from the swarm (and never ask them again)."""
        for address, peer in list(self.peers.items()):
            if peer.server_key is not None and not self.node.key.admitted_server(peer.server_key):
                log.info("peer %s (%s) was removed from the swarm: dropped", peer.node_id,
                         peer.address)
                self._drop(peer)
                self.node.key.forget(*address)
                if address not in self.static:
                    del self.peers[address]

    def alive(self) -> list[Peer]:
        now = time.monotonic()
        return [p for p in self.peers.values()
                if p.state == "ready" and p.silent_for(now) <= SILENT_AFTER]

    def status_entries(self) -> list[dict]:
        now = time.monotonic()
        rows = []
        for peer in self.alive():
            facts = self.facts.get(id(peer), {})
            rows.append({
                "id": peer.node_id, "address": peer.address, "self": False,
                "workers_busy": facts.get("busy") or 0, "workers_total": facts.get("workers") or 0,
                "load": facts.get("load") or 0.0, "tasks_done": facts.get("tasks_done") or 0,
                "cache_entries": facts.get("cache_entries") or 0,
                "cache_bytes": facts.get("cache_bytes") or 0, "hit_rate": facts.get("hit_rate"),
                "resources": facts.get("resources") or {},
                "resources_in_use": facts.get("in_use") or {},
                "replication": facts.get("replication") or {},
                "stopping": bool(facts.get("stopping")),
                "paused": facts.get("paused"), "paused_since": facts.get("paused_since"),
                "callers": facts.get("callers") or [], "speculative": facts.get("speculative") or 0,
                "speculative_won": facts.get("speculative_won") or 0,
                "hostname": facts.get("hostname"), "hits": facts.get("hits") or 0,
                "asked": facts.get("asked") or 0,
                "last_seen_s": round(now - peer.last_heard, 2),
                **member_facts(self.node.members, peer.node_id),
            })
        return rows

    def close(self) -> None:
        for peer in self.peers.values():
            self._unregister(peer)
            peer.close()
        if self.browser is not None:
            self.browser.close()
            self.browser = None
