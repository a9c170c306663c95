"""Other swarms' nodes heard on this network: said once in the log and shown under ``status``.

A machine given the wrong join token, or none, sits in a swarm of one while the team's nodes
announce themselves next to it. mDNS carries each node's swarm tag, so a node that hears nodes of
another swarm says so: once per swarm in its log, and for as long as they are listed, under
``status`` (``other_swarms`` in ``status --json``), with what to do to join that swarm instead.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["Neighbours", "notice"]

log = logging.getLogger(__name__)


def notice(tag: str, count: int, addresses: list[str]) -> str:
    """What a node says of ``count`` nodes of the swarm tagged ``tag``."""
    nodes = "1 node" if count == 1 else f"{count} nodes"
    verb = "is" if count == 1 else "are"
    where = ", ".join(addresses[:5]) + (", ..." if len(addresses) > 5 else "")
    return (f"{nodes} of another swarm (tag {tag}, at {where}) {verb} on this network; to join "
            f"it: ask one of its members for a join line (`pythagoras-node invite` on its admin "
            f"machine) and run `pythagoras-node join TOKEN --force` here, then start this node "
            f"again")


class Neighbours:
    """What this node's mDNS browser hears of other swarms (owned by the node's loop)."""

    def __init__(self) -> None:
        self._said: set[str] = set()  # tags already logged
        self.seen: dict[str, list[str]] = {}  # tag → addresses of its listed nodes

    def look(self, browser: Any) -> None:
        """Take what ``browser`` lists now; log a swarm not logged before."""
        if browser is None:
            return
        self.seen = {tag: sorted(a.addresses[0] for a in adverts if a.addresses)
                     for tag, adverts in browser.other_swarms().items()}
        for tag, addresses in self.seen.items():
            if tag not in self._said:
                self._said.add(tag)
                log.warning("%s", notice(tag, len(addresses), addresses))

    def facts(self) -> list[dict]:
        """``other_swarms`` of this node's ``status`` entry."""
        return [{"tag": tag, "nodes": len(addresses), "addresses": addresses,
                 "notice": notice(tag, len(addresses), addresses)}
                for tag, addresses in sorted(self.seen.items())]
