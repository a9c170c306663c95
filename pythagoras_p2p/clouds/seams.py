"""What every backend's runs are given over the local store: its results, and staging for tasks.

A cloud hands each run of calls its collaborators (:class:`~..execution.interfaces.Collaborators`).
The parts that are the same for every backend live here: :class:`StoreResults` (results are
found in and kept by the store of this home; ``SwarmCloud`` adds the peers) and
:class:`StoreStaging` (functions and large arguments are put in that store, where workers read
them; each backend's executor adds ``submit``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..store.packing import pack_parts

if TYPE_CHECKING:
    from ..identity.fingerprint import Identity
    from ..store.core import Store
    from ..store.journal import JournalRecord

__all__ = ["StoreResults", "StoreStaging"]


class StoreResults:
    """Results of a cloud whose results are all in the store of its home
    (:class:`~..execution.interfaces.Results`)."""

    def __init__(self, store: Store, sign: Callable[[list[JournalRecord]], None] | None = None):
        self.local = store
        self.sign = sign  # marks who computed them (in their metadata) before they are stored

    def lookup(self, calls: list[bytes]) -> list[Any]:
        return self.local.results_of(calls)

    def value(self, address: bytes) -> Any:
        return self.local.get_value(address)

    def pending(self, calls: list[bytes]) -> dict[bytes, Any]:
        """None on their way in: results are written before they are returned."""
        return {}

    def elsewhere(self, calls: list[bytes], *, before_running: bool = False) -> dict[bytes, Any]:
        """None: there is nowhere else to look."""
        return {}

    def store(self, records: list[JournalRecord]) -> None:
        if self.sign is not None:
            self.sign(records)
        self.local.put_results(records)

    def settle(self) -> None:
        """Nothing to wait for: every result is in the store when it is returned."""


class StoreStaging:
    """Functions and large arguments put in the store of this home for workers to read: the
    part of an executor (:class:`~..execution.interfaces.Executor`) that every backend shares;
    each adds ``submit``."""

    def __init__(self, store: Store):
        self.store = store

    def register_function(self, fn: Any, identity: Identity) -> bytes:
        """Put the function's record into the store, where workers load it by its key, and
        return the key (the record is made once per identity, with the values its fingerprint
        was computed from). A record removed meanwhile (found damaged) is stored again."""
        key, data = fn.record(identity)
        if not self.store.has_function(key):
            self.store.put_function(key, data)
        return key

    def stage_argument(self, address: bytes, name: str, value: Any, written: list[bytes]) -> None:
        """A large argument of a task: kept in the store for this boot only (the caller has it
        anyway), where workers and peers read it by address, and held while the calls run (a
        copy another caller made is shared, not dropped under us); ``written`` collects the
        copies held here, let go of when the calls are over."""
        if self.store.keep_transient(address, lambda: pack_parts(value, what=f"argument {name!r}")):
            written.append(address)

    def release_arguments(self, addresses: list[bytes]) -> None:
        """The calls that read these transient argument copies are over: drop them."""
        self.store.drop_transient(addresses)
