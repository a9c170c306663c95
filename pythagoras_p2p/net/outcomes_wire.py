"""The wire form of a task's outcome: a ``result`` reply, built by a node and read by a client.

A node answers a ``run`` request with a ``result`` whose ``status`` says how the call ended:

* ``ok`` (:class:`~pythagoras_p2p.execution.outcomes.Ok`): fields ``address``, ``large`` and
  ``meta``; the packed value is the one body frame, unless ``large`` (then the value stays on the
  node, and the client fetches it by address);
* ``err`` (:class:`~pythagoras_p2p.execution.outcomes.Failed`): fields ``type``, ``message`` and
  ``where``; two body frames, the pickled exception (empty when it could not be pickled, or is
  larger than :data:`MAX_FAILURE`) and the traceback text in UTF-8 (shortened in the middle to
  :data:`MAX_FAILURE` bytes);
* ``crash`` (:class:`~pythagoras_p2p.execution.outcomes.Crashed`): field ``message``.

:func:`outcome_to_wire` is the node's side, :func:`outcome_from_reply` the client's. The client
trusts nothing a peer sends: a reply that does not follow this raises :class:`~.wire.WireError`
naming the problem, never a ``KeyError`` or ``IndexError``.
"""

from __future__ import annotations

from typing import Any

from ..execution.outcomes import Crashed, Failed, Ok
from . import wire

__all__ = ["MAX_FAILURE", "outcome_to_wire", "outcome_from_reply"]

#: Bytes of a pickled exception, or of a traceback, that a ``result`` carries at most. Bound
#: by :data:`wire.MAX_MESSAGE` (both fit in one message), so not a tunable of defaults.py.
MAX_FAILURE = 4 * 1024 * 1024
_MAX_MESSAGE = 2000  # characters of an exception's message sent back


def outcome_to_wire(outcome: Ok | Failed | Crashed) -> tuple[list, dict[str, Any]]:
    """The body frames and header fields of the ``result`` reply carrying ``outcome``, but its
    ``call``: ``wire.build("result", request_id, bodies, call=call, **fields)``.

    A node puts the ``meta`` it journaled in the fields as a :class:`~.wire.RawJSON` (encoded once
    for the journal and the reply); ``blob=None`` means the value is large and stays here until
    it is fetched.
    """
    if isinstance(outcome, Ok):
        blob = outcome.blob
        return ([] if blob is None else [blob],
                {"status": wire.STATUS_OK, "address": outcome.address, "large": blob is None,
                 "meta": outcome.meta})
    if isinstance(outcome, Failed):
        # Within one message whatever the function raised: a huge exception goes as its type,
        # message and the ends of its traceback (the client rebuilds a RemoteError).
        pickled = outcome.pickled
        if pickled is not None and len(pickled) > MAX_FAILURE:
            pickled = None
        raw = outcome.traceback.encode("utf-8", "backslashreplace")  # a lone surrogate from a file name
        if len(raw) > MAX_FAILURE:
            half = MAX_FAILURE // 2
            raw = raw[:half] + b"\n[... traceback shortened ...]\n" + raw[-half:]
        return ([pickled or b"", raw],
                {"status": wire.STATUS_ERR, "type": outcome.type_name,
                 "message": outcome.message[:_MAX_MESSAGE], "where": outcome.where})
    if isinstance(outcome, Crashed):
        return [], {"status": wire.STATUS_CRASH, "message": outcome.message}
    raise TypeError(f"a {type(outcome).__name__} outcome has no wire form (only Ok, Failed and Crashed)")


def outcome_from_reply(msg: wire.Message, where: str) -> Ok | Failed | Crashed:
    """The outcome a ``result`` reply carries; ``where`` (the peer's address) stands in for a
    failure's missing ``where``. Raises :class:`~.wire.WireError` for a malformed reply.

    An :class:`Ok` with ``blob=None`` is a large value the peer holds: fetch it by address.
    """
    if msg.op != "result":
        raise wire.WireError(f"expected a result, got a {msg.op!r} reply")
    fields, bodies = msg.fields, msg.bodies
    status = fields.get("status")
    if status == wire.STATUS_OK:
        address = fields.get("address")
        if not wire._is_address(address):
            raise wire.WireError("result: field 'address' is missing or not an address")
        meta = fields.get("meta")
        if meta is None:
            meta = {}
        elif not isinstance(meta, dict):
            raise wire.WireError(f"result: field 'meta' is a {type(meta).__name__}, not an object")
        large = fields.get("large", False)
        if not isinstance(large, bool):
            raise wire.WireError(f"result: field 'large' is a {type(large).__name__}, not a boolean")
        if large:
            return Ok(bytes.fromhex(address), None, meta)
        if not bodies:
            raise wire.WireError("result: status 'ok' without 'large' needs the value as a body frame")
        return Ok(bytes.fromhex(address), bytes(bodies[0]), meta)
    if status == wire.STATUS_ERR:
        if len(bodies) < 2:
            raise wire.WireError(f"result: status 'err' needs two body frames (the pickled "
                                 f"exception and the traceback), not {len(bodies)}")
        type_name = _text(fields, "type", "Exception")
        message = _text(fields, "message", "")
        where = _text(fields, "where", where)
        pickled = bytes(bodies[0])
        text = bytes(bodies[1]).decode(errors="replace")
        return Failed(pickled or None, type_name, message, text, where)
    if status == wire.STATUS_CRASH:
        return Crashed(_text(fields, "message", "the call failed"))
    raise wire.WireError(f"result: unknown status {str(status)[:40]!r}")


def _text(fields: dict, name: str, default: str) -> str:
    value = fields.get(name, default)
    if not isinstance(value, str):
        raise wire.WireError(f"result: field {name!r} is a {type(value).__name__}, not a string")
    return value
