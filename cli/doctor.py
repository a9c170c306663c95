"""``pythagoras-node doctor``: what a person would otherwise debug by hand, checked in one go.

Each check gives one or more :class:`Finding`\\ s: what was found and, when something is wrong,
what to do about it. This machine's side is checked here (the store, the swarm key, the port,
mDNS, the node's log); the peers' side (reachable, round trip, clock, the Python and package
versions that keep results apart) in :mod:`.doctor_peers`. Nothing is changed: a doctor only
looks (the store is opened read-mostly; one temporary file proves it writable).

Levels: ``ok``; ``info`` (worth knowing, nothing to do); ``warn`` (works, but something will
surprise you); ``fail`` (something does not work). The command exits 1 when any check fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import click

from .findings import Finding

__all__ = ["Finding", "doctor", "run_checks"]

#: Values and results checked by the store's sample verification.
SAMPLE = 200
#: Below this much free space on the store's disk, a warning.
LOW_SPACE = 1 << 30
#: How far back the node's log is read for errors.
LOG_WINDOW = timedelta(hours=1)
_LOG_TAIL = 4 << 20  # bytes of the log read (its end)
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ (ERROR|CRITICAL) (\S+): (.*)$")


def run_checks(home: Path, *, port: int, mdns: bool, peers: tuple[str, ...] = (),
               mdns_wait: float = 3.0) -> list[Finding]:
    """Every check, in the order a person would look."""
    from .doctor_peers import check_peers

    findings = check_store(home) + check_key(home)
    key = _key_or_none(home)
    node = _running_node(home)
    findings += check_node(home, node, key, port)
    if mdns:
        findings += check_mdns(key, mdns_wait)
    else:
        findings.append(Finding("mdns", "info", "not checked (--no-mdns)"))
    if key is not None:
        findings += check_peers(home, key, node, peers)
    findings += check_log(home)
    return findings


# ---------------------------------------------------------------------------------- the store

def check_store(home: Path) -> list[Finding]:
    store_dir = home / "store"
    if not store_dir.is_dir():
        return [Finding("store", "info", f"no store in {home} yet (the first call of a pure "
                        f"function makes it)")]
    found = [_writable(store_dir), _free_space(store_dir)]
    if found[0].level == "fail":
        return found
    return found + [_sample_verified(home)]


def _writable(store_dir: Path) -> Finding:
    probe = store_dir / f".doctor-{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        return Finding("store", "fail", f"{store_dir} is not writable ({exc.strerror})",
                       f"give this user write access (chown -R {os.getenv('USER', 'you')} "
                       f"{store_dir.parent}), or use another home (PYTHAGORAS_HOME)")
    return Finding("store", "ok", f"{store_dir} is writable")


def _free_space(store_dir: Path) -> Finding:
    from pythagoras_p2p.store.maintenance import human_bytes

    usage = shutil.disk_usage(store_dir)
    text = f"{human_bytes(usage.free)} free of {human_bytes(usage.total)} on the store's disk"
    if usage.free < LOW_SPACE:
        return Finding("store", "warn", text, "free space, or shrink the store: "
                       "`pythagoras-node cache gc --max-size 10G`", {"free": usage.free})
    return Finding("store", "ok", text, details={"free": usage.free})


def _sample_verified(home: Path) -> Finding:
    """Up to :data:`SAMPLE` values read back and checked against their addresses, and the
    results naming them present (``cache verify`` checks them all)."""
    from pythagoras_p2p.identity.encoding import checked_address
    from pythagoras_p2p.store.core import open_store
    from pythagoras_p2p.store.packing import unpack
    from pythagoras_p2p.store.records import live

    try:
        store = open_store(home)
        snapshot = store.snapshot()
    except Exception as exc:  # a store that cannot be opened is the finding
        return Finding("store", "fail", f"the store cannot be opened: {exc}",
                       "run `pythagoras-node cache verify` and follow what it says")
    bad, checked = [], 0
    results = snapshot.results[:SAMPLE]
    sample = list(snapshot.values.items())[:SAMPLE // 2]  # by address, and inside results
    sample += [(a, snapshot.inline[c]) for c, a in results if c in snapshot.inline]
    for address, record in sample[:SAMPLE]:
        checked += 1
        try:
            view = store.checked_view(address, record, always=True) if live(record) is not None else None
            if view is not None:
                found, derivable = checked_address(unpack(view, writable=False))
                if found != address and derivable:
                    bad.append(address.hex()[:16])
        except Exception:
            bad.append(address.hex()[:16])
    dangling = sum(1 for call, address in results if snapshot.value_record(call, address) is None)
    if bad or dangling:
        return Finding("store", "fail", f"of {checked} values checked, {len(bad)} do not match "
                       f"their address; {dangling} of {len(results)} results name a missing value",
                       "run `pythagoras-node cache verify --repair` (bad results are deleted and "
                       "computed again)", {"bad_values": bad, "dangling_results": dangling})
    return Finding("store", "ok", f"a sample of {checked} values and {len(results)} results "
                   f"reads back intact", details={"values": checked, "results": len(results)})


# ---------------------------------------------------------------------------------- the key

def _key_or_none(home: Path):
    from pythagoras_p2p.errors import PythagorasError
    from pythagoras_p2p.net.security import load_key

    try:
        return load_key(home)
    except PythagorasError:
        return None


def check_key(home: Path) -> list[Finding]:
    from pythagoras_p2p.errors import PythagorasError
    from pythagoras_p2p.net.security import load_key
    from pythagoras_p2p.trust import NodeKeys

    path = NodeKeys.path(home)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
    try:
        key = load_key(home)  # the public half is derived from the secret one and compared
    except PythagorasError as exc:
        return [Finding("key", "fail", str(exc), "run `pythagoras-node join --force TOKEN` "
                        "with a token from `pythagoras-node invite` on an admin")]
    if key is None:
        return [Finding("key", "info", f"{home} is no member of a swarm: this machine runs on "
                        f"its own (the embedded default)", "to join a swarm: `pythagoras-node "
                        "join TOKEN` (from `pythagoras-node invite` on an admin); to make one: "
                        "`pythagoras-node init`")]
    found = [Finding("key", "ok", f"swarm {key.name!r} (tag {key.tag}); member {key.key_id} "
                     f"(list version {key.members.version}); its key halves match",
                     details={"swarm": key.name, "tag": key.tag, "key_id": key.key_id})]
    if mode & 0o077:
        found.append(Finding("key", "warn", f"{path} has mode {mode:04o}: other users of this "
                             f"machine can read it, and whoever holds it can run code on "
                             f"every node", f"chmod 600 {path}", {"mode": f"{mode:04o}"}))
    return found


# ---------------------------------------------------------------------------------- node, port

def _running_node(home: Path) -> dict | None:
    from pythagoras_p2p.net.nodefile import read_node_file

    return read_node_file(home)


def check_node(home: Path, node: dict | None, key, port: int) -> list[Finding]:
    if node is not None:
        return [Finding("node", "ok", f"this machine's node runs (pid {node['pid']}, "
                        f"{node['endpoint']})", details={"pid": node["pid"],
                                                         "endpoint": node["endpoint"]}),
                Finding("port", "ok", f"port {node['port']} is this machine's node's")]
    found = [Finding("node", "warn" if key is not None else "info",
                     "this machine's node is not running",
                     "start it: `pythagoras-node start --detach`" if key is not None else "")]
    return found + [_port_free(port)]


def _port_free(port: int) -> Finding:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError as exc:
            return Finding("port", "fail", f"port {port} is taken by another program "
                           f"({exc.strerror}), so a node cannot listen there",
                           f"stop that program (`ss -ltnp 'sport = :{port}'` names it), or start "
                           f"the node on another port: `pythagoras-node start --port "
                           f"{port + 1}`", {"port": port})
    return Finding("port", "ok", f"port {port} is free for a node", details={"port": port})


# ---------------------------------------------------------------------------------- mDNS

def check_mdns(key, wait: float) -> list[Finding]:
    """Announce a throwaway service and listen: does this machine hear itself, and whom else?"""
    try:
        from .doctor_mdns import listen
    except ImportError as exc:
        return [Finding("mdns", "warn", f"mDNS cannot be checked ({exc})")]
    heard = listen(key.tag if key is not None else "", wait)
    found = []
    if heard.error:
        found.append(Finding("mdns", "fail", f"mDNS does not work here: {heard.error}",
                             "name peers instead: `pythagoras-node start --peer HOST:PORT`"))
    elif not heard.self_heard:
        found.append(Finding("mdns", "warn", f"this machine did not hear its own announcement "
                             f"within {wait:g} s: multicast is blocked (a firewall, or a network "
                             f"that drops it)", "allow UDP port 5353 (mDNS), or name peers: "
                             "`pythagoras-node start --peer HOST:PORT`"))
    else:
        found.append(Finding("mdns", "ok", "this machine hears its own mDNS announcement"))
    if heard.members:
        found.append(Finding("mdns", "ok", f"{len(heard.members)} node(s) of this swarm "
                             f"announced: {', '.join(sorted(heard.members))}"))
    if heard.other_swarms:
        found.append(Finding("mdns", "info", f"{len(heard.other_swarms)} node(s) of other "
                             f"swarms announce on this network (tags "
                             f"{', '.join(sorted(set(heard.other_swarms.values())))}); they "
                             f"never take this swarm's calls"))
    return found


# ---------------------------------------------------------------------------------- the log

def check_log(home: Path, now: datetime | None = None) -> list[Finding]:
    path = home / "node.log"
    if not path.exists():
        return [Finding("log", "info", f"no node log at {path} (a node started with --detach "
                        f"writes one)")]
    now = now or datetime.now()
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - _LOG_TAIL))
        lines = fh.read().decode(errors="replace").splitlines()
    errors = []
    for line in lines:
        match = _LOG_LINE.match(line)
        if match and now - datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S") <= LOG_WINDOW:
            errors.append(line)
    if errors:
        return [Finding("log", "warn", f"{len(errors)} error(s) in {path} in the last hour; the "
                        f"last: {errors[-1]}", f"read them: `grep -E 'ERROR|CRITICAL' {path}`",
                        {"errors": errors[-20:]})]
    return [Finding("log", "ok", f"no errors in {path} in the last hour")]


# ---------------------------------------------------------------------------------- command

_MARK = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--port", envvar="PYTHAGORAS_PORT", type=click.IntRange(1, 65535), default=7575,
              show_default=True, help="The node's port, checked when no node runs.")
@click.option("--no-mdns", envvar="PYTHAGORAS_NO_MDNS", is_flag=True,
              help="Do not announce nor listen on mDNS (no multicast leaves this machine).")
@click.option("--mdns-wait", type=click.FloatRange(0.5, 600), default=3.0, show_default=True,
              metavar="SECONDS", help="Listen on mDNS at most this long (a slow network: more).")
@click.option("--peer", "peers", multiple=True, metavar="HOST[:PORT]",
              help="Check this peer too (repeatable); the running node's peers are checked.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, port: int, no_mdns: bool, mdns_wait: float,
           peers: tuple[str, ...]) -> None:
    """Check this machine's store, key, port, mDNS, node log and peers; say what to do."""
    home = ctx.obj["home"]
    started = time.monotonic()
    findings = run_checks(home, port=port, mdns=not no_mdns, peers=peers, mdns_wait=mdns_wait)
    failed = any(f.level == "fail" for f in findings)
    if as_json:
        click.echo(json.dumps({"home": str(home), "ok": not failed,
                               "seconds": round(time.monotonic() - started, 2),
                               "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        for f in findings:
            click.echo(f"{_MARK.get(f.level, f.level)}  {f.check:<6} {f.message}")
            if f.fix and f.level != "ok":
                click.echo(f"              → {f.fix}")
        worst = "some checks failed" if failed else "nothing failed"
        click.echo(f"\n{worst} ({len(findings)} findings for {home})")
    sys.exit(1 if failed else 0)
