"""The ``pythagoras-node status`` dashboard: one table of the swarm, refreshed with ``--watch``."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, JustifyMethod
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pythagoras_p2p.store.maintenance import human_bytes

__all__ = ["render", "show"]


_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (  # heading, justification: short, so the swarm fits an 80-column terminal
    ("node", "left"), ("address", "left"), ("busy", "right"), ("load", "right"),
    ("done", "right"), ("entries", "right"), ("cache", "right"), ("served", "right"),
    ("seen", "right"), ("held", "left"),
)


WIDE = 104  # from this many columns on, host and owner have columns of their own


def render(status: dict, width: int = 80) -> Table:
    """The swarm as one table: this node first (marked ``*``), then its peers by id. Each
    node's host name and owner (from its certificate) are columns on a terminal of
    :data:`WIDE` columns or more, else a line each under the table."""
    node = status["node"]
    wide = width >= WIDE
    notes = [_copies(peer) for peer in sorted(status["peers"], key=lambda p: p["id"])]
    if not wide:
        notes += [f"{p['id']}: {p.get('hostname') or '-'}, owner {p.get('owner_name') or '-'}"
                  for p in sorted(status["peers"], key=lambda p: (not p.get("self"), p["id"]))]
    notes.append(_owner(node))
    notes += [other["notice"] for other in node.get("other_swarms") or []]
    notes.append((node.get("replication") or {}).get("fewer_copies") or "")
    table = Table(title=f"swarm {node.get('swarm', '?')} (tag {node.get('tag', '?')})",
                  caption="* this node · busy: workers running calls/all · done: calls run · "
                          "served: share of the calls sent to this node that its store "
                          "answered (a caller's hits in its own store never reach a node) · held: "
                          "resources running calls hold/all" + "".join(f"\n{n}" for n in notes if n),
                  box=None, pad_edge=False, collapse_padding=True, header_style="bold underline")
    columns = _COLUMNS[:1] + (("host", "left"), ("owner", "left")) * wide + _COLUMNS[1:]
    for heading, justify in columns:
        # Only a long address folds onto a second line: every other cell stays whole.
        table.add_column(heading, justify=justify, no_wrap=heading != "address",
                         overflow="fold" if heading == "address" else "ellipsis",
                         min_width=15 if heading == "address" else None)
    for peer in sorted(status["peers"], key=lambda p: (not p.get("self"), p["id"])):
        hit = peer.get("hit_rate")
        cells = (
            peer["id"] + ("*" if peer.get("self") else " "),
            *((peer.get("hostname") or "-", peer.get("owner_name") or "-") * wide), peer["address"],
            f"{peer['workers_busy']}/{peer['workers_total']}", f"{peer['load']:.2f}",
            _count(peer["tasks_done"]), _count(peer["cache_entries"]),
            human_bytes(peer["cache_bytes"]), "-" if hit is None else f"{hit:.0%}",
            f"{peer['last_seen_s']:.1f}s", _resources(peer),
        )
        table.add_row(*(Text(str(cell)) for cell in cells))  # text, never markup: "[::1]:7575"
    return table


def _resources(peer: dict) -> str:
    """``gpus 1/1 license 0/2``: the GPUs and custom resources a node has, and what running
    calls hold of them and of its memory (``status --json`` has them all)."""
    from pythagoras_p2p.resources import describe

    have, used = peer.get("resources") or {}, peer.get("resources_in_use") or {}
    shown = [name for name, amount in sorted(have.items())
             if name != "cpus" and (used.get(name) or (amount and name != "memory"))]
    return " ".join(f"{name} {describe(name, used.get(name, 0))}/{describe(name, have[name])}"
                    for name in shown) or "-"


def _copies(peer: dict) -> str:
    """A line on a node whose results are not all on their homes yet, that answered some
    with one copy, or that hands them over as it stops; empty when all is well."""
    replication = peer.get("replication") or {}
    if peer.get("paused"):
        since = peer.get("paused_since")
        when = f" since {time.strftime('%H:%M', time.localtime(since))}" if since else ""
        return f"{peer['id']}: paused{when}: {peer['paused']} (serves lookups and copies)"
    if peer.get("stopping"):
        return f"{peer['id']}: stopping; hand-over {replication.get('handover') or 'waiting'}"
    said = []
    under = replication.get("under_replicated") or 0
    if under:
        said.append(f"{under:,} copies of results not yet on their homes (repairing)")
    alone = replication.get("late_acks") or 0
    if alone:  # no second member confirmed a copy in time: the repair made it afterwards
        said.append(f"{alone:,} result(s) answered with one copy since it started")
    return f"{peer['id']}: " + "; ".join(said) if said else ""


def _owner(node: dict) -> str:
    """This node's settings for its machine's owner, in one line (``start``'s options)."""
    owner = node.get("owner")
    if not owner:
        return ""
    parts = [f"workers at {'low' if owner['low_priority'] else 'normal'} priority"]
    parts.append(f"yields above {owner['owner_busy']:g} cores of its owner's load"
                 + (" (preempts)" if owner["preempt"] else "") if owner["yield_to_owner"]
                 else "dedicated")
    parts.append("pauses on battery" if owner["on_battery"] == "pause" else "runs on battery")
    if owner["keep_free"]:
        parts.append(f"keeps {human_bytes(owner['keep_free'])} of memory free")
    parts.append("speculative copies " + ("on" if owner["speculate"] else "off"))
    callers = node.get("callers") or []
    return (f"{node['id']}: {', '.join(parts)}; serving {len(callers)} caller(s)"
            + ("" if not node.get("paused") else f"; paused: {node['paused']}"))


def _count(n: int) -> str:
    """``9999``, ``12.3k``, ``456k``, ``4.6M``: a count in at most five characters."""
    if n < 10_000:
        return str(n)
    for limit, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= limit:
            value = n / limit
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)  # pragma: no cover - every n >= 10,000 has a unit above


def show(fetch: Callable[[], dict], *, watch: bool, interval: float) -> None:
    console = Console()
    if not watch:
        console.print(render(fetch(), console.width))
        return
    with Live(render(fetch(), console.width), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(fetch(), console.width))
        except KeyboardInterrupt:
            pass
