"""Tasks, and running one: what crosses from a run of calls (:mod:`.runs`) to where it runs.

(Not to be confused with :mod:`.runs`: a *run* is the caller's side of many calls; a *task*
is one call as an executor receives it.)

A :class:`Task` is one call with its arguments pickled (large ones passed by address, as
:class:`ArgRef`). :func:`run_task` is what runs one task wherever it runs (a worker process,
inline, a Dask worker): it loads the function, resolves the arguments and executes the
call, and returns its outcome (:mod:`.outcomes`, where :func:`~.outcomes.rebuild_exception`
turns a failure back into the exception the function raised), with the trace of the files and
environment variables the call read in its metadata (:mod:`..identity.inputs`).
"""

from __future__ import annotations

import pickle
import reprlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..defaults import INLINE_VALUE_LIMIT
from ..errors import PythagorasError, SerializationError, StoreFullError
from ..identity import inputs
from ..identity.calls import approx_nbytes
from ..identity.code import qualified_name
from ..identity.encoding import value_address
from ..identity.inputs import Untracked
from ..store.core import MISSING, Store
from ..store.packing import pack_parts
from ..store.records import result_meta
from .functions import Loaded, loaded, ran
from .outcomes import Ok, Outcome, failure_outcome

__all__ = ["Task", "ArgRef", "encode_args", "execute", "run_task", "describe_call", "resolve_args"]


class Task(NamedTuple):
    """One call to run: ``payload`` is the pickled keyword arguments (large ones as :class:`ArgRef`)."""

    tid: int
    fp: bytes  # the key of its function's record (see .functions): the code to run, exactly
    call: bytes
    payload: bytes
    label: str
    refs: tuple = ()  # addresses of the large arguments the payload refers to
    memoize: bool = True  # False: a call not memoized (a joblib task): its result is not stored
    needs: tuple = ()  # resources it holds while it runs: sorted (name, amount) pairs
    requires: tuple = ()  # requirement specifiers of its function, beyond its cloud's


class ArgRef(NamedTuple):
    """A large argument passed by its address in the store instead of by value."""

    address: bytes


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # never builds the whole text of a large container
    short.maxstring = short.maxother = 40
    short.maxlist = short.maxtuple = short.maxset = short.maxfrozenset = short.maxdict = 6
    return short


_SHORT = _short_repr()


def describe_call(name: str, kwargs: dict) -> str:
    """``f(x=1, y='a')`` with long values shortened, for messages (made for every task)."""
    parts = []
    for key in sorted(kwargs):
        text = _SHORT.repr(kwargs[key])
        if len(text) > 40:
            text = text[:37] + "..."
        parts.append(f"{key}={text}")
    return f"{name}({', '.join(parts)})"


def encode_args(kwargs: dict, addresses: dict,
                stage: Callable[[bytes, str, Any], bool]) -> tuple[bytes, tuple]:
    """Pickle a call's arguments; large ones are handed to ``stage(address, name, value)`` (the
    executor puts them where its workers read them) and passed as :class:`ArgRef`, unless
    ``stage`` says there was no room for them (a full store): then they travel with the call.

    Returns the payload and the addresses it refers to.
    """
    shipped = {}
    refs = []
    for name, value in kwargs.items():
        address = addresses[name] if approx_nbytes(value) >= INLINE_VALUE_LIMIT else None
        if address is not None and stage(address, name, value):
            shipped[name] = ArgRef(address)
            refs.append(address)
        else:
            shipped[name] = value
    try:
        return pickle.dumps(shipped, protocol=5), tuple(refs)
    except Exception:  # a local function or a lambda (a joblib task's): cloudpickle takes it
        import cloudpickle

        try:
            return cloudpickle.dumps(shipped, protocol=5), tuple(refs)
        except Exception as exc:
            raise SerializationError(f"the arguments cannot be pickled ({exc})") from None


def resolve_args(payload: bytes, get_value: Callable[[bytes], Any]) -> dict:
    """A task's keyword arguments, each :class:`ArgRef` replaced by ``get_value(address)``
    (:data:`~pythagoras_p2p.store.core.MISSING` if it has none: an error naming the argument)."""
    kwargs = pickle.loads(payload)
    for name, value in kwargs.items():
        if type(value) is ArgRef:
            found = get_value(value.address)
            if found is MISSING:
                raise PythagorasError(
                    f"argument {name!r} ({value.address.hex()[:16]}) is missing from the store"
                )
            kwargs[name] = found
    return kwargs


def run_task(task: Task, where: str, store: Store | None, *,
             load: Callable[[bytes], Loaded] | None = None,
             get_value: Callable[[bytes], Any] | None = None) -> Outcome:
    """Run ``task`` here (``where`` names this place in outcomes) and return its outcome; it
    never raises for the call: what fails, loading the function or its arguments too, fails the
    call.

    The function is loaded by the key of its record with ``load(key)`` (by default from
    ``store``), large arguments are read with ``get_value(address)`` (by default from
    ``store``), and large results go into ``store`` (with none, every result travels back in
    its outcome).
    """
    try:
        if get_value is None:
            assert store is not None, "run_task without a store is given get_value="
            get_value = store.get_value
        function = loaded(store, task.fp) if load is None else load(task.fp)
        kwargs = resolve_args(task.payload, get_value)
        outcome = execute(function.func, kwargs, function.fingerprint, task.label, store, where)
        ran()
    except Exception as exc:
        return failure_outcome(exc, where)
    return outcome


def execute(func: Callable, kwargs: dict, fp: bytes, label: str, store: Store | None,
            where: str) -> Outcome:
    """Run one call of ``func`` (fingerprint ``fp``, named ``label`` in messages) here and return
    its outcome; large results go straight into ``store``.

    With no store (a worker of another engine), every result travels back in the outcome.
    """
    started = time.time()
    recording = None if type(func) is Untracked else inputs.start()
    t0 = time.perf_counter()
    try:
        value = func(**kwargs)
    except BaseException as exc:  # everything the function raises goes back to the caller
        # SystemExit and KeyboardInterrupt too: where tasks run, Ctrl-C is ignored, so either
        # one is the function's own, and fails its call rather than the worker (which would
        # count as a crash and be retried).
        if recording is not None:
            inputs.stop(recording)
        return failure_outcome(exc, where)
    duration = time.perf_counter() - t0
    trace = None if recording is None else inputs.stop(recording, func)
    try:
        parts = pack_parts(value, what=f"result of {label}")
        address = value_address(value)
    except SerializationError as exc:
        return failure_outcome(exc, where)
    meta = result_meta(qualified_name(func), fp, started, duration, worker=where)
    if trace is not None:  # what it read, checked before its result is answered again
        meta["inputs"] = trace
    if store is not None and sum(memoryview(p).nbytes for p in parts) > INLINE_VALUE_LIMIT:
        try:
            store.put_value(address, parts)  # written piece by piece: a large result is not copied
            return Ok(address, None, meta)
        except StoreFullError:
            pass  # the value goes back itself; the caller says it could not be kept
    return Ok(address, b"".join(parts), meta)


def current_where(worker: str) -> str:
    import socket

    return f"{socket.gethostname()}/{worker}"

