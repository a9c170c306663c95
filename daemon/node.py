"""The node: one ROUTER socket, its authenticator, the store, a worker pool, and the loop serving them.

A node never runs user code and never unpickles a byte from the network. It checks messages
(:mod:`pythagoras_p2p.net.wire`), answers from its store, passes pickled calls to its worker
processes untouched, journals their results before replying, and receives values in chunks that
a worker verifies against their address before they enter the store.

Everything on the sockets happens on the thread that calls :meth:`Node.serve`; the worker pool
and the journal have threads of their own and hand results back through a queue and a wake pipe.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from pythagoras_p2p.defaults import NODE_HOUSEKEEPING_EVERY as HOUSEKEEPING_EVERY
from pythagoras_p2p.defaults import NODE_NEXT_REQUEST_SOON as NEXT_REQUEST_SOON
from pythagoras_p2p.defaults import worker_count
from pythagoras_p2p.execution.mailbox import Mailbox
from pythagoras_p2p.execution.outcomes import Crashed, Failed, Ok
from pythagoras_p2p.execution.pool import WorkerPool
from pythagoras_p2p.execution.tasks import Task
from pythagoras_p2p.net import wire
from pythagoras_p2p.net.mdns import Advert, Announcement, local_addresses
from pythagoras_p2p.net.nodefile import node_identity
from pythagoras_p2p.net.security import (
    Authenticator,
    SecurityError,
    SwarmKey,
    check_admission,
    curve_server,
)
from pythagoras_p2p.net.sockets import endpoint, waiting_messages
from pythagoras_p2p.resources import Ledger, machine_resources, summary
from pythagoras_p2p.store.core import open_store
from pythagoras_p2p.store.journal import Journal, replay_client_logs
from pythagoras_p2p.trust import Members, Trust

from .callers import STALE_AFTER
from .deletions import DroppedResults
from .handlers import Handlers
from .history import History
from .membership import Membership
from .outbox import Outbox
from .owner.admission import Admission
from .owner.policy import OwnerConfig
from .peering import Peering
from .repair import Repairer
from .replication import SecondCopies, Traffic
from .reports import Reports
from .state import CacheFacts, status_entry

__all__ = ["Node", "NodeConfig"]

log = logging.getLogger(__name__)


@dataclass
class NodeConfig:
    """How a node is started (each field has a ``PYTHAGORAS_*`` variable; see the CLI)."""

    home: Path
    bind: str = "0.0.0.0"
    port: int = 7575
    workers: int = field(default_factory=worker_count)
    mdns: bool = True
    mdns_interface: str | None = None
    grace: float = 30.0  # seconds running calls may take to finish at shutdown
    peers: list = field(default_factory=list)  # (host, port) of peers named rather than found
    resources: dict = field(default_factory=dict)  # custom resources (--resources), by name
    replicas: int = 3  # homes of each result (--replicas)
    repair_rate: float = 64 << 20  # bytes per second the background copies may send, at most
    owner: OwnerConfig = field(default_factory=OwnerConfig)  # how it yields to its machine's owner


class Node:
    """A running node. ``Node(config, key).serve()`` blocks until :meth:`stop` (or SIGTERM)."""

    def __init__(self, config: NodeConfig, key: SwarmKey):
        self.config = config
        self.key = key
        self.home = Path(config.home)
        self.node_id = node_identity(self.home)
        self.trust: Trust = key.trust  # this machine's keys and the swarm's member list
        self.membership = Membership(self)  # who each message is from; the list's travels
        self.started = time.time()
        self._swept = 0.0
        self.stopping = False
        self._stop_requested = False
        self.context = zmq.Context()
        self.store = open_store(self.home)
        self.journal = Journal(self.store)
        self.cache_facts = CacheFacts(self.store)
        self.reports = Reports()  # callers' runs and the last failures, for the dashboard
        self.history = History()  # the swarm's last minutes, for the dashboard's plots
        self.authenticator = Authenticator(self.context, key, invited=self.membership.invited,
                                           refresh=self.membership.tick)
        self.router = self.context.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE + 64 * 1024)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.sndhwm = 10000
        self.router.rcvhwm = 10000
        curve_server(self.router, key)
        self.router.ipv6 = True  # --bind may be an IPv6 address; IPv4 clients still connect
        try:
            self.router.bind(endpoint(config.bind, config.port))
        except zmq.ZMQError as exc:
            self.close()
            hint = ("another process listens there: stop it, or start with --port N"
                    if exc.errno == zmq.EADDRINUSE else "check --bind and --port")
            raise SecurityError(f"cannot listen on {config.bind}:{config.port} ({exc}); {hint}") from None
        # The pool has no thread of its own: this loop drives its pipes too (no thread hops).
        # What calls may ask of this machine, and what the running ones hold.
        self.resources = machine_resources(config.workers, config.resources)
        self.ledger = Ledger(self.resources)
        self.pool = WorkerPool(self.home, config.workers, label=f"node-{self.node_id}",
                               own_thread=False, ledger=self.ledger,
                               low_priority=config.owner.low_priority)
        self._checker: WorkerPool | None = None  # see checker
        self._mail = Mailbox()  # what the pool finished, and the pipe that wakes the loop
        self._awake_until = 0.0  # see pump
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self.authenticator.socket, zmq.POLLIN)
        self.poller.register(self._mail.fileno(), zmq.POLLIN)
        self.poller.register(self.pool.fileno(), zmq.POLLIN)
        self.outbox = Outbox(self.router)  # what every part sends (a node's tests replace send)
        self.admission = Admission(self)  # which calls start, when: the owner first, then in turn
        self.peering = Peering(self, config.peers)
        self.traffic = Traffic()
        self.repair = Repairer(self, config.replicas, self.traffic, config.repair_rate)
        self.copies = SecondCopies(self.node_id, self.store, self.peering, config.replicas,
                                   self.traffic, self.repair.poke)
        self.handlers = Handlers(self, self.outbox)
        self.dropped = DroppedResults(self.trust, self.store)
        self.announcement: Announcement | None = None
        self._check_security()
        self.handlers.receiving.check_unchecked()  # copies acknowledged by a previous run, not yet checked

    # ------------------------------------------------------------------ start-up

    @property
    def members(self) -> Members:
        """The swarm's member list as this node knows it now."""
        return self.key.members

    @property
    def binds_all(self) -> bool:
        """Whether the node listens on every interface (``--bind 0.0.0.0``, ``*`` or ``::``)."""
        return self.config.bind in ("0.0.0.0", "*", "::")

    @property
    def local_endpoint(self) -> str:
        return endpoint("127.0.0.1" if self.binds_all else self.config.bind, self.config.port)

    @property
    def advertised_host(self) -> str:
        """The address peers should use for this node."""
        if self.config.mdns_interface:
            return self.config.mdns_interface
        if not self.binds_all:
            return self.config.bind
        found = local_addresses()
        return found[0] if found else "127.0.0.1"

    def _check_security(self) -> None:
        """Refuse to serve unless a stranger is refused and a member admitted, here and now."""
        try:
            check_admission(self.context, self.local_endpoint, self.key, self.pump)
        except SecurityError:
            self.close()
            raise

    def announce(self) -> None:
        if not self.config.mdns:
            return
        interface = self.config.mdns_interface
        if interface:
            addresses, interfaces = [interface], [interface]
        elif not self.binds_all:
            addresses, interfaces = [self.config.bind], [self.config.bind]
        else:
            addresses, interfaces = local_addresses(), None
        if not addresses:
            log.warning("no network interface to announce on; mDNS is off")
            return
        advert = Advert(self.node_id, tuple(addresses), self.config.port, self.key.tag,
                        wire.PROTOCOL_VERSION, wire.PYTHON_VERSION, self.config.workers,
                        summary(self.resources))
        self.peering.start_browsing(interfaces)
        self.announcement = Announcement(advert, interfaces)

    @property
    def checker(self) -> WorkerPool:
        """The process that checks received values against their addresses, started when
        first needed: never this one, which unpickles nothing from the network, and never a
        call worker, which may be busy for an hour while a caller waits for a second copy."""
        if self._checker is None:
            self._checker = WorkerPool(self.home, 1, label=f"node-{self.node_id}-check",
                                       own_thread=False)
            self.poller.register(self._checker.fileno(), zmq.POLLIN)
        return self._checker

    # ------------------------------------------------------------------ the loop

    def wake(self) -> None:
        self._mail.wake()

    def task_done(self, call: bytes, outcome: Ok | Failed | Crashed) -> None:
        """Called by the pool (on this node's thread) when a task ends."""
        self._mail.put(("done", call, outcome), wake=False)

    def check_value(self, address: bytes, path: str, done: Callable[[bool, str], None]) -> None:
        """Have the checker check the packed value in ``path`` against ``address``;
        ``done(ok, reason)`` runs on this node's thread."""
        self.checker.verify(address, path, lambda ok, reason: self.later(lambda: done(ok, reason)))

    def check_values(self, values: list[tuple[bytes, bytes]], done: Callable[[set[int]], None]) -> None:
        """Have the checker check each ``(address, packed)``; ``done(bad)`` runs on this node's
        thread with the positions of those that do not match."""
        self.checker.verify_many(values, lambda bad: self.later(lambda: done(bad)))

    def later(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on this node's thread after the current step (for pool callbacks)."""
        self._mail.put(("call", None, fn), wake=False)

    def task_output(self, call: bytes, where: str, text: str) -> None:
        self._mail.put(("out", call, (where, text)), wake=False)

    def pump(self, timeout: float) -> None:
        """Serve whatever is ready, waiting at most ``timeout`` seconds for something to be."""
        polled = time.monotonic()
        if self._mail.requests:
            events = dict(self.poller.poll(0))
        elif self._expecting_soon():
            # Poll without sleeping for a moment (bounded, and never on an idle node), so what
            # is due is read as soon as it arrives: waking from sleep costs tens of microseconds
            # on a small or virtual machine. Other threads on this processor run between polls.
            events = dict(self.poller.poll(0))
            while not events and self._expecting_soon():
                os.sched_yield()
                events = dict(self.poller.poll(0))
            if not events:
                events = dict(self.poller.poll(int(timeout * 1000)))
        else:
            events = dict(self.poller.poll(int(timeout * 1000)))
        if time.monotonic() - polled > STALE_AFTER:
            # This process was frozen (SIGSTOP, a suspended machine): before anything that
            # arrived meanwhile is read, drop the calls whose callers have given it up.
            self.handlers.calls.drop_forsaken()
        if self.authenticator.socket in events:
            self.authenticator.handle()
        if self._mail.fileno() in events:
            self._mail.drain()
        for pool in (self.pool, self._checker):
            if pool is not None and (pool.fileno() in events or pool.watch_due()):
                try:
                    pool.step()
                except Exception as exc:  # e.g. no descriptor left to start a worker: later
                    self.handlers.log_once(f"pool:{type(exc).__name__}", "worker pool: %r", exc)
        if self.peering is not None:
            for sock in events:
                if self.peering.owns(sock):
                    self.peering.readable(sock)
            self.peering.tick()
        if self.router in events:
            for frames in waiting_messages(self.router, copy=False):
                if self.membership.admits(frames):  # a member's, by the list of now
                    self.handlers.handle(frames)
        self._mail.serve(self._finish)
        self.admission.start()
        self.handlers.calls.settle()
        if self.copies is not None:
            self.copies.flush()
        self.outbox.flush()

    def _finish(self, item: tuple) -> bool:
        """Pass on what the pool finished: a task's outcome, its output, or a call to make here."""
        kind, call, payload = item
        try:
            if kind == "done":
                self.admission.ended(call, payload)
                self.handlers.calls.finish(call, payload)
                if self.pool.calls_are_fast():
                    self._awake_until = time.monotonic() + NEXT_REQUEST_SOON
            elif kind == "out":
                self.handlers.calls.forward_output(call, *payload)
            else:  # "call"
                payload()
        except Exception as exc:  # a bug must not take the node down; say it once
            self.handlers.log_once(f"bug:{kind}:{type(exc).__name__}", "error finishing %s: %r",
                                   kind, exc)
        return False

    def _expecting_soon(self) -> bool:
        """Whether something is due within moments: the outcome of a fast call running in a
        worker, or the next request of a client calling in a loop (one just got its answer).
        Only while at most one call runs here: a caller waiting for one call at a time is
        what the wait without sleeping speeds up; with many calls in flight, outcomes arrive
        back to back and the processor the loop would spin on is the workers'."""
        return (self.pool is not None and len(self.handlers.calls.running) <= 1
                and (self.pool.expecting_soon() or time.monotonic() < self._awake_until))

    def serve(self) -> None:
        """Serve until :meth:`stop`; then finish running calls for up to ``grace`` seconds."""
        log.info("node %s serving on %s:%d with %d workers (swarm %s, tag %s)", self.node_id,
                 self.config.bind, self.config.port, self.config.workers, self.key.name, self.key.tag)
        while not self._stop_requested:
            self.pump(0.25)
            self.housekeeping()
        self.stopping = True
        deadline = time.monotonic() + self.config.grace
        if self.handlers.calls.running:
            log.info("stopping: waiting up to %.0fs for %d running call(s)", self.config.grace,
                     len(self.handlers.calls.running))
        while self.handlers.calls.running and time.monotonic() < deadline:
            self.pump(0.1)
        self.handlers.calls.abandon_running()
        self.copies.release_all()
        self.hand_over(time.monotonic() + self._handover_time())
        self.peering.say_leaving(time.monotonic() + 2.0)
        self.pump(0)

    def _handover_time(self) -> float:
        """Seconds the hand-over may take: what ``pythagoras-node stop --timeout`` left for it,
        else (a SIGTERM from elsewhere) the grace period, at least 5 s."""
        path = self.home / "handover.timeout"
        try:
            given = float(path.read_text())
            path.unlink()
            return given
        except (OSError, ValueError):
            return max(5.0, self.config.grace)

    def hand_over(self, deadline: float) -> None:
        """Copy to the other members what would fall under ``R`` copies without this node,
        serving meanwhile (they fetch large values from it), until done or ``deadline``."""
        if not self.peering.alive():
            return
        self.repair.hand_over()
        while not self.repair.left.is_set():
            if time.monotonic() > deadline:
                log.warning("stopping: the hand-over did not finish within the grace period "
                            "(%s); the other members repair the rest", self.repair.facts.handover)
                return
            self.pump(0.1)

    def housekeeping(self) -> None:
        """Once a second: free what killed clients left (reader slots, partial uploads)."""
        now = time.monotonic()
        if now - self._swept < HOUSEKEEPING_EVERY:
            return
        self._swept = now
        self.membership.tick()
        self.admission.look()
        self.dropped.look()  # results of members removed with --drop-results
        self.clear_dead_readers()
        self.handlers.values.drop_abandoned_uploads()
        self.handlers.calls.drop_forsaken()
        self.replay_client_logs()
        self.history.sample([status_entry(self, self.handlers), *self.peering.status_entries()])

    def replay_client_logs(self) -> None:
        """Store the results that clients of this home journaled and did not live to store."""
        try:
            count = replay_client_logs(self.store)
        except Exception as exc:  # a store error: try again at the next sweep
            self.handlers.log_once(f"client-logs:{type(exc).__name__}", "cannot replay the "
                                   "journals of clients that died: %r", exc)
            return
        if count:
            log.info("stored %d result(s) journaled by clients of this home that died", count)

    def clear_dead_readers(self) -> None:
        """Free the store's reader slots held by processes that died mid-read (killed clients).

        LMDB frees them only when a process asks (``reader_check``), and a process that opens
        the store needs a free slot before it can ask: with the table full of dead readers, no
        new client or worker of this home could open the store. The node, always open, asks.
        """
        try:
            cleared = self.store.reader_check()
        except Exception as exc:  # lmdb.Error: the sweep is a courtesy, serving goes on
            log.debug("could not check the store's reader table: %s", exc)
            return
        if cleared:
            log.info("freed %d reader slot(s) of processes that died while reading", cleared)

    def stop(self) -> None:
        """Ask :meth:`serve` to return (safe from a signal handler)."""
        self._stop_requested = True
        self.wake()

    def close(self) -> None:
        """Release everything: announcement, workers, journal, sockets."""
        if getattr(self, "repair", None) is not None:
            self.repair.close()
        for name in ("announcement", "peering", "pool", "_checker", "journal", "router",
                     "authenticator"):
            part = getattr(self, name, None)  # a node that failed to start lacks the later ones
            if part is not None:
                part.close()  # the router has linger 0: it drops what it still holds
                setattr(self, name, None)
        if getattr(self, "_mail", None) is not None:  # a node that failed early has none
            self._mail.close()
        self.context.term()

    # ------------------------------------------------------------------ work

    def own_pids(self) -> list[int]:
        """This node's processes: itself and its workers (the owner's load is the rest)."""
        pools = (self.pool, self._checker)
        return [os.getpid(), *(pid for pool in pools if pool is not None for pid in pool.pids())]

    def submit(self, task: Task):
        call = task.call
        return self.pool.submit(
            [task], 1,
            on_outcome=lambda tid, outcome: self.task_done(call, outcome),
            on_output=lambda where, text: self.task_output(call, where, text),
        )
