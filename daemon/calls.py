"""The calls a node is asked to run: ``run``, ``lookup`` and ``cancel``, and what happens when
a task ends (journaled, answered, copied to a second member).

A part of :class:`~.handlers.Handlers` (held as ``handlers.calls``), given what it uses: the
store and journal, the node's :class:`~.outbox.Outbox`, its admission, second copies and repair
(each a Protocol below). A call is answered from the store or the journal when it can be; the
same call running here already gets one more waiter; else it waits in the admission's queue for a
worker. The results of the tasks that ended in one turn of the node's loop are journaled in one
append before anyone is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from pythagoras_p2p.defaults import NODE_LOG_ONCE as _MOST
from pythagoras_p2p.execution.outcomes import Crashed, Failed, Ok
from pythagoras_p2p.execution.tasks import Task
from pythagoras_p2p.identity.inputs import holds
from pythagoras_p2p.net import wire
from pythagoras_p2p.net.outcomes_wire import outcome_to_wire
from pythagoras_p2p.store.core import Store
from pythagoras_p2p.store.journal import Journal, encode_meta
from pythagoras_p2p.trust import Trust
from pythagoras_p2p.trust.provenance import stamp, vouch

from .callers import STALE_AFTER, Callers
from .logonce import LogOnce
from .outbox import Outbox
from .reports import Reports
from .running import Running, RunningCalls
from .state import Counters

__all__ = ["Calls", "Admitting", "Copying", "Repairing", "requirements_answer"]

log = logging.getLogger(__name__)


class Admitting(Protocol):
    """Which calls start, when (:class:`~.owner.admission.Admission`)."""

    @property
    def paused(self) -> bool:
        """Whether the owner's policy takes no new call now."""

    def refusal(self, needs: tuple, speculative: bool) -> str | None:
        """Why a new call is not taken now, or None."""

    def enqueue(self, ident: bytes, task: Task, speculative: bool) -> Any:
        """Queue ``task`` to start in turn; what it returns is cancelled to drop it."""


class Copying(Protocol):
    """Copies of journaled results to a second member (:class:`~.replication.SecondCopies`)."""

    def hold(self, call: bytes, address: bytes, blob: bytes | None, meta_raw: bytes,
             then: Callable[[], None]) -> bool:
        """Copy a result to a second member and run ``then`` once it is there; False when no
        other member can take one (``then`` is not kept)."""


class Repairing(Protocol):
    """What the calls need of the node's repair (:class:`~.repair.Repairer`)."""

    def settled(self) -> bool:
        """Whether this node knows the members and their copies are where they belong."""

    def poke(self) -> None:
        """Results were journaled: look again soon."""


def requirements_answer(requires: Any) -> dict:
    """``{"missing": [...]}``: what of the requirement specifiers ``requires`` this machine lacks
    (``{}`` when none were given)."""
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



class Calls:
    """Serving ``run``, ``lookup`` and ``cancel``; journaling and answering what ended."""

    def __init__(self, node_id: str, resources: dict, stopping: Callable[[], bool], store: Store,
                 journal: Journal, trust: Trust, outbox: Outbox, callers: Callers,
                 admission: Admitting, copies: Copying, repair: Repairing, reports: Reports,
                 counts: Counters, log_once: LogOnce):
        self.node_id = node_id
        self.resources = resources  # what this machine offers calls
        self.stopping = stopping  # whether the node is shutting down
        self.store = store
        self.journal = journal
        self.trust = trust  # its keys sign the results computed here
        self.outbox = outbox
        self.callers = callers
        self.admission = admission
        self.copies = copies
        self.repair = repair
        self.reports = reports  # the calls that ended, for the dashboard
        self.counts = counts
        self.log_once = log_once
        # send is looked up at each message: a node's tests replace it on the outbox
        self.running = RunningCalls(lambda ident, frames: outbox.send(ident, frames), outbox.reply)
        self._ended: list = []  # (call, running, outcome) of the tasks that ended this turn
        self._checked_requires: dict[tuple, list] = {}  # a function's requires= → what is missing

    def entry(self, call: bytes) -> Ok | None:
        """A stored or journaled result (its blob ``None`` when the value is large)."""
        pending = self.journal.pending(call)
        if pending is not None:
            return Ok(pending[1], pending[2], pending[3])
        found = self.store.result_entry(call)
        if found is None:
            return None
        address, record = found  # what a client of this home computed is signed as it leaves
        meta = vouch(self.store.get_meta(call) or {}, call, address, self.trust.keys)
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
                                           settled=self.repair.settled()))

    def on_run(self, ident: bytes, msg: wire.Message) -> None:
        if ident in self.callers.stale:
            self.outbox.error(ident, msg.id, wire.ERR_STALE,
                              f"node {self.node_id} did not hear this connection for more than "
                              f"{STALE_AFTER:g} s; connect again")
            return
        if ident in self.callers.incompatible:
            self.outbox.error(ident, msg.id, wire.ERR_PYTHON,
                              f"node {self.node_id} runs Python {wire.PYTHON_VERSION}, this "
                              f"client said Python {self.callers.incompatible[ident]}: it takes "
                              f"no calls from it")
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
        if self.stopping():
            self.outbox.error(ident, msg.id, wire.ERR_STOPPING,
                              f"node {self.node_id} is shutting down")
            return
        if len(msg.bodies) != 1:
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED,
                              "run: expected one body frame with the arguments")
            return
        needs, requires = self.placement(ident, msg)
        if needs is None:
            return
        refused = self.admission.refusal(needs, speculative)
        if refused:  # the owner comes first: the caller places it elsewhere
            code = wire.ERR_BUSY if speculative and not self.admission.paused else wire.ERR_PAUSED
            self.outbox.error(ident, msg.id, code, refused)
            return
        # fp: the key of the function's record. Asked every time (one read): a record found
        # damaged where it was loaded is removed, and the client then sends it again.
        if not self.store.has_function(fp):
            self.outbox.error(ident, msg.id, wire.ERR_NEED_FUNCTION, fp.hex())
            return
        refs = msg.fields.get("refs", [])
        if not isinstance(refs, list) or not all(map(wire._is_address, refs)):
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED,
                              "run: refs must be a list of addresses")
            return
        missing = [r for r in refs if not self.store.has_value(bytes.fromhex(r))]
        if missing:
            self.outbox.error(ident, msg.id, wire.ERR_NEED_VALUES, ",".join(missing))
            return
        self.counts.misses += 1
        task = Task(0, fp, call, bytes(msg.bodies[0]), msg.fields["label"][:200], (), keep,
                    needs, requires)
        self.running.add(call, self.admission.enqueue(ident, task, speculative), ident, msg.id,
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
        short = lacking(needs, self.resources)
        if short:
            self.outbox.error(ident, msg.id, wire.ERR_RESOURCES,
                              f"node {self.node_id} could never give it: {'; '.join(short)}")
            return None, None
        requires = msg.fields.get("requires", [])
        if requires:
            key = tuple(map(str, requires)) if isinstance(requires, list) else (repr(requires),)
            missing = self._checked_requires.get(key)
            if missing is None:  # looked up once per set of specifiers (installs need a restart)
                missing = requirements_answer(requires).get("missing", [])
                if len(self._checked_requires) < _MOST:
                    self._checked_requires[key] = missing
            if missing:
                self.outbox.error(ident, msg.id, wire.ERR_REQUIREMENTS,
                                  f"node {self.node_id} does not satisfy requires=: "
                                  f"{'; '.join(missing)}")
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
        keys = self.trust.keys  # results say which member computed them, signed
        kept = [(call, outcome, encode_meta(stamp(outcome.meta, call, outcome.address, keys)))
                for call, running, outcome in ended if type(outcome) is Ok and running.keep]
        journaled = False
        if kept:
            try:
                self.journal.append([(c, o.address, o.blob, o.meta) for c, o, _ in kept],
                                         [meta_raw for _, _, meta_raw in kept])
                journaled = True
            except Exception as exc:  # the disk is full, or the store refused a write
                self.log_once("journal", "cannot keep results (%s); calls are answered, but their "
                              "results are not kept until it is fixed (`pythagoras-node cache gc` "
                              "makes room)", exc)
        metas = {call: meta_raw for call, _, meta_raw in kept}
        for call, running, outcome in ended:
            self.reports.ended(self.node_id, running.label, outcome)
            meta_raw = metas.get(call)
            self._answer(call, running, outcome, journaled and meta_raw is not None, meta_raw)

    def _answer(self, call: bytes, running: Running, outcome: Ok | Failed | Crashed, kept: bool,
                meta_raw: bytes | None) -> None:
        bodies, fields = outcome_to_wire(outcome)
        if meta_raw is not None:  # the journal record and the reply share the encoded bytes
            fields["meta"] = wire.RawJSON(meta_raw)
        answer = lambda: self.running.answer(call, running, bodies, fields)  # noqa: E731
        # Acknowledged only once a second machine holds it too (when there is one): the caller's,
        # when it said it keeps a copy, else another member.
        if kept and isinstance(outcome, Ok) and meta_raw is not None:
            if running.copied:
                self.repair.poke()
            elif self.copies.hold(call, outcome.address, outcome.blob, meta_raw, answer):
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
        dropped = self.running.forsake(
            lambda ident: self.callers.gone(ident, now),
            f"node {self.node_id} dropped the call: this connection was silent for more than "
            f"{STALE_AFTER:g} s")
        if dropped:
            self.counts.forsaken += dropped
            log.info("dropped %d call(s) whose callers had given this node up", dropped)

    def abandon_running(self) -> None:
        """The node stops: the calls still running are answered ``stopping`` and cancelled."""
        self.running.abandon(self.node_id)
