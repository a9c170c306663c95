"""The swarm client's connections: finding peers, greeting them, watching them live, requests.

:class:`Connections` runs on the dispatcher's I/O loop (see :mod:`.dispatch`), which owns it.
It finds more peers (from this machine's node, when asked to, and from an mDNS browser), connects
to each with a ``hello`` (the node checks protocol, Python and ``requires=``), pings idle ones,
and numbers requests so that each reply reaches the callback that waits for it.

Before a lookup may conclude that a result is stored nowhere, the client must know the swarm:
:meth:`Connections.known` (see *The swarm client* in docs/architecture.md for the bound).

A peer that stops answering is lost after :data:`peers.SILENT_AFTER` seconds, one whose
connection closes (its node died) or is refused (no node runs there) at once; what losing it
means for its calls is the owner's ``lost`` callback.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from ..defaults import DISCOVER_EVERY, MDNS_WAIT, SWARM_LEARN_WAIT
from ..net import wire
from ..net.security import SwarmKey
from .peers import PING_EVERY, RETRY_EVERY, SILENT_AFTER, Peer

__all__ = ["Connections", "DISCOVER_EVERY"]

log = logging.getLogger(__name__)


class Connections:
    """The peers of one swarm client and the requests in flight to them; see the module docstring."""

    def __init__(self, context: Any, key: SwarmKey, peers: dict[tuple[str, int], Peer],
                 requires: list[str], *, lost: Callable[[Peer, str], None],
                 ask_for_peers: bool = False, browser: Any = None, learned_lookup_only: bool = False):
        self.context = context
        self.key = key
        self.peers = peers
        self.requires = requires
        self._lost = lost  # (peer, why): the owner drops a peer that is gone
        # Where more peers come from: the first peer (this machine's node, which knows the
        # swarm) when ``ask_for_peers``, and/or an mDNS browser.
        self.ask_for_peers = ask_for_peers
        self.browser = browser
        self._last_discovery = 0.0
        # Learning the swarm: peers named or found are asked for the peers they know until a
        # settled node answered (its list is then whole); those learned from named peers only
        # answer lookups (``learned_lookup_only``: calls go only where the caller said).
        self.learned_lookup_only = learned_lookup_only
        self.started = time.monotonic()
        self.learn_by = self.started + SWARM_LEARN_WAIT
        self._told = False  # a settled node sent its list of peers
        self._known = False
        self._ids = itertools.count(1)
        self._pending: dict[int, Any] = {}  # request id → (peer, callback) for non-run replies
        # The runs open in this process, told every node once a second in a ping while there
        # are any (``pythagoras-node dashboard`` shows them): set by the cloud that owns it.
        self.reports: Callable[[], list[dict]] | None = None
        self._reported = 0.0

    # ------------------------------------------------------------------ requests and replies

    def new_id(self) -> int:
        """A request id no other request of this client has."""
        return next(self._ids)

    def expect(self, peer: Peer, callback) -> int:
        """A new request id whose reply from ``peer`` goes to ``callback(peer, msg)``."""
        rid = next(self._ids)
        self._pending[rid] = (peer, callback)
        return rid

    def ask(self, peer: Peer, op: str, callback, bodies: list | tuple = (), **fields: Any) -> int:
        """Send request ``op`` to ``peer``; its reply goes to ``callback(peer, msg)``."""
        rid = self.expect(peer, callback)
        peer.send(wire.build(op, rid, list(bodies), **fields))
        return rid

    @property
    def awaiting(self) -> bool:
        """Whether a request other than a call waits for its reply."""
        return bool(self._pending)

    def answer(self, peer: Peer, msg: wire.Message) -> bool:
        """Hand a reply to the callback waiting for it; False if none waits."""
        handler = self._pending.pop(msg.id, None)
        if handler is None:
            return False
        handler[1](peer, msg)
        return True

    def fail_pending(self, peer: Peer, why: str) -> None:
        """``peer`` is gone: every request waiting for it gets a ``lost`` error as its reply."""
        for rid, (owner, callback) in list(self._pending.items()):
            if owner is peer:
                del self._pending[rid]
                callback(peer, wire.Message("error", rid, {"code": wire.ERR_LOST, "message": why}))

    # ------------------------------------------------------------------ peers

    @property
    def may_find_more(self) -> bool:
        """Whether peers that may run calls, not known yet, may still appear (asked of the
        first peer, or browsed)."""
        return self.browser is not None or (self.ask_for_peers and not self.learned_lookup_only)

    def close(self) -> None:
        """Stop looking for peers and close every connection."""
        if self.browser is not None:
            self.browser.close()
        for peer in self.peers.values():
            peer.close()

    def known(self) -> bool:
        """Whether this client knows the swarm well enough to trust a lookup that finds
        nothing: every peer known has answered its hello (or failed) once, mDNS (when it
        browses) has listened for :data:`MDNS_WAIT` seconds, and, if any peer answers, one
        that is settled has sent its list of peers. Once true, it stays true."""
        if self._known:
            return True
        if self.browser is not None and time.monotonic() - self.started < MDNS_WAIT:
            return False
        if not all(p.met for p in self.peers.values()):
            return False
        answering = any(p.state in ("ready", "unsuitable") for p in self.peers.values())
        self._known = self._told or not answering
        return self._known

    @property
    def is_known(self) -> bool:
        """What :meth:`known` last found (read from any thread)."""
        return self._known

    @property
    def learning_left(self) -> float:
        """Seconds a lookup may still wait for :meth:`known` (0 once known or too late)."""
        return 0.0 if self._known else max(0.0, self.learn_by - time.monotonic())

    def _discover(self, now: float) -> None:
        if now - self._last_discovery < DISCOVER_EVERY:
            return
        self._last_discovery = now
        if self.browser is not None:
            for host, port, node_id in self.browser.reachable_nodes():
                self.key.learn(host, port, node_id)
                self.peers.setdefault((host, port), Peer(host, port, node_id))
        answering = [p for p in self.peers.values() if p.state in ("ready", "unsuitable")]
        if not self._told:  # still learning: any node may know members this client does not
            for peer in answering:
                self.ask(peer, "peers", self._on_peers)
        elif self.ask_for_peers:
            first = next(iter(self.peers.values()))
            if first.state in ("ready", "unsuitable"):
                self.ask(first, "peers", self._on_peers)

    def _on_peers(self, peer: Peer, msg: wire.Message) -> None:
        if msg.op != "ok":
            return
        for item in msg.fields.get("peers", []):
            try:
                host, port = str(item["host"]), int(item["port"])
            except (KeyError, TypeError, ValueError):
                continue
            if item.get("id") != peer.node_id and (host, port) not in self.peers:
                self.key.learn(host, port, item.get("id"))
                self.peers[(host, port)] = Peer(host, port, item.get("id"),
                                                lookup_only=self.learned_lookup_only)
        if msg.fields.get("settled", True) is not False:  # a node of an earlier release: trusted
            self._told = True

    def tend(self) -> None:
        """Look for new peers, (re)connect those not connected, ping idle ones, drop silent ones."""
        now = time.monotonic()
        self._discover(now)
        if not self._known:
            self.known()
        report = self._report(now)
        for peer in self.peers.values():
            if peer.state in ("new", "dead") and (
                    now - peer.connect_started >= RETRY_EVERY
                    or peer.keyless and self.key.knows(peer.host, peer.port)):
                why = peer.connect(self.context, self.key, monitor=True)
                if why:
                    self._lost(peer, why)
                    continue
                self.ask(peer, "hello", lambda p, m: self._on_hello(p, m),
                         protocol=wire.PROTOCOL_VERSION, python=wire.PYTHON_VERSION,
                         requires=self.requires)
            elif peer.state in ("connecting", "ready", "unsuitable", "draining", "paused"):
                if peer.silent_for(now) > SILENT_AFTER:
                    self._lost(peer, _silence(peer, now))
                elif peer.state != "connecting" and (
                        report or now - max(peer.last_sent, peer.last_heard) > PING_EVERY):
                    self.ask(peer, "ping", self._on_ping, **report)

    def _report(self, now: float) -> dict:
        """The fields a ping carries this turn: the open runs, once a second while any is."""
        if self.reports is None or now - self._reported < PING_EVERY:
            return {}
        runs = self.reports()
        if not runs:
            return {}
        self._reported = now
        return {"caller": _CALLER, "runs": runs}

    def on_events(self, peer: Peer, monitor: Any) -> None:
        """The connection to ``peer`` closed or was refused: it is lost now, not after silence."""
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        while peer.monitor is monitor:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if peer.state not in ("connecting", "ready", "unsuitable", "draining", "paused"):
                continue
            if event == zmq.EVENT_DISCONNECTED:
                self._lost(peer, "the connection was closed (its node stopped or died, or "
                                 "does not know this machine as a member)")
            elif event == zmq.EVENT_CONNECT_RETRIED:
                self._lost(peer, _failed_connect(peer, time.monotonic()))

    def _on_hello(self, peer: Peer, msg: wire.Message) -> None:
        if msg.op == "error":
            peer.state, peer.problem = "incompatible", msg.fields["message"]
            if peer.first_time(peer.problem):
                log.warning("peer %s cannot take work: %s", peer.address, peer.problem)
            peer.settle(False)
            return
        peer.node_id = str(msg.fields.get("node"))
        peer.workers = max(1, int(msg.fields.get("workers", 1)))
        replicas = msg.fields.get("replicas")
        peer.replicas = replicas if type(replicas) is int and 1 <= replicas <= 16 else 1
        resources = msg.fields.get("resources")
        peer.resources = ({str(k): float(v) for k, v in resources.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
                          if isinstance(resources, dict) else {"cpus": float(peer.workers)})
        peer.lacks.clear()  # asked again: the node may have been restarted with more installed
        if any(p is not peer and p.node_id == peer.node_id and p.state in ("ready", "unsuitable")
               for p in self.peers.values()):
            peer.close()  # the same node under a second address: one connection is enough
            peer.state, peer.problem = "duplicate", "already connected under another address"
            peer.settle(False)
            return
        missing = msg.fields.get("missing") or []
        if missing:
            peer.state, peer.problem = "unsuitable", "does not satisfy requires=: " + "; ".join(missing)
        else:
            peer.state, peer.problem = "ready", ""
            peer.said = ""  # back: its next outage is news
        if not self._told:  # learning the swarm: the peers it knows, without waiting a tick
            self.ask(peer, "peers", self._on_peers)
        peer.settle(True)
        log.debug("peer %s (%s) is %s with %d workers", peer.address, peer.node_id, peer.state,
                  peer.workers)

    def _on_ping(self, peer: Peer, msg: wire.Message) -> None:
        if msg.op == "ok":
            peer.load = float(msg.fields.get("load", 0.0))
            peer.tasks_done = int(msg.fields.get("tasks_done", 0))
            paused = msg.fields.get("paused")  # its owner comes first: no calls go there meanwhile
            if paused and peer.state == "ready":
                peer.state, peer.problem = "paused", str(paused)
            elif not paused and peer.state == "paused":
                peer.state, peer.problem = "ready", ""


def _caller() -> str:
    """``user@host pid N``: this process, for people reading the dashboard."""
    import getpass
    import os
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (a container): the dashboard says so
        user = "?"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


_CALLER = _caller()


def _silence(peer: Peer, now: float) -> str:
    """Why a silent peer is lost: never answered (a host that drops what is sent to it, or
    something other than a node on that port), or stopped answering."""
    if peer.state == "connecting":
        return (f"no answer in {peer.silent_for(now):.0f} s (is the machine up and on this "
                f"network, port {peer.port} open to this machine, and a node listening there?)")
    return f"silent for {peer.silent_for(now):.1f} s"


def _failed_connect(peer: Peer, now: float) -> str:
    """A connection that failed: refused at once (the machine is there, no node listens), or
    after a while (no route to the machine, or it did not answer)."""
    if now - peer.connect_started < 1.0:
        return (f"the connection was refused: the machine answers but no node listens on port "
                f"{peer.port} (is `pythagoras-node start` running there, on that port?)")
    return (f"no answer: the machine could not be reached (no route, or it is down) within "
            f"{now - peer.connect_started:.0f} s")
