"""The ``pythagoras-node status`` dashboard: one table of the swarm, refreshed with ``--watch``."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..maintenance import human_bytes

__all__ = ["render", "show"]


def render(status: dict) -> Table:
    node = status["node"]
    table = Table(title=f"swarm {node.get('swarm', '?')} (tag {node.get('tag', '?')}) "
                        f"seen from node {node['id']}")
    for column in ("node", "address", "workers busy", "load", "tasks done", "cache entries",
                   "cache size", "hit rate", "last seen"):
        table.add_column(column, justify="left" if column in ("node", "address") else "right")
    for peer in sorted(status["peers"], key=lambda p: (not p.get("self"), p["id"])):
        hit = peer.get("hit_rate")
        table.add_row(
            peer["id"] + (" (this)" if peer.get("self") else ""), peer["address"],
            f"{peer['workers_busy']}/{peer['workers_total']}", f"{peer['load']:.2f}",
            f"{peer['tasks_done']:,}", f"{peer['cache_entries']:,}",
            human_bytes(peer["cache_bytes"]), "-" if hit is None else f"{hit:.0%}",
            f"{peer['last_seen_s']:.1f}s",
        )
    return table


def show(fetch: Callable[[], dict], *, watch: bool, interval: float) -> None:
    console = Console()
    if not watch:
        console.print(render(fetch()))
        return
    with Live(render(fetch()), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(fetch()))
        except KeyboardInterrupt:
            pass
