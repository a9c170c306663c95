"""What a node does with each request: the routing of each operation of :mod:`pythagoras_p2p.net.wire` to its method.

Every request is checked by :func:`wire.parse` first; a malformed one gets an ``error`` reply
with the reason, is logged once per kind (:mod:`.logonce`), and changes nothing. Its parts are
held as attributes, each given what it uses, not the node: the value traffic (``get``, ``put``)
is served by ``values`` (:class:`~.uploads.Values`), the copies other members send by
``receiving`` (:class:`~.receiving.Copies`), the calls running here and their waiters are kept
by ``running`` (:class:`~.running.RunningCalls`); everything goes out through the node's
:class:`~.outbox.Outbox`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from pythagoras_p2p.defaults import NODE_LOG_ONCE as _LOG_ONCE
from pythagoras_p2p.defaults import PING_EVERY, SILENT_AFTER
from pythagoras_p2p.execution.outcomes import Crashed, Failed, Ok
from pythagoras_p2p.execution.run import Task
from pythagoras_p2p.identity.inputs import holds
from pythagoras_p2p.net import wire
from pythagoras_p2p.net.outcomes_wire import outcome_to_wire
from pythagoras_p2p.store.core import Store
from pythagoras_p2p.store.env import ReadersBusyError
from pythagoras_p2p.store.functions import record_matches
from pythagoras_p2p.store.journal import Journal, encode_meta
from pythagoras_p2p.trust import Members, Trust
from pythagoras_p2p.trust.provenance import stamp, vouch

from .deletions import forget_asked
from .history import History
from .logonce import LogOnce
from .outbox import Outbox
from .receiving import Copies, CopyChecks
from .replication import Traffic
from .reports import Reports
from .running import RunningCalls
from .state import CacheFacts, Counters, ping_facts, status_reply
from .uploads import ValueChecks, Values

__all__ = ["Handlers"]

log = logging.getLogger(__name__)

#: Seconds of silence on a connection after which its client has given this node up, or is
#: about to: clients ping every PING_EVERY and give a node up after SILENT_AFTER without an
#: answer, counted from its last answer, which may precede this node's last read by a ping.
STALE_AFTER = max(PING_EVERY, SILENT_AFTER - 2 * PING_EVERY)


class NodeSide(ValueChecks, CopyChecks, Protocol):
    """What the handlers use of their node (:class:`~pythagoras_p2p.daemon.node.Node`)."""

    node_id: str
    home: Path
    config: Any
    key: Any
    resources: dict
    store: Store
    journal: Journal
    cache_facts: CacheFacts
    reports: Reports  # callers' runs and the last failures, for the dashboard
    history: History  # what status_reply sends the dashboard of the last minutes
    traffic: Traffic
    peering: Any
    admission: Any
    repair: Any
    copies: Any
    trust: Trust
    stopping: bool

    @property
    def members(self) -> Members | None: ...


class Handlers:
    def __init__(self, node: NodeSide, outbox: Outbox):
        self.node = node
        self.store = node.store
        self.outbox = outbox
        # send is looked up at each message: a node's tests replace it on the outbox
        self.running = RunningCalls(lambda ident, frames: outbox.send(ident, frames), outbox.reply)
        self._ended: list = []  # (call, running, outcome) of the tasks that ended this turn
        self.counts = Counters()
        self.log_once = LogOnce(log, _LOG_ONCE)
        self.values = Values(node.node_id, node.store, outbox, node, self.counts, self.log_once,
                             node.home / "incoming")
        self.receiving = Copies(node.node_id, node.home, node.store, node.journal, outbox, node,
                                node.repair, self.values.uploads, self.entry, lambda: node.members,
                                node.cache_facts, node.traffic, self.counts, self.log_once)
        self.incompatible: OrderedDict[bytes, str] = OrderedDict()  # routing id → its Python
        self._checked_requires: dict[tuple, list] = {}  # a function's requires= → what is missing
        # When each connection was last heard: one silent for longer than clients wait (this
        # node was stopped, or the link cut) is *stale* — its sender has placed its calls
        # elsewhere, so the calls that arrive on it late are refused, not run a second time.
        self.heard: OrderedDict[bytes, float] = OrderedDict()
        self.stale: set[bytes] = set()
        self._ops = {
            "probe": self.on_probe, "hello": self.on_hello, "ping": self.on_ping,
            "status": self.on_status, "lookup": self.on_lookup, "has": self.on_has,
            "put": self.values.on_put, "get": self.values.on_get, "function": self.on_function,
            "run": self.on_run, "cancel": self.on_cancel, "peers": self.on_peers,
            "release": self.on_release, "forget": self.on_forget, "leaving": self.on_leaving,
            "sync": self.receiving.on_sync, "offer": self.receiving.on_offer,
            "replicate": self.receiving.on_replicate,
        }

    # ------------------------------------------------------------------ plumbing

    def handle(self, frames: list) -> None:
        if len(frames) < 2:
            return  # a ROUTER always prefixes the routing id; nothing to answer
        ident = frames[0].bytes
        now = time.monotonic()
        heard = self.heard.get(ident)
        if heard is not None and now - heard > STALE_AFTER:
            self.stale.add(ident)  # its sender gave this node up (and reconnects if it lives)
            if len(self.stale) > _LOG_ONCE:
                self.stale.pop()
        self.heard[ident] = now
        if len(self.heard) > _LOG_ONCE:
            self.heard.popitem(last=False)
        else:
            self.heard.move_to_end(ident)
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
            self.incompatible[ident] = python  # its calls are refused too, not only its hello
            if len(self.incompatible) > _LOG_ONCE:
                self.incompatible.popitem(last=False)
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
            **self.requirements_answer(msg.fields.get("requires")),
        ))

    def requirements_answer(self, requires: Any) -> dict:
        if not requires:
            return {}
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            return {"missing": ["requires must be a list of strings"]}
        from pythagoras_p2p.errors import ConfigurationError
        from pythagoras_p2p.requirements import missing_requirements, parse_requirements

        try:
            return {"missing": missing_requirements(parse_requirements(requires))}
        except ConfigurationError as exc:
            return {"missing": [str(exc)]}

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
        in_use = self.running.refs_in_use()
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

    # ------------------------------------------------------------------ results

    def entry(self, call: bytes) -> Ok | None:
        """A stored or journaled result (its blob ``None`` when the value is large)."""
        pending = self.node.journal.pending(call)
        if pending is not None:
            return Ok(pending[1], pending[2], pending[3])
        found = self.store.result_entry(call)
        if found is None:
            return None
        address, record = found  # what a client of this home computed is signed as it leaves
        meta = vouch(self.store.get_meta(call) or {}, call, address, self.node.trust.keys)
        return Ok(address, self.store.inline_blob(record), meta)

    def on_lookup(self, ident: bytes, msg: wire.Message) -> None:
        found, bodies = [], []
        for call in msg.hexes("calls"):
            entry = self.entry(call)
            if entry is None:
                continue
            found.append({"call": call.hex(), "address": entry.address.hex(),
                          "large": entry.blob is None, "meta": entry.meta})
            if entry.blob is not None:
                bodies.append(entry.blob)
        self.counts.hits += len(found)
        self.counts.lookups += 1
        self.outbox.send(ident, wire.build("ok", msg.id, bodies, found=found,
                                    settled=self.node.repair.settled()))

    def on_run(self, ident: bytes, msg: wire.Message) -> None:
        if ident in self.stale:
            self.outbox.error(ident, msg.id, wire.ERR_STALE,
                              f"node {self.node.node_id} did not hear this connection for more than "
                              f"{STALE_AFTER:g} s; connect again")
            return
        if ident in self.incompatible:
            self.outbox.error(ident, msg.id, wire.ERR_PYTHON,
                              f"node {self.node.node_id} runs Python {wire.PYTHON_VERSION}, this client "
                              f"said Python {self.incompatible[ident]}: it takes no calls from it")
            return
        call, fp = msg.hex("call"), msg.hex("fp")
        keep, copied = msg.fields.get("keep", True), msg.fields.get("copied", False)
        speculative = msg.fields.get("speculative", False)
        if not all(isinstance(flag, bool) for flag in (keep, copied, speculative)):
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED,
                              "run: keep, copied and speculative must be true or false")
            return
        entry = self.entry(call) if keep else None  # a call not memoized is never a hit
        if entry is not None and isinstance(entry.meta, dict) and not holds(entry.meta.get("inputs")):
            entry = None  # it read files or variables that changed here: it runs again
        if entry is not None:
            self.counts.hits += 1
            bodies, fields = outcome_to_wire(entry)
            self.outbox.reply(ident, wire.build("result", msg.id, bodies, call=call, **fields))
            return
        if self.running.join(call, ident, msg.id, copied):  # the same call already runs here
            return
        if self.node.stopping:
            self.outbox.error(ident, msg.id, wire.ERR_STOPPING, f"node {self.node.node_id} is shutting down")
            return
        if len(msg.bodies) != 1:
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, "run: expected one body frame with the arguments")
            return
        needs, requires = self.placement(ident, msg)
        if needs is None:
            return
        refused = self.node.admission.refusal(needs, speculative)
        if refused:  # the owner comes first: the caller places it elsewhere
            code = wire.ERR_BUSY if speculative and not self.node.admission.policy.paused else wire.ERR_PAUSED
            self.outbox.error(ident, msg.id, code, refused)
            return
        # fp: the key of the function's record. Asked every time (one read): a record found
        # damaged where it was loaded is removed, and the client then sends it again.
        if not self.store.has_function(fp):
            self.outbox.error(ident, msg.id, wire.ERR_NEED_FUNCTION, fp.hex())
            return
        refs = msg.fields.get("refs", [])
        if not isinstance(refs, list) or not all(map(wire._is_address, refs)):
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, "run: refs must be a list of addresses")
            return
        missing = [r for r in refs if not self.store.has_value(bytes.fromhex(r))]
        if missing:
            self.outbox.error(ident, msg.id, wire.ERR_NEED_VALUES, ",".join(missing))
            return
        self.counts.misses += 1
        task = Task(0, fp, call, bytes(msg.bodies[0]), msg.fields["label"][:200], (), keep,
                    needs, requires)
        self.running.add(call, self.node.admission.enqueue(ident, task, speculative), ident, msg.id,
                         tuple(bytes.fromhex(r) for r in refs), keep, copied, task.label)

    def placement(self, ident: bytes, msg: wire.Message) -> tuple:
        """The resources and requirements a ``run`` asks for, checked against this node:
        ``(needs, requires)``, or ``(None, None)`` once the request was answered with an error."""
        asked = msg.fields.get("needs")
        if asked is None and not msg.fields.get("requires"):
            return (), ()  # a call that asks for nothing: the common case, at no cost
        from pythagoras_p2p.errors import ConfigurationError
        from pythagoras_p2p.resources import from_wire, lacking

        try:
            needs = from_wire(asked if asked is not None else {})
        except ConfigurationError as exc:
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, f"run: {exc}")
            return None, None
        short = lacking(needs, self.node.resources)
        if short:
            self.outbox.error(ident, msg.id, wire.ERR_RESOURCES,
                              f"node {self.node.node_id} could never give it: {'; '.join(short)}")
            return None, None
        requires = msg.fields.get("requires", [])
        if requires:
            key = tuple(map(str, requires)) if isinstance(requires, list) else (repr(requires),)
            missing = self._checked_requires.get(key)
            if missing is None:  # looked up once per set of specifiers (installs need a restart)
                missing = self.requirements_answer(requires).get("missing", [])
                if len(self._checked_requires) < _LOG_ONCE:
                    self._checked_requires[key] = missing
            if missing:
                self.outbox.error(ident, msg.id, wire.ERR_REQUIREMENTS,
                                  f"node {self.node.node_id} does not satisfy requires=: {'; '.join(missing)}")
                return None, None
            requires = tuple(requires)
        return needs, tuple(requires)

    def finish(self, call: bytes, outcome: Ok | Failed | Crashed) -> None:
        """A task ended (called on the node's thread): journaled and answered with the others
        that ended in this turn of the node's loop (:meth:`settle`)."""
        running = self.running.pop(call)
        if running is None:
            return
        self.counts.tasks_done += 1
        self._ended.append((call, running, outcome))

    def settle(self) -> None:
        """Journal the results of the tasks that ended in this turn (one append for them all),
        then answer every waiter of each."""
        ended, self._ended = self._ended, []
        if not ended:
            return
        keys = self.node.trust.keys  # results say which member computed them, signed
        kept = [(call, outcome, encode_meta(stamp(outcome.meta, call, outcome.address, keys)))
                for call, running, outcome in ended if type(outcome) is Ok and running.keep]
        journaled = False
        if kept:
            try:
                self.node.journal.append([(c, o.address, o.blob, o.meta) for c, o, _ in kept],
                                         [meta_raw for _, _, meta_raw in kept])
                journaled = True
            except Exception as exc:  # the disk is full, or the store refused a write
                self.log_once("journal", "cannot keep results (%s); calls are answered, but their "
                              "results are not kept until it is fixed (`pythagoras-node cache gc` "
                              "makes room)", exc)
        metas = {call: meta_raw for call, _, meta_raw in kept}
        for call, running, outcome in ended:
            self.node.reports.ended(self.node.node_id, running.label, outcome)
            meta_raw = metas.get(call)
            self._answer(call, running, outcome, journaled and meta_raw is not None, meta_raw)

    def _answer(self, call: bytes, running, outcome, kept: bool, meta_raw: bytes | None) -> None:
        bodies, fields = outcome_to_wire(outcome)
        if meta_raw is not None:  # the journal record and the reply share the encoded bytes
            fields["meta"] = wire.RawJSON(meta_raw)
        answer = lambda: self.running.answer(call, running, bodies, fields)  # noqa: E731
        # Acknowledged only once a second machine holds it too (when there is one): the caller's,
        # when it said it keeps a copy, else another member.
        if kept and running.copied:
            self.node.repair.poke()
        elif kept and self.node.copies.hold(call, outcome.address, outcome.blob, meta_raw, answer):
            return
        answer()

    def forward_output(self, call: bytes, where: str, text: str) -> None:
        """What a running call printed (called on the node's thread)."""
        self.running.forward_output(call, where, text)

    def on_cancel(self, ident: bytes, msg: wire.Message) -> None:
        self.running.cancel(msg.hexes("calls"), ident)

    def drop_forsaken(self) -> None:
        """Drop the calls whose callers all gave this node up: not heard for longer than a
        client waits (they ping every second), or heard again only after such a silence. So a
        node back from SIGSTOP, or from a cut link, does not run calls already placed
        elsewhere."""
        now = time.monotonic()

        def gone(ident: bytes) -> bool:
            return ident in self.stale or now - self.heard.get(ident, now) > STALE_AFTER

        dropped = self.running.forsake(gone, f"node {self.node.node_id} dropped the call: this "
                                              f"connection was silent for more than {STALE_AFTER:g} s")
        if dropped:
            self.counts.forsaken += dropped
            log.info("dropped %d call(s) whose callers had given this node up", dropped)

    def abandon_running(self) -> None:
        """The node stops: the calls still running are answered ``stopping`` and cancelled."""
        self.running.abandon(self.node.node_id)
