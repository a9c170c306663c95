"""``SwarmCloud``: calls run on the nodes of a swarm; results are shared by every member.

Memo lookups go local store → peers (one bounded, parallel lookup) → compute here. Calls given
to ``sync_remote``/``sync_parallel`` go to the peers through a :class:`SwarmDispatcher`; the
nodes answer from their own stores first. A result that comes from a node is written to the
local store behind the caller's back, in grouped transactions: the node that computed it has
already made it durable, so the caller need not wait for a second fsync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from ..defaults import LOOKUP_TIMEOUT
from ..errors import ConfigurationError
from ..execution.progress import open_runs
from ..identity.calls import NO_ADDRESSES as _NO_ADDRESSES
from ..identity.inputs import holds
from ..net.security import load_key
from ..store.core import MISSING
from ..store.journal import WriteBehind
from ..store.packing import unpack
from .base import PCloud
from .choice import register_backend
from .seams import StoreResults, StoreStaging

if TYPE_CHECKING:
    from ..execution.interfaces import TaskBatch
    from ..execution.tasks import Task
    from ..store.core import Store
    from ..store.journal import JournalRecord
    from ..swarm.dispatcher import SwarmDispatcher

__all__ = ["SwarmCloud"]

log = logging.getLogger(__name__)


class SwarmCloud(PCloud):
    """A cloud whose calls run on the nodes of a swarm (this home must hold its key).

    ``connection``: ``"host[:port],..."`` or ``{"peers": [...], "key": PATH, ...}``; with no
    peers named, the node of this machine (if one runs for this home) is used.
    """

    def __init__(self, *, requires: Any = None, connection: Any = None, home: Any = None,
                 connect_timeout: float = 5.0):
        super().__init__(requires=requires, connection=connection, home=home)
        key = load_key(self.home, self.connection["key"])
        if key is None:
            raise ConfigurationError(
                f"{self.home} is no member of a swarm: run `pythagoras-node join TOKEN` (a token "
                f"from `pythagoras-node invite` on an admin) to make this machine a member"
            )
        self.key = key
        named = list(self.connection["peers"])
        local = [] if named else _local_node(self.home)
        if local:  # this machine's node knows the live swarm: start from its list
            local += _peers_of(local[0], key)
        browser = None
        if not named and not local and self.connection["discovery"] == "mdns":
            from ..net.mdns import Browser

            browser = Browser(key.tag)
        if not named and not local and browser is None:
            raise ConfigurationError(
                f"no peers to connect to: name them (connection='host:port,...'), start this "
                f"machine's node with `pythagoras-node start` (home {self.home}), or allow mDNS"
            )
        from ..net.nodefile import read_node_file
        from ..swarm.dispatcher import SwarmDispatcher

        # When this machine's node is a member, this client keeps the second copy of each
        # result another node computes (journaled here before it is returned), and that node
        # answers without waiting for a copy of its own on another member.
        own_node = (read_node_file(self.home) or {}).get("id")
        self._writer = WriteBehind(self.store, durable=own_node is not None)
        self._dispatcher = SwarmDispatcher(
            key, self.store, named or local, requires=self.requires,
            connect_timeout=connect_timeout, ask_for_peers=True, browser=browser,
            own_node=own_node, learned_lookup_only=bool(named),
        )
        self._results: SwarmResults = SwarmResults(self.store, self._writer, self._dispatcher,
                                                   self.home)
        self._executor = SwarmExecutor(self.store, self._dispatcher, self.home)
        # for the dashboard: the runs of this cloud (their bars' owner) open now
        self._dispatcher.connections.reports = partial(open_runs, self._seams)

    def _compute_here(self, fn: Any, fp: bytes, call: bytes, kwargs: dict,
                      addresses: Mapping[str, bytes] = _NO_ADDRESSES) -> Any:
        found = self._results.elsewhere([call])
        if call in found:
            return found[call]
        return super()._compute_here(fn, fp, call, kwargs, addresses)

    def worker_slots(self) -> int:
        """The worker slots of the peers that answer (waiting up to 5 s for the first)."""
        return max(1, sum(peer.workers for peer in self.ready_peers()))

    def ready_peers(self, timeout: float = 5.0) -> list:
        """Peers that answered, waiting up to ``timeout`` seconds for at least one."""
        deadline = time.monotonic() + timeout
        while True:
            ready = self._dispatcher.ready_peers(timeout=timeout) or []
            if ready or time.monotonic() > deadline:
                return ready
            time.sleep(0.05)

    def close(self) -> None:
        self._dispatcher.close()
        self._writer.close()


register_backend("swarm", SwarmCloud)


class SwarmResults(StoreResults):
    """Results of a ``SwarmCloud``: the local store, the results nodes sent that are on their
    way into it (written behind the caller's back), and what the peers hold."""

    def __init__(self, store: Store, writer: WriteBehind, dispatcher: SwarmDispatcher, home: Any):
        super().__init__(store)
        self.writer, self.dispatcher, self.home = writer, dispatcher, home
        self._home_members: Any = None  # the members whose copies are taken (read at first use)

    def store(self, records: list[JournalRecord]) -> None:
        """Written behind the caller's back: the node that computed them made them durable
        (and signed them)."""
        self.writer.put(records)

    def pending(self, calls: list[bytes]) -> dict[bytes, Any]:
        """Results of ``calls`` that nodes sent and the local store has not yet written."""
        found = {}
        for call, (_, address, blob, _) in self.writer.pending(calls).items():
            value = unpack(blob) if blob is not None else self.local.get_value(address)
            if value is not MISSING:
                found[call] = value
        return found

    def settle(self) -> None:
        self.writer.flush()  # copies of results a node made durable, written in the background

    def elsewhere(self, calls: list[bytes], *, before_running: bool = False) -> dict[bytes, Any]:
        """Results of ``calls`` that a peer holds, copied into the local store; those whose
        recorded inputs (files, environment variables) differ here are left out.

        ``before_running``: the calls are about to be sent to a peer, which answers from its
        store anyway; with a single peer (once the swarm is known: a node that has just started
        may not know the others yet) the separate lookup would only cost a round trip.
        """
        dispatcher = self.dispatcher
        if before_running and len(dispatcher.peers) == 1 and dispatcher.knows_swarm:
            return {}
        found = dispatcher.lookup(calls, timeout=LOOKUP_TIMEOUT)
        if not found:
            return {}
        values: dict[bytes, Any] = {}
        records = []
        for call, (address, blob, meta, peer) in found.items():
            if not isinstance(meta, dict) or not holds(meta.get("inputs")):
                continue  # it read files or variables that differ here: computed again
            if not self._of_member(call, address, meta):
                continue  # not signed by a member (or by one whose results were dropped)
            if blob is None:
                ok = dispatcher.fetch(peer, address, timeout=300)
                if ok is not True:
                    continue
                value = self.local.get_value(address)
                if value is MISSING:
                    continue
            else:
                value = unpack(blob)
            records.append((call, address, blob, meta))
            values[call] = value
        if records:
            self.writer.put(records)
        return values

    def _of_member(self, call: bytes, address: bytes, meta: dict) -> bool:
        """Whether a copy found on a peer was computed by a member of this home's swarm, as
        its signature shows (always, for a home with no member list); said once if not."""
        members = self._home_members
        if members is None:
            from ..trust.provenance import HomeMembers

            members = self._home_members = HomeMembers(self.home)
        current = members.current()
        if current is None:
            return True
        from ..trust.provenance import refusal

        why = refusal(meta, call, address, current)
        if why is not None:
            log.warning("a peer's copy of result %s is not used (it is computed again): %s",
                        call.hex()[:16], why)
        return why is None


class SwarmExecutor(StoreStaging):
    """Where a ``SwarmCloud``'s tasks run: on the nodes, through its dispatcher."""

    def __init__(self, store: Store, dispatcher: SwarmDispatcher, home: Any):
        super().__init__(store)
        self.dispatcher, self.home = dispatcher, home

    def submit(self, tasks: Iterable[Task], count: int) -> TaskBatch:
        return self.dispatcher.submit(tasks, count)

    def release_arguments(self, addresses: list[bytes]) -> None:
        """Peers drop the copies they were sent; so does this store, except those the node
        that serves this home was sent (it gets the release, and decides: its other clients'
        calls may still read them). This process lets go of its holds first, so the node's
        drop is not refused by them."""
        from ..net.nodefile import read_node_file

        local = (read_node_file(self.home) or {}).get("id")
        node = next((p for p in list(self.dispatcher.peers.values())
                     if local and p.node_id == local), None)
        sent = set(node.values) if node is not None else set()
        self.store.release_transient([a for a in addresses if a in sent])
        self.store.drop_transient([a for a in addresses if a not in sent])
        self.dispatcher.release(addresses)


def _peers_of(node: tuple[str, int], key) -> list[tuple[str, int]]:
    """The live peers a node knows (empty if it does not answer in time)."""
    from ..net.rpc import NodeUnreachable, request
    from ..net.sockets import endpoint
    from ..net.wire import WireError

    try:
        reply = request(endpoint(*node), key, "peers", timeout=2.0)
    except (NodeUnreachable, WireError):
        return []
    found = []
    for item in reply.fields.get("peers", []):
        try:
            found.append((str(item["host"]), int(item["port"])))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def _local_node(home) -> list[tuple[str, int]]:
    from ..net.nodefile import local_node_address

    found = local_node_address(home)
    return [found] if found else []
