"""scikit-learn's ``n_jobs`` on the swarm: a joblib parallel backend whose tasks are calls of a cloud.

    from pythagoras_p2p import register_joblib_backend
    register_joblib_backend()                      # name="pythagoras", cloud=None: as PCloud()
    with joblib.parallel_config(backend="pythagoras", n_jobs=-1):
        GridSearchCV(SVC(), grid, cv=5).fit(X, y)  # its fits run on the cloud's workers

Each joblib task ``func(*args, **kwargs)`` becomes one call of the pure function
:func:`joblib_task`, with each positional argument an argument of its own (``"0"``, ``"1"``,
...) and each keyword one under ``"k:<name>"``: so ``X`` and ``y`` are hashed once per batch and, being
large, travel by their value address — kept once for the whole ``Parallel`` call and sent once
to each peer — while the small ones (the estimator, the fold's indices) travel with the task.
The batches joblib makes (sized by :class:`joblib._parallel_backends.AutoBatchingMixin`, as its
own process backends do) are one run of calls each (:mod:`pythagoras_p2p.execution.runs`).

``memoize=False`` (the default, what joblib users expect): every task runs, and no result is
stored — anywhere; ``memoize=True``: each task is stored under its content address (the
function by its identity, as for pure functions; the arguments by value), so a rerun of the same
search executes nothing, on any machine of the swarm, and identical tasks run once.

Inside a task, joblib runs sequentially (a nested ``Parallel`` does not fork workers of its
own) and native thread pools keep the one thread our workers start with, unless the user asks
for more with ``parallel_config(inner_max_num_threads=...)``.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from ..errors import ConfigurationError

__all__ = ["register_joblib_backend", "joblib_task"]

_EXTRA = "pip install 'pythagoras_p2p[joblib]'"
_KEYWORD = "k:"


def joblib_task(*, function, threads=None, **arguments):
    """Run one joblib task: ``function(*positional, **keywords)`` from ``arguments`` (see the
    module docstring), with joblib sequential and ``threads`` threads in native pools."""
    positional = sorted((int(k), v) for k, v in arguments.items() if k.isdigit())
    keywords = {k[len(_KEYWORD):]: v for k, v in arguments.items() if k.startswith(_KEYWORD)}
    import contextlib

    with contextlib.ExitStack() as stack:
        try:  # a task may use joblib itself (scikit-learn does): then it runs sequentially
            import joblib
        except ImportError:  # not installed where the task runs: nothing to configure
            joblib = None
        if joblib is not None:
            stack.enter_context(joblib.parallel_config(backend="sequential"))
        if threads is not None:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                pass
            else:
                stack.enter_context(threadpool_limits(limits=threads))
        return function(*[v for _, v in positional], **keywords)


def _task_arguments(function: Any, args: tuple, kwargs: dict, threads: int | None) -> dict:
    call = {"function": function, "threads": threads}
    for i, value in enumerate(args):
        call[str(i)] = value
    for name, value in kwargs.items():
        call[_KEYWORD + name] = value
    return call


def register_joblib_backend(name: str = "pythagoras", cloud: Any = None) -> None:
    """Register a joblib parallel backend named ``name`` that runs tasks on ``cloud``'s workers
    (``None``: the automatic choice of ``PCloud()``, made at its first use).

    Then ``with joblib.parallel_config(backend=name, n_jobs=-1): ...``; pass ``memoize=True``
    to ``parallel_config`` to store each task's result (see the module docstring).
    """
    try:
        import joblib
    except ImportError:
        raise ConfigurationError(
            f"register_joblib_backend() needs joblib, which is not installed here; install it "
            f"with: {_EXTRA}"
        ) from None
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"name={name!r}: give the backend a non-empty name, e.g. "
                                 f"'pythagoras'")
    from ..clouds.base import PCloud

    if cloud is not None and not isinstance(cloud, PCloud):
        raise ConfigurationError(
            f"cloud= takes a cloud (PCloud(), LocalCloud(), SwarmCloud(), DaskCloud()) or None, "
            f"not a {type(cloud).__name__}"
        )
    base = _backend_class()
    backend = type("PythagorasBackend", (base,), {"_clouds": {"given": cloud}})
    joblib.register_parallel_backend(name, backend)


_CLASS: dict[str, Any] = {}


def _backend_class() -> type:
    """The backend class (made once: it derives from joblib's classes, imported only here)."""
    if "class" not in _CLASS:
        _CLASS["class"] = _make_backend_class()
    return _CLASS["class"]


def _make_backend_class() -> type:
    from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase, SequentialBackend

    from ..execution.arguments import Arguments
    from ..function import PureFunction

    class PythagorasBackend(AutoBatchingMixin, ParallelBackendBase):
        """Runs joblib's batches of tasks as calls of a cloud (see the module docstring)."""

        supports_retrieve_callback = True
        supports_inner_max_num_threads = True
        _clouds: dict = {}  # "given": the cloud registered, "auto": PCloud() once made

        def __init__(self, nesting_level=None, inner_max_num_threads=None, memoize=False,
                     **backend_kwargs):
            if not isinstance(memoize, bool):
                raise ConfigurationError(f"memoize={memoize!r}: give True or False")
            super().__init__(nesting_level=nesting_level,
                             inner_max_num_threads=inner_max_num_threads, **backend_kwargs)
            self.memoize = memoize
            self._arguments: Arguments | None = None
            self._pending: set = set()
            self._lock = threading.Lock()

        # ------------------------------------------------------------ the cloud

        @property
        def cloud(self):
            found = self._clouds.get("given") or self._clouds.get("auto")
            if found is None:
                from ..clouds.base import PCloud

                found = self._clouds["auto"] = PCloud()
            return found

        def _function(self) -> PureFunction:
            task = self._clouds.get(("task", id(self.cloud)))
            if task is None:
                # Its results are never stored: what its calls read need not be recorded.
                task = self._clouds[("task", id(self.cloud))] = PureFunction(
                    joblib_task, self.cloud, track_inputs=False)
            return task

        def effective_n_jobs(self, n_jobs):
            if n_jobs == 0:
                raise ValueError("n_jobs == 0 in Parallel has no meaning")
            if n_jobs is None:
                return 1
            if n_jobs < 0:
                return max(self.cloud.worker_slots() + 1 + n_jobs, 1)
            return n_jobs

        def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kwargs):
            self.parallel = parallel
            n_jobs = self.effective_n_jobs(n_jobs)
            self._arguments = self.cloud._arguments()  # X and y: staged once for the whole call
            return n_jobs

        # ------------------------------------------------------------ tasks

        def submit(self, func, callback=None):
            threads = self.inner_max_num_threads
            calls = [_task_arguments(f, args, kwargs, threads) for f, args, kwargs in func.items]
            arguments = self._arguments
            if arguments is None:  # submit without configure: one scope per batch
                arguments = self._arguments = self.cloud._arguments()
            futures = self.cloud._start(self._function(), calls, memoize=self.memoize,
                                        arguments=arguments, unaddressed=_unaddressed(calls))
            batch = _gather(futures)
            with self._lock:
                self._pending.add(batch)
            batch.add_done_callback(self._forget)
            if callback is not None:
                batch.add_done_callback(callback)
            return batch

        def _forget(self, batch: Future) -> None:
            with self._lock:
                self._pending.discard(batch)

        def retrieve_result_callback(self, out):
            return out.result()

        def abort_everything(self, ensure_ready=True):
            """A task failed (or Ctrl-C): cancel every task still queued or running, on peers
            too."""
            with self._lock:
                pending, self._pending = list(self._pending), set()
            for batch in pending:
                batch.cancel()

        def terminate(self):
            arguments, self._arguments = self._arguments, None
            if arguments is not None:
                arguments.release()
            self.reset_batch_stats()

        def get_nested_backend(self):
            return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

    return PythagorasBackend


#: Arguments scikit-learn (1.9 and later) passes to each task for its fit callbacks: a context
#: with a fresh UUID and start time, and the search object holding it. With no callback set on
#: the estimator they do nothing, and would make every task's address new each time.
_SKLEARN_CALLBACK_ARGUMENTS = frozenset({_KEYWORD + "callback_ctx", _KEYWORD + "caller"})


def _unaddressed(calls: list[dict]) -> frozenset:
    """The arguments of these tasks left out of their addresses: scikit-learn's callback
    arguments when no callback is set (then they cannot change a result); else none."""
    for call in calls:
        module = getattr(getattr(call["function"], "function", call["function"]), "__module__", "")
        if not str(module).startswith("sklearn."):
            return frozenset()
        context = call.get(_KEYWORD + "callback_ctx")
        if context is not None and getattr(context, "_callbacks", None):
            return frozenset()
    return _SKLEARN_CALLBACK_ARGUMENTS


class _Batch(Future):
    """The future of one joblib batch: the list of its tasks' results, or the first failure.
    Cancelling it cancels its tasks."""

    def __init__(self, futures: list):
        super().__init__()
        self._futures = futures

    def cancel(self) -> bool:
        for future in self._futures:
            future.cancel()
        return super().cancel()


def _gather(futures: list) -> _Batch:
    batch = _Batch(futures)
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_future: Future) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        if batch.done():
            return
        try:
            results = []
            for future in futures:
                if future.cancelled():
                    batch.cancel()
                    return
                exc = future.exception()
                if exc is not None:
                    batch.set_exception(_clear(exc))
                    return
                results.append(future.result())
            batch.set_result(results)
        except Exception:  # cancelled meanwhile
            pass

    if not futures:
        batch.set_result([])
    for future in futures:
        future.add_done_callback(one_done)
    return batch


def _clear(exc: BaseException) -> BaseException:
    """A package missing where a task ran, said with the package, the machine and the fix."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        where = next((n.split(" on ", 1)[1].split(";", 1)[0] for n in getattr(exc, "__notes__", ())
                      if " on " in n), "a worker")
        clear = ModuleNotFoundError(
            f"a joblib task needs the package {exc.name!r}, which is not installed on {where}: "
            f"install it there, or add it to the cloud's requires= so tasks go only to machines "
            f"that have it", name=exc.name)
        clear.__cause__ = exc
        return clear
    return exc
