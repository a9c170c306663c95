"""Who computed a result: the member's key id and hostname in the result's metadata, signed with
that member's key, and the check a node makes before it keeps a copy from elsewhere.

A result's metadata gets ``computed_by = {"key_id", "host", "sig"}`` where it is stored first:
by the node whose worker ran it, or by a client that ran it itself in a home with member keys.
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

import socket
from typing import Any

from .keys import b64, unb64, verify_signature

__all__ = ["PROVENANCE", "stamp", "refusal", "signed_bytes"]

PROVENANCE = "computed_by"  # the key of the metadata that holds it (store.listing reads it)
_DOMAIN = b"pythagoras-result/1\0"
_HOST = socket.gethostname()


def signed_bytes(call: bytes, address: bytes, key_id: str) -> bytes:
    """What a result's signature covers."""
    return _DOMAIN + bytes(call) + bytes(address) + key_id.encode()


def stamp(meta: dict, call: bytes, address: bytes, keys: Any) -> dict:
    """``meta`` with the provenance of a result computed by the member of ``keys``
    (:class:`~.keys.NodeKeys`) added; returns ``meta``."""
    key_id = keys.key_id
    meta[PROVENANCE] = {"key_id": key_id, "host": _HOST,
                        "sig": b64(keys.sign(signed_bytes(call, address, key_id)))}
    return meta


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
    if not verify_signature(member.signing_public, signed_bytes(call, address, key_id), signature):
        return f"its signature by {key_id[:24]} does not verify"
    return None
