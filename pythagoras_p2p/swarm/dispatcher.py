"""Sending calls to the swarm: one I/O loop, every peer's socket, tasks placed by free slots.

Callers queue requests (a batch of tasks, a lookup, a cancel); the loop owns the sockets, and
the thread that waits for a batch's outcomes runs it meanwhile (:mod:`.driver`; a background
thread while nobody waits). A task goes to the ready peer with the most free worker slots
(several per worker while calls are short: ``Stragglers.depth``), so slow and fast balance; the
runs placed in one turn go to each peer as one ``many`` message. A task's function is sent
first if the peer may lack it (on the same connection, which keeps order), and its large
arguments reach the peer before it (:class:`~.exchange.ValueExchange`, which also looks up and
downloads results of large values). Peers are found, greeted and watched by
:class:`~.connections.Connections`. A peer that stops answering, or whose connection closes or
is refused, is lost, and its calls go back to the queue for the others; calls that no peer can
take for ``connect_timeout`` seconds fail with a message naming the peers tried and why.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

from ..defaults import SWARM_SPIN as _SPIN
from ..defaults import SWARM_SPIN_RTT as _SPIN_RTT
from ..defaults import SWARM_TICK as _TICK
from ..errors import PythagorasError
from ..execution.batch import Batch, refill
from ..execution.mailbox import Mailbox
from ..execution.outcomes import CLOSED, REQUIREMENTS, RESOURCES, UNREACHABLE, Refused
from ..net import wire
from ..net.security import SwarmKey
from ..net.sockets import waiting_messages
from ..store.core import Store
from ..store.functions import sendable_record
from .connections import Connections
from .driver import Driver
from .exchange import ValueExchange
from .peers import Peer
from .replies import Replies
from .stragglers import Stragglers

__all__ = ["SwarmDispatcher"]

log = logging.getLogger(__name__)

_FAILED = object()  # what _choose says of a task it failed


class SwarmDispatcher(Replies):
    """Runs tasks on peers of a swarm; see the module docstring."""

    def __init__(self, key: SwarmKey, store: Store, peers: list[tuple[str, int]], *,
                 requires: tuple[str, ...] = (), connect_timeout: float = 5.0,
                 ask_for_peers: bool = False, browser: Any = None, own_node: str | None = None,
                 learned_lookup_only: bool = False):
        import zmq

        self.key = key
        self.store = store
        self.own_node = own_node  # this machine's: results of the others are journaled here
        self.requires = list(requires)
        self.connect_timeout = connect_timeout
        self.context = zmq.Context()
        self.peers: dict[tuple[str, int], Peer] = {p: Peer(*p) for p in peers}
        self.connections = Connections(self.context, key, self.peers, self.requires,
                                       lost=self._lost, ask_for_peers=ask_for_peers,
                                       browser=browser, learned_lookup_only=learned_lookup_only)
        self.exchange = ValueExchange(store, self.connections, place=self._place)
        self.stragglers = Stragglers()
        self._rtt: float | None = None  # running mean of recent fast round trips (see _poll)
        self._queue: deque = deque()  # (batch, task)
        self._sources: deque = deque()  # batches whose tasks are made only as peers need them
        self._waiting_since: float | None = None
        self._unable: dict = {}  # (batch, tid) -> since when no ready peer could run it
        self._mail = Mailbox()  # requests from callers' threads, and the wake-up pipe
        self._poller = zmq.Poller()
        self._poller.register(self._mail.fileno(), zmq.POLLIN)
        self._registered: dict[Any, Peer] = {}  # polled socket → its peer
        self._driver = Driver(self._turn, self._wake, self._shutdown, name="pythagoras-swarm-io",
                              tick=_TICK, awaiting=self._awaiting)
        self._driver.start()

    # ------------------------------------------------------------------ caller side

    def _request(self, request: tuple) -> None:
        if not self.alive:
            raise RuntimeError("this cloud's connection to the swarm is closed; create a new cloud")
        sent = None
        if request[0] == "cancel" and not self._driver.driving_here():
            # Ctrl-C: the process may exit right after, so wait (briefly) until the peers have
            # been told, or they would run the cancelled calls to the end.
            sent = threading.Event()
            request = (*request, sent.set)
        self._mail.put(request, wake=False)  # the driver wakes the loop as it needs
        if request[0] != "submit":  # a batch's caller runs the loop while it waits for outcomes
            self._driver.notify()
        elif self._driver.driving_elsewhere():
            self._wake()  # another thread's turn may wait long in its poll: serve this one now
        if sent is not None:
            sent.wait(2.0)

    def _wake(self) -> None:
        self._mail.wake()

    @property
    def alive(self) -> bool:
        return not self._driver.over

    def _awaiting(self) -> bool:
        """Whether replies are due that no caller waits for in a batch (lookups, downloads)."""
        return self.connections.awaiting or self.exchange.downloading or self.exchange.holding

    def drive_until(self, done) -> None:
        """Run the I/O loop on the calling thread until ``done()`` (see :mod:`.driver`)."""
        self._driver.drive_until(done)

    def submit(self, tasks, count: int) -> Batch:
        batch = Batch(self, count, tasks=tasks)
        self._request(("submit", batch))
        return batch

    def call(self, kind: str, *args: Any, timeout: float) -> Any:
        """Run ``kind`` (lookup, fetch, ready) on the I/O loop and wait for its answer."""
        done = threading.Event()
        box: list = []

        def answer(value: Any) -> None:
            box.append(value)
            done.set()

        self._request((kind, *args, answer))
        if not done.wait(timeout):
            return None
        return box[0]

    def lookup(self, calls: list[bytes], *, timeout: float) -> dict:
        """Results of ``calls`` held by peers: ``{call: (address, blob|None, meta, peer)}``.

        Answers once every call is found or every peer has answered; at the timeout, with what
        was found by then (a slow or frozen peer delays a lookup, it never voids it). While the
        client does not know the swarm yet, the timeout runs from when it does (or stops
        waiting for it: see :meth:`.exchange.ValueExchange.lookup`).
        """
        found: dict = {}
        done = threading.Event()
        self._request(("lookup", calls, found, lambda: done.set()))
        done.wait(timeout + self.connections.learning_left)
        return dict(found)  # a copy made under the GIL: the I/O loop may still add to it

    @property
    def knows_swarm(self) -> bool:
        """Whether this client has learned the swarm (:meth:`.connections.Connections.known`)."""
        return self.connections.is_known

    def release(self, addresses: list[bytes]) -> None:
        """Tell the peers that hold these arguments that this client is done with them."""
        self._request(("release", list(addresses)))

    def close(self) -> None:
        if self.alive:
            self._request(("close",))
        self._driver.thread.join(10)  # also when a failed turn ended the loop: it shuts down

    # ------------------------------------------------------------------ the I/O loop

    def _turn(self, timeout: float, ready=None) -> bool:
        """One turn of the I/O loop, waiting up to ``timeout`` seconds (not at all once
        ``ready()``: this turn gave the waiting caller what it waits for); True once closed."""
        import zmq

        if self._serve_requests():
            return True
        self.connections.tend()
        self.exchange.resume_held()
        poller, registered = self._poller, self._registered
        for sock in [s for s in registered if s is not registered[s].sock
                     and s is not registered[s].monitor]:
            poller.unregister(sock)
            del registered[sock]
        for peer in self.peers.values():
            for sock in (peer.sock, peer.monitor):
                if sock is not None and sock not in registered:
                    poller.register(sock, zmq.POLLIN)
                    registered[sock] = peer
        self._place_tasks()
        for peer in self.peers.values():  # the runs placed: one message to each peer
            peer.flush()
        if ready is not None and ready():
            timeout = 0
        for sock, _ in self._poll(timeout, waiting=ready is not None):
            if sock == self._mail.fileno():
                self._mail.drain()
                continue
            owner = registered.get(sock)
            if owner is not None and owner.monitor is sock:
                self.connections.on_events(owner, sock)
                continue
            if owner is None or owner.sock is not sock:
                continue
            for frames in waiting_messages(sock, limit=1 << 30):
                self._on_message(owner, frames)
                if owner.sock is not sock:  # the message lost the peer: its socket is closed
                    break
        for peer in self.peers.values():  # calls placed again while replies were read
            peer.flush()
        return False

    def _poll(self, timeout: float, *, waiting: bool) -> list:
        """The sockets with something to read, waiting up to ``timeout`` seconds.

        A caller waiting for its only call in flight, to a peer that lately answered within
        :data:`_SPIN_RTT`, polls without sleeping for about twice that round trip (yielding to
        other runnable threads): a sleeping thread wakes tens of microseconds after its reply,
        on a small machine as long as the rest of a fast round trip. Never with nothing, or
        more than one call, in flight: batches and idle clients never spin.
        """
        if timeout and waiting and self._rtt is not None and self._rtt < _SPIN_RTT:
            busy = [p.inflight for p in self.peers.values() if p.inflight]
            sent = None
            if len(busy) == 1 and len(busy[0]) == 1:
                sent = self.stragglers.placed_at.get(next(iter(busy[0])))
            if sent is not None:
                until = sent + min(2 * self._rtt, _SPIN)
                events = self._poller.poll(0)
                while not events and time.monotonic() < until:
                    os.sched_yield()
                    events = self._poller.poll(0)
                if events:
                    return events
        return self._poller.poll(int(timeout * 1000))

    def _serve_requests(self) -> bool:
        return self._mail.serve(self._on_request)

    def _on_request(self, request: tuple) -> bool:
        """Serve one request from a caller's thread; True for ``close``."""
        kind, *args = request
        if kind == "submit":
            self._sources.append(args[0])
        elif kind == "cancel":
            self._cancel(args[0], args[1])
            for told in args[2:]:
                told()
        elif kind == "lookup":
            self.exchange.lookup(*args)
        elif kind == "fetch":
            self.exchange.fetch(*args)
        elif kind == "release":
            self.exchange.release(*args)
        elif kind == "ready":
            args[0]([p for p in self.peers.values() if p.ready])
        return kind == "close"

    # ------------------------------------------------------------------ losing peers

    def _lost(self, peer: Peer, why: str) -> None:
        """A peer is gone: its calls go back to the queue for the others."""
        if peer.ready or peer.inflight:
            log.warning("lost peer %s (%s); %d running call(s) go elsewhere", peer.address, why,
                        len(peer.inflight))
        requeue = [bt for bt in peer.inflight.values() if bt[0].wanted(bt[1])
                   and not self.stragglers.running_elsewhere(peer, *bt)]
        for rid in peer.inflight:
            self.stragglers.forget(rid)
        requeue += [bt for bt in self.exchange.take_parked(peer) if bt[0].wanted(bt[1])]
        self._queue.extendleft(reversed(requeue))
        peer.inflight.clear()
        self.connections.fail_pending(peer, why)
        self.exchange.forget(peer, why)
        peer.close()
        peer.state, peer.problem = "dead", why
        peer.settle(False)

    def _incompatible(self, peer: Peer, why: str) -> None:
        """``peer`` can never run this client's calls: lost now, and never connected again."""
        self._lost(peer, why)
        peer.state = "incompatible"

    # ------------------------------------------------------------------ placing tasks

    def _refill(self) -> None:
        slots = self.stragglers.depth * sum(p.workers for p in self.peers.values() if p.ready)
        refill(self._queue, self._sources, max(64, 2 * slots))

    def _place_tasks(self) -> None:
        self._refill()
        queue = self._queue
        while queue and not queue[0][0].wanted(queue[0][1]):
            queue.popleft()
        if not queue:
            self._waiting_since = None
            if not self._sources:
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
                peer = max(ready, key=self._free_slots)
                if self._free_slots(peer) <= 0:
                    break
            queue.popleft()
            self._place(peer, batch, task)
        queue.extendleft(reversed(waiting))
        if not queue:
            self._waiting_since = None
        elif ready:
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
            fit = [p for p in able if self._free_slots(p) > 0 and p.fits_now(task)]
            return max(fit, key=self._free_slots) if fit else None
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
        free = [p for p in ready if self._free_slots(p) > 0]
        while free:
            found = self.stragglers.candidate(ready, free, self._free_slots)
            if found is None:
                return
            batch, task, target = found
            log.info("%s runs long: a copy goes to %s too (first result wins)", task.label,
                     target.address)
            self._place(target, batch, task, speculative=True)
            free = [p for p in free if self._free_slots(p) > 0]

    def _free_slots(self, peer: Peer) -> int:
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
                              f"this machine's swarm key?")
        refill(self._queue, self._sources, None)
        while self._queue:
            batch, task = self._queue.popleft()
            batch.deliver(task.tid, outcome)
        self._waiting_since = None

    def _place(self, peer: Peer, batch: Batch, task: Any, speculative: bool = False) -> None:
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
        extra: dict[str, Any] = {} if task.keep else {"keep": False}
        if speculative:
            extra["speculative"] = True  # a copy of a straggler: only an idle worker takes it
        if task.keep and self.own_node not in (None, peer.node_id):
            extra["copied"] = True  # this client journals it on its machine: no need to wait
        extra.update({"needs": dict(task.needs)} if task.needs else {},
                     **({"requires": list(task.requires)} if task.requires else {}))
        peer.queue(wire.build("run", rid, [task.payload], fp=task.fp, call=task.call,
                              label=task.label, refs=[r.hex() for r in task.refs], **extra))

    # ------------------------------------------------------------------ cancel and close

    def _cancel(self, batch: Batch, tids: frozenset | None) -> None:
        """Drop the tasks of ``batch`` (only ``tids`` of it, if given), queued, parked or
        running: the peers running them are told to stop."""
        def gone(b: Batch, task: Any) -> bool:
            return b is batch and (tids is None or task.tid in tids)

        self._queue = deque(item for item in self._queue if not gone(*item))
        if tids is None:
            self._sources = deque(b for b in self._sources if b is not batch)
        for key in [k for k in self._unable if k[0] is batch and (tids is None or k[1] in tids)]:
            del self._unable[key]  # no longer waiting for a peer that could run it
        self.exchange.cancel(gone)
        for peer in self.peers.values():
            ended = [rid for rid, bt in peer.inflight.items() if gone(*bt)]
            calls = [peer.inflight[rid][1].call for rid in ended]
            if calls and peer.sock is not None:
                peer.send(wire.build("cancel", 0, calls=calls))
            for rid in ended:
                self.stragglers.forget(rid)
                del peer.inflight[rid]

    def _shutdown(self) -> None:
        self.connections.close()
        self.exchange.close()
        refill(self._queue, self._sources, None)
        while self._queue:
            batch, task = self._queue.popleft()
            batch.deliver(task.tid, Refused(CLOSED, f"{task.label} was not run: the cloud was closed"))
        self.context.term()
        self._mail.close()

