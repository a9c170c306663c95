"""Making a swarm and certifying a machine without the network: ``init``, and an admin's home
certifying another home on the same machine (a client home of its own, a test's hosts).

A join over the network (``invite`` → ``join``) certifies the same way, on the admin's node
(see :mod:`pythagoras_p2p.daemon.membership`).
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from ..errors import SecurityError
from .home import Trust
from .invites import owner_name
from .keys import NodeKeys, SwarmSigningKey
from .members import Member, Members

__all__ = ["create_swarm", "admit", "admit_all"]


def create_swarm(home: Path, *, name: str | None = None, hostname: str | None = None,
                 owner: str | None = None) -> Members:
    """A new swarm: its signing key (kept in ``home``) and ``home`` as its first admin."""
    from ..net.nodefile import node_identity

    root = SwarmSigningKey.create(home)
    keys = NodeKeys.load_or_create(home)
    me = Member.certify(node_id=node_identity(home), hostname=hostname or socket.gethostname(),
                        owner=owner or owner_name(), roles=("admin", "node"),
                        curve_public=keys.curve_public, signing_public=keys.signing_public,
                        swarm_public=root.public, issuer="swarm", sign=root.sign)
    members = Members.first(name or f"swarm-{secrets.token_hex(3)}", root, me)
    members.save(home)
    return members


def admit(admin_home: Path, home: Path, *, hostname: str | None = None, owner: str | None = None,
          admin: bool = False, node: bool = True, share_with: tuple = ()) -> Members:
    """Certify ``home``'s keys (made if need be) with the admin keys of ``admin_home``; the new
    list is kept in both homes and those of ``share_with`` (a node takes the list from its home
    within a second; the others hear of it from their peers)."""
    from ..net.nodefile import node_identity

    trust = Trust.load(admin_home)
    if not trust.is_admin or trust.members is None:
        raise SecurityError(f"{admin_home} is not an admin of a swarm")
    keys = NodeKeys.load_or_create(home)
    roles = ("admin",) * admin + (("node",) if node else ("client",))
    cert = Member.certify(node_id=node_identity(home) if node else "",
                          hostname=hostname or socket.gethostname(), owner=owner or owner_name(),
                          roles=roles, curve_public=keys.curve_public,
                          signing_public=keys.signing_public,
                          swarm_public=trust.members.swarm_public, issuer=trust.keys.key_id,
                          sign=trust.keys.sign)
    members = trust.members.with_member(cert, trust.keys.key_id, trust.keys.sign)
    for where in (admin_home, home, *share_with):
        members.save(where)
    return members


def admit_all(admin_home: Path, homes, *, admin: bool = False, hostnames=None) -> Members:
    """Certify every home of ``homes`` (host names: ``hostnames``, else each home's folder name)
    and leave the final list in all of them and in ``admin_home``."""
    homes = [Path(h) for h in homes]
    members = Members.load(admin_home)
    if members is None:
        raise SecurityError(f"{admin_home} is not an admin of a swarm")
    for i, home in enumerate(homes):
        name = hostnames[i] if hostnames else home.name
        members = admit(admin_home, home, hostname=name, admin=admin)
    for home in homes:
        members.save(home)
    return members
