"""Sending calls to the swarm: one I/O loop that owns every peer's socket.

Callers queue requests (a batch of tasks, a lookup, a cancel: :mod:`..execution.task_queue`);
the loop owns the sockets, and the thread that waits for a batch's outcomes runs it meanwhile
(:mod:`.driver`; a background thread while nobody waits). Each turn places queued tasks on
peers (:mod:`.placement`), sends the runs placed in that turn to each peer as one ``many``
message, and reads what peers send (:mod:`.replies`). Large arguments and results travel by
:class:`~.exchange.ValueExchange`. Peers are found, greeted and watched by
:class:`~.connections.Connections`. A peer that stops answering, or whose connection closes or
is refused, is lost, and its calls go back to the queue for the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..defaults import SWARM_SPIN as _SPIN
from ..defaults import SWARM_SPIN_RTT as _SPIN_RTT
from ..defaults import SWARM_TICK as _TICK
from ..execution.batch import Batch
from ..execution.mailbox import Mailbox
from ..execution.task_queue import Cancel, Close, OnLoop, Request, Submit, TaskQueue, closed
from ..net import wire
from ..net.security import SwarmKey
from ..net.sockets import waiting_messages
from ..store.core import Store
from .connections import Connections
from .driver import Driver
from .exchange import ValueExchange
from .peers import Peer
from .placement import Placement
from .replies import Replies
from .stragglers import Stragglers

__all__ = ["SwarmDispatcher"]

log = logging.getLogger(__name__)

class SwarmDispatcher:
    """Runs tasks on peers of a swarm; see the module docstring.

    It holds its parts: the ``queue`` of tasks to place, the ``connections`` to the peers, the
    ``exchange`` of values, the ``stragglers`` it may copy, and the ``replies`` that read what
    peers send.
    """

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
        self.stragglers = Stragglers()
        self.queue = TaskQueue()
        self.placement = Placement(store, self.peers, self.queue, self.connections, self.stragglers,
                                   own_node=own_node, connect_timeout=connect_timeout)
        self.exchange = self.placement.exchange = ValueExchange(store, self.connections,
                                                                place=self.placement.place)
        self.replies = Replies(self.connections, self.exchange, self.stragglers, self.queue,
                               lost=self._lost, incompatible=self._incompatible)
        self._mail = Mailbox()  # requests from callers' threads, and the wake-up pipe
        self._poller = zmq.Poller()
        self._poller.register(self._mail.fileno(), zmq.POLLIN)
        self._registered: dict[Any, Peer] = {}  # polled socket → its peer
        self._driver = Driver(self._turn, self._wake, self._shutdown, name="pythagoras-swarm-io",
                              tick=_TICK, awaiting=self._awaiting)
        self._driver.start()

    # ------------------------------------------------------------------ caller side

    def cancel(self, batch: Batch, tids: frozenset[int] | None = None) -> None:
        """Drop the tasks of ``batch`` (only ``tids`` of it, if given): queued, parked or
        running (the peers running them are told to stop)."""
        self.request(Cancel(batch, tids))

    def request(self, request: Request) -> None:
        """Hand ``request`` to the I/O loop."""
        if not self.alive:
            raise RuntimeError("this cloud's connection to the swarm is closed; create a new cloud")
        sent = None
        if type(request) is Cancel and not self._driver.driving_here():
            # Ctrl-C: the process may exit right after, so wait (briefly) until the peers have
            # been told, or they would run the cancelled calls to the end.
            sent = threading.Event()
            request = replace(request, told=sent.set)
        self._mail.put(request, wake=False)  # the driver wakes the loop as it needs
        if type(request) is not Submit:  # a batch's caller runs the loop while it waits for outcomes
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
        batch = Batch(self, count, tasks=tasks, drive=self.drive_until)
        self.request(Submit(batch))
        return batch

    def _answer(self, start: Callable[[Callable[[Any], None]], None], timeout: float) -> Any:
        """``start(reply)`` on the I/O loop, and wait for what it replies (None after ``timeout``)."""
        done = threading.Event()
        box: list = []

        def reply(value: Any) -> None:
            box.append(value)
            done.set()

        self.request(OnLoop(lambda: start(reply)))
        return box[0] if done.wait(timeout) else None

    def fetch(self, peer: Peer, address: bytes, *, timeout: float) -> Any:
        """Download the large value ``address`` from ``peer`` into the store: True once it is
        there, else why not (None after ``timeout``)."""
        return self._answer(lambda reply: self.exchange.fetch(peer, address, reply), timeout)

    def ready_peers(self, *, timeout: float) -> list[Peer] | None:
        """The peers ready for calls now (None if the I/O loop did not answer in time)."""
        return self._answer(lambda reply: reply([p for p in self.peers.values() if p.ready]),
                            timeout)

    def lookup(self, calls: list[bytes], *, timeout: float) -> dict:
        """Results of ``calls`` held by peers: ``{call: (address, blob|None, meta, peer)}``.

        Answers once every call is found or every peer has answered; at the timeout, with what
        was found by then (a slow or frozen peer delays a lookup, it never voids it). While the
        client does not know the swarm yet, the timeout runs from when it does (or stops
        waiting for it: see :meth:`.exchange.ValueExchange.lookup`).
        """
        found: dict = {}
        done = threading.Event()
        self.request(OnLoop(lambda: self.exchange.lookup(calls, found, done.set)))
        done.wait(timeout + self.connections.learning_left)
        return dict(found)  # a copy made under the GIL: the I/O loop may still add to it

    @property
    def knows_swarm(self) -> bool:
        """Whether this client has learned the swarm (:meth:`.connections.Connections.known`)."""
        return self.connections.is_known

    def release(self, addresses: list[bytes]) -> None:
        """Tell the peers that hold these arguments that this client is done with them."""
        addresses = list(addresses)
        self.request(OnLoop(lambda: self.exchange.release(addresses)))

    def close(self) -> None:
        if self.alive:
            self.request(Close())
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
        self.placement.place_tasks()
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
                self.replies.on_message(owner, frames)
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
        rtt = self.replies.rtt
        if timeout and waiting and rtt is not None and rtt < _SPIN_RTT:
            busy = [p.inflight for p in self.peers.values() if p.inflight]
            sent = None
            if len(busy) == 1 and len(busy[0]) == 1:
                sent = self.stragglers.placed_at.get(next(iter(busy[0])))
            if sent is not None:
                until = sent + min(2 * rtt, _SPIN)
                events = self._poller.poll(0)
                while not events and time.monotonic() < until:
                    os.sched_yield()
                    events = self._poller.poll(0)
                if events:
                    return events
        return self._poller.poll(int(timeout * 1000))

    def _serve_requests(self) -> bool:
        return self._mail.serve(self._on_request)

    def _on_request(self, request: Request) -> bool:
        """Serve one request from a caller's thread; True for :class:`Close`."""
        if type(request) is Submit:
            self.queue.add(request.batch)
        elif type(request) is OnLoop:
            request.fn()
        elif type(request) is Cancel:
            self._cancel(request)
            if request.told is not None:
                request.told()
        return type(request) is Close

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
        self.queue.put_back(requeue)
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

    # ------------------------------------------------------------------ cancel and close

    def _cancel(self, cancel: Cancel) -> None:
        """Drop the tasks ``cancel`` covers, queued, parked or running: the peers running them
        are told to stop."""
        self.queue.cancel(cancel)
        self.placement.cancel(cancel)
        self.exchange.cancel(cancel.covers)
        for peer in self.peers.values():
            ended = [rid for rid, bt in peer.inflight.items() if cancel.covers(*bt)]
            calls = [peer.inflight[rid][1].call for rid in ended]
            if calls and peer.sock is not None:
                peer.send(wire.build("cancel", 0, calls=calls))
            for rid in ended:
                self.stragglers.forget(rid)
                del peer.inflight[rid]

    def _shutdown(self) -> None:
        self.connections.close()
        self.exchange.close()
        self.queue.fail_all(closed)
        self.context.term()
        self._mail.close()

