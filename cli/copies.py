"""What ``cache gc`` asks the swarm before it drops results: which copies are the last."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["last_copies"]


def last_copies(home: Path, calls: list[bytes]) -> set[bytes]:
    """Those of ``calls`` that no other node of this home's swarm holds: all of them when the
    swarm cannot be asked (this machine's node is not running); none when the home is in no
    swarm."""
    from pythagoras_p2p.net.nodefile import local_node_address
    from pythagoras_p2p.net.rpc import NodeUnreachable, request
    from pythagoras_p2p.net.security import load_key
    from pythagoras_p2p.net.sockets import endpoint
    from pythagoras_p2p.net.wire import WireError

    key = load_key(home)
    if key is None:
        return set()
    node = local_node_address(home)
    if node is None:
        click.echo("this machine's node is not running, so the swarm cannot be asked which "
                   "results it still holds elsewhere", err=True)
        return set(calls)
    try:
        peers = request(endpoint(*node), key, "peers", timeout=5).fields.get("peers", [])
    except (NodeUnreachable, WireError) as exc:
        click.echo(f"cannot ask the swarm which results it holds elsewhere ({exc})", err=True)
        return set(calls)
    last = set(calls)
    for peer in peers:
        for start in range(0, len(calls), 16384):
            chunk = calls[start: start + 16384]
            try:
                reply = request(endpoint(peer["host"], peer["port"]), key, "offer", timeout=10,
                                bodies=[b"".join(chunk)])
            except (NodeUnreachable, WireError, KeyError, TypeError):
                continue
            raw = bytes(reply.bodies[0]) if reply.bodies else b""
            lacking = {raw[i: i + 32] for i in range(0, len(raw), 32)}
            last -= {c for c in chunk if c not in lacking}
    return last
