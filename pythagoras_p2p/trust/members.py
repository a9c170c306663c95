"""Who belongs to a swarm: member certificates and the signed, versioned member list.

A :class:`Member` is a certificate: a machine's public keys, its node id (empty for a client
without a node), host name, owner, roles and when it was issued, signed by an admin (or, for
the first admin, by the swarm's signing key). :class:`Members` is the list every machine of the
swarm agrees on: the certificates and the revoked key ids, with a version number, signed as a
whole by an admin. A machine takes a list only if it is of its own swarm (same swarm signing
key), verifies, and is newer than the one it has; the newer wins (see ``docs/architecture.md``).

Verification is done once, when a list is made from its JSON; afterwards ``is_admitted`` is a
set lookup, cheap enough for every message a node serves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blake3 import blake3

from ..errors import SecurityError
from .keys import b64, key_id_of, trust_dir, unb64, verify_signature, write_private

__all__ = ["Member", "Members", "SWARM_ISSUER", "ROLES", "members_path"]

SWARM_ISSUER = "swarm"  # the issuer of a certificate signed by the swarm's own key
ROLES = ("admin", "node", "client")
MEMBERS_FILE = "members.json"
_CERT_DOMAIN = b"pythagoras-member-certificate/1\0"
_LIST_DOMAIN = b"pythagoras-member-list/1\0"


def members_path(home: Path) -> Path:
    return trust_dir(home) / MEMBERS_FILE


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Member:
    """One member's certificate."""

    key_id: str
    node_id: str  # "" for a client without a node
    hostname: str
    owner: str
    roles: tuple[str, ...]
    issued: float
    curve_public: bytes  # Z85 text, as ZeroMQ takes it
    signing_public: bytes  # raw Ed25519
    issuer: str = SWARM_ISSUER  # the key id of the admin that signed it, or "swarm"
    signature: bytes = b""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_node(self) -> bool:
        return "node" in self.roles

    def body(self) -> dict:
        """What the signature covers."""
        return {"key_id": self.key_id, "node_id": self.node_id, "hostname": self.hostname,
                "owner": self.owner, "roles": list(self.roles), "issued": self.issued,
                "curve_public": self.curve_public.decode(),
                "signing_public": b64(self.signing_public), "issuer": self.issuer}

    def signed_bytes(self, swarm_public: bytes) -> bytes:
        return _CERT_DOMAIN + swarm_public + _canonical(self.body())

    def to_json(self) -> dict:
        return {**self.body(), "signature": b64(self.signature)}

    @classmethod
    def from_json(cls, data: dict) -> Member:
        roles = tuple(str(r) for r in data["roles"])
        return cls(str(data["key_id"]), str(data["node_id"]), str(data["hostname"]),
                   str(data["owner"]), roles, float(data["issued"]),
                   str(data["curve_public"]).encode(), unb64(data["signing_public"]),
                   str(data["issuer"]), unb64(data["signature"]))

    @classmethod
    def certify(cls, *, node_id: str, hostname: str, owner: str, roles: Iterable[str],
                curve_public: bytes, signing_public: bytes, swarm_public: bytes,
                issuer: str, sign, issued: float | None = None) -> Member:
        """A certificate signed by ``sign`` (an admin's, or the swarm key's for ``issuer="swarm"``)."""
        roles = tuple(r for r in ROLES if r in set(roles))
        unsigned = cls(key_id_of(curve_public, signing_public), node_id, hostname, owner, roles,
                       round(time.time() if issued is None else issued, 3), bytes(curve_public),
                       bytes(signing_public), issuer)
        return replace(unsigned, signature=sign(unsigned.signed_bytes(swarm_public)))


@dataclass(frozen=True)
class Revoked:
    key_id: str
    hostname: str
    when: float
    by: str  # the key id of the admin that removed it
    drop_results: bool = False  # every node drops, and refuses, the results it computed

    def to_json(self) -> dict:
        found = {"key_id": self.key_id, "hostname": self.hostname, "when": self.when, "by": self.by}
        if self.drop_results:  # absent otherwise: lists signed before it keep their bytes
            found["drop_results"] = True
        return found


@dataclass(frozen=True)
class Members:
    """The swarm's signed member list (certificates and revocations), at one version.

    Make one with :meth:`from_json` (verifies it) or :meth:`first` / :meth:`with_member` /
    :meth:`without` (signs it). ``valid`` holds the key ids whose certificates chain to the
    swarm's key; ``admitted`` those of them not revoked.
    """

    swarm_name: str
    swarm_public: bytes  # raw Ed25519: the trust anchor
    version: int
    members: tuple[Member, ...]
    revoked: tuple[Revoked, ...] = ()
    signer: str = SWARM_ISSUER
    signature: bytes = b""
    admitted: frozenset = field(default=frozenset(), compare=False)
    _by_key: dict = field(default_factory=dict, compare=False, repr=False)
    _by_curve: dict = field(default_factory=dict, compare=False, repr=False)

    # ------------------------------------------------------------------ queries

    @property
    def tag(self) -> str:
        """A public tag of the swarm (not a key): tells swarms apart on mDNS."""
        return blake3(b"pythagoras-swarm-tag/2\0" + self.swarm_public).hexdigest()[:16]

    def by_key_id(self, key_id: str) -> Member | None:
        return self._by_key.get(key_id)

    def is_admitted(self, key_id: str) -> bool:
        """Whether ``key_id`` is certified by the swarm and not revoked."""
        return key_id in self.admitted

    def is_revoked(self, key_id: str) -> bool:
        return any(r.key_id == key_id for r in self.revoked)

    def by_curve_public(self, curve_public: bytes) -> Member | None:
        return self._by_curve.get(bytes(curve_public))

    def by_node_id(self, node_id: str) -> Member | None:
        """The admitted member serving as node ``node_id``."""
        return next((m for m in self.members if m.node_id == node_id and node_id
                     and m.key_id in self.admitted), None)

    def find(self, name: str) -> list[Member]:
        """Members known as ``name``: a key id, a node id or a host name (several may share one)."""
        exact = [m for m in self.members if name in (m.key_id, m.node_id)]
        if exact:
            return exact
        named = [m for m in self.members if m.hostname == name]
        return [m for m in named if m.key_id in self.admitted] or named  # the current one first

    def current(self) -> list[Member]:
        """The admitted members."""
        return [m for m in self.members if m.key_id in self.admitted]

    # ------------------------------------------------------------------ signing

    def body(self) -> dict:
        return {"format": "pythagoras-members/1", "swarm": {"name": self.swarm_name,
                                                            "public": b64(self.swarm_public)},
                "version": self.version, "members": [m.to_json() for m in self.members],
                "revoked": [r.to_json() for r in self.revoked], "signer": self.signer}

    def to_json(self) -> dict:
        return {**self.body(), "signature": b64(self.signature)}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"

    def _signed_bytes(self) -> bytes:
        return _LIST_DOMAIN + _canonical(self.body())

    @classmethod
    def from_json(cls, data: Any, *, anchor: bytes | None = None) -> Members:
        """A verified list; ``anchor``: the swarm signing key it must be of (raw public)."""
        try:
            swarm = data["swarm"]
            made = cls(str(swarm["name"]), unb64(swarm["public"]), int(data["version"]),
                       tuple(Member.from_json(m) for m in data["members"]),
                       tuple(Revoked(str(r["key_id"]), str(r["hostname"]), float(r["when"]),
                                     str(r["by"]), r.get("drop_results") is True)
                             for r in data["revoked"]),
                       str(data["signer"]), unb64(data["signature"]))
        except Exception as exc:
            raise SecurityError(f"not a valid member list ({type(exc).__name__}: {exc})") from None
        if anchor is not None and made.swarm_public != anchor:
            raise SecurityError("the member list is of another swarm (its signing key differs)")
        return made._verified()

    @classmethod
    def loads(cls, text: str | bytes, *, anchor: bytes | None = None) -> Members:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SecurityError(f"not a valid member list ({exc})") from None
        return cls.from_json(data, anchor=anchor)

    def _verified(self) -> Members:
        """This list with ``admitted`` worked out, or SecurityError when a signature fails."""
        by_key = {m.key_id: m for m in self.members}
        valid: dict[str, Member] = {}
        changed = True
        while changed:  # certificates chain to the swarm key through admins' certificates
            changed = False
            for m in self.members:
                if m.key_id in valid or key_id_of(m.curve_public, m.signing_public) != m.key_id:
                    continue
                if m.issuer == SWARM_ISSUER:
                    signer_public = self.swarm_public
                elif m.issuer in valid and valid[m.issuer].is_admin:
                    signer_public = valid[m.issuer].signing_public
                else:
                    continue
                if verify_signature(signer_public, m.signed_bytes(self.swarm_public), m.signature):
                    valid[m.key_id] = m
                    changed = True
        revoked = {r.key_id for r in self.revoked}
        admitted = frozenset(k for k in valid if k not in revoked)
        if self.signer == SWARM_ISSUER:
            signer_public = self.swarm_public
        elif self.signer in admitted and valid[self.signer].is_admin:
            signer_public = valid[self.signer].signing_public
        else:
            raise SecurityError(f"the member list (version {self.version}) is signed by "
                                f"{self.signer}, which is not an admin of the swarm")
        if not verify_signature(signer_public, self._signed_bytes(), self.signature):
            raise SecurityError(f"the member list (version {self.version}) has a bad signature")
        object.__setattr__(self, "admitted", admitted)
        object.__setattr__(self, "_by_key", by_key)
        object.__setattr__(self, "_by_curve", {m.curve_public: m for m in self.members})
        return self

    def signed(self, signer: str, sign) -> Members:
        """This list signed by ``signer`` (an admin's key id, or "swarm") with ``sign``."""
        unsigned = replace(self, signer=signer, signature=b"")
        return replace(unsigned, signature=sign(unsigned._signed_bytes()))._verified()

    # ------------------------------------------------------------------ changes (by an admin)

    @classmethod
    def first(cls, name: str, swarm_key, admin: Member) -> Members:
        """The list of a new swarm: its first admin, certified by ``swarm_key``."""
        return cls(name, swarm_key.public, 1, (admin,)).signed(SWARM_ISSUER, swarm_key.sign)

    def with_member(self, member: Member, signer: str, sign) -> Members:
        """The next version, with ``member`` added (or its certificate renewed). A node that
        joins again with new keys (the same node id) replaces its old ones: they are revoked."""
        kept = tuple(m for m in self.members if m.key_id != member.key_id)
        gone = {r.key_id for r in self.revoked}
        now = round(time.time(), 3)
        superseded = tuple(Revoked(m.key_id, m.hostname, now, signer) for m in kept
                           if member.node_id and m.node_id == member.node_id
                           and m.key_id not in gone)
        return replace(self, version=self.version + 1, members=(*kept, member),
                       revoked=(*self.revoked, *superseded)).signed(signer, sign)

    def without(self, key_ids: Iterable[str], signer: str, sign, *,
                drop_results: bool = False) -> Members:
        """The next version, with ``key_ids`` revoked (their certificates stay, for the record);
        ``drop_results``: every node drops and refuses the results they computed (a member
        revoked already gets the mark added)."""
        now = round(time.time(), 3)
        wanted = set(key_ids)
        kept = tuple(replace(r, drop_results=True) if drop_results and r.key_id in wanted else r
                     for r in self.revoked)
        gone = {r.key_id for r in self.revoked}
        added = tuple(Revoked(k, getattr(self.by_key_id(k), "hostname", ""), now, signer,
                              drop_results) for k in key_ids if k not in gone)
        return replace(self, version=self.version + 1,
                       revoked=(*kept, *added)).signed(signer, sign)

    def dropped(self) -> frozenset[str]:
        """The key ids whose results the swarm dropped (``remove --drop-results``)."""
        return frozenset(r.key_id for r in self.revoked if r.drop_results)

    # ------------------------------------------------------------------ in a home

    @classmethod
    def load(cls, home: Path) -> Members | None:
        """The member list kept in ``home``, or None when the home has none."""
        path = members_path(home)
        try:
            text = path.read_bytes()  # bytes: json.loads reports a list that is not UTF-8
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecurityError(f"cannot read the member list {path} ({exc}); make it readable "
                                f"by this user, or move it away and join again: "
                                f"`pythagoras-node join --force TOKEN`") from None
        try:
            return cls.loads(text)
        except SecurityError as exc:
            raise SecurityError(f"{path}: {exc}; take a fresh one by joining again: "
                                f"`pythagoras-node join --force TOKEN` with a token from "
                                f"`pythagoras-node invite` on an admin") from None

    def save(self, home: Path) -> None:
        write_private(members_path(home), self.dumps())

    def newer_than(self, other: Members | None) -> bool:
        """Whether this list should replace ``other`` (same swarm, higher version)."""
        return other is None or (other.swarm_public == self.swarm_public
                                 and self.version > other.version)
