"""Canonical encoding of values and their content addresses.

The **address** of a value is blake3 over a canonical, versioned byte encoding that depends on
content only. Dicts and sets are encoded in a sorted order, numpy arrays by dtype, shape and raw
bytes, pandas objects column by column with every dtype (so two equal DataFrames built
differently get one address, and two a function could tell apart never do). Large buffers are
hashed on their own, with threads, straight from memory: never by pickling them first. Anything
else is encoded by its pickle, with the sets inside it (whose pickled order follows a process's
string hashes) replaced by their sorted encodings, and the user's own classes and functions by
their content. How a value is *packed* for storage is :mod:`pythagoras_p2p.store.packing`.

numpy and pandas are never imported here; they are recognised only if the user already uses them.
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
]

#: Bumped whenever the encoding changes; it is hashed into every address.
ENCODING_VERSION = b"pythagoras-enc-2\0"

Address = bytes  # 32 bytes of blake3

_PICKLE_PROTOCOL = 5
_BIG_BUFFER = 1 << 16  # buffers at least this big are hashed separately (and with threads)
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
        _encode(obj, out)
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


def _encode(obj: Any, out: bytearray) -> None:
    encoder = _ENCODERS.get(type(obj))
    if encoder is not None:
        encoder(obj, out)
        return
    module = type(obj).__module__
    if module.startswith("numpy"):
        np = sys.modules.get("numpy")
        # Subclasses (masked arrays, matrices) and structured scalars carry more than their
        # bytes and dtype string: their pickle, which holds everything, addresses them.
        if np is not None:
            if type(obj) is np.ndarray:
                _encode_ndarray(obj, out)
                return
            if isinstance(obj, np.generic) and obj.dtype.fields is None:
                out += b"n" + obj.dtype.str.encode() + b"\0" + obj.tobytes()
                return
    elif module.startswith("pandas"):
        pd = sys.modules.get("pandas")
        if pd is not None and _encode_pandas(obj, out, pd):
            return
    _encode_by_pickle(obj, out)


def _len(n: int, out: bytearray) -> None:
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
        _len(len(raw), out)
        out += raw


def _enc_float(obj: float, out: bytearray) -> None:
    out += b"f" + _pack_d(obj)


def _enc_complex(obj: complex, out: bytearray) -> None:
    out += b"c" + _pack_d(obj.real) + _pack_d(obj.imag)


def _enc_str(obj: str, out: bytearray) -> None:
    raw = obj.encode("utf-8", "surrogatepass")
    out += b"s"
    _len(len(raw), out)
    out += raw


def _enc_bytes(obj: bytes | bytearray, out: bytearray, tag: bytes = b"b") -> None:
    n = len(obj)
    out += tag
    if n >= _BIG_BUFFER:
        out += b"#" + hash_bytes(obj)
    else:
        _len(n, out)
        out += obj


def _enc_bytearray(obj: bytearray, out: bytearray) -> None:
    _enc_bytes(obj, out, b"B")


def _enc_sequence(tag: bytes):
    def encode(obj: list | tuple, out: bytearray) -> None:
        out += tag
        _len(len(obj), out)
        for item in obj:
            _encode(item, out)

    return encode


def _sorted_encodings(items) -> list[bytes]:
    encoded = []
    for item in items:
        buf = bytearray()
        _encode(item, buf)
        encoded.append(bytes(buf))
    encoded.sort()
    return encoded


def _enc_dict(obj: dict, out: bytearray) -> None:
    out += b"d"
    _len(len(obj), out)
    pairs = []
    for key, value in obj.items():
        kbuf = bytearray()
        _encode(key, kbuf)
        pairs.append((bytes(kbuf), value))
    pairs.sort(key=lambda kv: kv[0])
    for kbuf, value in pairs:
        out += kbuf
        _encode(value, out)


def _enc_set(tag: bytes):
    def encode(obj: set | frozenset, out: bytearray) -> None:
        out += tag
        _len(len(obj), out)
        for item in _sorted_encodings(obj):
            out += item

    return encode


def _encode_ndarray(arr: Any, out: bytearray) -> None:
    out += b"a" + arr.dtype.str.encode() + b"\0"
    _len(arr.ndim, out)
    for dim in arr.shape:
        _len(dim, out)
    if arr.dtype.hasobject:
        _encode(arr.tolist(), out)
        return
    if arr.dtype.fields is not None:  # structured dtypes: the full description counts
        _encode(repr(arr.dtype.descr), out)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    if arr.dtype.kind in "mM":  # datetimes export no buffer; their int64 view has the same bytes
        arr = arr.view("i8")
    data = memoryview(arr).cast("B") if arr.nbytes else b""
    if len(data) >= _BIG_BUFFER:
        out += b"#" + hash_bytes(data)
    else:
        out += b"="
        _len(len(data), out)
        out += data


def _encode_pandas(obj: Any, out: bytearray, pd: Any) -> bool:
    """Encode pandas' own frames, series and indexes by content; return False for anything else
    (scalars, bare arrays, subclasses from other modules), which their pickle addresses."""
    kind = type(obj)
    if kind is pd.DataFrame:
        out += b"D"
        _encode_metadata(obj, out)
        _encode_index(obj.columns, out, pd)
        _encode_index(obj.index, out, pd)
        for _, column in obj.items():
            _encode_values(column, out, pd)
        return True
    if kind is pd.Series:
        out += b"R"
        _encode(obj.name, out)
        _encode_metadata(obj, out)
        _encode_index(obj.index, out, pd)
        _encode_values(obj, out, pd)
        return True
    if isinstance(obj, pd.Index) and kind.__module__.partition(".")[0] == "pandas":
        _encode_index(obj, out, pd)
        return True
    return False


def _encode_metadata(obj: Any, out: bytearray) -> None:
    """What a frame or series carries besides labels and data: ``attrs`` and ``flags``."""
    _encode(obj.flags.allows_duplicate_labels, out)
    _encode(obj.attrs, out)


def _encode_index(index: Any, out: bytearray, pd: Any) -> None:
    """An index: level by level, its name and values with their dtype, and its frequency."""
    if isinstance(index, pd.MultiIndex):
        # Level values, not levels and codes: equal indexes may keep different unused level
        # values (a slice keeps them all).
        out += b"M"
        _len(index.nlevels, out)
        for i in range(index.nlevels):
            _encode_index(index.get_level_values(i), out, pd)
        return
    # The class is not encoded: pandas picks it from the dtype, except that a RangeIndex and the
    # int64 Index of its values share an address. A function could tell them apart, but pandas
    # itself turns one into the other in ordinary operations (concat, reset_index, read_csv).
    out += b"X"
    _encode(index.name, out)
    _encode_values(index, out, pd)
    _encode(_frequency(index), out)


def _frequency(index: Any) -> tuple | None:
    """The ``freq`` of a datetime-like index (``shift`` and friends use it), else None."""
    freq = getattr(index, "freq", None)
    if freq is None:
        return None
    # Parameters by repr: their values (timedeltas, datetime64 holidays) would otherwise be
    # pickled. A custom calendar object repeats the weekmask and holidays, which are kept.
    kwds = sorted((k, repr(v)) for k, v in freq.kwds.items() if k != "calendar")
    return (freq.freqstr, freq.normalize, kwds)


def _encode_values(values: Any, out: bytearray, pd: Any) -> None:
    """The values of a column, series or index with their full dtype, independent of how pandas
    lays them out; numpy-backed values as raw buffers."""
    dtype = values.dtype
    _encode_dtype(dtype, out, pd)
    if isinstance(dtype, sys.modules["numpy"].dtype):
        _encode_ndarray(values.to_numpy(copy=False), out)
    else:
        _encode_extension_array(values.array, out, pd)


def _encode_dtype(dtype: Any, out: bytearray, pd: Any) -> None:
    """A dtype's full identity: numpy's with byte order and unit; an extension dtype's class,
    name and each parameter that defines it (categories, tz, unit, storage, fill value, ...)."""
    if isinstance(dtype, sys.modules["numpy"].dtype):
        out += b"yn" + dtype.str.encode() + b"\0"
        return
    out += b"ye"
    _encode(f"{type(dtype).__module__}.{type(dtype).__qualname__}", out)
    _encode(str(dtype), out)
    for name in dtype._metadata:  # what pandas compares to tell two dtypes apart
        _encode(name, out)
        _encode_dtype_part(getattr(dtype, name), out, pd)


def _encode_dtype_part(part: Any, out: bytearray, pd: Any) -> None:
    """One parameter of an extension dtype."""
    np = sys.modules["numpy"]
    if isinstance(part, pd.Index):  # categories
        _encode_index(part, out, pd)
    elif isinstance(part, (np.dtype, pd.api.extensions.ExtensionDtype)):  # a subtype
        _encode_dtype(part, out, pd)
    elif type(part) in _ENCODERS or isinstance(part, np.generic):
        _encode(part, out)
    else:  # a time zone, a frequency, a pyarrow type: its class and repr name it
        _encode(f"{type(part).__module__}.{type(part).__qualname__}", out)
        _encode(repr(part), out)


def _encode_extension_array(arr: Any, out: bytearray, pd: Any) -> None:
    """The data of an extension array whose dtype is encoded already: the buffers pandas keeps
    where it keeps them, else element by element."""
    arrays = pd.arrays
    if isinstance(arr, (arrays.IntegerArray, arrays.FloatingArray, arrays.BooleanArray)):
        data, mask = arr._data, arr._mask
        if mask.any():  # what lies under the mask is a leftover, not content
            data = data.copy()
            data[mask] = 0
        _encode_ndarray(mask, out)
        _encode_ndarray(data, out)
    elif isinstance(arr, pd.Categorical):
        _encode_ndarray(arr.codes, out)
    elif isinstance(arr, (arrays.DatetimeArray, arrays.TimedeltaArray, arrays.PeriodArray)):
        _encode_ndarray(arr.asi8, out)
    elif isinstance(arr, arrays.SparseArray):
        _encode_ndarray(arr.to_dense(), out)
    elif isinstance(arr, arrays.IntervalArray):
        _encode_ndarray(arr.isna(), out)
        _encode_values(arr.left, out, pd)
        _encode_values(arr.right, out, pd)
    elif isinstance(arr.dtype, pd.StringDtype):  # the dtype fixes what a missing value is
        mask = arr.isna()
        _encode_ndarray(mask, out)
        _encode(arr[~mask].tolist(), out)
    else:  # pyarrow-backed and third-party arrays
        out += b"o"
        _encode(arr.tolist(), out)


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
    _len(len(data), out)
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
