"""What the swarm client does with each message a peer sends: results, errors, output, chunks.

A part of :class:`~.dispatcher.SwarmDispatcher` (its base class), kept apart because it is the
one place that reads what peers send: the outcome of a call (through the one codec,
:mod:`pythagoras_p2p.net.outcomes_wire`), a refusal and what it means for the call (send the
function or the arguments again, go elsewhere, fail), printed output, and chunks of values.
It runs on the dispatcher's I/O loop and uses the dispatcher's peers, queue, stragglers and
value exchange.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..execution.batch import print_output
from ..execution.outcomes import REMOTE, RESOURCES, Ok, Refused
from ..net import wire
from ..net.outcomes_wire import outcome_from_reply
from ..net.transfer import Lost
from .peers import Peer

__all__ = ["Replies"]

log = logging.getLogger(__name__)


class Replies:
    """Reading peers' messages, for :class:`~.dispatcher.SwarmDispatcher`."""

    # What it uses of the dispatcher:
    connections: Any  # .connections.Connections
    exchange: Any  # .exchange.ValueExchange
    stragglers: Any  # .stragglers.Stragglers
    _queue: Any  # deque of (batch, task) waiting for a peer
    _rtt: float | None  # smoothed round trip of results, seconds
    _lost: Callable[[Peer, str], None]  # a peer is gone: its calls go back to the queue
    _incompatible: Callable[[Peer, str], None]  # ... and is never connected again

    def _on_message(self, peer: Peer, frames: list) -> None:
        peer.heard()
        try:
            msg = wire.parse(frames)
        except wire.WireError as exc:
            if exc.code == wire.ERR_PROTOCOL:  # a node of another release: it can never take work here
                self._incompatible(peer, f"the node speaks protocol version {_version_of(frames)} "
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
                self._on_message(peer, frames)
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

    def _on_run_reply(self, peer: Peer, entry: tuple, msg: wire.Message) -> None:
        batch, task = entry
        sent = self.stragglers.placed_at.get(msg.id)
        if sent is not None and msg.op == "result":
            rtt = time.monotonic() - sent
            self._rtt = rtt if self._rtt is None else 0.8 * self._rtt + 0.2 * rtt
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
            code = msg.fields["code"]
            if code == wire.ERR_NEED_FUNCTION:
                peer.functions.discard(task.fp)
                self._queue.appendleft((batch, task))
            elif code == wire.ERR_NEED_VALUES:
                peer.values.difference_update(bytes.fromhex(h) for h in msg.fields["message"].split(","))
                self._queue.appendleft((batch, task))
            elif code == wire.ERR_STALE:
                # Sent on a connection the node gave up on (it was stopped, or its link cut):
                # a new connection, and the call goes wherever it fits now.
                self._lost(peer, msg.fields["message"])
                self._queue.appendleft((batch, task))
            elif code == wire.ERR_STOPPING:
                # The node is shutting down: it finishes the calls it runs (their results still
                # come here) and takes no new one, so only this call goes elsewhere.
                if peer.state == "ready":
                    peer.state, peer.problem = "draining", msg.fields["message"]
                self._queue.appendleft((batch, task))
            elif code == wire.ERR_PAUSED:
                # The node's owner comes first: it takes no call for now (its pings say when
                # it does again), and nothing of this one was kept: it goes elsewhere.
                if peer.state == "ready":
                    peer.state, peer.problem = "paused", msg.fields["message"]
                self._queue.appendleft((batch, task))
            elif code in (wire.ERR_PYTHON, wire.ERR_PROTOCOL):
                self._incompatible(peer, msg.fields["message"])
                self._queue.appendleft((batch, task))
            elif code == wire.ERR_REQUIREMENTS and task.requires:
                peer.lacks[task.requires] = msg.fields["message"]  # placed elsewhere, or failed
                self._queue.appendleft((batch, task))
            elif code == wire.ERR_RESOURCES:
                batch.deliver(task.tid, Refused(RESOURCES, f"{task.label}: node {peer.address}: "
                                                           f"{msg.fields['message']}"))
            else:
                batch.deliver(task.tid, Refused(REMOTE, f"node {peer.address}: {msg.fields['message']}"))
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


    def _fetched(self, batch: Any, task: Any, outcome: Ok, ok: Any) -> None:
        """The large value of a result arrived (``ok`` is True) or did not: when its peer was
        lost (it stopped or died meanwhile), the call goes back to the queue — another node
        holds a copy, or computes it — rather than fail."""
        if ok is True:
            batch.deliver(task.tid, outcome)
        elif isinstance(ok, Lost):
            if batch.wanted(task):
                self._queue.appendleft((batch, task))
        else:
            batch.deliver(task.tid, Refused(REMOTE, ok))


def _version_of(frames: list) -> str:
    """The protocol version a message says it has (for an error message), or "unknown"."""
    import json

    try:
        return repr(json.loads(bytes(frames[0])).get("v"))
    except Exception:
        return "unknown"
