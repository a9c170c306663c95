"""The ``pythagoras-node`` command: parses arguments, calls the library and the daemon, prints.

Every failure a person can cause ends with a message saying what to do and a non-zero exit
code; no traceback reaches the terminal for them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NoReturn

import click

from pythagoras_p2p import __version__
from pythagoras_p2p.defaults import home_dir, parse_size
from pythagoras_p2p.errors import PythagorasError

from .members import register as register_membership
from .owner import owner_argv, owner_config, owner_options, pause, resume
from .web.command import dashboard

__all__ = ["main", "cli"]


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pythagoras-node")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="PYTHAGORAS_HOME",
              default=None, help="Home holding the store and this machine's keys [$PYTHAGORAS_HOME, ~/.pythagoras].")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """A node of a pythagoras_p2p swarm, and the tools to look after its store."""
    ctx.obj = {"home": home_dir(home)}


register_membership(cli)  # init, invite, join, members, remove


def _key(home: Path):
    from pythagoras_p2p.net.security import load_key

    key = load_key(home)
    if key is None:
        _fail(f"{home} is not a member of a swarm: run `pythagoras-node init` (a new swarm) or "
              f"`pythagoras-node join TOKEN` (an existing one)")
    return key


@cli.command()
@click.option("--bind", envvar="PYTHAGORAS_BIND", default="0.0.0.0", show_default=True,
              help="Address to listen on [$PYTHAGORAS_BIND].")
@click.option("--port", envvar="PYTHAGORAS_PORT", type=click.IntRange(1, 65535), default=7575,
              show_default=True, help="TCP port [$PYTHAGORAS_PORT].")
@click.option("--workers", envvar="PYTHAGORAS_WORKERS", type=click.IntRange(1, 4096), default=None,
              help="Worker processes [$PYTHAGORAS_WORKERS; default: usable cores].")
@click.option("--no-mdns", envvar="PYTHAGORAS_NO_MDNS", is_flag=True,
              help="Do not announce on mDNS [$PYTHAGORAS_NO_MDNS].")
@click.option("--mdns-interface", envvar="PYTHAGORAS_MDNS_INTERFACE", default=None,
              help="Announce only on the interface with this address [$PYTHAGORAS_MDNS_INTERFACE].")
@click.option("--peer", "peers", multiple=True, envvar="PYTHAGORAS_PEERS",
              help="A peer to reach without mDNS, host[:port]; repeat it, or comma-separate "
                   "[$PYTHAGORAS_PEERS].")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds running calls may take to finish when stopping.")
@click.option("--resources", envvar="PYTHAGORAS_RESOURCES", default="",
              help="What else this machine offers calls, name=amount comma-separated, e.g. "
                   "license=2,scratch=500; may also set the detected cpus, memory (8G) or gpus "
                   "(e.g. gpus=0) [$PYTHAGORAS_RESOURCES].")
@click.option("--replicas", envvar="PYTHAGORAS_REPLICAS", type=click.IntRange(1, 16), default=3,
              show_default=True, help="Nodes that keep each result (its homes); every node of a "
              "swarm should use the same number [$PYTHAGORAS_REPLICAS].")
@owner_options
@click.option("--detach", is_flag=True, help="Run in the background (log: HOME/node.log).")
@click.pass_context
def start(ctx: click.Context, /, bind: str, port: int, workers: int | None, no_mdns: bool,
          mdns_interface: str | None, peers: tuple[str, ...], grace: float, resources: str,
          replicas: int, detach: bool, **owner) -> None:
    """Run this machine's node (in the foreground unless --detach)."""
    from pythagoras_p2p.clouds.connection import parse_peers
    from pythagoras_p2p.defaults import worker_count
    from pythagoras_p2p.errors import ConfigurationError

    from ..daemon.node import NodeConfig
    from ..daemon.runtime import run_node, start_detached

    home = ctx.obj["home"]
    _key(home)
    named = []
    for item in peers:
        try:
            named += parse_peers(item)
        except ConfigurationError:
            _fail(f"--peer/PYTHAGORAS_PEERS {item!r} is not host[:port] (port 1-65535); repeat "
                  f"--peer or separate peers with commas", 2)
    from pythagoras_p2p.resources import parse_spec

    try:
        custom = parse_spec(resources)
    except ConfigurationError as exc:
        _fail(f"{exc}", 2)
    policy = owner_config(**owner)
    if detach:
        argv = ["--home", str(home), "start", "--bind", bind, "--port", str(port), "--grace", str(grace)]
        argv += ["--resources", resources] if resources else []
        argv += ["--replicas", str(replicas)]
        argv += ["--workers", str(workers)] if workers else []
        argv += ["--no-mdns"] if no_mdns else []
        argv += ["--mdns-interface", mdns_interface] if mdns_interface else []
        argv += [a for p in peers for a in ("--peer", p)]
        argv += owner_argv(policy)
        info = start_detached(argv, home)
        click.echo(f"node {info['id']} serving on {bind}:{port} (pid {info['pid']}); "
                   f"log: {home / 'node.log'}; stop it with `pythagoras-node stop`")
        return
    config = NodeConfig(home=home, bind=bind, port=port, workers=workers or worker_count(),
                        mdns=not no_mdns, mdns_interface=mdns_interface, grace=grace, peers=named,
                        resources=custom, replicas=replicas, owner=policy)
    sys.exit(run_node(config))


@cli.command()
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait for the node to exit (its hand-over of results included).")
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the node of this home: it finishes running calls, then hands the results that
    would fall under their number of copies over to the other nodes."""
    from ..daemon.runtime import stop_node

    info = stop_node(ctx.obj["home"], timeout)
    click.echo(f"node {info['id']} (pid {info['pid']}) stopped")


def _ask_node(ctx: click.Context, op: str):
    from pythagoras_p2p.net.nodefile import read_node_file
    from pythagoras_p2p.net.rpc import request

    home = ctx.obj["home"]
    key = _key(home)
    info = read_node_file(home)
    if info is None:
        _fail(f"no node is running for {home}; start one with `pythagoras-node start`")
    return request(info["endpoint"], key, op, timeout=5.0)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: node and peers.")
@click.option("--watch", is_flag=True, help="Refresh the dashboard until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Seconds between refreshes.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool, interval: float) -> None:
    """A dashboard of this node and every peer it knows."""
    if as_json:
        reply = _ask_node(ctx, "status")
        click.echo(json.dumps({"node": reply.fields["node"], "peers": reply.fields["peers"],
                               "members": reply.fields.get("members", [])}, indent=2))
        return
    from .dashboard import show

    show(lambda: _ask_node(ctx, "status").fields, watch=watch, interval=interval)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """The peers this node knows, one per line."""
    reply = _ask_node(ctx, "status")
    rows = reply.fields["peers"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = " (this node)" if row.get("self") else ""
        click.echo(f"{row['id']}  {row['address']}  {row['workers_busy']}/{row['workers_total']} busy"
                   f"  last seen {row['last_seen_s']:.1f}s ago{mark}")


@cli.group()
def cache() -> None:
    """Inspect, check and shrink the local store (results, values, functions)."""


def _store(ctx: click.Context):
    from pythagoras_p2p.store.core import open_store

    home = ctx.obj["home"]
    if not (home / "store").is_dir():
        _fail(f"there is no store in {home} yet; it is created by the first call of a pure "
              f"function (or pass --home / set PYTHAGORAS_HOME to the right one)")
    return open_store(home)


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def cache_stats(ctx: click.Context, as_json: bool) -> None:
    """Entries and sizes of the store."""
    from pythagoras_p2p.store.maintenance import human_bytes, stats

    s = stats(_store(ctx))
    if as_json:
        click.echo(json.dumps(s.as_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"store of {s.home}", show_header=False)
    for label, value in [
        ("results", f"{s.results:,}"), ("values", f"{s.values:,}"), ("functions", f"{s.functions:,}"),
        ("in LMDB", human_bytes(s.lmdb_bytes)),
        ("in value files", f"{human_bytes(s.blob_bytes)} ({s.blob_files:,} files)"),
        ("total", human_bytes(s.total_bytes)), ("cap", human_bytes(s.cap)),
    ]:
        table.add_row(label, value)
    Console().print(table)


@cache.command("ls")
@click.argument("name", required=False)
@click.option("--versions", is_flag=True,
              help="One row per stored version (fingerprint) of each function.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@click.pass_context
def cache_ls(ctx: click.Context, name: str | None, versions: bool, as_json: bool) -> None:
    """Stored results per function (or of the function NAME): how many, their size, last stored,
    which members computed them (--json: their key ids).
    With --versions, per version of each function (a version is a fingerprint: the function's
    code and everything it reaches), with when its results were first and last stored."""
    from pythagoras_p2p.store.listing import listing, stored_versions
    from pythagoras_p2p.store.maintenance import human_bytes

    entries = stored_versions(_store(ctx), name) if versions else listing(_store(ctx), name)
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no stored results of {name!r}" if name else "the store holds no results")
        return
    from rich.console import Console, JustifyMethod
    from rich.table import Table

    from pythagoras_p2p.store.listing import FunctionEntry, Version

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

    columns: list[tuple[str, JustifyMethod]] = [("function", "left")]
    if versions:
        columns.append(("version", "left"))
    columns += [("results", "right"), ("size", "right")]
    if versions:
        columns.append(("first stored", "left"))
    columns.append(("last stored", "left"))
    signed = any(w["key_id"] for e in entries if isinstance(e, FunctionEntry)
                 for w in e.computed_by)
    if signed:
        columns.append(("computed by", "left"))
    table = Table(title=f"results stored in {ctx.obj['home']}")
    for heading, justify in columns:  # a long name folds: it is what `cache forget` takes
        table.add_column(heading, justify=justify, overflow="fold")
    for e in entries:
        if isinstance(e, Version):
            version = e.fingerprint[:16] + (" (newest)" if e.newest else "")
            table.add_row(e.function, version, f"{e.results:,}", human_bytes(e.nbytes),
                          when(e.first_stored), when(e.last_stored))
        else:
            by = [", ".join(f"{w['host'] or 'unsigned'}: {w['results']:,}"
                            for w in e.computed_by[:3])] if signed else []
            table.add_row(e.function, f"{e.results:,}", human_bytes(e.nbytes),
                          when(e.last_stored), *by)
    Console().print(table)


@cache.command("verify")
@click.option("--repair", is_flag=True, help="Delete bad values, the results naming them, and "
              "bad function records.")
@click.pass_context
def cache_verify(ctx: click.Context, repair: bool) -> None:
    """Check that every stored value matches its address and every function record its key;
    exit 1 if any does not."""
    from pythagoras_p2p.store.maintenance import verify

    report = verify(_store(ctx), repair=repair)
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    click.echo(f"checked {report.values_checked:,} values, {report.results_checked:,} results "
               f"and {report.functions_checked:,} function records: "
               f"{len(report.problems)} problem(s)"
               + (f", {report.repaired} entries repaired" if repair else ""))
    if report.unverifiable:
        click.echo(f"{report.unverifiable:,} value(s) could not be checked: their address came "
                   f"from their pickle, which another process may write differently; they are "
                   f"kept")
    if report.problems and not repair:
        click.echo("run `pythagoras-node cache verify --repair` to delete them (results are "
                   "recomputed on their next call)", err=True)
        sys.exit(1)


@cache.command("gc")
@click.option("--max-size", help="Drop the oldest results until the store fits, e.g. 10G.")
@click.option("--older-than", type=float, help="Drop results stored more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--force", is_flag=True, help="Drop results even where no other node of the swarm "
              "holds a copy (the swarm's last copies).")
@click.pass_context
def cache_gc(ctx: click.Context, max_size: str | None, older_than: float | None, dry_run: bool,
             force: bool) -> None:
    """Remove unreferenced values and stale files; optionally old results too (never the
    swarm's last copy of a result, unless --force)."""
    from pythagoras_p2p.store.maintenance import gc, human_bytes

    from .copies import last_copies

    max_bytes = None
    if max_size is not None:
        try:
            max_bytes = parse_size(max_size)
        except ValueError:
            _fail(f"--max-size {max_size!r} is not a size; write e.g. 500M, 10G or 1T", 2)
    if older_than is not None and older_than < 0:
        _fail("--older-than takes a number of days of 0 or more", 2)
    report = gc(_store(ctx), max_bytes=max_bytes,
                older_than=None if older_than is None else older_than * 86400, dry_run=dry_run,
                keep=None if force else lambda calls: last_copies(ctx.obj["home"], calls))
    verb = "would remove" if dry_run else "removed"
    if report.last_copies_kept:
        click.echo(f"kept {report.last_copies_kept:,} results that no other node of the swarm "
                   f"holds (their last copies); `cache gc --force` drops them too", err=True)
    click.echo(f"{verb} {report.results_removed:,} results, {report.values_removed:,} values and "
               f"{report.files_removed:,} stray files, {human_bytes(report.bytes_freed)}")


from .doctor import doctor as _doctor  # noqa: E402  (its own module: it checks, this parses)
from .forgetting import cache_forget  # noqa: E402

cli.add_command(_doctor)
cache.add_command(cache_forget)
cli.add_command(pause)
cli.add_command(dashboard)
cli.add_command(resume)


def main() -> None:
    """Entry point of the ``pythagoras-node`` console script."""
    try:
        cli(standalone_mode=True)
    except PythagorasError as exc:
        _fail(str(exc))
    except ConnectionError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
