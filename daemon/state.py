"""The node's own entry in ``pythagoras-node status``: the facts a dashboard shows, and the counters they come from."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from pythagoras_p2p.defaults import NODE_CACHE_FACTS_BUSY_EVERY as CACHE_FACTS_BUSY_EVERY
from pythagoras_p2p.defaults import NODE_CACHE_FACTS_EVERY as CACHE_FACTS_EVERY
from pythagoras_p2p.net.sockets import endpoint
from pythagoras_p2p.net.wire import PYTHON_VERSION

__all__ = ["copies_kept", "CacheFacts", "Counters", "load_facts", "status_entry", "ping_facts",
           "status_reply"]

_FUNCTIONS_EVERY = 10.0  # seconds between counts of results per function, while asked for
_FUNCTIONS_SHOWN = 12  # the largest functions a status shows


@dataclass
class Counters:
    """What a node's handlers counted since it started."""

    tasks_done: int = 0  # calls run here to the end
    hits: int = 0  # calls sent here (looked up or run) answered from the store or the journal
    misses: int = 0  # calls handed to the workers
    rejected: int = 0  # messages refused: malformed, or replies sent as requests
    values_received: int = 0  # values uploaded by others, verified and stored
    value_bytes_received: int = 0  # bytes of every value chunk that arrived (kept or not)
    lookups: int = 0  # lookup requests answered
    forsaken: int = 0  # calls dropped because every caller had given this node up


class CacheFacts:
    """(results, bytes) of a store, refreshed in the background every ``NODE_CACHE_FACTS_EVERY``
    seconds (``NODE_CACHE_FACTS_BUSY_EVERY`` while tasks end): counting bytes walks every blob
    file, which must never hold up the node's loop — peers ask for these facts with every ping."""

    def __init__(self, store: Any):
        self.store = store
        self.value = (0, 0)  # until the first count, started now, is done
        self._at = -10.0
        self._done = -1
        self._refreshing = False
        self._lock = threading.Lock()
        self.by_function: list[dict] | None = None  # counted only once someone asks
        self._functions_at = -_FUNCTIONS_EVERY
        self.get(0)

    def get(self, done: int) -> tuple[int, int]:
        age = time.monotonic() - self._at
        if age > CACHE_FACTS_EVERY or (done != self._done and age > CACHE_FACTS_BUSY_EVERY):
            with self._lock:
                start, self._refreshing = not self._refreshing, True
            if start:
                threading.Thread(target=self._refresh, args=(done,), daemon=True,
                                 name="pythagoras-cache-facts").start()
        return self.value

    def functions(self) -> list[dict] | None:
        """Results and bytes of the largest functions in the store (None until first counted),
        counted again in the background when older than ``_FUNCTIONS_EVERY`` seconds: only a
        dashboard asks, so a node nobody looks at never walks its results for it."""
        if time.monotonic() - self._functions_at > _FUNCTIONS_EVERY:
            self._functions_at = float("inf")  # one count at a time (a large store takes long)
            threading.Thread(target=self._count_functions, daemon=True,
                             name="pythagoras-cache-functions").start()
        return self.by_function

    def _count_functions(self) -> None:
        from pythagoras_p2p.store.listing import listing

        try:
            entries = sorted(listing(self.store), key=lambda e: -e.nbytes)
        except Exception:  # a store being closed, or failing: the last count stays
            return
        finally:
            self._functions_at = time.monotonic()
        self.by_function = [{"function": e.function, "results": e.results, "bytes": e.nbytes}
                            for e in entries[:_FUNCTIONS_SHOWN]]

    def _refresh(self, done: int) -> None:
        from pythagoras_p2p.store.maintenance import stats

        try:
            s = stats(self.store)
            self.value, self._at, self._done = (s.results, s.total_bytes), time.monotonic(), done
        finally:
            self._refreshing = False


def load_facts(node: Any, handlers: Any) -> dict:
    """What a ping answer carries (and ``status`` shows): work and cache, no I/O."""
    counts = handlers.counts
    entries, size = node.cache_facts.get(counts.tasks_done)
    asked = counts.hits + counts.misses
    policy = node.admission.policy
    return {
        "workers_busy": min(node.admission.started, node.config.workers),
        "workers_total": node.config.workers,
        "resources": node.resources,
        "resources_in_use": node.ledger.in_use(min(node.admission.started, node.config.workers)),
        "paused": policy.reason,  # why it takes no new call now (None: it does)
        "paused_since": round(policy.since, 1) if policy.paused else None,
        "load": round(os.getloadavg()[0], 2),
        "tasks_done": counts.tasks_done,
        "cache_entries": entries,
        "cache_bytes": size,
        "hit_rate": round(counts.hits / asked, 4) if asked else None,
        "hits": counts.hits,  # calls answered from the store (looked up or sent to run)
        "asked": asked,  # calls looked up and found, or sent to run
        "hostname": socket.gethostname(),
        "replication": {"replicas": node.config.replicas, **node.repair.facts.as_dict(),
                        **node.traffic.as_dict(), "settled": node.repair.settled(),
                        **copies_kept(node.config.replicas, len(node.peering.members()))},
    }


def copies_kept(replicas: int, members: int) -> dict:
    """How many copies of each result the swarm can keep with ``members`` live: fewer than the
    ``replicas`` asked when fewer members are live (``fewer_copies`` then says so in words)."""
    copies = min(replicas, members)
    said: dict[str, int | str] = {"members_live": members, "copies": copies}
    if copies < replicas:
        said["fewer_copies"] = (
            f"results have {copies} cop{'y' if copies == 1 else 'ies'}, fewer than the "
            f"{replicas} asked: only {members} member{'' if members == 1 else 's'} "
            f"{'is' if members == 1 else 'are'} live; "
            + ("losing a machine loses the results only it holds" if copies <= 1
               else f"losing {copies} machines at once may lose results"))
    return said


def member_facts(members: Any, node_id: str | None) -> dict:
    """Who a node is, from its certificate: host name, owner (``owner_name``: ``owner`` is the
    policy of yielding to the machine's owner), key id (status shows them)."""
    member = members.by_node_id(node_id) if node_id else None
    if member is None:  # a peer whose certificate this node has not seen: its own name
        return {"owner_name": None, "key_id": None}
    return {"hostname": member.hostname, "owner_name": member.owner, "key_id": member.key_id}


def status_entry(node: Any, handlers: Any) -> dict:
    """This node as one entry of ``status --json``'s ``peers`` list."""
    return {
        "id": node.node_id,
        "address": endpoint(node.advertised_host, node.config.port).removeprefix("tcp://"),
        "self": True,
        **load_facts(node, handlers),
        "last_seen_s": 0.0,
        "values_received": handlers.counts.values_received,
        "value_bytes_received": handlers.counts.value_bytes_received,
        "messages_rejected": handlers.counts.rejected,
        "lookups": handlers.counts.lookups,
        "calls_forsaken": handlers.counts.forsaken,
        "stopping": node.stopping,
        **node.admission.facts(),
        "uptime_s": round(time.time() - node.started, 1),
        "python": PYTHON_VERSION,
        "swarm": node.key.name,
        "tag": node.key.tag,
        "other_swarms": node.peering.neighbours.facts(),  # nodes of other swarms heard on mDNS
        **member_facts(node.members, node.node_id),
    }


def ping_facts(node: Any, handlers: Any) -> dict:
    """The fields of this node's answer to a ping: what peers show of it in their status."""
    me = load_facts(node, handlers)
    return dict(
        node=node.node_id, busy=me["workers_busy"],
        workers=me["workers_total"], load=me["load"], tasks_done=me["tasks_done"],
        cache_entries=me["cache_entries"], cache_bytes=me["cache_bytes"], hit_rate=me["hit_rate"],
        resources=me["resources"], in_use=me["resources_in_use"],
        stopping=node.stopping, replication=me["replication"],
        paused=me["paused"], paused_since=me["paused_since"],
        **{k: me[k] for k in ("hostname", "hits", "asked")},
        **{k: v for k, v in node.admission.facts().items() if k != "owner"},
        mv=node.members.version,  # the member list's version: a peer with an older one asks
    )


def status_reply(node: Any, handlers: Any, asked: dict) -> dict:
    """The fields of the answer to ``status``: this node, every live member (it included), and
    for the dashboard the runs callers report here, the members that left or were lost, and
    when asked for them (``detail``), the last failures, the largest functions of the store and
    the samples of the last minutes newer than ``series_after``."""
    me = status_entry(node, handlers)
    extras: dict[str, Any] = {"node": me, "peers": [me, *node.peering.status_entries()],
                              "runs": node.reports.runs(), "callers_named": node.reports.names(),
                              "departed": list(node.peering.departed.values()),
                              "members": node.membership.listing()}
    if asked.get("detail") is True:
        from .history import FIELDS

        after = asked.get("series_after")
        after = after if isinstance(after, (int, float)) and not isinstance(after, bool) else None
        extras.update(failures=list(node.reports.failures), functions=node.cache_facts.functions(),
                      series={"fields": FIELDS, "every": node.history.every,
                              "samples": node.history.since(after)})
    return extras
