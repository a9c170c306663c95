"""Where the swarm client's queued tasks go: the ready peer with the most free slots, or one
that has what a task asks for; copies of stragglers; failing what no peer can run.

Held by :class:`~.dispatcher.SwarmDispatcher` (its ``placement``) and run on its I/O loop. A
task goes to the ready peer with the most free worker slots (several per worker while calls are
short: ``Stragglers.depth``), so slow and fast balance. A task that asks for resources or
packages goes to a peer that has them, and waits while none of those has room; one no peer of
the swarm could ever run fails, naming what it asks and what each node has. A task's function
is sent first if the peer may lack it (on the same connection, which keeps order), and its
large arguments reach the peer before it (:meth:`.exchange.ValueExchange.park`). Calls that no
peer can take for ``connect_timeout`` seconds fail with a message naming the peers tried and why.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import PythagorasError
from ..execution.outcomes import REQUIREMENTS, RESOURCES, UNREACHABLE, Refused
from ..net import wire
from ..store.functions import sendable_record
from .peers import Peer

if TYPE_CHECKING:
    from ..execution.batch import Batch
    from ..execution.task_queue import Cancel, TaskQueue
    from ..store.core import Store
    from .connections import Connections
    from .exchange import ValueExchange
    from .stragglers import Stragglers

__all__ = ["Placement"]

log = logging.getLogger(__name__)

_FAILED = object()  # what _choose says of a task it failed


class Placement:
    """Placing the queued tasks of a swarm client on its peers; see the module docstring."""

    def __init__(self, store: Store, peers: dict[tuple[str, int], Peer], queue: TaskQueue,
                 connections: Connections, stragglers: Stragglers, *, own_node: str | None,
                 connect_timeout: float):
        self.store = store
        self.peers = peers
        self.queue = queue
        self.connections = connections
        self.stragglers = stragglers
        self.exchange: ValueExchange  # set by the dispatcher (the exchange places through this)
        self.own_node = own_node  # this machine's: results of the others are journaled here
        self.connect_timeout = connect_timeout
        self._waiting_since: float | None = None
        self._unable: dict[tuple[Batch, int], float] = {}  # since when no ready peer could run it
        self._told_paused = False  # the caller was told its calls wait for paused nodes

    def cancel(self, cancel: Cancel) -> None:
        """The tasks ``cancel`` covers no longer wait for a peer that could run them."""
        for key in [k for k in self._unable if cancel.covers_key(k)]:
            del self._unable[key]

    def place_tasks(self) -> None:
        slots = self.stragglers.depth * sum(p.workers for p in self.peers.values() if p.ready)
        self.queue.refill(max(64, 2 * slots))
        queue = self.queue.entries
        while queue and not queue[0][0].wanted(queue[0][1]):
            queue.popleft()
        if not queue:
            self._waiting_since, self._told_paused = None, False
            if not self.queue.sources:
                self._copy_stragglers()
            return
        ready = [p for p in self.peers.values() if p.ready]
        waiting: list = []  # tasks that ask for what no free peer has now
        while queue and ready:
            batch, task = queue[0]
            if not batch.wanted(task):
                queue.popleft()
                continue
            if task.needs or task.requires:
                peer = self._choose(ready, batch, task)
                if peer is None or peer is _FAILED:
                    queue.popleft()
                    if peer is None:
                        waiting.append((batch, task))
                    continue
            else:
                peer = max(ready, key=self.free_slots)
                if self.free_slots(peer) <= 0:
                    break
            queue.popleft()
            self.place(peer, batch, task)
        queue.extendleft(reversed(waiting))
        if ready and self._told_paused:
            self._told_paused = False
            log.info("a node takes calls again: the calls that waited run")
        if not queue or ready:
            self._waiting_since = None
        else:
            self._no_peer_can_run()

    def _choose(self, ready: list, batch: Batch, task: Any):
        """The peer to run a task that asks for resources or packages: of the ready peers
        that have them, one with a free slot and room for them now; None while it must wait.
        A task that no peer of the swarm could ever run fails once every peer has answered
        (or after ``connect_timeout``), naming what it asks and what each node has: then
        :data:`_FAILED`."""
        able = [p for p in ready if p.can_ever_run(task)]
        if able:
            self._unable.pop((batch, task.tid), None)
            fit = [p for p in able if self.free_slots(p) > 0 and p.fits_now(task)]
            return max(fit, key=self.free_slots) if fit else None
        now = time.monotonic()
        since = self._unable.setdefault((batch, task.tid), now)
        settling = any(p.state in ("new", "connecting") for p in self.peers.values())
        if settling and now - since < self.connect_timeout:
            return None
        del self._unable[(batch, task.tid)]
        batch.deliver(task.tid, self._cannot_run(task))
        return _FAILED

    def _cannot_run(self, task: Any) -> Refused:
        from ..resources import lacking, summary

        if task.needs and all(lacking(task.needs, p.resources)
                              for p in self.peers.values() if p.ready):
            asked = summary(dict(task.needs))  # the same units as what the nodes have
            have = "; ".join(f"{p.name}: {summary(p.resources) or 'nothing declared'}"
                             for p in self.peers.values() if p.ready) or "no node answered"
            return Refused(RESOURCES, f"no node of the swarm could ever give {task.label} what "
                                      f"it asks for ({asked}); the nodes have: {have}. Start a "
                                      f"node that has it (`pythagoras-node start --resources "
                                      f"...`), or ask for less (resources=)")
        why = "; ".join(f"{p.address}: {p.lacks.get(task.requires, 'not asked')}"
                        for p in self.peers.values() if p.ready)
        return Refused(REQUIREMENTS, f"no node of the swarm satisfies the requires= of "
                                     f"{task.label} ({', '.join(task.requires)}): {why}")

    def _copy_stragglers(self) -> None:
        ready = [p for p in self.peers.values() if p.ready]
        free = [p for p in ready if self.free_slots(p) > 0]
        while free:
            found = self.stragglers.candidate(ready, free, self.free_slots)
            if found is None:
                return
            batch, task, target = found
            log.info("%s runs long: a copy goes to %s too (first result wins)", task.label,
                     target.address)
            self.place(target, batch, task, speculative=True)
            free = [p for p in free if self.free_slots(p) > 0]

    def free_slots(self, peer: Peer) -> int:
        """Slots of ``peer`` not yet promised: a task parked there, waiting for its arguments
        to arrive, holds a slot as surely as a running one (else every task parks on one peer)."""
        return peer.free_slots(self.stragglers.depth) - self.exchange.parked_on(peer)

    def _no_peer_can_run(self) -> None:
        now = time.monotonic()
        incompatible = [p for p in self.peers.values() if p.state == "incompatible"]
        if (incompatible and len(incompatible) == len(self.peers)
                and not self.connections.may_find_more):
            pass  # every peer there will ever be refused this client for good: waiting is futile
        elif any(p.state == "paused" for p in self.peers.values()):
            self._waiting_since = None  # a paused node takes calls again once its owner allows
            if not self._told_paused:  # said once a wait, so that a wait is never silent
                self._told_paused = True
                paused = "; ".join(f"{p.address}: {p.problem or 'paused'}"
                                   for p in self.peers.values() if p.state == "paused")
                log.warning("calls wait: no node of the swarm takes calls now, the ones that "
                            "could are paused (%s); they run as soon as one takes calls again "
                            "(`pythagoras-node resume` there, or `start --dedicated` for a node "
                            "that need not yield to its machine's owner)", paused)
            return
        # No peer known yet (an mDNS browser has not found any) counts as peers connecting.
        elif not self.peers or any(p.state in ("new", "connecting") for p in self.peers.values()):
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < self.connect_timeout:
                return
        elif self._waiting_since is None:
            self._waiting_since = now
            if any(p.state == "dead" for p in self.peers.values()):
                return  # give dead peers one more reconnection before failing
        elif now - self._waiting_since < self.connect_timeout:
            return
        unsuitable = [p for p in self.peers.values() if p.state == "unsuitable"]
        tried = "; ".join(f"{p.address}: {p.problem or p.state}" for p in self.peers.values()) or "none"
        if unsuitable and len(unsuitable) == len(self.peers):
            outcome = Refused(REQUIREMENTS, f"no peer satisfies requires= ({tried})")
        elif incompatible and len(incompatible) == len(self.peers):
            outcome = Refused(UNREACHABLE,
                              f"no node of the swarm can take calls from this client ({tried})")
        else:
            outcome = Refused(UNREACHABLE,
                              f"no node of the swarm could take the call within "
                              f"{self.connect_timeout:g} s (peers tried: {tried}). Is "
                              f"`pythagoras-node start` running there, reachable from here, with "
                              f"this machine a member (`pythagoras-node members`)?")
        self.queue.fail_all(lambda task: outcome)
        self._waiting_since = None

    def place(self, peer: Peer, batch: Batch, task: Any, speculative: bool = False) -> None:
        if self.exchange.park(peer, batch, task):
            return
        if task.fp not in peer.functions:  # task.fp: the key of the function's record
            try:
                record = sendable_record(self.store, task.fp, task.label)
            except PythagorasError as exc:  # gone, or found damaged: nothing else is sent
                from ..execution.outcomes import failure_outcome

                batch.deliver(task.tid, failure_outcome(exc, "this client"))
                return
            peer.send(wire.build("function", 0, [record], fp=task.fp))
            peer.functions.add(task.fp)
        rid = self.connections.new_id()
        peer.inflight[rid] = (batch, task)
        self.stragglers.placed(rid)
        extra: dict[str, Any] = {} if task.memoize else {"keep": False}
        if speculative:
            extra["speculative"] = True  # a copy of a straggler: only an idle worker takes it
        if task.memoize and self.own_node not in (None, peer.node_id):
            extra["copied"] = True  # this client journals it on its machine: no need to wait
        extra.update({"needs": dict(task.needs)} if task.needs else {},
                     **({"requires": list(task.requires)} if task.requires else {}))
        peer.queue(wire.build("run", rid, [task.payload], fp=task.fp, call=task.call,
                              label=task.label, refs=[r.hex() for r in task.refs], **extra))
