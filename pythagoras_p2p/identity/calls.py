"""Call addresses: a function's fingerprint with its arguments' value addresses.

The address of one call hashes the fingerprint of its function (:mod:`.fingerprint`) with the
argument names and the value address of each argument (:mod:`.encoding`). The function's named
parameters are hashed in sorted order: the order they are given in is not observable. The
arguments a ``**kw`` parameter gathers are hashed after them, in the order given: the function
sees it (iterating ``kw``), and gets them in that order wherever it runs (``bind`` keeps it, and
so does the pickle a worker's arguments travel in). Defaults are bound before
(``PureFunction.bind``), so ``f(x=1)`` and ``f(x=1, y=<default>)`` are one call.

Each argument's address is its own; one mutable object in two arguments (``f(a=row, b=row)``,
or ``f(a=[row], b={"k": row})``) is then written after them, as a pair of (argument, number in
that argument's encoding): the arguments of a call travel to a worker in one pickle, which keeps
such sharing, and the function can see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from blake3 import blake3

from ..defaults import HASH_MEMO_FROM as _MEMO_FROM
from ..errors import SerializationError
from .encoding import Address, shared_address, value_address

__all__ = ["call_address", "memo_address", "approx_nbytes", "argument_digests", "NO_ADDRESSES"]

_CALL_VERSION = b"pythagoras-call-3\0"

# The value addresses of small immutable scalars, by exact type and value: the arguments of most
# calls, hashed once per process instead of once per call. Floats are left out: 0.0 == -0.0 as
# dict keys, but their addresses differ. Kept up to _SCALARS_KEPT entries, then started afresh.
_SCALAR_TYPES = frozenset({int, bool, str, bytes})
_SCALAR_LEN = 256
_SCALARS_KEPT = 1 << 16
_SCALARS: dict = {}
NO_ADDRESSES: Mapping = MappingProxyType({})  # no argument that may travel by address
_NONE = NO_ADDRESSES


def call_address(
    fp: Address, kwargs: dict[str, Any], memo: dict[int, tuple[Any, Address, list]] | None = None,
    named: frozenset[str] | None = None,
) -> tuple[Address, Mapping[str, Address]]:
    """The address of one call, and the value address of each argument that may travel by
    address (every one but small scalars: a call keeps this mapping while it runs).

    It hashes the function's fingerprint with the argument names and their values' addresses:
    the names in ``named`` (the function's named parameters; None: all of them) sorted, then
    the others (which its ``**kw`` gathers) in the order of ``kwargs``. ``memo`` (object id →
    (object, address)) lets many calls that share a large argument hash it once.
    """
    out = bytearray(_CALL_VERSION)
    out += fp
    addresses = None
    holding = None  # (name, the mutable objects its encoding numbered) of each argument holding any
    scalars = _SCALARS
    if named is None or named.issuperset(kwargs):
        names: list[str] = sorted(kwargs)
    else:
        # Which names are named is the function's (its fingerprint's): no mark is needed.
        names = [name for name in kwargs if name in named]
        names.sort()
        names += [name for name in kwargs if name not in named]
    for name in names:
        value = kwargs[name]
        kind = type(value)
        if kind in _SCALAR_TYPES and (len(value) <= _SCALAR_LEN if kind is str or kind is bytes
                                      else value.bit_length() <= 64):
            key = (kind, value)  # the exact type: 1, True and "1" each have their own
            address = scalars.get(key)
            if address is None:
                address = value_address(value)
                if len(scalars) >= _SCALARS_KEPT:
                    scalars.clear()
                scalars[key] = address
            out += name.encode()
            out += b"\0"
            out += address
            continue
        try:
            if memo is not None and approx_nbytes(value) >= _MEMO_FROM:
                _, address, held = _memo_entry(value, memo)
            else:
                address, held = shared_address(value)
        except SerializationError as exc:
            raise SerializationError(f"argument {name!r}: {exc}") from None
        if addresses is None:
            addresses = {}
        addresses[name] = address
        out += name.encode()
        out += b"\0"
        out += address
        if held:
            if holding is None:
                holding = []
            holding.append((name, held))
    if holding is not None and len(holding) > 1:
        _encode_sharing(holding, out)
    return blake3(out).digest(), _NONE if addresses is None else addresses


def _encode_sharing(holding: list[tuple[str, list]], out: bytearray) -> None:
    """Each mutable object met in two arguments: where it is again, and where it was first."""
    first: dict[int, tuple[str, int]] = {}
    for name, held in holding:
        for number, obj in enumerate(held):
            where = first.setdefault(id(obj), (name, number))
            if where[0] != name:
                out += b"=" + name.encode() + b"\0" + number.to_bytes(8, "little")
                out += where[0].encode() + b"\0" + where[1].to_bytes(8, "little")


def memo_address(value: Any, memo: dict[int, tuple[Any, Address, list]]) -> Address:
    """The value address of a large ``value``, hashed once per ``memo`` (object id → (object,
    address, the mutable objects it holds); the object is held, so its id is not reused while the
    memo lives). A memo must live no longer than one run's hashing: an object changed in place
    keeps its id."""
    return _memo_entry(value, memo)[1]


def _memo_entry(value: Any, memo: dict[int, tuple[Any, Address, list]]) -> tuple[Any, Address, list]:
    hit = memo.get(id(value))
    if hit is None:
        hit = memo[id(value)] = (value, *shared_address(value))
    return hit


def approx_nbytes(value: Any) -> int:
    """A cheap estimate of the size of a large value (bytes, numpy, pandas), else 0."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if type(value).__module__.startswith(("numpy", "pandas")):
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int):
            return nbytes
        usage = getattr(value, "memory_usage", None)
        if usage is not None:
            try:
                return int(usage(index=True, deep=False).sum())
            except Exception:
                return 0
    return 0


def argument_digests(kwargs: Mapping[str, Any], addresses: Mapping[str, Address]) -> dict[str, str]:
    """A short digest (8 bytes, hex) of each argument's value address, in the order given: kept
    in a result's metadata so ``explain`` can say which argument differs from a stored call.
    Not an address: nothing is looked up by it. ``addresses`` are those ``call_address`` made
    (the large arguments'); the rest are hashed here (small scalars come from its cache)."""
    digests = {}
    for name, value in kwargs.items():
        address = addresses.get(name)
        if address is None:
            kind = type(value)
            address = _SCALARS.get((kind, value)) if kind in _SCALAR_TYPES else None
            if address is None:
                try:
                    address = value_address(value)
                except SerializationError:
                    continue
        digests[name] = address[:8].hex()
    return digests
