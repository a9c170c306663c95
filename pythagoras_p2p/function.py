"""The wrapper that ``@cloud.add_pure_function`` returns: a memoized call, ``sync_*`` and ``async_*``.

The wrapper checks the function once, at decoration (keyword-only parameters; no lambdas,
generators, coroutines or methods), and fingerprints it at its first call, when every global it
uses is defined. A call binds defaults, hashes its arguments into a call address, and reads the
store of its cloud: a hit is one LMDB read transaction, no IPC. A miss runs the function here
and stores the result; ``sync_*`` and ``async_*`` hand calls to the cloud's backend (the same
run of calls, :mod:`.execution.runs`: waited for here, or returned as futures).
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Iterable, Mapping, Sized
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .errors import PureFunctionError, PythagorasError
from .execution.functions import (
    FunctionRecord,
    function_from_record,
    function_record,
    load_function,
)
from .identity.calls import call_address
from .identity.code import qualified_name
from .identity.fingerprint import Identity, identify
from .identity.impure import warn_impure
from .identity.inputs import untracked_fingerprint
from .store.core import MISSING as _MISSING
from .store.listing import StoredCall, forget, forget_function, stored_call

if TYPE_CHECKING:
    from .explain import Explanation

__all__ = ["PureFunction", "KwArgs", "kw_args", "function_record", "load_function",
           "function_from_record"]


class KwArgs(dict):
    """The keyword arguments of one call, as ``sync_parallel`` takes them."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "kw_args(" + ", ".join(f"{k}={v!r}" for k, v in self.items()) + ")"


def kw_args(**kwargs: Any) -> KwArgs:
    """Package the keyword arguments of one call: ``f.sync_parallel(kw_args(x=i) for i in ...)``."""
    return KwArgs(kwargs)


def _check_pure(func: Any) -> types.FunctionType:
    """``func``, if it can be a pure function of the cloud; rejected, with the fix, if not."""
    if not isinstance(func, types.FunctionType):  # a bound method, classmethod, builtin...
        what = type(func).__name__
        raise PureFunctionError(
            f"add_pure_function takes a plain function defined with `def`, not a {what} "
            f"({func!r}); write a module-level function with keyword-only parameters"
        )
    name = func.__qualname__
    if func.__name__ == "<lambda>":
        raise PureFunctionError(
            f"a lambda cannot be a pure function ({name}); define it with `def name(*, ...)`"
        )
    head, _, _ = name.rpartition(".")
    if head and not head.endswith("<locals>"):
        raise PureFunctionError(
            f"{name} is a method; pure functions cannot be methods (they would depend on `self`). "
            f"Define it at module level with keyword-only parameters and pass the data it needs"
        )
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise PureFunctionError(
            f"{name} is a generator; a pure function must return its result: return a list instead"
        )
    if inspect.iscoroutinefunction(func):
        raise PureFunctionError(
            f"{name} is a coroutine (async def); define it with plain `def`. The cloud runs calls "
            f"in parallel for you (sync_parallel)"
        )
    code = func.__code__
    if code.co_flags & inspect.CO_VARARGS:
        raise PureFunctionError(
            f"{name} takes *{code.co_varnames[code.co_argcount + code.co_kwonlyargcount]}; pure "
            f"functions take keyword-only parameters: replace it with named parameters after `*`"
        )
    if code.co_argcount:
        params = ", ".join(code.co_varnames[: code.co_argcount])
        raise PureFunctionError(
            f"{name} has positional parameters ({params}); pure functions take keyword-only "
            f"parameters: write `def {func.__name__}(*, {params}, ...)`"
        )
    return func


class PureFunction:
    """A memoized pure function bound to a cloud. Create it with ``@cloud.add_pure_function``."""

    def __init__(self, function: Callable[..., Any], cloud: Any, fp: bytes | None = None, *,
                 needs: tuple = (), requires: tuple = (), track_inputs: bool = True,
                 ignore_globals: tuple = ()):
        func = _check_pure(function.__pythagoras_function__ if isinstance(function, PureFunction)
                           else function)
        self.needs = needs  # resources a call holds where it runs (placement only)
        self.requires = requires  # requirement specifiers beyond the cloud's
        # False: the files and variables its calls read are not recorded (identity/inputs.py)
        self.track_inputs = track_inputs
        self.ignore_globals = tuple(ignore_globals)  # globals that are not inputs (the user's word)
        functools.update_wrapper(self, func)
        self.__pythagoras_function__: types.FunctionType = func  # (read by identity.kinds)
        self.cloud = cloud
        self.name = func.__qualname__
        self.qualified_name = qualified_name(func)  # module.qualname: what its results are stored as
        # Given a fingerprint (a copy unpickled in a worker), it is trusted as it is: the copy was
        # made from the very values that fingerprint was computed from.
        self._identity: Identity | None = None if fp is None else Identity(fp)
        self._record_lock = threading.Lock()  # see record()
        code = func.__code__
        self._params = frozenset(code.co_varnames[: code.co_kwonlyargcount])
        self._defaults = dict(func.__kwdefaults__ or {})
        self._var_kw = bool(code.co_flags & inspect.CO_VARKEYWORDS)
        # With **kw, the order of the arguments it gathers counts (see identity.calls).
        self.named: frozenset[str] | None = self._params if self._var_kw else None

    # ------------------------------------------------------------------ identity

    def identity(self) -> Identity:
        """The function's fingerprint as of now, with the checks that keep it true.

        It is computed at the first call (when every global is defined) and again whenever a
        global, a helper or a value it reached has changed since: a few identity tests per call,
        and a new address for each value that can change in place (see ``identity.py``).
        """
        identity = self._identity
        if identity is None or not identity.holds():
            if identity is None:  # the first call, here: said once if it reads the clock
                warn_impure(self.__pythagoras_function__, self.name)
            identity = identify(self.__pythagoras_function__, self.name,
                                self.ignore_globals)
            if not self.track_inputs:  # its results keep no trace: never those of a tracked one
                identity.fp = untracked_fingerprint(identity.fp)
            self._identity = identity
        return identity

    @property
    def fingerprint(self) -> bytes:
        """The function's fingerprint, for the values its globals hold now."""
        return self.identity().fp

    def record(self, identity: Identity) -> FunctionRecord:
        """The function as workers get it (its record key and bytes), pickled with the very
        values that ``identity`` was computed from: made once per identity (see
        :func:`function_record`)."""
        record = identity.record
        if record is None:
            # Made by one thread: the others calling at the same time wait for it, asleep.
            with self._record_lock:
                record = identity.record
                if record is None:
                    record = function_record(self, identity)
                    if not identity.holds():  # a global changed in the meantime (another thread)
                        raise PythagorasError(
                            f"the globals of {self.name} changed while its calls were being "
                            f"sent; call again (a call runs with the values its address was "
                            f"computed from)"
                        )
                    identity.record = record
        return record

    def bind(self, args: tuple, kwargs: dict) -> dict:
        """The complete keyword arguments of a call, defaults included, checked against the signature."""
        if args:
            raise PureFunctionError(
                f"{self.name}() was called with {len(args)} positional argument(s); pure functions "
                f"take keyword arguments only: call {self.name}(name=value, ...)"
            )
        if len(kwargs) != len(self._params) or not self._params.issuperset(kwargs):
            if self._defaults:
                kwargs = {**self._defaults, **kwargs}
            unknown = kwargs.keys() - self._params
            if unknown and not self._var_kw:
                raise PureFunctionError(
                    f"{self.name}() got unexpected keyword argument(s) {sorted(unknown)}; "
                    f"it takes {sorted(self._params)}"
                )
            missing = self._params - kwargs.keys()
            if missing:
                raise PureFunctionError(
                    f"{self.name}() is missing keyword argument(s) {sorted(missing)}"
                )
        return kwargs

    def address(self, **kwargs: Any) -> bytes:
        """The call address of ``self(**kwargs)``: where its result is (or will be) stored."""
        return call_address(self.fingerprint, self.bind((), kwargs), named=self.named)[0]

    # ------------------------------------------------------------------ calls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Return the stored result of this call, computing and storing it here on a miss."""
        kwargs = self.bind(args, kwargs)
        fp = self.identity().fp
        call, addresses = call_address(fp, kwargs, named=self.named)
        value = self.cloud.store.get_result(call)
        if value is not _MISSING:
            return value
        return self.cloud._compute_here(self, fp, call, kwargs, addresses)

    # ------------------------------------------------------------------ stored results

    def lookup(self, **kwargs: Any) -> StoredCall | None:
        """The stored result of this call described (computed where, by which worker, when, in
        how long, how large, the files and environment variables it read and which of them
        changed since — or that they are not tracked), or None when it is not stored here.
        Nothing is computed."""
        call = self.address(**kwargs)
        self.cloud._results.settle()
        return stored_call(self.cloud.store, call, self.qualified_name, self.track_inputs)

    def explain(self, **kwargs: Any) -> Explanation:
        """Why this call is or is not a hit: what differs from the nearest stored call of this
        function (its code, a helper, a global, a package's version, an argument, a file or an
        environment variable it read) — or that it was never computed. Nothing is computed;
        ``print(f.explain(x=1))`` reads well, and the :class:`~.explain.Explanation` holds the
        parts (``verdict``, ``differences``, ``nearest``)."""
        from .explain import explain

        return explain(self, kwargs)

    def forget(self, **kwargs: Any) -> bool:
        """Delete the stored result of this call from this machine's store; True if there was
        one. Its next call computes it again."""
        self.cloud._results.settle()
        return forget(self.cloud.store, [self.address(**kwargs)]) == 1

    def forget_all(self) -> int:
        """Delete every stored result of this function (every version of it) from this
        machine's store; returns how many. ``pythagoras-node cache gc`` then reclaims the space."""
        self.cloud._results.settle()
        return forget_function(self.cloud.store, self.qualified_name)

    # ------------------------------------------------------------------ running calls

    def sync_remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run this call in a worker of the cloud (a peer's, on the swarm) and return its result."""
        kwargs = self.bind(args, kwargs)
        return self.cloud._run(self, [kwargs], return_exceptions=False, progress=False)[0]

    def sync_parallel(
        self,
        calls: Iterable[Mapping[str, Any]],
        *,
        return_exceptions: bool = False,
        progress: bool | None = None,
        timeout: float | None = None,
    ) -> list:
        """Run many calls in parallel and return their results in input order.

        ``calls`` is any iterable (a generator too) of :func:`kw_args` or plain dicts. Identical
        calls run once and stored results are answered without running anything. Without
        ``return_exceptions``, the first failure in input order is raised once every call has
        ended; with it, exception objects stand in the list in their places. ``progress=None``
        shows a progress bar when stderr is a terminal. ``timeout``: seconds for the whole batch;
        the calls still running then are cancelled (on peers too) and ``TimeoutError`` is raised
        (with ``return_exceptions``, it stands in their places).

        It is :meth:`async_parallel` plus waiting: the same run of calls, driven by this thread.
        """
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout >= 0):
            raise PureFunctionError(
                f"{self.name}.sync_parallel(timeout={timeout!r}): give a number of seconds "
                f"(0 or more), or None to wait as long as the calls take"
            )
        return self.cloud._run(
            self, self._calls_of(calls, "sync_parallel"), return_exceptions=return_exceptions,
            progress=progress, timeout=timeout,
            total=len(calls) if isinstance(calls, Sized) else None,
        )

    def async_remote(self, *args: Any, **kwargs: Any) -> Future:
        """Start this call in a worker of the cloud and return a ``concurrent.futures.Future`` of
        its result at once (a stored result is a future already done).

        ``cancel()`` stops the call even while it runs, where it runs, unless another future
        waits for the same call; an identical call already in flight is joined, not run twice.
        """
        kwargs = self.bind(args, kwargs)
        return self.cloud._start(self, [kwargs])[0]

    def async_parallel(self, calls: Iterable[Mapping[str, Any]]) -> list[Future]:
        """Start many calls in parallel and return their futures in input order.

        Takes what :meth:`sync_parallel` takes; identical calls share one execution (each gets
        its own future) and stored results are futures already done. Use
        ``concurrent.futures.wait`` or ``as_completed`` on them, or ``[f.result() for f in ...]``.
        """
        return self.cloud._start(self, self._calls_of(calls, "async_parallel"))

    def _calls_of(self, calls: Any, method: str):
        """The bound calls of an iterable of kw_args/dicts, checked as they are consumed."""
        if isinstance(calls, Mapping) or isinstance(calls, (str, bytes)):
            raise PureFunctionError(
                f"{self.name}.{method}() takes an iterable of calls, e.g. "
                f"`[kw_args(x=1), kw_args(x=2)]`; wrap a single call in a list"
            )
        try:
            iterator = iter(calls)
        except TypeError:
            raise PureFunctionError(
                f"{self.name}.{method}() takes an iterable of kw_args(...) or dicts, "
                f"not a {type(calls).__name__}"
            ) from None
        return _bound_calls(self, iterator, method)

    def __reduce__(self):
        return _rebuild_pure_function, (self.__pythagoras_function__, self.fingerprint,
                                        self.needs, self.requires, self.track_inputs)

    def __repr__(self) -> str:
        return f"<pure function {self.name} of {self.cloud!r}>"


def _bound_calls(fn: PureFunction, calls: Iterable[Any], method: str):
    bind = fn.bind
    for position, item in enumerate(calls):
        kind = type(item)
        if kind is KwArgs:  # made by kw_args(**kw): its keys are strings
            kwargs = dict(item)
        elif kind is dict or isinstance(item, Mapping):
            kwargs = dict(item)
            if not all(type(k) is str for k in kwargs):
                bad = [k for k in kwargs if not isinstance(k, str)]
                if bad:
                    raise PureFunctionError(
                        f"{fn.name}.{method}(): item {position} has non-string keys {bad!r}; "
                        f"argument names are strings"
                    )
        else:
            raise PureFunctionError(
                f"{fn.name}.{method}(): item {position} is a {kind.__name__}, not the "
                f"arguments of a call; pass kw_args(name=value, ...) or a dict for each call"
            )
        yield bind((), kwargs)


def _rebuild_pure_function(func: types.FunctionType, fp: bytes | None, needs: tuple = (),
                           requires: tuple = (), track_inputs: bool = True) -> PureFunction:
    from .execution.context import process_cloud

    return PureFunction(func, process_cloud(), fp, needs=needs, requires=requires,
                        track_inputs=track_inputs)
