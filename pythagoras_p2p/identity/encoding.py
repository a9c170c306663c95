"""Canonical encoding of values and their content addresses.

The **address** of a value is blake3 over a canonical, versioned byte encoding that depends on
content only. Dicts and sets are encoded in a sorted order, numpy arrays by dtype, shape and raw
bytes, pandas objects column by column with every dtype (so two equal DataFrames built
differently get one address, and two a function could tell apart never do). Large buffers are
hashed on their own, with threads, straight from memory: never by pickling them first. Anything
else is encoded by its pickle, with the sets inside it (whose pickled order follows a process's
string hashes) replaced by their sorted encodings, and the user's own classes and functions by
their content. How a value is *packed* for storage is :mod:`pythagoras_p2p.store.packing`.

numpy arrays and pandas objects are encoded by :mod:`.arrays`, which registers itself here
(:func:`register_foreign_encoder`) when the package is imported; numpy and pandas are never
imported for it, only recognised if the user already uses them.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from blake3 import blake3

from ..errors import SerializationError

__all__ = [
    "ENCODING_VERSION",
    "Address",
    "value_address",
    "hash_bytes",
    "checked_address",
    "register_code_token",
    "register_foreign_encoder",
    "encode_into",
    "encode_length",
    "BIG_BUFFER",
    "PLAIN_TYPES",
]

#: Bumped whenever the encoding changes; it is hashed into every address.
ENCODING_VERSION = b"pythagoras-enc-2\0"

Address = bytes  # 32 bytes of blake3

_PICKLE_PROTOCOL = 5
BIG_BUFFER = 1 << 16  # buffers at least this big are hashed separately (and with threads)
_THREADS_FROM = 8 << 20  # blake3 uses every core for buffers at least this big
_pack_q = struct.Struct("<q").pack
_pack_Q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack


def hash_bytes(data: Any) -> Address:
    """blake3 digest of a bytes-like object, using threads for large ones."""
    n = memoryview(data).nbytes
    if n >= _THREADS_FROM:
        return blake3(data, max_threads=blake3.AUTO).digest()
    return blake3(data).digest()


def value_address(obj: Any) -> Address:
    """The 32-byte content address of ``obj``: equal content, equal address, in any process."""
    out = bytearray(ENCODING_VERSION)
    try:
        encode_into(obj, out)
    except RecursionError:
        # Caught here rather than guarded in every container's encoder, which would cost the
        # common case: the walk to tell a cycle from mere depth runs only when one happened.
        raise _too_deep(obj) from None
    return blake3(out).digest()


def _too_deep(obj: Any) -> SerializationError:
    """The error for a value whose encoding ran out of stack: it holds itself, or is too deep."""
    if _contains_itself(obj):
        return SerializationError(
            "the value contains itself (a list, tuple, dict or set in it holds itself, directly "
            "or through others), so it has no content address; pass a structure without cycles"
        )
    return SerializationError(
        f"the value is nested too deeply to be hashed (deeper than Python's recursion limit of "
        f"{sys.getrecursionlimit()} allows); pass a flatter structure"
    )


def _contains_itself(obj: Any) -> bool:
    """Whether a list, tuple, dict or set in ``obj`` holds itself; walked without recursion."""
    containers = (list, tuple, dict, set, frozenset)
    path: set[int] = set()  # the containers from obj down to the one being looked at
    done: set[int] = set()
    stack = [(obj, False)]
    while stack:
        item, leaving = stack.pop()
        if leaving:
            path.discard(id(item))
            done.add(id(item))
        elif type(item) in containers and id(item) not in done:
            if id(item) in path:
                return True
            path.add(id(item))
            stack.append((item, True))
            # dict keys are hashable, so they cannot lead back to a mutable container
            children = item.values() if type(item) is dict else item
            stack.extend((child, False) for child in children)
    return False


def checked_address(obj: Any) -> tuple[Address, bool]:
    """``obj``'s address, and whether it can be derived again from the value alone: not when
    some part was encoded by its pickle, whose bytes another process (or release) may write
    differently (an object's own ``__reduce__``, a release that sorted sets otherwise)."""
    _PICKLED.count = 0
    address = value_address(obj)
    return address, not _PICKLED.count


_PICKLED = threading.local()  # how many parts checked_address had to encode by pickle


# --------------------------------------------------------------------------- canonical encoding


def encode_into(obj: Any, out: bytearray) -> None:
    """Append the canonical encoding of ``obj`` to ``out`` (what :func:`value_address` hashes)."""
    encoder = _ENCODERS.get(type(obj))
    if encoder is not None:
        encoder(obj, out)
        return
    if _encode_foreign is not None and _encode_foreign(obj, out):
        return
    _encode_by_pickle(obj, out)


def encode_length(n: int, out: bytearray) -> None:
    """Append a length (a count or a size) as the encoding writes it: 8 bytes, little-endian."""
    out += _pack_Q(n)


def _enc_none(obj: None, out: bytearray) -> None:
    out += b"N"


def _enc_bool(obj: bool, out: bytearray) -> None:
    out += b"T" if obj else b"F"


def _enc_int(obj: int, out: bytearray) -> None:
    if -(1 << 63) <= obj < (1 << 63):
        out += b"i" + _pack_q(obj)
    else:
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        out += b"I"
        encode_length(len(raw), out)
        out += raw


def _enc_float(obj: float, out: bytearray) -> None:
    out += b"f" + _pack_d(obj)


def _enc_complex(obj: complex, out: bytearray) -> None:
    out += b"c" + _pack_d(obj.real) + _pack_d(obj.imag)


def _enc_str(obj: str, out: bytearray) -> None:
    raw = obj.encode("utf-8", "surrogatepass")
    out += b"s"
    encode_length(len(raw), out)
    out += raw


def _enc_bytes(obj: bytes | bytearray, out: bytearray, tag: bytes = b"b") -> None:
    n = len(obj)
    out += tag
    if n >= BIG_BUFFER:
        out += b"#" + hash_bytes(obj)
    else:
        encode_length(n, out)
        out += obj


def _enc_bytearray(obj: bytearray, out: bytearray) -> None:
    _enc_bytes(obj, out, b"B")


def _enc_sequence(tag: bytes):
    def encode(obj: list | tuple, out: bytearray) -> None:
        out += tag
        encode_length(len(obj), out)
        for item in obj:
            encode_into(item, out)

    return encode


def _sorted_encodings(items) -> list[bytes]:
    encoded = []
    for item in items:
        buf = bytearray()
        encode_into(item, buf)
        encoded.append(bytes(buf))
    encoded.sort()
    return encoded


def _enc_dict(obj: dict, out: bytearray) -> None:
    out += b"d"
    encode_length(len(obj), out)
    pairs = []
    for key, value in obj.items():
        kbuf = bytearray()
        encode_into(key, kbuf)
        pairs.append((bytes(kbuf), value))
    pairs.sort(key=lambda kv: kv[0])
    for kbuf, value in pairs:
        out += kbuf
        encode_into(value, out)


def _enc_set(tag: bytes):
    def encode(obj: set | frozenset, out: bytearray) -> None:
        out += tag
        encode_length(len(obj), out)
        for item in _sorted_encodings(obj):
            out += item

    return encode


_encode_foreign: Callable[[Any, bytearray], bool] | None = None


def register_foreign_encoder(encode: Callable[[Any, bytearray], bool]) -> None:
    """Say how values of a type none of the encoders here knows are encoded before falling back
    to their pickle (numpy and pandas objects: :mod:`.arrays`). ``encode(obj, out)`` appends the
    encoding of ``obj`` and returns True, or returns False and leaves ``out`` alone."""
    global _encode_foreign
    _encode_foreign = encode


_code_token: Callable[[Any], bytes | None] | None = None


def register_code_token(token: Callable[[Any], bytes | None]) -> None:
    """Say how a function or class of the user's own code is addressed (identity.code_token):
    by its content, where pickle would write only its name."""
    global _code_token
    _code_token = token


def _code_ref(module: str, qualname: str, token: bytes) -> None:
    """Stands for user code in the pickle of an address; such a pickle is never loaded."""
    raise SerializationError("a pickle made for an address cannot be loaded")


class _AddressPickler(pickle.Pickler):
    """A pickler for addresses only: a class or function of the user's own code is written with
    its content, so an object's address changes when its class's code does."""

    def reducer_override(self, obj: Any) -> Any:
        if _code_token is not None and isinstance(obj, (type, types.FunctionType)):
            token = _code_token(obj)
            if token is not None:
                return _code_ref, (obj.__module__, obj.__qualname__, token)
        return NotImplemented


class _SetsSorted(_AddressPickler):
    """Also every set and frozenset inside the value is written as its items' canonical
    encodings, sorted, so the bytes do not depend on the process's hash seed."""

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is set or kind is frozenset:
            return (kind.__name__, tuple(_sorted_encodings(obj)))
        return None


class _Cycle(BaseException):
    """An object reached again through a set of its own: no canonical order exists. (Not an
    Exception, so the encoders between here and the outermost attempt let it through.)"""


_SORTING = threading.local()  # ids of the objects whose sets are being sorted, outermost first


def _pickle_for_address(obj: Any, buffers: list) -> bytes:
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
    try:
        _SetsSorted(stream, protocol=_PICKLE_PROTOCOL, buffer_callback=sorted_buffers.append).dump(obj)
    except _Cycle:
        if not outermost:
            raise
        return data  # objects that hold each other through sets: pickle's own order
    finally:
        active.pop()
    buffers[:] = sorted_buffers
    return stream.getvalue()


def _encode_by_pickle(obj: Any, out: bytearray) -> None:
    _PICKLED.count = getattr(_PICKLED, "count", 0) + 1
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = _pickle_for_address(obj, buffers)
    except Exception as exc:
        raise SerializationError(
            f"a value of type {type(obj).__qualname__} cannot be hashed because it cannot be "
            f"pickled ({type(exc).__name__}: {exc}); pass plain data (numbers, strings, "
            f"containers, numpy arrays, pandas objects) or make the type picklable"
        ) from None
    out += b"p"
    encode_length(len(data), out)
    out += data
    for buf in buffers:
        raw = buf.raw()
        out += b"#" + hash_bytes(raw)


_ENCODERS = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    list: _enc_sequence(b"l"),
    tuple: _enc_sequence(b"u"),
    dict: _enc_dict,
    set: _enc_set(b"S"),
    frozenset: _enc_set(b"Z"),
}

#: Types encoded above without a pickle (an extension dtype's parameters of these types are too).
PLAIN_TYPES = frozenset(_ENCODERS)
