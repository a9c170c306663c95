"""What a client knows about each node it talks to: its socket, its slots, its liveness.

A :class:`Peer` is owned by the dispatcher's I/O loop and touched by nothing else. Liveness
comes only from traffic on the ZeroMQ connection (any message counts; idle peers are pinged):
a peer silent for :data:`SILENT_AFTER` seconds is dead, whatever mDNS still says. A client
also watches its connections (``connect(monitor=True)``): a node whose process died closes its
end at once, and a node that is not running refuses the connection, so neither waits for silence.
"""

from __future__ import annotations

import itertools
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..defaults import PING_EVERY, RETRY_EVERY, SILENT_AFTER
from ..net import wire
from ..net.rpc import client_socket
from ..net.security import SwarmKey
from ..net.sockets import endpoint
from ..resources import lacking

__all__ = ["Peer", "PING_EVERY", "SILENT_AFTER", "RETRY_EVERY"]

_monitors = itertools.count()


@dataclass(eq=False)
class Peer:
    """One node as seen by this client."""

    host: str
    port: int
    node_id: str | None = None
    workers: int = 0
    state: str = "new"  # new → connecting → ready (⇄ paused; → draining: stopping); or dead / incompatible
    problem: str = ""
    said: str = ""  # the problem last logged about it: one line per outage, not per retry
    sock: Any = None
    monitor: Any = None  # the socket's event monitor, when asked for (see connect)
    last_heard: float = 0.0
    last_sent: float = 0.0
    connect_started: float = 0.0
    inflight: dict = field(default_factory=dict)  # request id → (batch, task)
    outbox: list = field(default_factory=list)  # messages queued for one message (see queue)
    functions: set = field(default_factory=set)  # fingerprints the node has
    values: set = field(default_factory=set)  # addresses the node has
    tasks_done: int = 0
    load: float = 0.0
    on_ready: list = field(default_factory=list)  # callbacks(ok) run when the hello is answered
    resources: dict = field(default_factory=dict)  # what the node has (cpus, memory, gpus, ...)
    lacks: dict = field(default_factory=dict)  # a function's requires= → what the node misses
    replicas: int = 1  # how many homes the node gives each result (its --replicas)
    met: bool = False  # its hello was answered, or it was lost, at least once
    lookup_only: bool = False  # learned from a named peer: asked for results, never sent calls
    server_key: bytes | None = None  # the CURVE public key it serves with (from the member list)
    keyless: bool = False  # its last connect knew no key for it (one is being probed for)

    def can_ever_run(self, task: Any) -> bool:
        """Whether this node has what ``task`` asks for (resources, its function's requires=)."""
        return not lacking(task.needs, self.resources) and task.requires not in self.lacks

    def fits_now(self, task: Any) -> bool:
        """Whether the calls this client has running there leave room for ``task``'s needs."""
        held: dict = {}
        for _, running in self.inflight.values():
            for name, amount in running.needs:
                held[name] = held.get(name, 0.0) + amount
        return all(held.get(name, 0.0) + amount <= self.resources.get(name, 0.0) + 1e-9
                   for name, amount in task.needs)

    def first_time(self, problem: str) -> bool:
        """Whether ``problem`` is news about this peer (it then counts as said until the peer
        is ready again or has another problem)."""
        news = problem != self.said
        self.said = problem
        return news

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def name(self) -> str:
        """How people know it: this machine's host name for a node on loopback, else its address."""
        if self.host in ("127.0.0.1", "::1", "localhost"):
            return f"{socket.gethostname()} (this machine, port {self.port})"
        return self.address

    @property
    def ready(self) -> bool:
        """Whether calls may be sent to it now."""
        return self.state == "ready" and not self.lookup_only

    def free_slots(self, depth: int = 1) -> int:
        """Calls it may take now: ``depth`` per worker (more than one when calls are short, so
        that its workers never wait for a round trip), less those in flight."""
        return max(0, self.workers * depth - len(self.inflight))

    def connect(self, context: Any, key: SwarmKey, monitor: bool = False) -> str:
        """A new connection; ``monitor``: also a socket that reports the connection closing or
        being refused (``zmq.EVENT_DISCONNECTED``, ``zmq.EVENT_CONNECT_RETRIED``). Returns ""
        or, when there is nothing to connect to, why (a host name that does not resolve)."""
        import zmq

        self.close()
        self.connect_started = self.last_sent = time.monotonic()
        try:  # ZeroMQ would retry a name that does not resolve forever, calling it refused
            socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            return (f"no such host: {self.host!r} does not resolve ({getattr(exc, 'strerror', None) or exc}); "
                    f"check the name, or give the machine's IP address")
        self.server_key = key.server_key(self.host, self.port, self.node_id, context, wait=False)
        self.keyless = self.server_key is None
        if self.keyless:  # tried again once learned in the background, or at the next retry
            return (f"no member node of the swarm answers at {self.address} (is its node "
                    f"running, and is it a member: `pythagoras-node members`?)")
        sock = client_socket(context, key, self.server_key)
        sock.sndhwm = 0
        sock.rcvhwm = 0
        self.sock = sock  # before anything that may fail: close() releases it
        if monitor:  # a fresh address each time: a closed monitor's one is released lazily
            self.monitor = sock.get_monitor_socket(
                zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED,
                addr=f"inproc://pythagoras-monitor-{next(_monitors)}")
        try:
            sock.connect(endpoint(self.host, self.port))
        except zmq.ZMQError as exc:
            self.close()
            return f"cannot connect to {self.address}: {exc}"
        self.state = "connecting"
        self.functions.clear()
        self.values.clear()
        return ""

    def send(self, frames: list) -> None:
        if self.outbox:  # what was queued goes first
            self.flush()
        self.sock.send_multipart(frames, copy=False)
        self.last_sent = time.monotonic()

    def queue(self, frames: list) -> None:
        """Send ``frames`` with the others queued until :meth:`flush` (the runs of a placement)."""
        self.outbox.append(frames)

    def flush(self) -> None:
        """Send what was queued: as few ``many`` messages as hold it."""
        if not self.outbox:
            return
        queued, self.outbox = self.outbox, []
        if self.sock is not None:
            for frames in wire.bundle(queued):
                self.sock.send_multipart(frames, copy=False)
            self.last_sent = time.monotonic()

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def silent_for(self, now: float) -> float:
        return now - max(self.last_heard, self.connect_started)

    def settle(self, ok: bool) -> None:
        """Run the callbacks waiting for this peer's hello (``ok``: it can answer requests)."""
        self.met = True
        callbacks, self.on_ready = self.on_ready, []
        for callback in callbacks:
            callback(ok)

    def close(self) -> None:
        self.outbox.clear()  # its calls are placed again elsewhere
        if self.monitor is not None:
            if self.sock is not None:
                self.sock.disable_monitor()
            self.monitor.close(0)
            self.monitor = None
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
