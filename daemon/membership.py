"""The node's side of membership: who each message is from, the member list's travels, joins.

Every message a node's ROUTER reads carries the ``User-Id`` its ZAP handler gave the connection
(:class:`~pythagoras_p2p.net.security.Authenticator`): a member's key id, ``removed:KEYID`` or
``invited:ID``. :meth:`Membership.admits` checks it against the *current* list before anything
else reads the message, so a member removed while its connection is open is refused from the
next message on: it is told it was removed; a stranger (no ``User-Id``: no ZAP handler ran)
is answered nothing. An invitation's key may only ask to join (:meth:`on_join`, on an admin).

The member list travels with the heartbeats: each ping answer carries its version (``mv``), and
a node that hears a newer one asks that peer for it (``members``), verifies it and keeps it.
A list written by a command of this home (``remove``, ``join``) is picked up once a second.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pythagoras_p2p.net import wire
from pythagoras_p2p.net.security import USER_INVITED, USER_REMOVED
from pythagoras_p2p.trust import Member, Members
from pythagoras_p2p.trust.invites import JOIN_PROOF, Invitations
from pythagoras_p2p.trust.keys import unb64, verify_signature

__all__ = ["Membership", "REMOVED_MESSAGE"]

log = logging.getLogger(__name__)

REMOVED_MESSAGE = ("this machine ({who}) was removed from the swarm {swarm!r} by an admin: no node "
                   "of the swarm serves it any more. An admin can let it in again with "
                   "`pythagoras-node invite` (then `pythagoras-node join TOKEN` here)")


class Membership:
    """Owned by the node's loop."""

    def __init__(self, node: Any):
        self.node = node
        self.trust = node.trust
        self.invitations = Invitations(node.home)
        self.seen: dict[str, float] = {}  # key id → when a message from it was last read
        self.refused = 0
        self._asking: set[str] = set()  # node ids asked for their list, not yet answered
        self._told: set[str] = set()  # removed keys told (logged) once

    @property
    def members(self) -> Members:
        return self.trust.members

    def invited(self, curve_public: bytes) -> str | None:
        """The invitation whose key this is (for the ZAP handler): admins only."""
        return self.invitations.lookup(curve_public) if self.trust.is_admin else None

    # ------------------------------------------------------------------ each message

    def admits(self, frames: list) -> bool:
        """Whether the node may serve ``frames`` (routing id first); answers those it may not."""
        try:
            user = frames[1].get("User-Id")
        except Exception:
            user = ""
        if user and self.members.is_admitted(user):
            self.seen[user] = time.time()
            return True
        self.refused += 1
        if user.startswith(USER_INVITED):
            self._invited(frames, user[len(USER_INVITED):])
        elif user:  # removed: by ZAP (a new connection) or since (one already open)
            key_id = user.removeprefix(USER_REMOVED)
            member = self.members.by_key_id(key_id)
            who = f"{member.hostname}, key {key_id}" if member is not None else f"key {key_id}"
            if key_id not in self._told:
                self._told.add(key_id)
                log.warning("refusing %s: it was removed from the swarm", who)
            self._reply_error(frames, wire.ERR_REMOVED,
                              REMOVED_MESSAGE.format(who=who, swarm=self.members.swarm_name))
        return False

    def _reply_error(self, frames: list, code: str, message: str) -> None:
        try:
            msg = wire.parse([frames[1].bytes, *[f.buffer for f in frames[2:]]])
            ids = [msg.id] if msg.op != "many" else [wire.parse(m).id for m in wire.unbundle(msg)]
        except wire.WireError:
            ids = [0]
        for rid in ids:
            self.node.router.send_multipart(
                [frames[0].bytes, *wire.build("error", rid, code=code, message=message)])

    # ------------------------------------------------------------------ the list's travels

    def on_members(self, ident: bytes, msg: wire.Message) -> None:
        self.node.outbox.send(ident, wire.build("ok", msg.id, [self.members.dumps().encode()],
                                                  version=self.members.version))

    def heard_version(self, peer: Any, version: Any) -> None:
        """A peer's ping answer said its list is at ``version``: ask for it when newer."""
        if not isinstance(version, int) or version <= self.members.version:
            return
        if peer.node_id in self._asking:
            return
        self._asking.add(peer.node_id)
        self.node.peering.ask(peer, "members", self._on_list)

    def _on_list(self, peer: Any, reply: wire.Message | None) -> None:
        self._asking.discard(getattr(peer, "node_id", None))
        if reply is None or reply.op != "ok" or not reply.bodies:
            return
        try:
            members = Members.loads(bytes(reply.bodies[0]), anchor=self.members.swarm_public)
        except Exception as exc:
            log.warning("ignoring the member list of peer %s: %s", peer.address, exc)
            return
        self.take(members, f"peer {peer.node_id}")

    def take(self, members: Members, source: str) -> bool:
        before = self.members
        if not self.trust.accept(members):
            return False
        self.changed(before, source)
        return True

    def tick(self) -> bool:
        """Once a second (and for a key the ZAP handler does not know): a list a command of
        this home wrote. Whether there was one."""
        before = self.members
        if self.trust.reload():
            self.changed(before, "this machine")
            return True
        return False

    def changed(self, before: Members, source: str) -> None:
        now = self.members
        gone = sorted(set(before.admitted) - set(now.admitted))
        new = sorted(set(now.admitted) - set(before.admitted))
        names = [f"{m.hostname} ({m.key_id})" for m in map(now.by_key_id, gone) if m is not None]
        log.info("member list version %d (from %s): %d members%s%s", now.version, source,
                 len(now.admitted), f", removed {', '.join(names)}" if names else "",
                 f", {len(new)} new" if new else "")
        if not now.is_admitted(self.trust.keys.key_id):
            log.warning("this machine was removed from the swarm %r: its peers refuse it",
                        now.swarm_name)
        if gone:
            self.node.peering.drop_removed()

    # ------------------------------------------------------------------ joins (on an admin)

    def _invited(self, frames: list, invitation_id: str) -> None:
        try:
            msg = wire.parse([frames[1].bytes, *[f.buffer for f in frames[2:]]])
        except wire.WireError:
            return
        if msg.op != "join":
            return  # an invitation's key asks to join, nothing else
        ident = frames[0].bytes
        try:
            self.on_join(ident, msg, invitation_id)
        except Exception as exc:
            log.warning("a join with invitation %s was refused: %s", invitation_id, exc)
            self.node.router.send_multipart([ident, *wire.build(
                "error", msg.id, code=wire.ERR_INVITATION, message=str(exc))])

    def on_join(self, ident: bytes, msg: wire.Message, invitation_id: str) -> None:
        from pythagoras_p2p.errors import SecurityError

        if not self.trust.is_admin:
            raise SecurityError("this node is no longer an admin of the swarm; ask another admin "
                                "for a new token with `pythagoras-node invite`")
        f = msg.fields
        curve_public, signing_public = f["curve_public"].encode(), unb64(f["signing_public"])
        proof = JOIN_PROOF + invitation_id.encode() + b"\0" + curve_public
        if not verify_signature(signing_public, proof, unb64(f["proof"])):
            raise SecurityError("the joining machine did not prove it holds its signing key")
        me = self.trust.me
        role = "node" if f["node_id"] else "client"  # a machine with no node of its own
        cert = Member.certify(
            node_id=f["node_id"], hostname=f["hostname"], owner=f["owner"],
            roles=(role,), curve_public=curve_public, signing_public=signing_public,
            swarm_public=self.members.swarm_public, issuer=me.key_id, sign=self.trust.keys.sign)
        if self.members.is_revoked(cert.key_id):
            raise SecurityError("these keys were removed from the swarm; the machine must make "
                                "new ones to join again (move its trust/node.key away)")
        invitation = self.invitations.use(invitation_id, cert.key_id)
        if invitation.admin:
            cert = Member.certify(
                node_id=cert.node_id, hostname=cert.hostname, owner=cert.owner,
                roles=("admin", role), curve_public=curve_public, signing_public=signing_public,
                swarm_public=self.members.swarm_public, issuer=me.key_id,
                sign=self.trust.keys.sign, issued=cert.issued)
        members = self.members.with_member(cert, me.key_id, self.trust.keys.sign)
        self.take(members, f"the join of {cert.hostname}")
        log.info("%s (owner %s, key %s) joined the swarm with invitation %s%s", cert.hostname,
                 cert.owner, cert.key_id, invitation_id, " as an admin" if invitation.admin else "")
        self.node.router.send_multipart([ident, *wire.build(
            "ok", msg.id, [members.dumps().encode()], key_id=cert.key_id,
            admin=me.hostname)])

    # ------------------------------------------------------------------ what status shows

    def listing(self) -> list[dict]:
        """The members (and removed ones) as ``members``/``status --json`` show them."""
        now = time.time()
        own = self.trust.keys.key_id
        rows = []
        for m in self.members.members:
            seen = now if m.key_id == own else self.seen.get(m.key_id)
            rows.append({
                "hostname": m.hostname, "owner": m.owner, "roles": list(m.roles),
                "node_id": m.node_id, "key_id": m.key_id, "issued": m.issued,
                "removed": self.members.is_revoked(m.key_id), "self": m.key_id == own,
                "seen_last": round(seen, 1) if seen else None,
            })
        return rows
