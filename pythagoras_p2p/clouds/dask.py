"""``DaskCloud``: the same pure functions, their misses run as tasks of an existing Dask cluster.

Memoization stays ours: a call is looked up in the local store first and a result that comes
back from the cluster is stored there under the same call address as on the swarm, so a result
computed on the cluster is a hit on a laptop and the other way round. Dask only schedules:

* each missed call is one Dask task whose key is ``<function>-<call address>``, so identical
  calls — in one ``sync_parallel``, or from two clients at once — are one task;
* a large argument (≥ ``INLINE_VALUE_LIMIT``) is scattered once, under the key
  ``pythagoras-value-<value address>``, and tasks refer to it: it is never re-sent per task,
  and stays scattered (up to ``scatter_cache`` bytes, least recently used first) for later calls;
* a function travels once, scattered as its stored record under ``pythagoras-function-<key>``
  (the key of the record: the hash of its bytes, which a worker checks).

The task returns the call's outcome instead of raising, so the exception a function raised
reaches the caller with its type and remote traceback, as on the other backends; what a call
prints is captured per task and printed here, marked with the worker it ran on. Dask must be
installed (``pip install 'pythagoras_p2p[dask]'``); importing ``pythagoras_p2p`` does not import it.
Workers need ``pythagoras_p2p`` of this release and the same Python minor version; ``requires=``
is checked on every worker, and calls go only to workers that satisfy it.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..defaults import DASK_WORKERS_TTL as WORKERS_TTL
from ..errors import ConfigurationError, PythagorasError, RequirementsError, ResourcesError
from ..execution.tasks import Task
from ..identity.calls import approx_nbytes
from ..net.rpc import NodeUnreachable
from ..net.wire import PYTHON_VERSION
from .base import PCloud
from .dask_worker import probe_worker
from .seams import StoreStaging

if TYPE_CHECKING:
    from ..execution.interfaces import TaskBatch

__all__ = ["DaskCloud"]

log = logging.getLogger(__name__)

_EXTRA = "pip install 'pythagoras_p2p[dask]'"


class DaskCloud(PCloud):
    """A cloud whose ``sync_remote``/``sync_parallel`` calls run on a Dask cluster.

    ``scheduler``: the scheduler's address (``"tcp://host:8786"``), a ``distributed.Client``, or a
    Dask cluster object; ``None`` takes the default client of this process, else Dask's
    ``scheduler-address`` setting. A client given here stays the caller's to close.
    ``requires``: pip requirement specifiers a worker must satisfy to get calls.
    ``scatter_cache``: bytes of large arguments kept scattered between calls (default 1 GiB).
    """

    def __init__(self, *, scheduler: Any = None, requires: Any = None, home: Any = None,
                 connect_timeout: float = 10.0, scatter_cache: int = 1 << 30):
        if not isinstance(scatter_cache, int) or isinstance(scatter_cache, bool) or scatter_cache < 0:
            raise ConfigurationError(f"scatter_cache={scatter_cache!r}; give a number of bytes ≥ 0")
        super().__init__(requires=requires, connection="local", home=home)
        self.client, self._owns_client = _connect(scheduler, connect_timeout)
        self.connect_timeout = connect_timeout
        self.scatter_cache = scatter_cache
        self._scattered: OrderedDict[bytes, list] = OrderedDict()  # address -> [future, size, value]
        self._scattered_bytes = 0
        self._pending: dict[bytes, Any] = {}  # large arguments of tasks being made, by address
        self._function_futures: dict[bytes, Any] = {}
        # requirements -> worker address -> why it cannot take calls (empty: it can)
        self._checked: dict[tuple, dict[str, list[str]]] = {}
        self._dask_lock = threading.RLock()
        # Calls that failed here: the scheduler may still hold the failed task under its key
        # until our release reaches it, and would answer a retry from it. They get fresh keys.
        self._failed_calls: set[bytes] = set()
        self._workers_info: dict = {}
        self._workers_at = -WORKERS_TTL
        self._executor = DaskExecutor(self)
        self._eligible_workers()  # fail now, not at the first call, if no worker can run ours

    # ------------------------------------------------------------------ backend interface

    def worker_slots(self) -> int:
        """The threads of the Dask workers that may take calls."""
        eligible = self._eligible_workers()
        workers = self._workers()
        return max(1, sum(info.get("nthreads", 1) for address, info in workers.items()
                          if eligible is None or address in eligible))

    # ------------------------------------------------------------------ cluster state

    def wait_to_scatter(self, address: bytes, value: Any) -> None:
        """Keep a copy of a large argument (taken now) until a task that reads it is submitted
        (see :class:`DaskExecutor`)."""
        with self._dask_lock:
            if address not in self._pending and address not in self._scattered:
                self._pending[address] = pickle.loads(pickle.dumps(value, protocol=5))

    def _eligible_workers(self, extra: tuple = ()) -> list[str] | None:
        """Workers that may take calls (of a function whose own requires= are ``extra``);
        None when any worker may (no requirement to check).

        Every worker is probed once per set of requirements (its packages, Python and
        pythagoras_p2p versions).
        """
        requires = tuple(dict.fromkeys(self.requires + tuple(extra)))
        with self._dask_lock:
            checked = self._checked.setdefault(requires, {})
            workers = set(self._workers())
            if not workers and requires:
                try:
                    self.client.wait_for_workers(1, timeout=self.connect_timeout)
                except Exception:
                    raise RequirementsError(
                        f"the Dask cluster has no worker to check requires= against after "
                        f"{self.connect_timeout:g} s; start workers (`dask worker ADDRESS`)"
                    ) from None
                workers = set(self._workers(fresh=True))
            # A worker that left or was restarting while asked is asked again: at once while
            # no worker is known to be able (a nanny restarting a worker), then next time.
            deadline = time.monotonic() + self.connect_timeout
            while True:
                new = sorted(workers - checked.keys())
                if new:
                    checked.update(self._probe(new, requires))
                eligible = sorted(w for w in workers if checked.get(w) == [])
                if eligible or workers <= checked.keys() or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
                workers = set(self._workers(fresh=True)) or workers
            reasons = {w: checked.get(w, ["did not answer the probe (leaving or starting)"])
                       for w in workers}
            if reasons and not eligible:
                detail = "; ".join(f"{w}: {', '.join(why)}" for w, why in sorted(reasons.items())[:4])
                raise RequirementsError(
                    f"no Dask worker can run these calls ({detail}). Install what is missing on the "
                    f"workers (the same pythagoras_p2p release and Python {PYTHON_VERSION}), or change requires="
                )
            if not requires and len(eligible) == len(workers):
                return None
            return eligible

    def _dask_resources(self, task: Task, eligible: list[str] | None) -> dict[str, float]:
        """A task's resources as Dask's ``resources=``; ResourcesError at once if no worker of
        the cluster declares them (Dask would wait for one forever)."""
        needs = dict(task.needs)
        workers = self._workers(fresh=True)
        if not any(all(info.get("resources", {}).get(n, 0) >= a for n, a in needs.items())
                   for address, info in workers.items() if eligible is None or address in eligible):
            declared = "; ".join(f"{address}: {info.get('resources') or 'none'}"
                                 for address, info in sorted(workers.items())[:6])
            raise ResourcesError(
                f"no Dask worker declares the resources {task.label} asks for ({needs}); the "
                f"workers declare: {declared}. Start workers with `dask worker --resources "
                f"\"gpus=1\"` (Dask's names are ours: gpus, memory, or your own)")
        return needs

    def _workers(self, fresh: bool = False) -> dict:
        """The scheduler's workers (address -> info), asked at most once a second."""
        now = time.monotonic()
        if fresh or now - self._workers_at > WORKERS_TTL:
            self._workers_info = self.client.scheduler_info().get("workers", {})
            self._workers_at = now
        return self._workers_info

    def _probe(self, workers: list[str], requires: tuple) -> dict[str, list[str]]:
        try:
            found = self.client.run(probe_worker, requires, workers=workers, on_error="return")
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"the Dask workers cannot import pythagoras_p2p ({exc}); install pythagoras_p2p "
                f"{__version__} on every worker"
            ) from None
        reasons = {}
        for worker in workers:
            info = found.get(worker)
            if isinstance(info, (ImportError, AttributeError)):
                raise ConfigurationError(
                    f"the Dask worker {worker} cannot import pythagoras_p2p ({info}); install "
                    f"pythagoras_p2p {__version__} on every worker"
                )
            if not isinstance(info, dict):  # left, or failed to answer: asked again next time
                continue
            why = list(info["missing"])
            if info["version"] != __version__:
                why.append(f"pythagoras_p2p {info['version']} (this client: {__version__})")
            if info["python"] != PYTHON_VERSION:
                why.append(f"Python {info['python']} (this client: {PYTHON_VERSION})")
            reasons[worker] = why
        return reasons

    def _function_future(self, record: bytes) -> Any:
        """The function's stored record (by its key) on the cluster, on every worker (it is
        small). A record missing from the store (found damaged, and removed) raises."""
        future = self._function_futures.get(record)
        if future is None:
            data = self.store.get_function(record)
            if data is None:
                raise PythagorasError(
                    f"the record of function {record.hex()[:16]} is not in the store at "
                    f"{self.store.path}; call again (the caller stores it again)")
            key = f"pythagoras-function-{record.hex()}"
            future = self._function_futures[record] = self.client.scatter(
                {key: data}, hash=False, broadcast=True)[key]
        return future

    def _value_futures(self, addresses: Iterable[bytes]) -> list:
        """Futures of the large arguments ``addresses``, scattering those not on the cluster."""
        wanted = list(addresses)
        send = {}
        for address in wanted:
            entry = self._scattered.get(address)
            if entry is None:
                value = self._pending[address]
                entry = self._scattered[address] = [None, approx_nbytes(value), value]
                self._scattered_bytes += entry[1]
            if entry[0] is None:
                send[f"pythagoras-value-{address.hex()}"] = entry
        if send:
            futures = self.client.scatter({k: e[2] for k, e in send.items()}, hash=False)
            for key, entry in send.items():
                entry[0] = futures[key]
        for address in wanted:
            self._scattered.move_to_end(address)
            self._pending.pop(address, None)
        return [self._scattered[a][0] for a in wanted]

    def _forget_lost(self) -> None:
        """Drop what the cluster lost with a worker, so the next use sends it again."""
        with self._dask_lock:
            for fp, future in list(self._function_futures.items()):
                if future.status != "finished":
                    del self._function_futures[fp]
            for entry in self._scattered.values():
                if entry[0] is not None and entry[0].status != "finished":
                    entry[0] = None

    def _trim_scattered(self) -> None:
        """Forget the least recently used scattered arguments beyond ``scatter_cache`` bytes
        (a running task holds its own reference: Dask frees the data when both are gone)."""
        while self._scattered_bytes > self.scatter_cache and len(self._scattered) > 1:
            _, entry = self._scattered.popitem(last=False)
            self._scattered_bytes -= entry[1]

    def close(self) -> None:
        with self._dask_lock:
            self._scattered.clear()
            self._scattered_bytes = 0
            self._function_futures.clear()
            self._pending.clear()
            if self._owns_client:
                self.client.close()

    def __repr__(self) -> str:
        return f"DaskCloud(scheduler={self.client.scheduler.address!r}, home={str(self.home)!r})"


class DaskExecutor(StoreStaging):
    """Where a ``DaskCloud``'s tasks run: as Dask tasks (see :mod:`.dask_batch`). Functions
    are put in the store first (and scattered from there); large arguments are scattered once
    by address, from the cloud's cache of them."""

    def __init__(self, cloud: DaskCloud):
        super().__init__(cloud.store)
        self.cloud = cloud

    def stage_argument(self, address: bytes, name: str, value: Any, written: list[bytes]) -> None:
        """A large argument waits in the cloud until its task is submitted: then it is
        scattered. It waits as a copy taken now: the caller may change the object in place
        once an ``async_*`` call returned, and the task must run with the value of its
        address. Nothing is held in the store (``written`` stays as it is)."""
        self.cloud.wait_to_scatter(address, value)

    def submit(self, tasks: Iterable[Task], count: int) -> TaskBatch:
        from .dask_batch import DaskBatch

        return DaskBatch(self.cloud, tasks, count)


def _connect(scheduler: Any, timeout: float) -> tuple[Any, bool]:
    """The Dask client to use, and whether this cloud owns it (and closes it)."""
    try:
        import dask
        import distributed
    except ImportError as exc:
        raise ConfigurationError(f"DaskCloud needs Dask ({exc}); install it: {_EXTRA}") from None
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    if scheduler is None:
        try:
            return distributed.default_client(), False
        except ValueError:
            scheduler = dask.config.get("scheduler-address", None)
        if scheduler is None:
            raise ConfigurationError(
                "DaskCloud() found no Dask client in this process and no scheduler-address "
                "setting: pass scheduler='tcp://host:8786', a distributed.Client, or a cluster"
            )
    if not isinstance(scheduler, str) and not hasattr(scheduler, "scheduler_address"):
        raise ConfigurationError(
            f"scheduler= takes an address like 'tcp://host:8786', a distributed.Client or a Dask "
            f"cluster, not a {type(scheduler).__name__}"
        )
    if isinstance(scheduler, str) and not scheduler.strip():
        raise ConfigurationError("scheduler='' names no scheduler; write 'tcp://host:8786'")
    try:
        return distributed.Client(scheduler, timeout=timeout, set_as_default=False), True
    except (OSError, TimeoutError) as exc:
        raise NodeUnreachable(
            f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s ({exc}); start it "
            f"(`dask scheduler`) or check the address"
        ) from None
    except ValueError as exc:
        raise ConfigurationError(f"scheduler={scheduler!r} is not a Dask address ({exc})") from None
