"""Canonical encoding of numpy arrays and scalars and of pandas frames, series and indexes.

Arrays are encoded by dtype, shape, memory order and raw bytes (large buffers hashed on their own,
never pickled); pandas objects column by column with their index and every dtype, so two equal
DataFrames built differently get one address. The memory order of an array counts (C or Fortran:
``ravel("K")``, ``.flags`` and ``.strides`` show it; any other view travels, and is addressed, as
its C-ordered copy). That of the buffers pandas keeps does not: it follows how a frame was built (its blocks), and pandas
itself changes it in ordinary operations. Arrays, frames and series are mutable: sharing one
inside a value is numbered (:func:`.encoding.open_shared`); an index is not (pandas' are
immutable). The rest of the encoding, and the addresses made
of it, are :mod:`.encoding`; this module registers :func:`encode_array_or_frame` there when the
package is imported (``identity/__init__``).

numpy and pandas are never imported here; they are recognised only if the user already uses them.
"""

from __future__ import annotations

import sys
from typing import Any

from .encoding import (
    BIG_BUFFER,
    PLAIN_TYPES,
    close_shared,
    encode_into,
    encode_length,
    hash_bytes,
    open_shared,
)

__all__ = ["encode_array_or_frame"]


def encode_array_or_frame(obj: Any, out: bytearray) -> bool:
    """Append the encoding of a numpy array or scalar, or of a pandas frame, series or index,
    and return True; return False for anything else (subclasses, structured scalars, other
    pandas objects), which their pickle addresses."""
    module = type(obj).__module__
    if module.startswith("numpy"):
        np = sys.modules.get("numpy")
        # Subclasses (masked arrays, matrices) and structured scalars carry more than their
        # bytes and dtype string: their pickle, which holds everything, addresses them.
        if np is not None:
            if type(obj) is np.ndarray:
                if open_shared(obj, out):
                    _encode_ndarray(obj, out, layout=True)
                    close_shared(obj, out)
                return True
            if isinstance(obj, np.generic) and obj.dtype.fields is None:
                out += b"n" + obj.dtype.str.encode() + b"\0" + obj.tobytes()
                return True
    elif module.startswith("pandas"):
        pd = sys.modules.get("pandas")
        if pd is not None:
            return _encode_pandas(obj, out, pd)
    return False


def _encode_ndarray(arr: Any, out: bytearray, layout: bool = False) -> None:
    """An array's dtype, shape and bytes (in C order); with ``layout``, its memory order too."""
    out += b"a" + arr.dtype.str.encode() + b"\0"
    encode_length(arr.ndim, out)
    for dim in arr.shape:
        encode_length(dim, out)
    if layout:
        _encode_layout(arr, out)
    if arr.dtype.hasobject:
        encode_into(arr.tolist(), out)
        return
    if arr.dtype.fields is not None:  # structured dtypes: the full description counts
        encode_into(repr(arr.dtype.descr), out)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    if arr.dtype.kind in "mM":  # datetimes export no buffer; their int64 view has the same bytes
        arr = arr.view("i8")
    data = memoryview(arr).cast("B") if arr.nbytes else b""
    if len(data) >= BIG_BUFFER:
        out += b"#" + hash_bytes(data)
    else:
        out += b"="
        encode_length(len(data), out)
        out += data


def _encode_layout(arr: Any, out: bytearray) -> None:
    """Fortran order or C order: what ``ravel("K")``, ``.flags`` and ``.strides`` show, and what
    an array keeps when it is pickled (to be stored, or sent to a worker). Any other view is
    pickled as its C-ordered copy, so it is addressed as that copy: a value must keep its
    address when read back, or the store's checks would take it for damage."""
    flags = arr.flags
    out += b"F" if flags.f_contiguous and not flags.c_contiguous else b"C"


def _encode_pandas(obj: Any, out: bytearray, pd: Any) -> bool:
    """Encode pandas' own frames, series and indexes by content; return False for anything else
    (scalars, bare arrays, subclasses from other modules), which their pickle addresses."""
    kind = type(obj)
    if kind is pd.DataFrame or kind is pd.Series:
        if open_shared(obj, out):  # mutable: sharing one counts
            _encode_frame_or_series(obj, out, pd)
            close_shared(obj, out)
        return True
    if isinstance(obj, pd.Index) and kind.__module__.partition(".")[0] == "pandas":
        _encode_index(obj, out, pd)
        return True
    return False


def _encode_frame_or_series(obj: Any, out: bytearray, pd: Any) -> None:
    if type(obj) is pd.DataFrame:
        out += b"D"
        _encode_metadata(obj, out)
        _encode_index(obj.columns, out, pd)
        _encode_index(obj.index, out, pd)
        for _, column in obj.items():
            _encode_values(column, out, pd)
        return
    out += b"R"
    encode_into(obj.name, out)
    _encode_metadata(obj, out)
    _encode_index(obj.index, out, pd)
    _encode_values(obj, out, pd)


def _encode_metadata(obj: Any, out: bytearray) -> None:
    """What a frame or series carries besides labels and data: ``attrs`` and ``flags``."""
    encode_into(obj.flags.allows_duplicate_labels, out)
    encode_into(obj.attrs, out)


def _encode_index(index: Any, out: bytearray, pd: Any) -> None:
    """An index: level by level, its name and values with their dtype, and its frequency."""
    if isinstance(index, pd.MultiIndex):
        # Levels and codes, not only the values: a level value no row uses any more (a slice
        # keeps them all) shows in ``.levels``, ``groupby`` and ``unstack``.
        out += b"M"
        encode_length(index.nlevels, out)
        for level, codes in zip(index.levels, index.codes, strict=True):
            _encode_index(level, out, pd)  # with its name
            _encode_ndarray(codes.astype("int64", copy=False), out)
        return
    # The class is not encoded, pandas picks it from the dtype; except a RangeIndex, which a
    # function can tell from the int64 Index of its values (its type, ``repr``, ``step``), so it
    # counts, though pandas itself turns one into the other in ordinary operations (a
    # needless recompute costs less than a wrong hit).
    out += b"R" if isinstance(index, pd.RangeIndex) else b"X"
    encode_into(index.name, out)
    _encode_values(index, out, pd)
    encode_into(_frequency(index), out)


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
    encode_into(f"{type(dtype).__module__}.{type(dtype).__qualname__}", out)
    encode_into(str(dtype), out)
    for name in dtype._metadata:  # what pandas compares to tell two dtypes apart
        encode_into(name, out)
        _encode_dtype_part(getattr(dtype, name), out, pd)


def _encode_dtype_part(part: Any, out: bytearray, pd: Any) -> None:
    """One parameter of an extension dtype."""
    np = sys.modules["numpy"]
    if isinstance(part, pd.Index):  # categories
        _encode_index(part, out, pd)
    elif isinstance(part, (np.dtype, pd.api.extensions.ExtensionDtype)):  # a subtype
        _encode_dtype(part, out, pd)
    elif type(part) in PLAIN_TYPES or isinstance(part, np.generic):
        encode_into(part, out)
    else:  # a time zone, a frequency, a pyarrow type: its class and repr name it
        encode_into(f"{type(part).__module__}.{type(part).__qualname__}", out)
        encode_into(repr(part), out)


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
        encode_into(arr[~mask].tolist(), out)
    else:  # pyarrow-backed and third-party arrays
        out += b"o"
        encode_into(arr.tolist(), out)
