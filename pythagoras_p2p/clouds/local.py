"""``LocalCloud``: the embedded default — the store of this home and worker processes of this machine."""

from __future__ import annotations

import atexit
import socket
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..defaults import worker_count
from ..errors import ConfigurationError, RequirementsError
from ..execution.batch import Tally
from ..execution.context import in_worker, register_default_cloud
from ..execution.tasks import Task, run_task
from ..requirements import missing_requirements
from ..resources import Ledger, custom_resources
from .base import PCloud
from .choice import register_backend
from .seams import StoreStaging

if TYPE_CHECKING:
    from ..execution.interfaces import TaskBatch
    from ..execution.pool import WorkerPool
    from ..store.core import Store
    from ..store.leases import Leases

__all__ = ["LocalCloud"]


class LocalCloud(PCloud):
    """Runs calls on this machine only: memo hits from the local store, misses in worker processes.

    A call another process of this home is computing is not started again: its pool waits for
    that result (see :mod:`pythagoras_p2p.store.leases`).

    ``workers``: how many worker processes (default: one per usable core, or
    ``$PYTHAGORAS_WORKERS``). They start at the first ``sync_remote``/``sync_parallel`` and stop
    with :meth:`close` or at interpreter exit.
    """

    def __init__(self, *, requires: Any = None, connection: Any = None, home: Any = None,
                 workers: int | None = None):
        super().__init__(requires=requires, connection=connection, home=home)
        if self.connection["mode"] == "peers":
            raise ConfigurationError(
                "LocalCloud runs on this machine only; drop connection= or use PCloud/SwarmCloud "
                "for peers"
            )
        missing = missing_requirements(self.requires)
        if missing:
            raise RequirementsError(
                f"this machine does not satisfy requires=: {'; '.join(missing)}. Install them "
                f"(pip install ...) or change requires="
            )
        if workers is None:
            workers = worker_count()
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigurationError(f"workers={workers!r}; give a whole number of at least 1")
        self.workers = workers
        self._executor: LocalExecutor = LocalExecutor(self.store, self._leases, self.home, workers,
                                                      self.machine_resources)
        custom_resources()  # a malformed PYTHAGORAS_RESOURCES is an error now, not at a call

    def worker_slots(self) -> int:
        return 1 if in_worker() else self.workers

    def _local_workers(self) -> int:
        return self.workers

    def _elsewhere(self, name: str) -> str:
        # sync_remote and sync_parallel run on this machine too: they would fail the same way.
        return ("this cloud runs every call on this machine. Run them on a swarm where a node "
                "has it (`pythagoras-node start` on that machine, then PCloud() or SwarmCloud() "
                "here), or ask for less (resources=)")

    def _check_function(self, needs: tuple, requires: tuple) -> None:
        missing = missing_requirements(requires)
        if missing:
            raise RequirementsError(
                f"this machine does not satisfy the function's requires=: {'; '.join(missing)}. "
                f"Install them (pip install ...) or change requires="
            )

    def close(self) -> None:
        self._executor.close()


register_backend("local", LocalCloud)
register_default_cloud(LocalCloud)


class LocalExecutor(StoreStaging):
    """Where a ``LocalCloud``'s tasks run: a pool of worker processes of this machine, started
    at the first batch (and again after a close); inside a worker, inline, one by one."""

    def __init__(self, store: Store, leases: Leases, home: Any, workers: int,
                 resources: Callable[[], dict[str, float]]):
        super().__init__(store)
        self.leases, self.home, self.workers, self.resources = leases, home, workers, resources
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()

    def submit(self, tasks: Iterable[Task], count: int) -> TaskBatch:
        if in_worker():
            return _InlineBatch(self.store, tasks, count)
        with self._lock:
            if self._pool is None or not self._pool.alive:
                from ..execution.pool import WorkerPool

                self._pool = WorkerPool(self.home, self.workers, label=socket.gethostname(),
                                        leases=self.leases, store=self.store,
                                        ledger=Ledger(self.resources()))
                _POOLS.add(self._pool)
            pool = self._pool
        return pool.submit(tasks, count)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


class _InlineBatch:
    """Runs a batch's tasks one by one in this process (how clouds behave inside a worker).

    It is *eager*: a task runs when its outcome is asked for, so the futures of calls made
    inside a worker are computed by the thread that takes their outcomes (see
    :mod:`pythagoras_p2p.execution.futures`) and never wait for the worker's own pool.
    """

    eager = True

    def __init__(self, store: Store, tasks: Iterable[Task], count: int):
        self.store = store
        self.tasks = iter(tasks)
        self.tally = Tally(count)
        self.on_ready: Callable[[], None] | None = None

    @property
    def finished(self) -> bool:
        return self.tally.finished

    def set_notify(self, on_ready) -> None:
        self.on_ready = on_ready

    def next_outcomes(self, timeout: float | None = None) -> list:
        if timeout is not None and timeout <= 0:
            return []  # a call running inline cannot be stopped; one not started yet is not
        dropped = self.tally.dropped
        for task in self.tasks:
            if task.tid in dropped:
                continue
            break
        else:
            self.tally.end()
            return []
        outcome = run_task(task, "inline", self.store)
        return self.tally.take([(task.tid, outcome)])  # none if cancelled while it ran

    def cancel_tasks(self, tids: list[int]) -> None:
        self.tally.drop(tids)

    def cancel(self) -> None:
        self.tally.end()


_POOLS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_pools() -> None:
    for pool in list(_POOLS):
        pool.close()
