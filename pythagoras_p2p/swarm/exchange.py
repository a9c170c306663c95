"""Values between the swarm client and its peers: argument uploads, result lookups and downloads.

:class:`ValueExchange` runs on the dispatcher's I/O loop (see :mod:`.dispatch`), which owns
it. Before a task is sent, its large arguments are checked with ``has`` and uploaded in chunks
once per peer; the task is parked on that peer until they are there (a value the peer refuses
fails the calls that need it). Lookups ask every peer for stored results. Large values are
downloaded in chunks, verified against their address and written to the local store before
they are delivered. When the client is done with arguments, the peers holding copies are told
to release them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..defaults import SWARM_LEARN_WAIT
from ..execution.batch import Batch
from ..execution.outcomes import REMOTE, Refused
from ..net import wire
from ..net.transfer import Download, upload_frames
from ..store.core import Store
from .connections import Connections
from .homes import by_home
from .peers import Peer

__all__ = ["ValueExchange", "LOOKUP_CHUNK"]

log = logging.getLogger(__name__)

#: Calls asked of a peer in one ``lookup``: its reply carries a metadata record, and a body
#: frame, per call found, and must stay within a message's header (256 kB) and frame (1,024)
#: limits, which a window of 4,096 stored calls would pass (the reply would be refused, and the
#: lookup wait out its timeout).
LOOKUP_CHUNK = 128


class ValueExchange:
    """The value traffic of one swarm client; see the module docstring."""

    def __init__(self, store: Store, connections: Connections, *,
                 place: Callable[[Peer, Batch, Any], None]):
        self.store = store
        self.connections = connections
        self._place = place  # (peer, batch, task): places a task whose arguments have arrived
        self._parked: dict[Peer, list] = {}  # tasks waiting for their arguments to reach a peer
        self._asked: dict[tuple, int] = {}  # (peer, address) → request id of a has/put in flight
        self._downloads: dict[tuple, Download] = {}
        self._held: list = []  # lookups waiting for the client to know the swarm
        self._said_unknown = False

    # ------------------------------------------------------------------ arguments of tasks

    def park(self, peer: Peer, batch: Batch, task: Any) -> bool:
        """Park ``task`` if ``peer`` may lack some of its arguments (asking ``has`` for those
        not asked yet), to be placed again once they are there; False if the peer has them all."""
        missing = [r for r in task.refs if r not in peer.values]
        if not missing:
            return False
        self._parked.setdefault(peer, []).append((batch, task))
        unasked = [r for r in missing if (peer, r) not in self._asked]
        if unasked:
            rid = self.connections.ask(peer, "has", self._on_has, addresses=unasked)
            for r in unasked:
                self._asked[(peer, r)] = rid
        return True

    def parked_on(self, peer: Peer) -> int:
        """How many tasks wait for their arguments to reach ``peer``."""
        return len(self._parked.get(peer, ()))

    def _unpark(self, peer: Peer) -> None:
        parked = self._parked.pop(peer, [])
        for batch, task in parked:
            if batch.wanted(task):
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
                if frames is None:  # gone from this store (removed by hand, or by cache gc)
                    self._fail_parked(peer, address, (
                        f"argument value {address.hex()[:16]} is no longer in this machine's "
                        f"store (removed by `pythagoras-node cache gc` or by hand?); call again"))
                    continue
                rid = self.connections.expect(peer, self._on_put)
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
            self._fail_parked(peer, key[1], (
                f"node {peer.address} refused argument value {key[1].hex()[:16]}: "
                f"{msg.fields.get('message', 'no reason given')}"))
        self._unpark(peer)

    def _fail_parked(self, peer: Peer, address: bytes, reason: str) -> None:
        """The calls parked on ``peer`` that need value ``address`` fail with ``reason``."""
        kept = []
        for batch, task in self._parked.pop(peer, []):
            if address in task.refs:
                batch.deliver(task.tid, Refused(REMOTE, reason))
            else:
                kept.append((batch, task))
        self._parked[peer] = kept

    def release(self, addresses: list[bytes]) -> None:
        """Tell the peers that hold these arguments that this client is done with them."""
        for peer in self.connections.peers.values():
            held = [a for a in addresses if a in peer.values]
            if held and peer.state in ("ready", "unsuitable", "draining"):
                peer.values.difference_update(held)
                self.connections.ask(peer, "release", lambda peer, msg: None, addresses=held)

    # ------------------------------------------------------------------ lookups and downloads

    def lookup(self, calls: list[bytes], found: dict, callback) -> None:
        """Fill ``found`` with {call: (address, blob|None, meta, peer)} and call ``callback()``
        when every call is found or the peers asked have answered.

        While the client does not know the swarm yet (:meth:`Connections.known`), the calls
        the peers known so far do not hold are held, and asked again once it does, for at most
        :data:`~pythagoras_p2p.defaults.SWARM_LEARN_WAIT` seconds from its start: a miss
        from the few peers known at first would have the call computed again. After that, it
        goes on with the peers that answered, said once in the log.

        With every peer ready, each call is asked of its homes only (:mod:`.homes`): at most
        ``R`` requests, whatever the size of the swarm. Every peer is asked — those still
        connecting once they answer their hello — when some are not ready yet, and for the
        calls not found when a home did not answer or says its copies are not settled (the
        members changed lately)."""
        if self.connections.known() or self.connections.learning_left <= 0:
            if not self.connections.is_known:
                self._say_unknown()
            self._lookup(calls, found, callback)
            return

        def then() -> None:  # what the peers known so far hold; the rest waits for the others
            rest = [c for c in calls if c not in found]
            if rest:
                self._held.append((rest, found, callback))
            else:
                callback()

        self._lookup(calls, found, then)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def resume_held(self) -> None:
        """Run the held lookups once the swarm is known, or once waiting for it is over."""
        if not self._held:
            return
        known = self.connections.known()
        if not known and self.connections.learning_left > 0:
            return
        if not known:
            self._say_unknown()
        held, self._held = self._held, []
        for calls, found, callback in held:
            self._lookup(calls, found, callback)

    def _say_unknown(self) -> None:
        """Once: lookups go on although the swarm is not known (see :meth:`lookup`)."""
        if self._said_unknown:
            return
        self._said_unknown = True
        peers = self.connections.peers.values()
        unmet = [p.address for p in peers if not p.met]
        log.warning("the swarm is not fully known after %g s (%s): lookups ask the %d node(s) "
                    "that answered, and calls they do not hold are computed, even if another "
                    "node holds their results", SWARM_LEARN_WAIT,
                    f"no answer yet from {', '.join(unmet)}" if unmet
                    else "no settled node listed its peers",
                    sum(p.state in ("ready", "unsuitable") for p in peers))

    def _lookup(self, calls: list[bytes], found: dict, callback) -> None:
        peers = [p for p in self.connections.peers.values()
                 if p.state in ("ready", "unsuitable", "new", "connecting")]
        if not peers:
            callback()
            return
        ready = [p for p in peers if p.state in ("ready", "unsuitable") and p.node_id]
        replicas = max((p.replicas for p in ready), default=1)
        if len(ready) == len(peers) and replicas < len(ready):
            by_id = {p.node_id: p for p in ready if p.node_id is not None}
            grouped = by_home(calls, list(by_id), replicas)

            def then(trusted: bool) -> None:
                rest = [c for c in calls if c not in found]
                if trusted or not rest:
                    callback()
                else:  # a home did not answer, or its copies may not be in place yet
                    self._ask_all(rest, peers, found, lambda trusted: callback())

            self._ask_all(calls, [by_id[n] for n in grouped], found, then,
                          per_peer={by_id[n]: c for n, c in grouped.items()})
            return
        self._ask_all(calls, peers, found, lambda trusted: callback())

    def _ask_all(self, calls: list[bytes], asked: list, found: dict, callback,
                 per_peer: dict | None = None) -> None:
        """Ask each of ``asked`` for ``calls`` (or its part of ``per_peer``), in requests of at
        most :data:`LOOKUP_CHUNK` calls (a request and its reply then stay well within a
        message's header and frame limits); then ``callback(trusted)``: whether every request
        was answered and each peer said its copies are settled."""
        requests = [(peer, part[i:i + LOOKUP_CHUNK])
                    for peer in asked
                    for part in [per_peer[peer] if per_peer else calls]
                    for i in range(0, max(len(part), 1), LOOKUP_CHUNK)]
        waiting = set(range(len(requests)))
        wanted = set(calls)
        trusted = [True]
        if not requests:
            callback(False)
            return

        def on_reply(token: int, peer: Peer, msg: wire.Message) -> None:
            if token not in waiting:
                return
            waiting.discard(token)
            if msg.op != "ok" or msg.fields.get("settled") is not True:
                trusted[0] = False
            if msg.op == "ok":
                bodies = iter(msg.bodies)
                for item in msg.fields.get("found", []):
                    try:
                        call, address = bytes.fromhex(item["call"]), bytes.fromhex(item["address"])
                    except (KeyError, TypeError, ValueError):
                        continue
                    blob = None if item.get("large") else bytes(next(bodies, b""))
                    found.setdefault(call, (address, blob, item.get("meta") or {}, peer))
            if not waiting or wanted.issubset(found):
                waiting.clear()  # later answers are ignored
                callback(trusted[0])

        def ask(token: int, peer: Peer, part: list[bytes]) -> None:
            self.connections.ask(peer, "lookup", lambda p, m: on_reply(token, p, m), calls=part)

        def ask_when_ready(token: int, peer: Peer, part: list[bytes], ok: bool) -> None:
            if ok:
                ask(token, peer, part)
            else:
                on_reply(token, peer, wire.Message("error", 0, {}))

        for token, (peer, part) in enumerate(requests):
            if peer.state in ("ready", "unsuitable"):
                ask(token, peer, part)
            else:
                peer.on_ready.append(
                    lambda ok, t=token, peer=peer, part=part: ask_when_ready(t, peer, part, ok))

    @property
    def downloading(self) -> bool:
        return bool(self._downloads)

    def fetch(self, peer: Peer, address: bytes, callback) -> None:
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

    def on_chunk(self, peer: Peer, msg: wire.Message) -> None:
        """A piece of a value being downloaded from ``peer`` (ignored if none is)."""
        download = self._downloads.get((peer, msg.hex("address")))
        if download is None:
            return
        first = download.total is None
        total = msg.fields["total"]
        download.write(msg.fields["offset"], total, msg.bodies[0])
        if first:
            for offset in range(wire.CHUNK, total, wire.CHUNK):
                peer.send(wire.build("get", 0, address=download.address, offset=offset))
        if download.complete:
            del self._downloads[(peer, download.address)]
            download.finish()

    def on_missing(self, peer: Peer, address_hex: str) -> None:
        """``peer`` answered a ``get`` with ``missing``: that download fails instead of waiting."""
        try:
            address = bytes.fromhex(address_hex)
        except ValueError:
            return
        download = self._downloads.pop((peer, address), None)
        if download is not None:
            download.fail(f"peer {peer.address} no longer holds value {address_hex[:16]} "
                          f"(removed by `cache gc` there?); run the call again")

    # ------------------------------------------------------------------ losses, cancels, close

    def take_parked(self, peer: Peer) -> list:
        """The (batch, task) pairs parked on ``peer``, which no longer waits for them."""
        return self._parked.pop(peer, [])

    def forget(self, peer: Peer, why: str) -> None:
        """``peer`` is gone: its has/put requests are forgotten and its downloads fail."""
        for key in [k for k in self._asked if k[0] is peer]:
            del self._asked[key]
        for key in [k for k in self._downloads if k[0] is peer]:
            self._downloads.pop(key).fail(f"peer {peer.address} was lost ({why})", lost=True)

    def cancel(self, gone) -> None:
        """Parked tasks for which ``gone(batch, task)`` is true are dropped."""
        for peer, parked in self._parked.items():
            self._parked[peer] = [bt for bt in parked if not gone(*bt)]

    def close(self) -> None:
        """Held lookups end (with nothing found); every download still running fails: the
        cloud was closed."""
        held, self._held = self._held, []
        for _, _, callback in held:
            callback()
        for download in self._downloads.values():
            download.fail("the cloud was closed")
