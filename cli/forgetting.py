"""``pythagoras-node cache forget NAME``: this machine's results of one function, or (``--swarm``)
every node's, listed before they are deleted.

A function is named by its qualified name (``module.qualname``, as ``cache ls`` shows it): two
functions called ``f`` in two modules are two functions, and forgetting one leaves the other.
Without ``--swarm`` only this machine's store changes; a node that is a home of those results
may receive copies again from the peers that still hold them (``--swarm`` forgets them there too).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NoReturn

import click

__all__ = ["cache_forget"]


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _describe(versions: list[dict]) -> list[str]:
    from pythagoras_p2p.store.maintenance import human_bytes

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

    return [f"    version {v['fingerprint'][:16]}: {v['results']:,} result(s), "
            f"{human_bytes(v['nbytes'])}, stored {when(v['first_stored'])} .. "
            f"{when(v['last_stored'])}" for v in versions]


def _unknown(name: str, similar: set[str]) -> NoReturn:
    if similar:
        _fail(f"no stored results of {name!r}; functions are named by module and name: did you "
              f"mean {' or '.join(repr(s) for s in sorted(similar))}?")
    _fail(f"no stored results of {name!r}; `pythagoras-node cache ls` lists the functions "
          f"this store holds, by the name `cache forget` takes (module.qualname)")


@click.command("forget")
@click.argument("name")
@click.option("--swarm", is_flag=True,
              help="Forget on every node of the swarm too (this home's node must run); asks first.")
@click.option("--yes", is_flag=True, help="With --swarm: do not ask for confirmation.")
@click.pass_context
def cache_forget(ctx: click.Context, name: str, swarm: bool, yes: bool) -> None:
    """Delete every stored result of the function NAME (module.qualname, as `cache ls` shows
    it), every version, from this machine's store; with --swarm, from every node's. Lists what
    it deletes first; `cache gc` reclaims the space."""
    home = ctx.obj["home"]
    if swarm:
        _forget_on_swarm(home, name, yes)
        return
    from pythagoras_p2p.store.core import open_store
    from pythagoras_p2p.store.listing import forget_function, functions_named, stored_versions

    if not (home / "store").is_dir():
        _fail(f"there is no store in {home}; nothing to forget (pass --home / set "
              f"PYTHAGORAS_HOME to the right one)")
    store = open_store(home)
    versions = [v.as_dict() for v in stored_versions(store, name)]
    if not versions:
        _unknown(name, set(functions_named(store, name)))
    total = sum(v["results"] for v in versions)
    click.echo(f"this machine ({home}): deleting {total:,} result(s) of {name!r}")
    click.echo("\n".join(_describe(versions)))
    gone = forget_function(store, name)
    click.echo(f"this machine: forgot {gone:,} results of {name!r} (other nodes' stores are "
               f"left alone: `cache forget --swarm` forgets there too)")
    click.echo("`pythagoras-node cache gc` reclaims the space")


def _forget_on_swarm(home: Path, name: str, yes: bool) -> None:
    from pythagoras_p2p.errors import NodeUnreachable
    from pythagoras_p2p.net.asker import asker
    from pythagoras_p2p.net.rpc import request
    from pythagoras_p2p.net.wire import WireError

    key, nodes = swarm_nodes(home)
    plans: dict[str, dict] = {}
    for label, address in nodes:
        try:
            reply = request(address, key, "forget", timeout=10.0, function=name, dry_run=True)
        except (NodeUnreachable, WireError) as exc:
            click.echo(f"{label}: cannot be asked ({exc}); its results stay", err=True)
            continue
        plans[label] = {"address": address, "versions": reply.fields.get("versions") or [],
                        "similar": reply.fields.get("similar") or []}
    total = sum(v["results"] for p in plans.values() for v in p["versions"])
    if not total:
        _unknown(name, {s for p in plans.values() for s in p["similar"]})
    holding = [label for label, p in plans.items() if p["versions"]]
    click.echo(f"deleting {total:,} result(s) of {name!r} on {len(holding)} node(s):")
    for label in holding:
        versions = plans[label]["versions"]
        click.echo(f"  {label}: {sum(v['results'] for v in versions):,} result(s)")
        click.echo("\n".join(_describe(versions)))
    if not yes:
        if not sys.stdin.isatty():
            _fail("`cache forget --swarm` deletes results on other members' machines and asks "
                  "first; with no terminal to ask on, pass --yes")
        click.confirm("Delete them on every node?", abort=True)
    me = asker(home)
    forgot = 0
    for label in holding:
        try:
            reply = request(plans[label]["address"], key, "forget", timeout=30.0, function=name,
                            asked_by=me)
        except (NodeUnreachable, WireError) as exc:
            click.echo(f"{label}: not forgotten ({exc})", err=True)
            continue
        gone = int(reply.fields.get("forgot", 0))
        forgot += gone
        click.echo(f"{label}: forgot {gone:,} results of {name!r}")
    click.echo(f"forgot {forgot:,} results on {len(holding)} node(s); `pythagoras-node cache gc` "
               f"on each machine reclaims the space")


def swarm_nodes(home: Path) -> tuple:
    """This home's swarm key and the nodes to ask ((label, endpoint), this machine's node
    first); fails, saying what to do, when this home's node is not running."""
    from pythagoras_p2p.errors import NodeUnreachable, SecurityError
    from pythagoras_p2p.net.nodefile import local_node_address
    from pythagoras_p2p.net.rpc import request
    from pythagoras_p2p.net.security import load_key
    from pythagoras_p2p.net.sockets import endpoint
    from pythagoras_p2p.net.wire import WireError

    try:
        key = load_key(home)
    except SecurityError as exc:
        _fail(str(exc))
    node = local_node_address(home)
    if key is None or node is None:
        _fail(f"no node of {home} is running, so the swarm cannot be asked: start it with "
              f"`pythagoras-node start` (or forget on this machine only, without --swarm)")
    here = endpoint(*node)
    try:
        peers = request(here, key, "peers", timeout=5.0).fields.get("peers", [])
    except (NodeUnreachable, WireError) as exc:
        _fail(f"this machine's node does not answer ({exc}); is it running?")
    nodes = [(f"this machine ({home})", here)]
    for peer in peers:
        try:
            nodes.append((f"{peer['host']}:{peer['port']}",
                          endpoint(str(peer["host"]), int(peer["port"]))))
        except (KeyError, TypeError, ValueError):
            continue
    return key, nodes
