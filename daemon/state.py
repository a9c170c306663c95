"""The node's own entry in ``pythagoras-node status``: the facts a dashboard shows."""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["status_entry"]

_stats_cache: dict[str, Any] = {"at": 0.0, "value": None, "done": -1}


def _cache_facts(store: Any, done: int) -> tuple[int, int]:
    """(results, bytes) of the store, refreshed every few seconds (every second while tasks end)."""
    now = time.monotonic()
    age = now - _stats_cache["at"]
    if _stats_cache["value"] is None or age > 5 or (done != _stats_cache["done"] and age > 1):
        from pythagoras_p2p.maintenance import stats

        s = stats(store)
        _stats_cache["value"] = (s.results, s.total_bytes)
        _stats_cache["at"] = now
        _stats_cache["done"] = done
    return _stats_cache["value"]


def status_entry(node: Any, handlers: Any) -> dict:
    """This node as one entry of ``status --json``'s ``peers`` list."""
    entries, size = _cache_facts(node.store, handlers.tasks_done)
    asked = handlers.hits + handlers.misses
    return {
        "id": node.node_id,
        "address": f"{node.advertised_host}:{node.config.port}",
        "self": True,
        "workers_busy": min(len(handlers.running), node.config.workers),
        "workers_total": node.config.workers,
        "load": round(os.getloadavg()[0], 2),
        "tasks_done": handlers.tasks_done,
        "cache_entries": entries,
        "cache_bytes": size,
        "hit_rate": round(handlers.hits / asked, 4) if asked else None,
        "last_seen_s": 0.0,
        "values_received": handlers.values_received,
        "value_bytes_received": handlers.value_bytes_received,
        "uptime_s": round(time.time() - node.started, 1),
        "python": node_python(),
        "swarm": node.key.name,
        "tag": node.key.tag,
    }


def node_python() -> str:
    from pythagoras_p2p.wire import PYTHON_VERSION

    return PYTHON_VERSION
