"""The seams of execution, declared: what ``run_calls`` needs of a backend, and of a batch of tasks.

A backend (``LocalCloud``, ``SwarmCloud``, ``DaskCloud``) is whatever satisfies :class:`Backend`;
what it returns from ``_submit`` satisfies :class:`TaskBatch`; a batch of the worker pool or the
swarm dispatcher reaches its pool through :class:`~.batch.TaskPool` (declared beside the batch).
Nothing here runs: these are the
contracts the type checker and a reader hold the pieces to.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .batch import TaskPool

if TYPE_CHECKING:
    from ..identity.fingerprint import Identity
    from ..store.core import ResultRecord, Store
    from ..store.leases import Leases

__all__ = ["Backend", "TaskBatch", "TaskPool"]


class TaskBatch(Protocol):
    """The tasks of one ``run_calls`` handed to a backend, and their outcomes coming back."""

    @property
    def finished(self) -> bool:
        """True once every task has an outcome (or the batch was cancelled and drained)."""

    def next_outcomes(self, timeout: float | None = None) -> list[tuple[int, Any]]:
        """Wait for outcomes and return every ``(task id, outcome)`` that arrived: at least one,
        or none when ``timeout`` seconds passed first."""

    def cancel(self) -> None:
        """Drop queued tasks and stop running ones (on peers too); store nothing more."""


class Backend(Protocol):
    """What ``run_calls`` needs of a cloud: where results are, and where tasks run."""

    store: Store
    _leases: Leases
    _inflight: dict[bytes, tuple]  # call -> (run, slot) of the run computing it in this process
    _inflight_lock: threading.Lock

    def _pending_results(self, calls: list[bytes]) -> dict[bytes, Any]:
        """Results of ``calls`` on their way into the local store (from nodes, not yet written)."""

    def _register_function(self, fn: Any, identity: Identity) -> bytes:
        """Make the function loadable wherever its tasks run; returns its record key."""

    def _lookup_elsewhere(self, calls: list[bytes], *, before_running: bool = False) -> dict:
        """Results of ``calls`` held somewhere other than the local store."""

    def _keep_argument(self, address: bytes, name: str, value: Any, written: list) -> None:
        """Put a large argument where the workers read it by address."""

    def _release_values(self, addresses: list) -> None:
        """The calls reading these argument copies are over."""

    def _submit(self, tasks: Iterable[Any], count: int) -> TaskBatch:
        """Start running ``count`` tasks (:class:`~.run.Task`), streamed from ``tasks``."""

    def _store_results(self, records: list[ResultRecord]) -> None:
        """Store results that arrived from workers, durably, before they are returned."""
