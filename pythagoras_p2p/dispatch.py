"""Sending calls to the swarm: one I/O thread, every peer's socket, tasks placed by free slots.

The caller's thread only queues requests (a batch of tasks, a lookup, a cancel) and waits for
outcomes; the I/O thread owns the sockets. A task goes to the ready peer with the most free
worker slots, so a peer that finishes gets more and slow and fast machines balance themselves.
Before a task is sent, its function is sent if the peer may lack it (pipelined on the same
connection, which keeps order), and its large arguments are checked with ``has`` and uploaded in
chunks once per peer. Results of large values are downloaded in chunks, verified against their
address and written to the local store before they are delivered.

A peer that stops answering is dropped after :data:`peers.SILENT_AFTER` seconds, one whose
connection closes (its node died) or is refused (no node runs there) at once, and its calls
go back to the queue for the others; calls that no peer can take for ``connect_timeout``
seconds fail with a message naming the peers tried and why each was unusable.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from . import wire
from .peers import PING_EVERY, RETRY_EVERY, SILENT_AFTER, Peer
from .security import SwarmKey
from .store import Store
from .transfer import Download, upload_frames
from .workers import Batch, print_output, refill

__all__ = ["SwarmDispatcher"]

log = logging.getLogger(__name__)

_TICK = 0.25  # seconds between liveness checks
DISCOVER_EVERY = 1.0  # seconds between looks for new peers


class SwarmDispatcher:
    """Runs tasks on peers of a swarm; see the module docstring."""

    def __init__(self, key: SwarmKey, store: Store, peers: list[tuple[str, int]], *,
                 requires: tuple[str, ...] = (), connect_timeout: float = 5.0,
                 ask_for_peers: bool = False, browser: Any = None):
        import zmq

        self.key = key
        self.store = store
        self.requires = list(requires)
        self.connect_timeout = connect_timeout
        self.context = zmq.Context()
        self.peers: dict[tuple[str, int], Peer] = {p: Peer(*p) for p in peers}
        # Where more peers come from: the first peer (this machine's node, which knows the
        # swarm) when ``ask_for_peers``, and/or an mDNS browser.
        self._ask_for_peers = ask_for_peers
        self._browser = browser
        self._last_discovery = 0.0
        self.alive = True
        self._ids = itertools.count(1)
        self._queue: deque = deque()  # (batch, task)
        self._sources: deque = deque()  # batches whose tasks are made only as peers need them
        self._parked: dict[Peer, list] = {}  # tasks waiting for their arguments to reach a peer
        self._asked: dict[tuple, int] = {}  # (peer, address) → request id of a has/put in flight
        self._pending: dict[int, Any] = {}  # request id → callback for non-run replies
        self._downloads: dict[tuple, Download] = {}
        self._waiting_since: float | None = None
        self._requests: deque = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._loop, name="pythagoras-swarm-io", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def _request(self, request: tuple) -> None:
        if not self.alive:
            raise RuntimeError("this cloud's connection to the swarm is closed; create a new cloud")
        sent = None
        if request[0] == "cancel" and threading.current_thread() is not self._thread:
            # Ctrl-C: the process may exit right after, so wait (briefly) until the peers have
            # been told, or they would run the cancelled calls to the end.
            sent = threading.Event()
            request = (*request, sent.set)
        self._requests.append(request)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass
        if sent is not None:
            sent.wait(2.0)

    def submit(self, tasks, count: int) -> Batch:
        batch = Batch(self, count, tasks=tasks)
        self._request(("submit", batch))
        return batch

    def call(self, kind: str, *args: Any, timeout: float) -> Any:
        """Run ``kind`` (lookup, fetch, ready) on the I/O thread and wait for its answer."""
        done = threading.Event()
        box: list = []
        self._request((kind, *args, lambda value: (box.append(value), done.set())))
        if not done.wait(timeout):
            return None
        return box[0]

    def lookup(self, calls: list[bytes], *, timeout: float) -> dict:
        """Results of ``calls`` held by peers: ``{call: (address, blob|None, meta, peer)}``.

        Answers once every call is found or every peer has answered; at the timeout, with what
        was found by then (a slow or frozen peer delays a lookup, it never voids it).
        """
        found: dict = {}
        done = threading.Event()
        self._request(("lookup", calls, found, lambda: done.set()))
        done.wait(timeout)
        return dict(found)  # a copy made under the GIL: the I/O thread may still add to it

    def release(self, addresses: list[bytes]) -> None:
        """Tell the peers that hold these arguments that this client is done with them."""
        self._request(("release", list(addresses)))

    def close(self) -> None:
        if self.alive:
            self._request(("close",))
            self._thread.join(10)

    # ------------------------------------------------------------------ the I/O thread

    def _loop(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        registered: dict[Any, Peer] = {}
        try:
            while True:
                if self._serve_requests():
                    return
                self._tend_peers()
                for sock in [s for s in registered if s is not registered[s].sock
                             and s is not registered[s].monitor]:
                    poller.unregister(sock)
                    del registered[sock]
                for peer in self.peers.values():
                    for sock in (peer.sock, peer.monitor):
                        if sock is not None and sock not in registered:
                            poller.register(sock, zmq.POLLIN)
                            registered[sock] = peer
                self._dispatch()
                for sock, _ in poller.poll(int(_TICK * 1000)):
                    if sock == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    peer = registered.get(sock)
                    if peer is not None and peer.monitor is sock:
                        self._on_events(peer, sock)
                        continue
                    while peer is not None and peer.sock is sock:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_message(peer, frames)
        except Exception:
            log.exception("the swarm I/O thread failed")
        finally:
            self._shutdown()

    def _serve_requests(self) -> bool:
        while self._requests:
            kind, *args = self._requests.popleft()
            if kind == "submit":
                self._sources.append(args[0])
            elif kind == "cancel":
                self._cancel(args[0])
                for told in args[1:]:
                    told()
            elif kind == "lookup":
                self._lookup(*args)
            elif kind == "fetch":
                self._fetch(*args)
            elif kind == "release":
                self._release(*args)
            elif kind == "ready":
                args[0]([p for p in self.peers.values() if p.ready])
            elif kind == "close":
                return True
        return False

    # ------------------------------------------------------------------ peers

    def _discover(self, now: float) -> None:
        if now - self._last_discovery < DISCOVER_EVERY:
            return
        self._last_discovery = now
        if self._browser is not None:
            for advert in self._browser.snapshot():
                if advert.protocol == wire.PROTOCOL_VERSION and advert.addresses:
                    self.peers.setdefault((advert.addresses[0], advert.port),
                                          Peer(advert.addresses[0], advert.port))
        if self._ask_for_peers:
            first = next(iter(self.peers.values()))
            if first.ready or first.state == "unsuitable":
                self._ask(first, "peers", self._on_peers)

    def _on_peers(self, peer: Peer, msg: wire.Message) -> None:
        if msg.op != "ok":
            return
        for item in msg.fields.get("peers", []):
            try:
                host, port = str(item["host"]), int(item["port"])
            except (KeyError, TypeError, ValueError):
                continue
            if item.get("id") != peer.node_id:
                self.peers.setdefault((host, port), Peer(host, port))

    def _tend_peers(self) -> None:
        now = time.monotonic()
        self._discover(now)
        for peer in self.peers.values():
            if peer.state in ("new", "dead") and now - peer.connect_started >= RETRY_EVERY:
                peer.connect(self.context, self.key, monitor=True)
                self._ask(peer, "hello", lambda p, m: self._on_hello(p, m),
                          protocol=wire.PROTOCOL_VERSION, python=wire.PYTHON_VERSION,
                          requires=self.requires)
            elif peer.state in ("connecting", "ready", "unsuitable", "draining"):
                if peer.silent_for(now) > SILENT_AFTER:
                    self._lost(peer, f"silent for {peer.silent_for(now):.1f} s")
                elif peer.state != "connecting" and now - max(peer.last_sent, peer.last_heard) > PING_EVERY:
                    self._ask(peer, "ping", self._on_ping)

    def _on_events(self, peer: Peer, monitor: Any) -> None:
        """The connection to ``peer`` closed or was refused: it is lost now, not after silence."""
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        while peer.monitor is monitor:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if peer.state not in ("connecting", "ready", "unsuitable", "draining"):
                continue
            if event == zmq.EVENT_DISCONNECTED:
                self._lost(peer, "the connection was closed (its node stopped or died, or "
                                 "refused this machine's swarm key)")
            elif event == zmq.EVENT_CONNECT_RETRIED:
                self._lost(peer, "no node answers at this address (the connection was refused)")

    def _ask(self, peer: Peer, op: str, callback, bodies: list = (), **fields: Any) -> int:
        rid = next(self._ids)
        self._pending[rid] = (peer, callback)
        peer.send(wire.build(op, rid, list(bodies), **fields))
        return rid

    def _on_hello(self, peer: Peer, msg: wire.Message) -> None:
        if msg.op == "error":
            peer.state, peer.problem = "incompatible", msg.fields["message"]
            log.warning("peer %s cannot take work: %s", peer.address, peer.problem)
            peer.settle(False)
            return
        peer.node_id = str(msg.fields.get("node"))
        peer.workers = max(1, int(msg.fields.get("workers", 1)))
        if any(p is not peer and p.node_id == peer.node_id and p.state in ("ready", "unsuitable")
               for p in self.peers.values()):
            peer.close()  # the same node under a second address: one connection is enough
            peer.state, peer.problem = "duplicate", "already connected under another address"
            peer.settle(False)
            return
        missing = msg.fields.get("missing") or []
        if missing:
            peer.state, peer.problem = "unsuitable", "does not satisfy requires=: " + "; ".join(missing)
        else:
            peer.state, peer.problem = "ready", ""
        peer.settle(True)
        log.debug("peer %s (%s) is %s with %d workers", peer.address, peer.node_id, peer.state,
                  peer.workers)

    def _on_ping(self, peer: Peer, msg: wire.Message) -> None:
        if msg.op == "ok":
            peer.load = float(msg.fields.get("load", 0.0))
            peer.tasks_done = int(msg.fields.get("tasks_done", 0))

    def _lost(self, peer: Peer, why: str) -> None:
        """A peer is gone: its calls go back to the queue for the others."""
        if peer.state == "ready" or peer.inflight:
            log.warning("lost peer %s (%s); %d running call(s) go elsewhere", peer.address, why,
                        len(peer.inflight))
        requeue = [bt for bt in peer.inflight.values() if not bt[0].cancelled]
        requeue += [bt for bt in self._parked.pop(peer, []) if not bt[0].cancelled]
        self._queue.extendleft(reversed(requeue))
        peer.inflight.clear()
        for rid, (owner, callback) in list(self._pending.items()):
            if owner is peer:
                del self._pending[rid]
                callback(peer, wire.Message("error", rid, {"code": "lost", "message": why}))
        for key in [k for k in self._asked if k[0] is peer]:
            del self._asked[key]
        for key in [k for k in self._downloads if k[0] is peer]:
            self._downloads.pop(key).fail(f"peer {peer.address} was lost ({why})")
        peer.close()
        peer.state, peer.problem = "dead", why
        peer.settle(False)

    def _incompatible(self, peer: Peer, why: str) -> None:
        """``peer`` can never run this client's calls: lost now, and never connected again."""
        self._lost(peer, why)
        peer.state = "incompatible"

    # ------------------------------------------------------------------ placing tasks

    def _refill(self) -> None:
        refill(self._queue, self._sources,
               max(64, 2 * sum(p.workers for p in self.peers.values() if p.ready)))

    def _dispatch(self) -> None:
        self._refill()
        queue = self._queue
        while queue and queue[0][0].cancelled:
            queue.popleft()
        if not queue:
            self._waiting_since = None
            return
        ready = [p for p in self.peers.values() if p.ready]
        while queue and ready:
            peer = max(ready, key=self._free_slots)
            if self._free_slots(peer) <= 0:
                break
            batch, task = queue.popleft()
            if not batch.cancelled:
                self._place(peer, batch, task)
        if not queue:
            self._waiting_since = None
        elif ready:
            self._waiting_since = None
        else:
            self._no_peer_can_run()

    def _free_slots(self, peer: Peer) -> int:
        """Slots of ``peer`` not yet promised: a task parked there, waiting for its arguments
        to arrive, holds a slot as surely as a running one (else every task parks on one peer)."""
        return peer.free_slots(False) - len(self._parked.get(peer, ()))

    def _no_peer_can_run(self) -> None:
        now = time.monotonic()
        incompatible = [p for p in self.peers.values() if p.state == "incompatible"]
        if (incompatible and len(incompatible) == len(self.peers) and self._browser is None
                and not self._ask_for_peers):
            pass  # every peer there will ever be refused this client for good: waiting is futile
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
            outcome = ("error", "requirements", f"no peer satisfies requires= ({tried})")
        elif incompatible and len(incompatible) == len(self.peers):
            outcome = ("error", "unreachable",
                       f"no node of the swarm can take calls from this client ({tried})")
        else:
            outcome = ("error", "unreachable",
                       f"no node of the swarm could take the call within {self.connect_timeout:g} s "
                       f"(peers tried: {tried}). Is `pythagoras-node start` running there, "
                       f"reachable from here, with this machine's swarm key?")
        refill(self._queue, self._sources, None)
        while self._queue:
            batch, task = self._queue.popleft()
            batch.deliver(task.tid, outcome)
        self._waiting_since = None

    def _place(self, peer: Peer, batch: Batch, task: Any) -> None:
        missing = [r for r in task.refs if r not in peer.values]
        if missing:
            self._parked.setdefault(peer, []).append((batch, task))
            unasked = [r for r in missing if (peer, r) not in self._asked]
            if unasked:
                rid = self._ask(peer, "has", self._on_has, addresses=unasked)
                for r in unasked:
                    self._asked[(peer, r)] = rid
            return
        if task.fp not in peer.functions:
            record = self.store.get_function(task.fp)
            peer.send(wire.build("function", 0, [record], fp=task.fp))
            peer.functions.add(task.fp)
        rid = next(self._ids)
        peer.inflight[rid] = (batch, task)
        peer.send(wire.build("run", rid, [task.payload], fp=task.fp, call=task.call,
                             label=task.label, refs=[r.hex() for r in task.refs]))

    def _unpark(self, peer: Peer) -> None:
        parked = self._parked.pop(peer, [])
        for batch, task in parked:
            if not batch.cancelled:
                self._place(peer, batch, task)

    def _on_has(self, peer: Peer, msg: wire.Message) -> None:
        if msg.op != "ok":
            return
        present = set(msg.hexes("addresses"))
        peer.values |= present
        asked = [a for (p, a), rid in self._asked.items() if p is peer and rid == msg.id]
        for address in asked:
            del self._asked[(peer, address)]
            if address not in present:
                frames = upload_frames(self.store, address)
                if frames is None:
                    continue
                rid = next(self._ids)
                self._pending[rid] = (peer, self._on_put)
                self._asked[(peer, address)] = rid
                for i, chunk in enumerate(frames):
                    peer.send(wire.build("put", rid if i == len(frames) - 1 else 0, [chunk[2]],
                                         address=address, offset=chunk[0], total=chunk[1]))
        self._unpark(peer)

    def _on_put(self, peer: Peer, msg: wire.Message) -> None:
        for key in [k for k, rid in self._asked.items() if k[0] is peer and rid == msg.id]:
            del self._asked[key]
            if msg.op == "ok":
                peer.values.add(key[1])
                continue
            # The peer refused the value: the calls that need it fail, rather than resend forever.
            reason = (f"node {peer.address} refused argument value {key[1].hex()[:16]}: "
                      f"{msg.fields.get('message', 'no reason given')}")
            kept = []
            for batch, task in self._parked.pop(peer, []):
                if key[1] in task.refs:
                    batch.deliver(task.tid, ("error", "remote", reason))
                else:
                    kept.append((batch, task))
            self._parked[peer] = kept
        self._unpark(peer)

    # ------------------------------------------------------------------ replies

    def _on_message(self, peer: Peer, frames: list) -> None:
        peer.heard()
        try:
            msg = wire.parse(frames)
        except wire.WireError as exc:
            if exc.code == "protocol":  # a node of another release: it can never take work here
                self._incompatible(peer, f"the node speaks protocol version {_version_of(frames)} "
                                         f"and this client {wire.PROTOCOL_VERSION}; install the same "
                                         f"pythagoras_p2p release on every machine of the swarm")
                return
            log.warning("ignoring a malformed message from %s: %s", peer.address, exc)
            return
        if msg.op == "output":
            print_output(msg.fields["where"], msg.fields["text"])
            return
        entry = peer.inflight.pop(msg.id, None)
        if entry is not None:
            self._on_run_reply(peer, entry, msg)
            return
        handler = self._pending.pop(msg.id, None)
        if handler is not None:
            handler[1](peer, msg)
        elif msg.op == "ok" and "total" in msg.fields:
            download = self._downloads.get((peer, msg.hex("address")))
            if download is not None:
                self._on_chunk(peer, download, msg)

    def _on_run_reply(self, peer: Peer, entry: tuple, msg: wire.Message) -> None:
        batch, task = entry
        if batch.cancelled:
            return
        if msg.op == "error":
            code = msg.fields["code"]
            if code == "need_function":
                peer.functions.discard(task.fp)
                self._queue.appendleft((batch, task))
            elif code == "need_values":
                peer.values.difference_update(bytes.fromhex(h) for h in msg.fields["message"].split(","))
                self._queue.appendleft((batch, task))
            elif code == "stopping":
                # The node is shutting down: it finishes the calls it runs (their results still
                # come here) and takes no new one, so only this call goes elsewhere.
                if peer.state == "ready":
                    peer.state, peer.problem = "draining", msg.fields["message"]
                self._queue.appendleft((batch, task))
            elif code in ("python", "protocol"):
                self._incompatible(peer, msg.fields["message"])
                self._queue.appendleft((batch, task))
            else:
                batch.deliver(task.tid, ("error", "remote", f"node {peer.address}: {msg.fields['message']}"))
            return
        status = msg.fields.get("status")
        if status == "ok":
            address, meta = msg.hex("address"), msg.fields.get("meta") or {}
            if msg.fields.get("large"):
                self._fetch(peer, address, lambda ok: batch.deliver(task.tid, (
                    ("ok", address, None, meta) if ok is True else ("error", "remote", ok))))
            else:
                batch.deliver(task.tid, ("ok", address, bytes(msg.bodies[0]), meta))
        elif status == "err":
            pickled, text = (bytes(b) for b in msg.bodies[:2])
            batch.deliver(task.tid, ("err", pickled or None, msg.fields.get("type", "Exception"),
                                     msg.fields.get("message", ""), text.decode(errors="replace"),
                                     msg.fields.get("where", peer.address)))
        else:
            batch.deliver(task.tid, ("crash", msg.fields.get("message", "the call failed")))

    # ------------------------------------------------------------------ lookups and downloads

    def _release(self, addresses: list[bytes]) -> None:
        for peer in self.peers.values():
            held = [a for a in addresses if a in peer.values]
            if held and peer.state in ("ready", "unsuitable", "draining"):
                peer.values.difference_update(held)
                self._ask(peer, "release", lambda peer, msg: None, addresses=held)

    def _lookup(self, calls: list[bytes], found: dict, callback) -> None:
        """Ask every peer at once (those still connecting once they answer their hello); fill
        ``found`` with {call: (address, blob|None, meta, peer)} and call ``callback()`` when every
        call is found or every peer has answered."""
        asked = [p for p in self.peers.values()
                 if p.state in ("ready", "unsuitable", "new", "connecting")]
        waiting = {id(p) for p in asked}
        wanted = len(set(calls))
        if not asked:
            callback()
            return

        def on_reply(peer: Peer, msg: wire.Message) -> None:
            if id(peer) not in waiting:
                return
            waiting.discard(id(peer))
            if msg.op == "ok":
                bodies = iter(msg.bodies)
                for item in msg.fields.get("found", []):
                    try:
                        call, address = bytes.fromhex(item["call"]), bytes.fromhex(item["address"])
                    except (KeyError, TypeError, ValueError):
                        continue
                    blob = None if item.get("large") else bytes(next(bodies, b""))
                    found.setdefault(call, (address, blob, item.get("meta") or {}, peer))
            if not waiting or len(found) >= wanted:
                waiting.clear()  # later answers are ignored
                callback()

        def ask_when_ready(peer: Peer, ok: bool) -> None:
            if ok:
                self._ask(peer, "lookup", on_reply, calls=calls)
            else:
                on_reply(peer, wire.Message("error", 0, {}))

        for peer in asked:
            if peer.state in ("ready", "unsuitable"):
                self._ask(peer, "lookup", on_reply, calls=calls)
            else:
                peer.on_ready.append(lambda ok, peer=peer: ask_when_ready(peer, ok))

    def _fetch(self, peer: Peer, address: bytes, callback) -> None:
        """Download a large value from ``peer`` into the local store; ``callback(True | reason)``."""
        if self.store.has_value(address):
            callback(True)
            return
        key = (peer, address)
        download = self._downloads.get(key)
        if download is None:
            download = self._downloads[key] = Download(self.store, address)
            peer.send(wire.build("get", 0, address=address, offset=0))
        download.waiters.append(callback)

    def _on_chunk(self, peer: Peer, download: Download, msg: wire.Message) -> None:
        first = download.total is None
        download.write(msg.fields["offset"], msg.fields["total"], msg.bodies[0])
        if first:
            for offset in range(wire.CHUNK, download.total, wire.CHUNK):
                peer.send(wire.build("get", 0, address=download.address, offset=offset))
        if download.complete:
            del self._downloads[(peer, download.address)]
            download.finish()

    def _cancel(self, batch: Batch) -> None:
        self._queue = deque(item for item in self._queue if item[0] is not batch)
        self._sources = deque(b for b in self._sources if b is not batch)
        for peer, parked in self._parked.items():
            self._parked[peer] = [bt for bt in parked if bt[0] is not batch]
        for peer in self.peers.values():
            calls = [task.call for b, task in peer.inflight.values() if b is batch]
            if calls and peer.sock is not None:
                peer.send(wire.build("cancel", 0, calls=calls))
            peer.inflight = {rid: bt for rid, bt in peer.inflight.items() if bt[0] is not batch}

    def _shutdown(self) -> None:
        self.alive = False
        if self._browser is not None:
            self._browser.close()
        for peer in self.peers.values():
            peer.close()
        for download in self._downloads.values():
            download.fail("the cloud was closed")
        refill(self._queue, self._sources, None)
        while self._queue:
            batch, task = self._queue.popleft()
            batch.deliver(task.tid, ("error", "closed", f"{task.label} was not run: the cloud was closed"))
        self.context.term()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _version_of(frames: list) -> str:
    """The protocol version a message says it has (for an error message), or "unknown"."""
    import json

    try:
        return repr(json.loads(bytes(frames[0])).get("v"))
    except Exception:
        return "unknown"
