"""Who asks a node to change its store: what a request says of the member that sent it, and
how a node logs that.

Requests that delete results (``cache forget --swarm``, dropping a removed member's results)
carry ``asked_by``: the asking machine's hostname, the login of whoever ran the command, and
its member key id when the machine has member keys. Every node logs it beside what it deleted,
so the owner of a machine can tell from its log which member's command emptied its store.
"""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

__all__ = ["asker", "describe_asker"]


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container): say which uid
        import os

        return f"uid {os.getuid()}"


def asker(home: Path | None = None) -> dict:
    """This machine, as a request that changes other stores names its sender."""
    found = {"host": socket.gethostname(), "owner": _login()}
    if home is not None:
        key_id = _key_id(home)
        if key_id:
            found["key_id"] = key_id
    return found


def _key_id(home: Path) -> str | None:
    """This machine's member key id, when it has member keys (``pythagoras_p2p.trust``)."""
    from pythagoras_p2p.trust import NodeKeys

    try:
        keys = NodeKeys.load(home)
    except Exception:  # unreadable keys: the request names the host and owner
        return None
    return None if keys is None else keys.key_id


def describe_asker(fields: object) -> str:
    """``asked_by`` of a request, for a log line (what is missing or malformed is said so)."""
    if not isinstance(fields, dict) or not fields:
        return "a member that did not say who it is"
    parts = [f"{fields.get('owner', '?')}@{fields.get('host', '?')}"]
    if fields.get("key_id"):
        parts.append(f"key {fields['key_id']}")
    return " ".join(str(p)[:200] for p in parts)
