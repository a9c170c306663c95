"""What the swarm client does with each message a peer sends: results, errors, output, chunks.

Held by :class:`~.dispatcher.SwarmDispatcher` (its ``replies``), kept apart because it is the
one place that reads what peers send: the outcome of a call (through the one codec,
:mod:`pythagoras_p2p.net.outcomes_wire`), a refusal and what it means for the call (send the
function or the arguments again, go elsewhere, fail), printed output, and chunks of values.
It runs on the dispatcher's I/O loop and is given the dispatcher's connections, task queue,
stragglers and value exchange, and what to do with a peer that is lost or incompatible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..execution.batch import print_output
from ..execution.outcomes import REMOTE, RESOURCES, Ok, Refused
from ..net import wire
from ..net.outcomes_wire import outcome_from_reply
from ..net.transfer import Lost
from .peers import Peer

if TYPE_CHECKING:
    from ..execution.batch import Batch
    from ..execution.task_queue import TaskQueue
    from ..execution.tasks import Task
    from .connections import Connections
    from .exchange import ValueExchange
    from .stragglers import Stragglers

__all__ = ["Replies"]

log = logging.getLogger(__name__)


class Replies:
    """Reading peers' messages, for :class:`~.dispatcher.SwarmDispatcher`."""

    def __init__(self, connections: Connections, exchange: ValueExchange, stragglers: Stragglers,
                 queue: TaskQueue, *, lost: Callable[[Peer, str], None],
                 incompatible: Callable[[Peer, str], None]):
        self.connections = connections
        self.exchange = exchange
        self.stragglers = stragglers
        self.queue = queue  # where a call goes back to be placed again
        self.lost = lost  # (peer, why): its connection is given up, its calls go elsewhere
        self.incompatible = incompatible  # (peer, why): lost, and never connected again
        self.rtt: float | None = None  # smoothed round trip of fast results, seconds

    def on_message(self, peer: Peer, frames: list) -> None:
        peer.heard()
        try:
            msg = wire.parse(frames)
        except wire.WireError as exc:
            if exc.code == wire.ERR_PROTOCOL:  # a node of another release: it can never take work here
                self.incompatible(peer, f"the node speaks protocol version {_version_of(frames)} "
                                         f"and this client {wire.PROTOCOL_VERSION}; install the same "
                                         f"pythagoras_p2p release on every machine of the swarm")
                return
            log.warning("ignoring a malformed message from %s: %s", peer.address, exc)
            return
        if msg.op == "many":  # the results of one turn of the node's loop
            try:
                carried = wire.unbundle(msg)
            except wire.WireError as exc:
                log.warning("ignoring a malformed message from %s: %s", peer.address, exc)
                return
            for frames in carried:
                self.on_message(peer, frames)
            return
        if msg.op == "output":
            print_output(msg.fields["where"], msg.fields["text"])
            return
        entry = peer.inflight.pop(msg.id, None)
        if entry is not None:
            self._on_run_reply(peer, entry, msg)
            return
        if self.connections.answer(peer, msg):
            return
        if msg.op == "ok" and "total" in msg.fields:  # a chunk of a download (gets have no id)
            self.exchange.on_chunk(peer, msg)
        elif msg.op == "error" and msg.fields["code"] == wire.ERR_MISSING:
            self.exchange.on_missing(peer, msg.fields["message"])

    def _on_run_reply(self, peer: Peer, entry: tuple[Batch, Task], msg: wire.Message) -> None:
        batch, task = entry
        sent = self.stragglers.placed_at.get(msg.id)
        if sent is not None and msg.op == "result":
            rtt = time.monotonic() - sent
            self.rtt = rtt if self.rtt is None else 0.8 * self.rtt + 0.2 * rtt
        self.stragglers.forget(msg.id)
        if not batch.wanted(task):
            return
        if msg.op == "error" and self.stragglers.running_elsewhere(peer, batch, task):
            return  # a copy of a straggler could not run here; the other copy goes on
        deliver, others = self.stragglers.settle(peer, batch, task)
        if not deliver:
            return  # the other copy of this straggler answered first
        for other in others:  # ... and this one did: stop the other copy
            rids = [rid for rid, bt in other.inflight.items() if bt[0] is batch and bt[1].tid == task.tid]
            for rid in rids:
                del other.inflight[rid]
                self.stragglers.forget(rid)
            if rids and other.sock is not None:
                other.send(wire.build("cancel", 0, calls=[task.call]))
        if msg.op == "error":
            self._on_refused(peer, batch, task, msg.fields["code"], msg.fields["message"])
            return
        try:
            outcome = outcome_from_reply(msg, peer.address)
        except wire.WireError as exc:  # the call fails rather than wait for an answer forever
            log.warning("a malformed result from %s: %s", peer.address, exc)
            batch.deliver(task.tid, Refused(REMOTE, f"node {peer.address} answered {task.label} "
                                                    f"with a malformed result ({exc})"))
            return
        if type(outcome) is Ok:
            self.stragglers.observe(batch, outcome.meta.get("duration"))
            if outcome.blob is None:  # a large value: it stays on the peer until fetched
                self.exchange.fetch(peer, outcome.address,
                                    lambda ok: self._fetched(batch, task, outcome, ok))
                return
        batch.deliver(task.tid, outcome)

    def _on_refused(self, peer: Peer, batch: Batch, task: Task, code: str, message: str) -> None:
        """``peer`` did not run the call (``code``, ``message``): it goes back to the queue, to
        be placed again (here, with what was missing, or elsewhere), or it fails."""
        if code == wire.ERR_NEED_FUNCTION:
            peer.functions.discard(task.fp)
        elif code == wire.ERR_NEED_VALUES:
            peer.values.difference_update(bytes.fromhex(h) for h in message.split(","))
        elif code == wire.ERR_STALE:
            # Sent on a connection the node gave up on (it was stopped, or its link cut):
            # a new connection, and the call goes wherever it fits now.
            self.lost(peer, message)
        elif code == wire.ERR_STOPPING:
            # The node is shutting down: it finishes the calls it runs (their results still
            # come here) and takes no new one, so only this call goes elsewhere.
            if peer.state == "ready":
                peer.state, peer.problem = "draining", message
        elif code == wire.ERR_PAUSED:
            # The node's owner comes first: it takes no call for now (its pings say when
            # it does again), and nothing of this one was kept: it goes elsewhere.
            if peer.state == "ready":
                peer.state, peer.problem = "paused", message
        elif code in (wire.ERR_PYTHON, wire.ERR_PROTOCOL, wire.ERR_REMOVED):
            self.incompatible(peer, message)
        elif code == wire.ERR_REQUIREMENTS and task.requires:
            peer.lacks[task.requires] = message  # placed elsewhere, or failed
        elif code == wire.ERR_RESOURCES:
            batch.deliver(task.tid, Refused(RESOURCES, f"{task.label}: node {peer.address}: {message}"))
            return
        else:
            batch.deliver(task.tid, Refused(REMOTE, f"node {peer.address}: {message}"))
            return
        self.queue.entries.appendleft((batch, task))

    def _fetched(self, batch: Batch, task: Task, outcome: Ok, ok: Any) -> None:
        """The large value of a result arrived (``ok`` is True) or did not: when its peer was
        lost (it stopped or died meanwhile), the call goes back to the queue — another node
        holds a copy, or computes it — rather than fail."""
        if ok is True:
            batch.deliver(task.tid, outcome)
        elif isinstance(ok, Lost):
            if batch.wanted(task):
                self.queue.entries.appendleft((batch, task))
        else:
            batch.deliver(task.tid, Refused(REMOTE, ok))


def _version_of(frames: list) -> str:
    """The protocol version a message says it has (for an error message), or "unknown"."""
    import json

    try:
        return repr(json.loads(bytes(frames[0])).get("v"))
    except Exception:
        return "unknown"
