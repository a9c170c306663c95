"""The large arguments of runs of calls: staged once where workers read them.

A run keeps an :class:`Arguments` of its own; a joblib ``Parallel`` call shares one across the
runs of its batches, so ``X`` and ``y`` are staged (and sent to each peer) once for the whole
call. Copies are staged by content address, so an argument changed in place between two runs is a new
copy, never the old one under its old address; each run hashes its arguments itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..defaults import INLINE_VALUE_LIMIT
from ..errors import PythagorasError, StoreFullError
from ..identity.calls import approx_nbytes, call_address, memo_address

if TYPE_CHECKING:
    from .interfaces import Executor

__all__ = ["Arguments", "large_addresses", "distinct_calls"]


class Arguments:
    """The large arguments handed to an executor for the runs of one scope (one run, or every
    run of a joblib ``Parallel`` call): each is staged once where the workers read it (sent
    once to each peer), and let go of when the scope ends."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self._written: list[bytes] = []  # transient copies held for the scope
        self._kept: set[bytes] = set()  # handed to the executor
        self._unkept: set[bytes] = set()  # the store had no room for them: sent with each call
        self._guard = threading.Lock()
        self._over = False  # once over, no copy is held for the scope

    def stage(self, address: bytes, name: str, value: Any) -> bool:
        """Hand a large argument to the executor once (see :func:`~.tasks.encode_args`); False
        if there was no room for it (it then travels with each call).

        On the executor's thread, which may still make a task after a Ctrl-C ended the run."""
        with self._guard:
            if self._over:
                raise PythagorasError("these calls were cancelled")
            if address in self._kept:  # 40 calls sharing one DataFrame: handled once
                return True
            if address in self._unkept:
                return False
            try:
                self.executor.stage_argument(address, name, value, self._written)
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
        if written:
            self.executor.release_arguments(written)


def large_addresses(kwargs: dict, memo: dict) -> dict[str, bytes]:
    """The value addresses of the arguments large enough to travel by address."""
    return {name: memo_address(value, memo) for name, value in kwargs.items()
            if approx_nbytes(value) >= INLINE_VALUE_LIMIT}


def distinct_calls(fp: bytes, calls: Iterable[dict], memoize: bool, unaddressed: frozenset,
                   named: frozenset | None = None) -> tuple[list[tuple[bytes, dict, Any]], list[int]]:
    """The distinct calls of a run — ``(call address, kwargs, addresses of the arguments that
    may travel by address)`` — and, for each input position, the index of its call.

    A large argument shared by many calls is hashed once (a memo that lives no longer than this
    hashing: see ``memo_address``). ``unaddressed``: names passed to each call but left out of
    its address (see the joblib backend). ``named``: the function's named parameters when it
    takes ``**kw`` too (see ``call_address``). Not memoized: each call its own, under a random
    address — run every time, never stored.
    """
    memo: dict = {}
    unique: list = []
    positions: list[int] = []
    if not memoize:
        for kwargs in calls:
            positions.append(len(unique))
            unique.append((os.urandom(32), kwargs, large_addresses(kwargs, memo)))
        return unique, positions
    index: dict[bytes, int] = {}
    for kwargs in calls:
        if unaddressed:
            call, addresses = call_address(
                fp, {k: v for k, v in kwargs.items() if k not in unaddressed}, memo, named)
            addresses = {**addresses, **large_addresses(
                {k: v for k, v in kwargs.items() if k in unaddressed}, memo)}
        else:
            call, addresses = call_address(fp, kwargs, memo, named)
        slot = index.get(call)
        if slot is None:
            slot = index[call] = len(unique)
            unique.append((call, kwargs, addresses))
        positions.append(slot)
    return unique, positions
