"""The large arguments of runs of calls: hashed once, kept once where workers read them.

A run keeps an :class:`Arguments` of its own; a joblib ``Parallel`` call shares one across the
runs of its batches, so ``X`` and ``y`` are kept (and sent to each peer) once for the whole call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..defaults import INLINE_VALUE_LIMIT
from ..errors import PythagorasError, StoreFullError
from ..identity.calls import approx_nbytes
from ..identity.encoding import value_address

if TYPE_CHECKING:
    from .interfaces import Backend

__all__ = ["Arguments", "large_addresses"]


class Arguments:
    """The large arguments handed to a backend for the runs of one scope (one run, or every
    run of a joblib ``Parallel`` call): each is hashed once, kept once where the workers read it
    (sent once to each peer), and let go of when the scope ends."""

    def __init__(self, cloud: Backend):
        self.cloud = cloud
        self.memo: dict = {}  # object id -> (object, value address): hashed once
        self._written: list[bytes] = []  # transient copies held for the scope
        self._kept: set[bytes] = set()  # handed to the backend
        self._unkept: set[bytes] = set()  # the store had no room for them: sent with each call
        self._guard = threading.Lock()
        self._over = False  # once over, no copy is held for the scope

    def keep(self, address: bytes, name: str, value: Any) -> bool:
        """Hand a large argument to the backend once (see :func:`~.run.encode_args`).

        On the backend's thread, which may still make a task after a Ctrl-C ended the run."""
        with self._guard:
            if self._over:
                raise PythagorasError("these calls were cancelled")
            if address in self._kept:  # 40 calls sharing one DataFrame: handled once
                return True
            if address in self._unkept:
                return False
            try:
                self.cloud._keep_argument(address, name, value, self._written)
            except StoreFullError:
                self._unkept.add(address)
                return False
            self._kept.add(address)
            return True

    def release(self) -> None:
        """The scope is over: a task made from now on holds nothing; the copies are dropped."""
        with self._guard:
            self._over = True
            written, self._written = self._written, []
        self.memo.clear()
        if written:
            self.cloud._release_values(written)


def large_addresses(kwargs: dict, memo: dict) -> dict[str, bytes]:
    """The value addresses of the arguments large enough to travel by address."""
    out = {}
    for name, value in kwargs.items():
        if approx_nbytes(value) >= INLINE_VALUE_LIMIT:
            hit = memo.get(id(value))
            if hit is None:
                hit = memo[id(value)] = (value, value_address(value))
            out[name] = hit[1]
    return out
