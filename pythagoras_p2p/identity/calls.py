"""Call addresses: a function's fingerprint with its arguments' value addresses.

The address of one call hashes the fingerprint of its function (:mod:`.fingerprint`) with the
sorted argument names and the value address of each argument (:mod:`.encoding`), so the order
in which arguments are given does not matter; defaults are bound before (``PureFunction.bind``),
so ``f(x=1)`` and ``f(x=1, y=<default>)`` are one call.
"""

from __future__ import annotations

from typing import Any

from blake3 import blake3

from ..defaults import HASH_MEMO_FROM as _MEMO_FROM
from ..errors import SerializationError
from .encoding import Address, value_address

__all__ = ["call_address", "approx_nbytes"]

_CALL_VERSION = b"pythagoras-call-2\0"


def call_address(
    fp: Address, kwargs: dict[str, Any], memo: dict[int, tuple[Any, Address]] | None = None
) -> tuple[Address, dict[str, Address]]:
    """The address of one call, and the value address of each argument.

    It hashes the function's fingerprint with the sorted argument names and their values'
    addresses, so the order in which arguments are given does not matter. ``memo`` (object id →
    (object, address)) lets many calls that share a large argument hash it once.
    """
    out = bytearray(_CALL_VERSION)
    out += fp
    addresses = {}
    for name in sorted(kwargs):
        value = kwargs[name]
        try:
            if memo is not None and approx_nbytes(value) >= _MEMO_FROM:
                hit = memo.get(id(value))
                if hit is None:
                    hit = memo[id(value)] = (value, value_address(value))
                address = hit[1]
            else:
                address = value_address(value)
        except SerializationError as exc:
            raise SerializationError(f"argument {name!r}: {exc}") from None
        addresses[name] = address
        out += name.encode()
        out += b"\0"
        out += address
    return blake3(out).digest(), addresses


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
