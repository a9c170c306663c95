"""Invitations: a one-time, expiring way in, made by an admin, used by ``pythagoras-node join``.

The model is the online one (see ``docs/architecture.md``): ``invite`` makes a fresh CURVE keypair
for this one invitation and keeps its public half, expiry and whether it makes an admin in the
admin's home (``trust/invitations.json``). The join line carries the invitation's keypair, the
admin node's addresses and public key, and the swarm's public signing key, signed by the admin.
``join`` makes the machine's own keys, reaches the admin's node with the invitation's key (its
ZAP handler lets that key ask to join and nothing else) and sends its public keys; the admin's
node checks the invitation is unused and unexpired, marks it used, certifies the keys and
answers with the new member list. The token carries no member's secret and no signing key.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigurationError, SecurityError
from .keys import b64, trust_dir, unb64, verify_signature, write_private

__all__ = ["Invitation", "Invitations", "make_token", "read_token", "TOKEN_PREFIX", "ASK_AGAIN",
           "JOIN_PROOF", "owner_name", "MOVE_TO_MEMBER_KEYS", "refuse_old_token"]

TOKEN_PREFIX = "pyth3-"
INVITATIONS_FILE = "invitations.json"
_TOKEN_DOMAIN = b"pythagoras-invitation/1\0"
JOIN_PROOF = b"pythagoras-join/1\0"  # what a joining machine signs: the invitation and its key
KEEP_AFTER = 7 * 86400  # a used or expired invitation is remembered this long (to say so)
ASK_AGAIN = "ask an admin of the swarm for a new one: `pythagoras-node invite` on the admin's machine"


@dataclass
class Invitation:
    id: str
    curve_public: str  # Z85 of the invitation's own key
    expires: float
    admin: bool
    issued: float
    by: str  # the key id of the admin that made it
    used_by: str = ""  # the key id that joined with it
    used_at: float = 0.0


class Invitations:
    """The invitations an admin's home has made (``trust/invitations.json``, 0600)."""

    def __init__(self, home: Path):
        self.path = trust_dir(home) / INVITATIONS_FILE
        self._stamp: tuple | None = None
        self._items: dict[str, Invitation] = {}

    def _load(self) -> dict[str, Invitation]:
        try:
            st = self.path.stat()
        except OSError:
            self._stamp, self._items = None, {}
            return self._items
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                items = json.loads(self.path.read_text())
                self._items = {i["id"]: Invitation(**i) for i in items}
            except (OSError, ValueError, TypeError, KeyError):
                self._items = {}
            self._stamp = stamp
        return self._items

    def _save(self, items: dict[str, Invitation]) -> None:
        now = time.time()
        kept = [asdict(i) for i in items.values() if i.expires + KEEP_AFTER > now]
        write_private(self.path, json.dumps(kept, indent=1) + "\n")
        self._stamp = None

    def create(self, *, expires_in: float, admin: bool, by: str) -> tuple[Invitation, bytes]:
        """A new invitation and its key's secret (Z85), which only the token carries."""
        import zmq

        public, secret = zmq.curve_keypair()
        now = time.time()
        invitation = Invitation(secrets.token_hex(8), public.decode(), round(now + expires_in, 3),
                                admin, round(now, 3), by)
        items = dict(self._load())
        items[invitation.id] = invitation
        self._save(items)
        return invitation, secret

    def lookup(self, curve_public: bytes) -> str | None:
        """The id of the invitation whose key is ``curve_public`` (used and expired ones too:
        their holder is told so)."""
        text = curve_public.decode(errors="replace")
        return next((i.id for i in self._load().values() if i.curve_public == text), None)

    def use(self, invitation_id: str, key_id: str) -> Invitation:
        """Mark the invitation used by ``key_id``; SecurityError saying why when it cannot be."""
        items = dict(self._load())
        invitation = items.get(invitation_id)
        if invitation is None:
            raise SecurityError(f"this invitation is unknown to this admin; {ASK_AGAIN}")
        if invitation.used_by:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(invitation.used_at))
            raise SecurityError(f"this invitation was already used (at {when}); an invitation "
                                f"lets one machine in, once; {ASK_AGAIN}")
        if time.time() > invitation.expires:
            raise SecurityError(f"this invitation expired at "
                                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(invitation.expires))}; "
                                f"{ASK_AGAIN}")
        invitation.used_by, invitation.used_at = key_id, round(time.time(), 3)
        self._save(items)
        return invitation


MOVE_TO_MEMBER_KEYS = (
    "this is a swarm of the earlier one-key kind (a shared swarm.key, join tokens pyth1-/pyth2-); "
    "swarms now have a key per member. To move: on one machine run `pythagoras-node init --force` "
    "(it becomes the swarm's first admin), start its node, then on each other machine run "
    "`pythagoras-node join TOKEN` with a token from `pythagoras-node invite` on the admin. "
    "Stored results are kept")
_OLD_TOKEN_PREFIXES = ("pyth2-", "pyth1-")


def refuse_old_token(text: str) -> None:
    """Raise the way to move when ``text`` is a join token of a one-key swarm."""
    if any(word.startswith(_OLD_TOKEN_PREFIXES) for word in text.split()):
        raise ConfigurationError(f"that join token is of the earlier kind: {MOVE_TO_MEMBER_KEYS}")


def make_token(*, invitation: Invitation, secret: bytes, swarm_name: str, swarm_public: bytes,
               admin_curve_public: bytes, admin_signing_public: bytes, addresses: list[str],
               sign) -> str:
    """The join line's token: the invitation, where to reach the admin, signed by the admin."""
    body = {"v": 1, "swarm": swarm_name, "swarm_public": b64(swarm_public),
            "invitation": invitation.id, "invitation_public": invitation.curve_public,
            "invitation_secret": secret.decode(), "expires": invitation.expires,
            "admin": invitation.admin, "server": admin_curve_public.decode(),
            "signer": b64(admin_signing_public), "addresses": addresses}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"{TOKEN_PREFIX}{b64(raw)}.{b64(sign(_TOKEN_DOMAIN + raw))}"


def read_token(text: str) -> dict:
    """What a join token says; ConfigurationError naming ``invite`` when it is not a valid one.

    ``text`` may be the whole line ``invite`` printed (``pythagoras-node join pyth3-...``).
    """
    refuse_old_token(text)
    words = [w for w in text.split() if w.startswith(TOKEN_PREFIX)]
    if len(words) != 1:
        raise ConfigurationError(f"that is not a join token (it should start with "
                                 f"{TOKEN_PREFIX!r}); copy the whole line `pythagoras-node "
                                 f"invite` printed, or {ASK_AGAIN}")
    body, _, signature = words[0][len(TOKEN_PREFIX):].partition(".")
    forged = f"the join token is forged or damaged ({{}}); {ASK_AGAIN}"
    try:
        raw = unb64(body)
        data = json.loads(raw)
        signed = verify_signature(unb64(data["signer"]), _TOKEN_DOMAIN + raw, unb64(signature))
    except Exception as exc:
        raise ConfigurationError(forged.format(f"it cannot be read: {type(exc).__name__}")) from None
    if not signed:
        raise ConfigurationError(forged.format("its signature does not match its content"))
    missing = {"swarm_public", "invitation", "invitation_public", "invitation_secret", "expires",
               "admin", "server", "addresses"} - set(data)
    if missing:
        raise ConfigurationError(forged.format(f"it lacks {sorted(missing)}"))
    if time.time() > float(data["expires"]):
        raise ConfigurationError(
            f"the join token expired at "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(float(data['expires'])))}; {ASK_AGAIN}")
    return data


def owner_name() -> str:
    """The login name of whoever runs this (the default ``--owner``)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "") or "unknown"
