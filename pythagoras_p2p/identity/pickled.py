"""The pickle that addresses a value no encoder of :mod:`.encoding` knows.

It is a pickle made for an address only, never loaded: a class or function of the user's own code
is written with its content (its code token, from :mod:`.fingerprint`), so an object's address
changes when its class's code does; and when the value holds sets, whose pickled order follows the
process's string hashes, they are written as their items' canonical encodings, sorted.
"""

from __future__ import annotations

import io
import pickle
import threading
import types
from collections.abc import Callable
from typing import Any

from ..errors import SerializationError

__all__ = ["pickle_for_address", "register_code_token", "token_of"]

_PICKLE_PROTOCOL = 5

_code_token: Callable[[Any], bytes | None] | None = None
_TOKENS = threading.local()  # the classes and functions whose token is being made, on this thread


def register_code_token(token: Callable[[Any], bytes | None]) -> None:
    """Say how a function or class of the user's own code is addressed (identity.code_token):
    by its content, where pickle would write only its name."""
    global _code_token
    _code_token = token


def token_of(obj: type | types.FunctionType) -> bytes | None:
    """``obj``'s code token, or, asked again while that very token is being made or checked (a
    class whose attributes hold its own instances or members, as an Enum's do), a reference by
    name: the outer token covers the content, and the walk ends."""
    if _code_token is None:
        return None
    making = _TOKENS.__dict__.setdefault("making", [])
    if any(seen is obj for seen in making):
        return b"<" + f"{obj.__module__}.{obj.__qualname__}".encode() + b">"
    making.append(obj)
    try:
        return _code_token(obj)
    finally:
        making.pop()


def _code_ref(module: str, qualname: str, token: bytes) -> None:
    """Stands for user code in the pickle of an address; such a pickle is never loaded."""
    raise SerializationError("a pickle made for an address cannot be loaded")


class _AddressPickler(pickle.Pickler):
    """A pickler for addresses only: a class or function of the user's own code is written with
    its content, so an object's address changes when its class's code does."""

    def reducer_override(self, obj: Any) -> Any:
        if _code_token is not None and isinstance(obj, (type, types.FunctionType)):
            token = token_of(obj)
            if token is not None:
                return _code_ref, (obj.__module__, obj.__qualname__, token)
        return NotImplemented


class _SetsSorted(_AddressPickler):
    """Also every set and frozenset inside the value is written as its items' canonical
    encodings, sorted, so the bytes do not depend on the process's hash seed."""

    sorted_encodings: Callable[[Any], list[bytes]]

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is set or kind is frozenset:
            return (kind.__name__, tuple(self.sorted_encodings(obj)))
        return None


class _Cycle(BaseException):
    """An object reached again through a set of its own: no canonical order exists. (Not an
    Exception, so the encoders between here and the outermost attempt let it through.)"""


_SORTING = threading.local()  # ids of the objects whose sets are being sorted, outermost first


def pickle_for_address(obj: Any, buffers: list,
                       sorted_encodings: Callable[[Any], list[bytes]]) -> bytes:
    """``obj``'s pickle for its address (out-of-band buffers appended to ``buffers``): the user's
    code by content, and the sets inside by ``sorted_encodings`` of their items when any is."""
    stream = io.BytesIO()
    _AddressPickler(stream, protocol=_PICKLE_PROTOCOL, buffer_callback=buffers.append).dump(obj)
    data = stream.getvalue()
    # A set inside always leaves its opcode (the byte may also be data: then the slower way is
    # taken for nothing); without one, pickle's bytes are the same in every process.
    if pickle.EMPTY_SET not in data and pickle.FROZENSET not in data:
        return data
    active = _SORTING.__dict__.setdefault("ids", [])
    if id(obj) in active:
        raise _Cycle
    outermost = not active
    active.append(id(obj))
    sorted_buffers: list = []
    stream = io.BytesIO()
    pickler = _SetsSorted(stream, protocol=_PICKLE_PROTOCOL, buffer_callback=sorted_buffers.append)
    pickler.sorted_encodings = sorted_encodings
    try:
        pickler.dump(obj)
    except _Cycle:
        if not outermost:
            raise
        return data  # objects that hold each other through sets: pickle's own order
    finally:
        active.pop()
    buffers[:] = sorted_buffers
    return stream.getvalue()
