"""The wire protocol between clients and nodes: message types, framing, and the protocol version.

A message is a ZeroMQ multipart message: one header frame (UTF-8 JSON object) followed by zero
or more body frames of raw bytes. The header always has ``v`` (protocol version), ``op`` and
``id`` (the request id the reply echoes). Addresses travel as hex strings.

Parsing never trusts its input: :func:`parse` checks sizes, JSON, the version, the operation and
the type of every field it uses, and raises :class:`WireError` with a reason, which the node
sends back. Nothing here unpickles; a node passes pickled payloads to worker processes untouched.
Unknown header fields are ignored, so a newer peer's extra fields do not break an older one.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ..errors import PythagorasError

#: ``json.dumps(obj, separators=(",", ":"))``, without making an encoder per call
compact_json = json.JSONEncoder(separators=(",", ":")).encode

__all__ = [
    "PROTOCOL_VERSION", "PYTHON_VERSION", "MAX_MESSAGE", "CHUNK", "WireError", "Message", "RawJSON",
    "build", "parse", "bundle", "unbundle", "probe_request", "probe_reply", "SCHEMAS",
    "ERR_MALFORMED", "ERR_PROTOCOL", "ERR_PYTHON", "ERR_INTERNAL", "ERR_STOPPING",
    "ERR_NEED_FUNCTION", "ERR_NEED_VALUES", "ERR_MISSING", "ERR_BUSY", "ERR_STORE", "ERR_TAMPERED",
    "ERR_LOST", "ERR_PAUSED", "ERR_REMOVED", "ERR_INVITATION", "STATUS_OK", "STATUS_ERR", "STATUS_CRASH",
]

#: 2: results are replicated between nodes (sync, offer, replicate; a run's ``copied``). A node
#: of another version is never a member: its pings do not parse, so it is sent no copies.
#: 3: ``many`` carries several messages at once (the runs of one placement, the results of one
#: turn of a node's loop).
#: 4: a function travels and is run under the key of its record (the hash of its bytes, which a
#: node checks: ``tampered`` when they differ), no longer under its fingerprint.
PROTOCOL_VERSION = 4
PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"

# MAX_MESSAGE and CHUNK are part of the protocol, not tunables (and not in defaults.py): each
# end checks the other's messages against them, so ends with different values would refuse
# each other's chunks or drop the connection.
#: Largest message a socket accepts (ZMQ_MAXMSGSIZE); larger values travel in chunks.
MAX_MESSAGE = 16 * 1024 * 1024
#: Size of one chunk of a large value (a node refuses larger ones).
CHUNK = 4 * 1024 * 1024
_MAX_HEADER = 256 * 1024
_MAX_FRAMES = 1 + 1024

_HEX = "hex"  # a field that must be a hex string of 64 characters (an address)
_HEXES = "hexes"  # a list of such strings

#: Fields each operation requires, and their types.
SCHEMAS: dict[str, dict[str, Any]] = {
    "probe": {},
    "hello": {"protocol": int, "python": str},
    "ping": {},
    "status": {},
    "lookup": {"calls": _HEXES},
    "has": {"addresses": _HEXES},
    "put": {"address": _HEX, "offset": int, "total": int},
    "get": {"address": _HEX, "offset": int},
    "function": {"fp": _HEX},
    "run": {"fp": _HEX, "call": _HEX, "label": str},
    "cancel": {"calls": _HEXES},
    "release": {"addresses": _HEXES},
    "peers": {},
    "forget": {"function": str},
    "leaving": {"node": str},  # the sender stops (pythagoras-node stop): drop it, it is not dead
    "sync": {"node": str},
    "offer": {},
    "replicate": {},
    "many": {"counts": list},  # requests or replies: see bundle()
    "members": {},  # the swarm's signed member list (a body frame of JSON)
    "join": {"node_id": str, "hostname": str, "owner": str, "curve_public": str,
             "signing_public": str, "proof": str},  # only on an invitation's key
    # replies
    "ok": {},
    "error": {"code": str, "message": str},
    "result": {"call": _HEX, "status": str},
    "output": {"call": _HEX, "where": str, "text": str},
}


# The ``code`` of an ``error`` reply: what went wrong, and so what the client does next.
ERR_MALFORMED = "malformed"  # the request does not follow the protocol
ERR_PROTOCOL = "protocol"  # the peer speaks another protocol version: never usable
ERR_PYTHON = "python"  # the client runs another Python version: the node takes no calls from it
ERR_INTERNAL = "internal"  # the node failed handling the request (a bug)
ERR_STOPPING = "stopping"  # the node is shutting down and takes no new call
ERR_NEED_FUNCTION = "need_function"  # send the function first (the message is its record key)
ERR_NEED_VALUES = "need_values"  # send these argument values first (comma-separated addresses)
ERR_MISSING = "missing"  # the node does not hold the value asked for
ERR_BUSY = "busy"  # too many uploads at once, or the value is being checked: retry later
ERR_STORE = "store"  # the node cannot keep the value (its store is full or failing)
ERR_TAMPERED = "tampered"  # an uploaded value (or function record) does not match its address
ERR_LOST = "lost"  # never sent: what a client answers itself for a request to a peer it lost
ERR_RESOURCES = "resources"  # the node could never give the call the resources it asks for
ERR_REQUIREMENTS = "requirements"  # the node does not satisfy the function's requires=
ERR_STALE = "stale"  # sent on a connection the node had not heard for so long that its sender
# must have given up on it (the node was stopped, or the link was cut): run it elsewhere
ERR_PAUSED = "paused"  # the node takes no new call for now (its owner comes first): run it
# elsewhere; a call it ran is handed back with it too (``--preempt``), nothing kept of it

ERR_REMOVED = "removed"  # this machine was removed from the swarm: nothing is served to it
ERR_INVITATION = "invitation"  # a join with an invitation that was used or has expired

# The ``status`` of a ``result`` reply (see :mod:`.outcomes_wire`).
STATUS_OK = "ok"
STATUS_ERR = "err"
STATUS_CRASH = "crash"


class WireError(PythagorasError):
    """A message that does not follow the protocol (the reason says how)."""

    def __init__(self, message: str, code: str = ERR_MALFORMED):
        super().__init__(message)
        self.code = code


@dataclass
class Message:
    op: str
    id: int
    fields: dict
    bodies: list = field(default_factory=list)

    def hex(self, name: str) -> bytes:
        return bytes.fromhex(self.fields[name])

    def hexes(self, name: str) -> list[bytes]:
        return [bytes.fromhex(h) for h in self.fields[name]]


class RawJSON(bytes):
    """A header field's value already encoded as JSON (by this process): spliced in as it is."""


def build(op: str, request_id: int = 0, bodies: list | tuple = (), **fields: Any) -> list:
    """The frames of one message: header then bodies."""
    header = {"v": PROTOCOL_VERSION, "op": op, "id": request_id}
    raw = []
    for name, value in fields.items():
        if isinstance(value, RawJSON):
            raw.append(b',"%s":%s' % (name.encode(), value))
            continue
        if isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], bytes):
            value = [v.hex() for v in value]
        header[name] = value
    data = compact_json(header).encode()
    if raw:
        data = b"".join([data[:-1], *raw, b"}"])
    return [data, *bodies]


def bundle(messages: list[list]) -> list[list]:
    """Messages (each the frames :func:`build` made) to send to one peer, as few messages:
    ``many`` messages, each carrying as many of them as its frames allow, in order. One
    message goes as it is."""
    if len(messages) <= 1:
        return messages
    out: list[list] = []
    group: list[list] = []
    frames = 0
    for message in messages:
        if group and frames + len(message) > _MAX_FRAMES - 1:
            out.append(_many(group))
            group, frames = [], 0
        group.append(message)
        frames += len(message)
    out.append(_many(group) if len(group) > 1 else group[0])
    return out


def _many(group: list[list]) -> list:
    return [*build("many", 0, counts=[len(m) for m in group]), *(f for m in group for f in m)]


def unbundle(msg: Message) -> list[list]:
    """The frames of each message a ``many`` carries (each one for :func:`parse`)."""
    counts = msg.fields["counts"]
    if (not counts or not all(type(c) is int and c >= 1 for c in counts)
            or sum(counts) != len(msg.bodies)):
        raise WireError("many: counts must be positive integers that add up to its frames")
    out, start = [], 0
    for count in counts:
        out.append(msg.bodies[start:start + count])
        start += count
    return out


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_INT = (1 << 63) - 1  # offsets, totals: what a file or a counter can hold


def _is_address(value: Any) -> TypeGuard[str]:
    # Not bytes.fromhex alone: it skips spaces, and "ab cd..." would give a shorter address.
    return isinstance(value, str) and len(value) == 64 and _HEX_DIGITS.issuperset(value)


def parse(frames: list) -> Message:
    """Check and decode the frames of one message (without a routing id)."""
    if not frames or len(frames) > _MAX_FRAMES:
        raise WireError(f"a message has 1 to {_MAX_FRAMES} frames, this one has {len(frames)}")
    raw = frames[0]
    if len(raw) > _MAX_HEADER:
        raise WireError(f"header of {len(raw)} bytes is larger than {_MAX_HEADER}")
    try:
        header = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError):
        raise WireError("header is not UTF-8 JSON") from None
    except RecursionError:  # "[[[[..." within the size limit: json recurses per level
        raise WireError("header JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # true and 1.0 equal 1 too
        raise WireError(
            f"protocol version {version!r} is not this node's {PROTOCOL_VERSION}; install the "
            f"same pythagoras_p2p release on every machine of the swarm", code=ERR_PROTOCOL,
        )
    op, request_id = header.get("op"), header.get("id", 0)
    if not isinstance(op, str) or op not in SCHEMAS:
        raise WireError(f"unknown operation {op!r}")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise WireError("request id is not an integer")
    for name, kind in SCHEMAS[op].items():
        value = header.get(name)
        if kind is _HEX:
            ok = _is_address(value)
        elif kind is _HEXES:
            ok = isinstance(value, list) and len(value) <= 100_000 and all(map(_is_address, value))
        elif kind is int:
            ok = type(value) is int and 0 <= value <= _MAX_INT
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise WireError(f"{op}: field {name!r} is missing or malformed")
    return Message(op, request_id, header, list(frames[1:]))


def probe_request() -> list:
    return build("probe", 0)


def probe_reply(frames: list) -> bool:
    """True if ``frames`` is a node's answer to :func:`probe_request`."""
    try:
        return parse(frames).op == "ok"
    except WireError:
        return False
