"""The seams of execution, declared: what a run of calls is given to work with.

A run (:class:`~.runs.CallRun`) never reaches into its backend. It is handed a
:class:`Collaborators`: the :class:`Results` (where results are found and kept), the
:class:`Executor` (where tasks run), the :class:`CallLeases` of its home (one computation per
call per home) and the :class:`~.inflight.InflightCalls` of its cloud (calls another run of this
process already executes). A backend (``LocalCloud``, ``SwarmCloud``, ``DaskCloud``) builds its
collaborators once; what its executor's ``submit`` returns satisfies :class:`TaskBatch`; a batch
of the worker pool or of the swarm dispatcher reaches its pool through :class:`~.batch.TaskPool`
(declared beside the batch).
Nothing here runs: these are the contracts the type checker and a reader hold the pieces to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .batch import TaskPool

if TYPE_CHECKING:
    from ..identity.fingerprint import Identity
    from ..store.journal import JournalRecord
    from .inflight import InflightCalls
    from .outcomes import Outcome
    from .tasks import Task

__all__ = ["Results", "Executor", "CallLeases", "Collaborators", "TaskBatch", "TaskPool"]


class TaskBatch(Protocol):
    """The tasks of one run handed to an executor, and their outcomes coming back."""

    #: Called (on whichever thread delivers them) after outcomes arrived; see set_notify.
    on_ready: Callable[[], None] | None

    @property
    def finished(self) -> bool:
        """True once every task has an outcome (or the batch was cancelled and drained)."""

    @property
    def eager(self) -> bool:
        """True if a task runs only when its outcome is asked for (inline, inside a worker):
        whoever waits for its futures must then ask, not wait to be told."""

    def next_outcomes(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """Wait for outcomes and return every ``(task id, outcome)`` that arrived: at least one,
        or none when ``timeout`` seconds passed first. A backend with an I/O loop may run it
        on the calling thread meanwhile."""

    def set_notify(self, on_ready: Callable[[], None]) -> None:
        """Call ``on_ready()`` whenever outcomes arrive from now on (and now, if some wait)."""

    def cancel_tasks(self, tids: list[int]) -> None:
        """Drop these tasks (queued or running: stopped where they run); no outcome of theirs
        is returned. The others go on."""

    def cancel(self) -> None:
        """Drop queued tasks and stop running ones (on peers too); store nothing more."""


class Results(Protocol):
    """Where the results of calls are found and kept, for one cloud."""

    def lookup(self, calls: list[bytes]) -> list[Any]:
        """The stored result of each call, or ``MISSING`` (one read transaction for all)."""

    def value(self, address: bytes) -> Any:
        """A stored value by its address (``MISSING`` if it is not there, or damaged)."""

    def pending(self, calls: list[bytes]) -> dict[bytes, Any]:
        """Results of ``calls`` on their way into the local store (already returned once)."""

    def elsewhere(self, calls: list[bytes], *, before_running: bool = False) -> dict[bytes, Any]:
        """Results of ``calls`` held somewhere other than the local store, copied into it.
        ``before_running``: the calls are about to run where their results would be found
        anyway (a lookup may then be skipped)."""

    def store(self, records: list[JournalRecord]) -> None:
        """Store results that arrived from workers, durably, before they are returned."""

    def settle(self) -> None:
        """Make every result returned so far readable in the local store."""


class Executor(Protocol):
    """Where the tasks of runs execute, for one cloud."""

    def register_function(self, fn: Any, identity: Identity) -> bytes:
        """Make the function loadable wherever its tasks run; returns its record key."""

    def stage_argument(self, address: bytes, name: str, value: Any, written: list[bytes]) -> None:
        """Put a large argument where the workers read it by address; ``written`` collects
        the copies held for the caller, given back to :meth:`release_arguments`."""

    def release_arguments(self, addresses: list[bytes]) -> None:
        """The calls reading these staged argument copies are over."""

    def submit(self, tasks: Iterable[Task], count: int) -> TaskBatch:
        """Start running ``count`` tasks, streamed from ``tasks``."""


class CallLeases(Protocol):
    """The per-call leases of a home, as a run lets go of them (see ``store.leases``)."""

    def release(self, calls: list[bytes], owner: object) -> None:
        """``owner``'s leases of ``calls`` end (their results are committed, or unwanted)."""

    def release_all(self, owner: object) -> None:
        """Every lease ``owner`` still holds ends."""


@dataclass(frozen=True)
class Collaborators:
    """What a cloud hands each of its runs: the objects a run works with, and nothing else."""

    results: Results
    executor: Executor
    leases: CallLeases
    inflight: InflightCalls
