"""The membership commands: ``init``, ``invite``, ``join``, ``members``, ``remove``.

``init`` makes a swarm (its signing key and first admin), ``invite`` (on an admin) a one-time
join line, ``join`` uses it (this machine's own keys are made here and certified by the admin's
node), ``members`` lists who belongs, ``remove`` (on an admin) revokes a member: the new list
goes to this machine's node, which passes it on with its heartbeats.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

__all__ = ["register"]


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _when(seconds: float | None, short: bool = False) -> str:
    return "-" if not seconds else time.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M",
                                                 time.localtime(seconds))


_LONGEST_INVITATION = 365 * 86400  # an invitation is for one machine soon, not for ever


def _duration(text: str) -> float:
    from ..daemon.owner.manual import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds > _LONGEST_INVITATION:
        raise click.BadParameter(f"{text!r} is longer than an invitation may last (365d); write a "
                                 f"shorter one, e.g. 1h or 2d, and invite again when it expires")
    return seconds


def _admin(home: Path) -> tuple[Any, Any]:
    """This home's trust and member list, when this machine is an admin (else it fails)."""
    from pythagoras_p2p.trust import Trust

    trust = Trust.load(home)
    if trust.members is None:
        _fail(f"{home} is not a member of a swarm: run `pythagoras-node init` (a new swarm) or "
              f"`pythagoras-node join TOKEN`")
    if not trust.is_admin:
        _fail("only an admin of the swarm can do that, and this machine is not one; run it on an "
              "admin's machine (`pythagoras-node members` lists the admins)")
    return trust, trust.members


@click.command()
@click.option("--name", help="A name for the swarm, for people (default: random).")
@click.option("--owner", help="Who this machine belongs to (default: your login name).")
@click.option("--hostname", help="This machine's name in the swarm (default: its host name).")
@click.option("--force", is_flag=True, help="Make a new swarm even if this home belongs to one.")
@click.pass_context
def init(ctx: click.Context, name: str | None, owner: str | None, hostname: str | None,
         force: bool) -> None:
    """Make a new swarm: its signing key, with this machine as its first admin."""
    from pythagoras_p2p.net.security import KEY_FILE
    from pythagoras_p2p.trust import Members, SwarmSigningKey, members_path
    from pythagoras_p2p.trust.enroll import create_swarm

    home = ctx.obj["home"]
    current = None
    try:
        current = Members.load(home)
    except Exception:
        pass  # a damaged list: a new swarm replaces it (with --force)
    if (current is not None or members_path(home).exists()) and not force:
        _fail(f"this home already belongs to swarm "
              f"{current.swarm_name if current else '(damaged list)'!r}; use --force to make a new "
              f"swarm (the machines of the old one are left out)")
    members = create_swarm(home, name=name, hostname=hostname, owner=owner)
    me = members.members[0]
    old = Path(home) / KEY_FILE
    if old.exists():
        old.rename(old.with_name(KEY_FILE + ".old"))
        click.echo(f"the one-key swarm's {KEY_FILE} is kept as {KEY_FILE}.old (no longer used)")
    click.echo(f"created swarm {members.swarm_name!r} (tag {members.tag}); this machine "
               f"({me.hostname}, owner {me.owner}, key {me.key_id}) is its first admin.")
    click.echo(f"The swarm's signing key is {SwarmSigningKey.path(home)} (mode 0600); it never "
               f"leaves this machine.")
    click.echo("")
    click.echo("Start this machine's node:        pythagoras-node start --detach")
    click.echo("Then, for each other machine:     pythagoras-node invite   (here)")
    click.echo("                                  pythagoras-node join TOKEN   (there)")


@click.command()
@click.option("--expires", default="1h", show_default=True,
              help="How long the invitation may be used (30m, 1h, 2d, or seconds).")
@click.option("--admin", "as_admin", is_flag=True, help="Make the new member an admin as well.")
@click.pass_context
def invite(ctx: click.Context, expires: str, as_admin: bool) -> None:
    """Print a one-time join line for one new machine (admins only; this machine's node must run)."""
    from pythagoras_p2p.net.mdns import local_addresses
    from pythagoras_p2p.net.nodefile import read_node_file
    from pythagoras_p2p.trust.invites import Invitations, make_token

    seconds = _duration(expires)
    home = ctx.obj["home"]
    trust, current = _admin(home)
    info = read_node_file(home)
    if info is None:
        _fail("a newcomer joins through this machine's node, and none runs for this home: start "
              "it with `pythagoras-node start --detach`, then run `pythagoras-node invite` again")
    bind = info.get("bind", "0.0.0.0")
    hosts = local_addresses() if bind in ("0.0.0.0", "*", "::") else [bind]
    addresses = [f"{h}:{info['port']}" for h in (hosts or ["127.0.0.1"])]
    invitation, secret = Invitations(home).create(expires_in=seconds, admin=as_admin,
                                                  by=trust.keys.key_id)
    token = make_token(invitation=invitation, secret=secret, swarm_name=current.swarm_name,
                       swarm_public=current.swarm_public,
                       admin_curve_public=trust.keys.curve_public,
                       admin_signing_public=trust.keys.signing_public, addresses=addresses,
                       sign=trust.keys.sign)
    role = " as an admin" if as_admin else ""
    click.echo(f"invitation {invitation.id} to swarm {current.swarm_name!r}{role}: one "
               f"machine, once, until {_when(invitation.expires)}. On the new machine run:")
    click.echo(f"  pythagoras-node join {token}")
    click.echo("The token holds no member's key: it lets one machine ask this node to certify "
               "its own keys.")


@click.command()
@click.argument("token", nargs=-1, required=True)
@click.option("--owner", help="Who this machine belongs to (default: your login name).")
@click.option("--hostname", help="This machine's name in the swarm (default: its host name).")
@click.option("--force", is_flag=True, help="Leave the swarm this home belongs to for this one.")
@click.option("--client", "as_client", is_flag=True,
              help="This machine runs no node: certify it as a client only.")
@click.option("--timeout", type=click.FloatRange(min=0.5), default=15.0, show_default=True,
              help="Seconds to wait for the admin's node.")
@click.pass_context
def join(ctx: click.Context, token: tuple[str, ...], owner: str | None, hostname: str | None,
         force: bool, as_client: bool, timeout: float) -> None:
    """Become a member of a swarm with the line `pythagoras-node invite` printed on an admin."""
    from pythagoras_p2p.net.nodefile import node_identity
    from pythagoras_p2p.trust import Members, NodeKeys
    from pythagoras_p2p.trust.invites import ASK_AGAIN, owner_name, read_token
    from pythagoras_p2p.trust.keys import unb64

    data = read_token(" ".join(token))
    home = ctx.obj["home"]
    anchor = unb64(data["swarm_public"])
    keys = NodeKeys.load_or_create(home)
    try:
        current = Members.load(home)
    except Exception:
        current = None
    if current is not None and current.swarm_public == anchor and current.is_admitted(keys.key_id):
        _fail(f"this machine is already a member of swarm {current.swarm_name!r} (key "
              f"{keys.key_id}); the token was not used")
    if current is not None and current.swarm_public != anchor and not force:
        _fail(f"this home belongs to swarm {current.swarm_name!r}; use --force to leave it for "
              f"swarm {data.get('swarm')!r}")
    from pythagoras_p2p.net import wire

    reply = _ask_admin(data, keys, "" if as_client else node_identity(home),
                       hostname or socket.gethostname(), owner or owner_name(), timeout)
    if reply is None:
        _fail(f"no admin node answered at {', '.join(data['addresses'])} within {timeout:g} s. "
              f"The admin's node must be running and reachable from here; if it is, it does not "
              f"know this token (forged, or cancelled): {ASK_AGAIN}")
    if reply.op == "error":
        _fail(reply.fields["message"] if reply.fields["code"] == wire.ERR_INVITATION
              else f"the admin's node refused: {reply.fields['message']}")
    members = Members.loads(bytes(reply.bodies[0]), anchor=anchor)
    if not members.is_admitted(keys.key_id):
        _fail("the admin's node answered without certifying this machine; " + ASK_AGAIN)
    members.save(home)
    me = members.by_key_id(keys.key_id)
    assert me is not None  # admitted just above
    click.echo(f"joined swarm {members.swarm_name!r} (tag {members.tag}) as {me.hostname} "
               f"(owner {me.owner}, roles {', '.join(me.roles)}, key {me.key_id}), certified by "
               f"admin {reply.fields.get('admin')}; the swarm has {len(members.admitted)} members.")
    click.echo(f"This machine's keys are in {NodeKeys.path(home)} (mode 0600); they never leave it.")
    click.echo("Start this machine's node with:  pythagoras-node start --detach")


def _ask_admin(data: dict, keys, node_id: str, hostname: str, owner: str, timeout: float):
    """Send the join request to every address of the admin's node at once; the first answer."""
    import zmq

    from pythagoras_p2p.net import wire
    from pythagoras_p2p.net.sockets import endpoint
    from pythagoras_p2p.trust.invites import JOIN_PROOF
    from pythagoras_p2p.trust.keys import b64

    proof = keys.sign(JOIN_PROOF + data["invitation"].encode() + b"\0" + keys.curve_public)
    request = wire.build("join", 1, node_id=node_id, hostname=hostname, owner=owner,
                         curve_public=keys.curve_public.decode(),
                         signing_public=b64(keys.signing_public), proof=b64(proof))
    context: Any = zmq.Context.instance()
    poller, sockets = zmq.Poller(), []
    try:
        for address in data["addresses"]:
            host, _, port = str(address).rpartition(":")
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            sock.ipv6 = True
            sock.curve_publickey = data["invitation_public"].encode()
            sock.curve_secretkey = data["invitation_secret"].encode()
            sock.curve_serverkey = data["server"].encode()
            sock.connect(endpoint(host.strip("[]"), int(port)))
            sock.send_multipart(request)
            poller.register(sock, zmq.POLLIN)
            sockets.append(sock)
        ready = dict(poller.poll(int(timeout * 1000)))
        for sock in sockets:
            if sock in ready:
                return wire.parse(sock.recv_multipart())
        return None
    finally:
        for sock in sockets:
            sock.close(0)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def members(ctx: click.Context, as_json: bool) -> None:
    """The members of this machine's swarm: host, owner, roles, node id, key id, issued, seen last."""
    from pythagoras_p2p.trust import Members

    home = ctx.obj["home"]
    current = Members.load(home)
    if current is None:
        _fail(f"{home} is not a member of a swarm: run `pythagoras-node init` or "
              f"`pythagoras-node join TOKEN`")
    rows = _listing_from_node(home)
    if rows is None:  # no node runs here: the list this home holds, without "seen last"
        rows = [{"hostname": m.hostname, "owner": m.owner, "roles": list(m.roles),
                 "node_id": m.node_id, "key_id": m.key_id, "issued": m.issued,
                 "removed": current.is_revoked(m.key_id), "self": False, "seen_last": None}
                for m in current.members]
    if as_json:
        click.echo(json.dumps({"swarm": current.swarm_name, "version": current.version,
                               "members": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"swarm {current.swarm_name!r}, member list version {current.version}",
                  box=None, header_style="bold underline")
    for heading in ("host", "owner", "roles", "node", "key", "issued", "seen last"):
        table.add_column(heading, no_wrap=True)
    for row in sorted(rows, key=lambda r: (r["removed"], r["hostname"])):
        roles = "removed" if row["removed"] else ",".join(row["roles"])
        table.add_row(row["hostname"] + ("*" if row["self"] else ""), row["owner"], roles,
                      row["node_id"] or "-", row["key_id"], _when(row["issued"], True),
                      _when(row["seen_last"], True))
    Console().print(table)


def _listing_from_node(home: Path) -> list | None:
    from pythagoras_p2p.net.nodefile import read_node_file
    from pythagoras_p2p.net.rpc import request
    from pythagoras_p2p.net.security import load_key

    info = read_node_file(home)
    if info is None:
        return None
    try:
        key = load_key(home)
        if key is None:
            return None
        return request(info["endpoint"], key, "status", timeout=5.0).fields.get("members")
    except Exception:
        return None


@click.command()
@click.argument("member")
@click.option("--drop-results", is_flag=True,
              help="Also make every node drop (and refuse) the results it computed.")
@click.pass_context
def remove(ctx: click.Context, member: str, drop_results: bool) -> None:
    """Remove MEMBER (a host name, node id or key id) from the swarm (admins only)."""
    from pythagoras_p2p.net.nodefile import read_node_file

    home = ctx.obj["home"]
    trust, current = _admin(home)
    found = current.find(member)
    if not found:
        _fail(f"no member is known as {member!r}; `pythagoras-node members` lists them (host "
              f"name, node id or key id)")
    if len(found) > 1:
        _fail(f"{len(found)} members are known as {member!r}: name one by its key id: " +
              ", ".join(f"{m.key_id} ({m.owner}, node {m.node_id or '-'})" for m in found))
    target = found[0]
    if target.key_id == trust.keys.key_id:
        _fail("that is this machine itself; remove it from another admin's machine")
    if current.is_revoked(target.key_id) and (not drop_results
                                               or target.key_id in current.dropped()):
        click.echo(f"{target.hostname} (key {target.key_id}) was already removed")
        return
    updated = current.without([target.key_id], trust.keys.key_id, trust.keys.sign,
                              drop_results=drop_results)
    updated.save(home)
    click.echo(f"removed {target.hostname} (owner {target.owner}, key {target.key_id}) from swarm "
               f"{updated.swarm_name!r} (member list version {updated.version})"
               + ("; every node drops the results it computed." if drop_results else "."))
    if read_node_file(home) is None:
        click.echo("No node runs for this home: the removal reaches the swarm when it starts "
                   "(`pythagoras-node start --detach`).")
    else:
        click.echo("This machine's node passes it on: every live node refuses it within seconds, "
                   "and it cannot join again with an old token.")


@click.command()
@click.pass_context
def token(ctx: click.Context) -> None:
    """Join lines are one-time invitations now: see `pythagoras-node invite`."""
    _fail("a swarm has no shared token any more: each machine joins with its own one-time "
          "invitation; run `pythagoras-node invite` on an admin's machine")


def register(group: click.Group) -> None:
    for command in (init, invite, join, members, remove, token):
        group.add_command(command)
