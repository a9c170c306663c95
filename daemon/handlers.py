"""What a node does with each request: the routing of each operation of :mod:`pythagoras_p2p.net.wire` to its part.

Every request is checked by :func:`wire.parse` first; a malformed one gets an ``error`` reply
with the reason, is logged once per kind (:mod:`.logonce`), and changes nothing. The handlers
answer the small operations themselves (probe, hello, ping, status, ...); the rest is served by
parts held as attributes, each given what it uses rather than the node: ``calls``
(:class:`~.calls.Calls`: run, lookup, cancel, and what ended), ``values``
(:class:`~.uploads.Values`: get, put) and ``receiving`` (:class:`~.receiving.Copies`: sync,
offer, replicate). What each connection is known by is kept in ``callers``
(:class:`~.callers.Callers`); everything goes out through the node's :class:`~.outbox.Outbox`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from pythagoras_p2p.defaults import NODE_LOG_ONCE as _LOG_ONCE
from pythagoras_p2p.net import wire
from pythagoras_p2p.store.core import Store
from pythagoras_p2p.store.env import ReadersBusyError
from pythagoras_p2p.store.functions import record_matches
from pythagoras_p2p.store.journal import Journal
from pythagoras_p2p.trust import Members, Trust

from .callers import Callers
from .calls import Calls, requirements_answer
from .deletions import forget_asked
from .history import History
from .logonce import LogOnce
from .outbox import Outbox
from .owner.admission import Admission
from .receiving import Copies, CopyChecks
from .repair import Repairer
from .replication import SecondCopies, Traffic
from .reports import Reports
from .state import CacheFacts, Counters, ping_facts, status_reply
from .uploads import ValueChecks, Values

__all__ = ["Handlers"]

log = logging.getLogger(__name__)


class NodeSide(ValueChecks, CopyChecks, Protocol):
    """What the handlers use of their node (:class:`~pythagoras_p2p.daemon.node.Node`): what
    they give their parts, and what the small operations and ``status`` say."""

    node_id: str
    home: Path
    config: Any  # .node.NodeConfig
    key: Any  # the swarm key (its tag)
    resources: dict
    store: Store
    journal: Journal
    cache_facts: CacheFacts
    reports: Reports  # callers' runs and the last failures, for the dashboard
    history: History  # what status_reply sends the dashboard of the last minutes
    traffic: Traffic
    trust: Trust
    peering: Any  # .peering.Peering
    admission: Admission
    repair: Repairer
    copies: SecondCopies
    membership: Any  # .membership.Membership
    stopping: bool

    @property
    def members(self) -> Members: ...


class Handlers:
    def __init__(self, node: NodeSide, outbox: Outbox):
        self.node = node
        self.store = node.store
        self.outbox = outbox
        self.counts = Counters()
        self.log_once = LogOnce(log, _LOG_ONCE)
        self.callers = Callers()
        self.calls = Calls(node.node_id, node.resources, lambda: node.stopping, node.store,
                           node.journal, node.trust, outbox, self.callers, node.admission,
                           node.copies, node.repair, node.reports, self.counts, self.log_once)
        self.values = Values(node.node_id, node.store, outbox, node, self.counts, self.log_once,
                             node.home / "incoming")
        self.receiving = Copies(node.node_id, node.home, node.store, node.journal, outbox, node,
                                node.repair, self.values.uploads, self.calls.entry,
                                lambda: node.members, node.cache_facts, node.traffic, self.counts,
                                self.log_once)
        calls, values, receiving = self.calls, self.values, self.receiving
        self._ops = {
            "probe": self.on_probe, "hello": self.on_hello, "ping": self.on_ping,
            "status": self.on_status, "lookup": calls.on_lookup, "has": self.on_has,
            "put": values.on_put, "get": values.on_get, "function": self.on_function,
            "run": calls.on_run, "cancel": calls.on_cancel, "peers": self.on_peers,
            "release": self.on_release, "forget": self.on_forget, "leaving": self.on_leaving,
            "sync": receiving.on_sync, "offer": receiving.on_offer, "replicate": receiving.on_replicate,
            "members": node.membership.on_members,
        }

    def handle(self, frames: list) -> None:
        if len(frames) < 2:
            return  # a ROUTER always prefixes the routing id; nothing to answer
        ident = frames[0].bytes
        self.callers.heard_from(ident)
        try:
            msg = wire.parse([frames[1].bytes, *[f.buffer for f in frames[2:]]])
            messages = [msg] if msg.op != "many" else [wire.parse(m) for m in wire.unbundle(msg)]
        except wire.WireError as exc:
            self.counts.rejected += 1
            self.log_once(f"wire:{exc.code}:{str(exc)[:60]}", "rejected a message: %s", exc)
            self.outbox.error(ident, 0, exc.code, str(exc))
            return
        for msg in messages:
            self._serve(ident, msg)

    def _serve(self, ident: bytes, msg: wire.Message) -> None:
        handler = self._ops.get(msg.op)
        if handler is None:  # a reply's op (ok, error, result, output) sent as a request
            self.counts.rejected += 1
            what = "cannot carry another" if msg.op == "many" else "is a reply, not a request"
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, f"{msg.op!r} {what}")
            return
        try:
            handler(ident, msg)
        except ReadersBusyError as exc:  # live processes hold every reader slot: not a bug
            self.log_once("readers-busy", "refused %s for now: %s", msg.op, exc)
            self.outbox.error(ident, msg.id, wire.ERR_BUSY, str(exc))
        except Exception as exc:  # a bug must not take the node down; say it once
            self.log_once(f"bug:{msg.op}:{type(exc).__name__}", "error serving %s: %r", msg.op, exc)
            self.outbox.error(ident, msg.id, wire.ERR_INTERNAL, f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ small operations

    def on_probe(self, ident: bytes, msg: wire.Message) -> None:
        extra = {}
        if msg.fields.get("about"):  # `pythagoras-node doctor`: clock, Python, package versions
            from pythagoras_p2p.net.versions import about

            extra = about(msg.fields.get("packages"))
        self.outbox.send(ident, wire.build("ok", msg.id, node=self.node.node_id, **extra))

    def on_hello(self, ident: bytes, msg: wire.Message) -> None:
        python = msg.fields["python"]
        if python != wire.PYTHON_VERSION:
            self.callers.speaks(ident, python)  # its calls are refused too, not only its hello
            self.outbox.error(ident, msg.id, wire.ERR_PYTHON,
                              f"node {self.node.node_id} runs Python {wire.PYTHON_VERSION} and the client "
                              f"Python {python}: functions cannot move between Python versions. Use the "
                              f"same Python minor version on every machine of the swarm")
            return
        self.outbox.send(ident, wire.build(
            "ok", msg.id, node=self.node.node_id, workers=self.node.config.workers,
            resources=self.node.resources,
            python=wire.PYTHON_VERSION, protocol=wire.PROTOCOL_VERSION, tag=self.node.key.tag,
            replicas=self.node.config.replicas,
            **requirements_answer(msg.fields.get("requires")),
        ))

    def on_ping(self, ident: bytes, msg: wire.Message) -> None:
        """The heartbeat: also what peers show of this node in their status."""
        self.outbox.send(ident, wire.build("ok", msg.id, **ping_facts(self.node, self)))
        self.node.reports.heard(ident, msg.fields.get("caller"), msg.fields.get("runs"))

    def on_status(self, ident: bytes, msg: wire.Message) -> None:
        self.outbox.send(ident, wire.build("ok", msg.id, **status_reply(self.node, self, msg.fields)))

    def on_peers(self, ident: bytes, msg: wire.Message) -> None:
        """The live peers of this node (clients use them to learn the swarm), and whether it
        is settled: until then the list may be partial, and a client asks again."""
        peers = [{"id": p.node_id, "host": p.host, "port": p.port}
                 for p in self.node.peering.alive()]
        self.outbox.send(ident, wire.build("ok", msg.id, peers=peers, settled=self.node.repair.settled()))

    def on_has(self, ident: bytes, msg: wire.Message) -> None:
        have = [a for a in msg.hexes("addresses") if self.store.has_value(a)]
        self.outbox.send(ident, wire.build("ok", msg.id, addresses=have))

    def on_release(self, ident: bytes, msg: wire.Message) -> None:
        """A client is done with arguments it sent: drop their transient copies, except those
        an accepted call still reads (durable values are never dropped)."""
        in_use = self.calls.running.refs_in_use()
        dropped = self.store.drop_transient(a for a in msg.hexes("addresses") if a not in in_use)
        self.outbox.send(ident, wire.build("ok", msg.id, dropped=dropped))

    def on_leaving(self, ident: bytes, msg: wire.Message) -> None:
        """A peer stops: it says so, so that this node logs "left", not a dead node's silence."""
        self.node.peering.leaving(msg.fields["node"])
        self.outbox.send(ident, wire.build("ok", msg.id))

    def on_forget(self, ident: bytes, msg: wire.Message) -> None:
        """Forget a function's results (``cache forget --swarm``): :mod:`.deletions`."""
        self.outbox.send(ident, wire.build("ok", msg.id, **forget_asked(self.store, msg.fields)))

    def on_function(self, ident: bytes, msg: wire.Message) -> None:
        if len(msg.bodies) != 1 or not len(msg.bodies[0]):
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, "function: expected one body frame with the record")
            return
        key, record = msg.hex("fp"), bytes(msg.bodies[0])  # fp: the key of the record
        if not record_matches(key, record):
            self.outbox.error(ident, msg.id, wire.ERR_TAMPERED,
                              f"function: the record sent under {key.hex()[:16]} does not hash to that "
                              f"key (damaged, or a client of another version); it was not stored")
            return
        self.store.put_function(key, record)
        self.outbox.send(ident, wire.build("ok", msg.id))
