"""Who computed a result: the member's key id and hostname in the result's metadata, signed with
that member's key, and the check a node makes before it keeps a copy from elsewhere.

A result's metadata gets ``computed_by = {"key_id", "host", "sig"}``: signed by the node whose
worker ran it as it stores it, or, for a result a client of a home with member keys ran itself,
claimed by the client (``key_id`` and ``host``: signing costs more than storing a trivial
result) and signed by the home's node when a copy of it leaves the machine.
The signature (Ed25519, the member's own key) covers the call address, the value address and the
key id, so a copy cannot be moved to another call, given another value or credited to another
member; the value itself is bound by its address, which every copy is checked against.

A node receiving a copy (replication, a hand-over) checks it with :func:`refusal`: a copy with no
signature, signed by a key the member list does not hold, with a signature that does not verify,
or computed by a member whose results were dropped (``pythagoras-node remove MEMBER
--drop-results``) is refused. A home with no member list (a swarm of one shared key, from before
member keys) checks nothing: it cannot tell members apart.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import SecurityError
from .keys import b64, unb64
from .members import Members, members_path

__all__ = ["PROVENANCE", "stamp", "claim", "vouch", "vouch_raw", "refusal", "signed_bytes",
           "HomeMembers"]

log = logging.getLogger(__name__)

PROVENANCE = "computed_by"  # the key of the metadata that holds it (store.listing reads it)
_DOMAIN = b"pythagoras-result/1\0"
_HOST = socket.gethostname()


def signed_bytes(call: bytes, address: bytes, key_id: str) -> bytes:
    """What a result's signature covers."""
    return _DOMAIN + bytes(call) + bytes(address) + key_id.encode()


@functools.lru_cache(maxsize=8)
def _signer(keys: Any) -> tuple[str, Ed25519PrivateKey]:
    """``keys``' id and private key, made once (each is tens of µs: a node signs every result)."""
    return keys.key_id, Ed25519PrivateKey.from_private_bytes(keys.signing_secret)


@functools.lru_cache(maxsize=1024)
def _public(signing_public: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(signing_public)


def _verifies(signing_public: bytes, data: bytes, signature: bytes) -> bool:
    """:func:`~.keys.verify_signature`, with the member's public key loaded once."""
    try:
        _public(signing_public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def stamp(meta: dict, call: bytes, address: bytes, keys: Any) -> dict:
    """``meta`` with the provenance of a result computed by the member of ``keys``
    (:class:`~.keys.NodeKeys`) added; returns ``meta``."""
    key_id, private = _signer(keys)
    meta[PROVENANCE] = {"key_id": key_id, "host": _HOST,
                        "sig": b64(private.sign(signed_bytes(call, address, key_id)))}
    return meta


def claim(meta: dict, keys: Any) -> dict:
    """``meta`` saying the member of ``keys`` computed it, not signed yet: what a client of a home
    records (a signature costs more than storing a trivial result); its node signs it when a copy
    leaves the machine (:func:`vouch`). Returns ``meta``."""
    meta[PROVENANCE] = {"key_id": _signer(keys)[0], "host": _HOST}
    return meta


def vouch(meta: dict, call: bytes, address: bytes, keys: Any) -> dict:
    """``meta`` as a copy of it leaves this machine: signed now when it says the member of
    ``keys`` computed it and is not signed yet (:func:`claim`); otherwise as it is."""
    found = meta.get(PROVENANCE)
    if isinstance(found, dict) and "sig" not in found and found.get("key_id") == _signer(keys)[0]:
        return stamp(dict(meta), call, address, keys)
    return meta


def vouch_raw(meta_raw: bytes, call: bytes, address: bytes, keys: Any) -> bytes:
    """:func:`vouch` for metadata kept as JSON bytes (what a repair round sends)."""
    if b'"computed_by"' not in meta_raw:
        return meta_raw
    meta = json.loads(meta_raw)
    signed = vouch(meta, call, address, keys)
    return meta_raw if signed is meta else json.dumps(signed, separators=(",", ":")).encode()


def refusal(meta: dict | None, call: bytes, address: bytes, members: Any) -> str | None:
    """Why a copy of a result may not be kept given the member list ``members``
    (:class:`~.members.Members`), or None when it may (always, with no member list)."""
    if members is None:
        return None
    found = (meta or {}).get(PROVENANCE)
    if not isinstance(found, dict) or not isinstance(found.get("key_id"), str) \
            or not isinstance(found.get("sig"), str):
        return "it carries no signature of the member that computed it"
    key_id = found["key_id"]
    if key_id in members.dropped():
        return f"it was computed by {key_id}, a removed member whose results were dropped"
    member = members.by_key_id(key_id)
    if member is None:
        return f"it is signed by {key_id[:24]}, a key that is no member of the swarm"
    try:
        signature = unb64(found["sig"])
    except Exception:  # not base64
        return "its signature is malformed"
    if not _verifies(member.signing_public, signed_bytes(call, address, key_id), signature):
        return f"its signature by {key_id[:24]} does not verify"
    return None


class HomeMembers:
    """The member list of a home as a process of it reads it (a client fetching copies from
    peers): read again when its file changes; None while the home has none."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self._stamp: tuple[int, int] | None = None
        self._members: Members | None = None

    def current(self) -> Members | None:
        try:
            st = members_path(self.home).stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._members = Members.load(self.home) if stamp is not None else None
            except SecurityError as exc:  # a damaged list: the one read before still holds
                log.warning("%s", exc)
        return self._members
