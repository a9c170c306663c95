"""Canonical encoding of values and their content addresses.

The **address** of a value is blake3 over a canonical, versioned byte encoding of what a function
given the value can observe, and of nothing else (so equal values built differently share it):

* **Order where the user sets it.** Lists and tuples in order; dicts in insertion order (a
  function that iterates one sees it). Sets and frozensets by the sorted encodings of their
  items: a set's iteration order is observable too, but it follows the items' hashes (a string's
  differs from one process to the next), not anything the caller chose, so equal sets share one
  address in every process.
* **Aliasing.** ``[row, row]`` is not ``[row, copy(row)]``: appending to the first item of one
  changes its second. Every *mutable* object met (list, dict, set, bytearray, numpy array,
  DataFrame, Series, and any object encoded by its pickle but the immutable kinds below) is
  numbered in the order first met; meeting it again writes a back reference to that number. An
  object met again while it is still being encoded (a value that holds itself) has no address: a
  clear error. Immutable values (None, bools, numbers, strings, bytes, tuples, frozensets, ranges,
  dates, decimals, paths, enum members...) are not numbered: sharing one cannot change what a
  function computes (only ``is`` tells), and counting it would split equal values built
  differently. The items of a set are numbered apart from the rest (their encodings are sorted, so
  the order they are met in is the hash order again); inside an object encoded by its pickle,
  pickle's own memo writes the sharing, but sharing across that boundary is not seen.
* numpy arrays by dtype, shape, memory order (C or Fortran: ``ravel("K")``, ``.flags`` and
  ``.strides`` tell them apart; other views as their C-ordered copy, which is what pickle keeps of
  them) and raw bytes; pandas objects
  column by column with every dtype (:mod:`.arrays`). Large buffers are hashed on their own, with
  threads, straight from memory: never by pickling them first.
* Enum members by their class (its code, if it is the user's) and their name and value.
* Anything else by its pickle, with the sets inside it (whose pickled order follows a process's
  string hashes) replaced by their sorted encodings, and the user's own classes and functions by
  their content.

How a value is *packed* for storage is :mod:`pythagoras_p2p.store.packing`.

numpy arrays and pandas objects are encoded by :mod:`.arrays`, which registers itself here
(:func:`register_foreign_encoder`) when the package is imported; numpy and pandas are never
imported for it, only recognised if the user already uses them.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import pathlib
import pickle
import struct
import sys
import threading
import types
import uuid
from collections.abc import Callable
from typing import Any

from blake3 import blake3

from ..errors import SerializationError
from .pickled import pickle_for_address, register_code_token, token_of

__all__ = [
    "ENCODING_VERSION",
    "Address",
    "value_address",
    "shared_address",
    "hash_bytes",
    "checked_address",
    "register_code_token",
    "register_foreign_encoder",
    "encode_into",
    "encode_length",
    "open_shared",
    "close_shared",
    "BIG_BUFFER",
    "PLAIN_TYPES",
]

#: Bumped whenever the encoding changes; it is hashed into every address.
ENCODING_VERSION = b"pythagoras-enc-3\0"

Address = bytes  # 32 bytes of blake3

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
    return shared_address(obj)[0]


def shared_address(obj: Any) -> tuple[Address, list]:
    """``obj``'s address, and the mutable objects its encoding numbered (see :func:`open_shared`),
    in order: what a call compares to see one object in two of its arguments."""
    out = _Out(ENCODING_VERSION)
    try:
        _encode(obj, out)
    except RecursionError:
        # A value that holds itself is caught where it happens (see open_shared): running out of
        # stack means depth only.
        raise SerializationError(
            f"the value is nested too deeply to be hashed (deeper than Python's recursion limit "
            f"of {sys.getrecursionlimit()} allows); pass a flatter structure"
        ) from None
    return blake3(out).digest(), out.held


def checked_address(obj: Any) -> tuple[Address, bool]:
    """``obj``'s address, and whether it can be derived again from the value alone: not when
    some part was encoded by its pickle, whose bytes another process (or release) may write
    differently (an object's own ``__reduce__``, a release that sorted sets otherwise)."""
    _PICKLED.count = 0
    address = value_address(obj)
    return address, not _PICKLED.count


_PICKLED = threading.local()  # how many parts checked_address had to encode by pickle


# --------------------------------------------------------------------------- canonical encoding


class _Out(bytearray):
    """The bytes of one encoding, with the mutable objects met so far (see :func:`open_shared`)."""

    __slots__ = ("seen", "held")

    def __init__(self, data: bytes = b""):
        super().__init__(data)
        self.seen: dict[int, int] = {}  # id -> number; ~number while it is being encoded
        self.held: list = []  # the objects numbered: their ids are not reused meanwhile


def encode_into(obj: Any, out: bytearray) -> None:
    """Append the canonical encoding of ``obj`` to ``out`` (what :func:`value_address` hashes).

    Given a buffer of its own (not one this module passed to an encoder), ``obj``'s aliasing is
    numbered apart from what else the buffer holds."""
    if type(out) is _Out:
        _encode(obj, out)
        return
    atom = _ATOM_ENCODERS.get(type(obj))
    if atom is not None:
        atom(obj, out)
        return
    buf = _Out()
    _encode(obj, buf)
    out += buf


def _encode(obj: Any, out: _Out) -> None:
    encoder = _ENCODERS.get(type(obj))
    if encoder is not None:
        encoder(obj, out)
        return
    if _encode_foreign is not None and _encode_foreign(obj, out):
        return
    if isinstance(obj, enum.Enum):
        _enc_enum(obj, out)
        return
    if isinstance(obj, _IMMUTABLE):
        _encode_by_pickle(obj, out)
    elif open_shared(obj, out):
        _encode_by_pickle(obj, out)
        close_shared(obj, out)


def open_shared(obj: Any, out: bytearray) -> bool:
    """Start encoding the mutable ``obj``: True, or False when this encoding met it before and a
    back reference to it was written instead. Pair a True with :func:`close_shared`."""
    if type(out) is not _Out:  # a caller's own buffer: no sharing to speak of
        return True
    seen = out.seen
    number = seen.get(id(obj))
    if number is None:
        seen[id(obj)] = ~len(out.held)
        out.held.append(obj)
        return True
    if number < 0:
        raise SerializationError(
            "the value contains itself (a list, tuple, dict or set in it holds itself, directly "
            "or through others), so it has no content address; pass a structure without cycles"
        )
    out += b"@"
    encode_length(number, out)
    return False


def close_shared(obj: Any, out: bytearray) -> None:
    """``obj`` (opened by :func:`open_shared`) is encoded: meeting it again is sharing, not a cycle."""
    if type(out) is _Out:
        out.seen[id(obj)] = ~out.seen[id(obj)]


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


def _enc_bytearray(obj: bytearray, out: _Out) -> None:
    if open_shared(obj, out):
        _enc_bytes(obj, out, b"B")
        close_shared(obj, out)


def _enc_tuple(obj: tuple, out: _Out) -> None:
    out += b"u"
    encode_length(len(obj), out)
    for item in obj:
        _encode(item, out)


def _enc_list(obj: list, out: _Out) -> None:
    # open_shared and close_shared inlined: lists and dicts are most of what is encoded
    seen, key = out.seen, id(obj)
    if key in seen:
        open_shared(obj, out)  # a back reference, or the error of a value holding itself
        return
    seen[key] = ~len(out.held)
    out.held.append(obj)
    out += b"l"
    encode_length(len(obj), out)
    for item in obj:
        _encode(item, out)
    seen[key] = ~seen[key]


def _enc_dict(obj: dict, out: _Out) -> None:
    """Items in insertion order: iterating a dict shows it."""
    seen, key = out.seen, id(obj)
    if key in seen:
        open_shared(obj, out)
        return
    seen[key] = ~len(out.held)
    out.held.append(obj)
    out += b"d"
    encode_length(len(obj), out)
    for k, value in obj.items():
        _encode(k, out)
        _encode(value, out)
    seen[key] = ~seen[key]


def _sorted_encodings(items) -> list[bytes]:
    """Each item encoded on its own (its sharing numbered apart), sorted."""
    encoded = []
    for item in items:
        buf = _Out()
        _encode(item, buf)
        encoded.append(bytes(buf))
    encoded.sort()
    return encoded


def _enc_set(obj: set, out: _Out) -> None:
    if open_shared(obj, out):
        _enc_frozenset(obj, out, b"S")
        close_shared(obj, out)


def _enc_frozenset(obj: set | frozenset, out: _Out, tag: bytes = b"Z") -> None:
    out += tag
    encode_length(len(obj), out)
    for item in _sorted_encodings(obj):
        out += item


def _enc_enum(member: enum.Enum, out: _Out) -> None:
    """A member by its class, name and value. Not by its pickle: that names the class, whose
    token (the user's code) walks the members, whose pickles name the class again."""
    cls = type(member)
    token = token_of(cls)
    out += b"E"
    if token is None:
        _enc_str(f"{cls.__module__}.{cls.__qualname__}", out)
    else:
        out += b"#" + token
    _encode(member._name_, out)
    _encode(member._value_, out)


_encode_foreign: Callable[[Any, bytearray], bool] | None = None


def register_foreign_encoder(encode: Callable[[Any, bytearray], bool]) -> None:
    """Say how values of a type none of the encoders here knows are encoded before falling back
    to their pickle (numpy and pandas objects: :mod:`.arrays`). ``encode(obj, out)`` appends the
    encoding of ``obj`` and returns True, or returns False and leaves ``out`` alone."""
    global _encode_foreign
    _encode_foreign = encode


def _encode_by_pickle(obj: Any, out: bytearray) -> None:
    _PICKLED.count = getattr(_PICKLED, "count", 0) + 1
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle_for_address(obj, buffers, _sorted_encodings)
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


_ATOM_ENCODERS: dict[type, Callable[[Any, bytearray], None]] = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: _enc_str,
    bytes: _enc_bytes,
}

_ENCODERS: dict[type, Callable[[Any, _Out], None]] = {
    **_ATOM_ENCODERS,
    bytearray: _enc_bytearray,
    list: _enc_list,
    tuple: _enc_tuple,
    dict: _enc_dict,
    set: _enc_set,
    frozenset: _enc_frozenset,
}

#: Types encoded above without a pickle (an extension dtype's parameters of these types are too).
PLAIN_TYPES = frozenset(_ENCODERS)

# Encoded by their pickle but immutable (their subclasses too: pandas' Timestamp, a time zone):
# sharing one is not numbered (see the module's docstring). Functions and classes stand for code.
_IMMUTABLE = (
    tuple, frozenset, str, bytes, int, float, complex, range, slice, type, types.FunctionType,
    types.BuiltinFunctionType, datetime.date, datetime.time, datetime.timedelta, datetime.tzinfo,
    decimal.Decimal, fractions.Fraction, uuid.UUID, pathlib.PurePath,
)
