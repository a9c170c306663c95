"""Running calls away from the caller: tasks, running one, and the ``sync_parallel`` algorithm.

:func:`run_calls` is backend-independent. It hashes every call, runs identical calls once,
answers stored results from one read transaction, hands the rest to a backend's dispatcher as
:class:`Task` objects, stores results as they arrive in grouped transactions, and returns them in
input order. :func:`execute` is what runs one task wherever it runs (a worker process, or inline)
and returns its outcome (:mod:`.outcomes`, where :func:`~.outcomes.rebuild_exception` turns a
failure back into the exception the function raised).
"""

from __future__ import annotations

import pickle
import reprlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..defaults import INLINE_VALUE_LIMIT
from ..errors import PythagorasError, SerializationError, StoreFullError
from ..identity.calls import approx_nbytes, call_address
from ..identity.encoding import value_address
from ..store.core import MISSING, Store, warn_not_stored
from ..store.packing import pack_parts, unpack
from ..store.records import result_meta
from .outcomes import Ok, Outcome, Stored, failure_outcome, rebuild_exception
from .progress import ProgressBar

if TYPE_CHECKING:
    from .interfaces import Backend

__all__ = ["Task", "ArgRef", "run_calls", "execute", "describe_call", "decode_args", "resolve_args"]


class Task(NamedTuple):
    """One call to run: ``payload`` is the pickled keyword arguments (large ones as :class:`ArgRef`)."""

    tid: int
    fp: bytes
    call: bytes
    payload: bytes
    label: str
    refs: tuple = ()  # addresses of the large arguments the payload refers to


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
                keep: Callable[[bytes, str, Any], bool]) -> tuple[bytes, tuple]:
    """Pickle a call's arguments; large ones are handed to ``keep(address, name, value)`` (the
    backend puts them where its workers read them) and passed as :class:`ArgRef`, unless
    ``keep`` says there was no room for them (a full store): then they travel with the call.

    Returns the payload and the addresses it refers to.
    """
    shipped = {}
    refs = []
    for name, value in kwargs.items():
        address = addresses[name] if approx_nbytes(value) >= INLINE_VALUE_LIMIT else None
        if address is not None and keep(address, name, value):
            shipped[name] = ArgRef(address)
            refs.append(address)
        else:
            shipped[name] = value
    try:
        return pickle.dumps(shipped, protocol=5), tuple(refs)
    except Exception as exc:  # hashing pickled it already; this is a last guard
        raise SerializationError(f"the arguments cannot be pickled ({exc})") from None


def decode_args(payload: bytes, store: Store) -> dict:
    """A task's keyword arguments, each :class:`ArgRef` replaced by the value ``store`` holds."""
    return resolve_args(payload, store.get_value)


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


def execute(func: Callable, kwargs: dict, fp: bytes, label: str, store: Store | None,
            where: str) -> Outcome:
    """Run one call of ``func`` (fingerprint ``fp``, named ``label`` in messages) here and return
    its outcome; large results go straight into ``store``.

    With no store (a worker of another engine), every result travels back in the outcome.
    """
    started = time.time()
    t0 = time.perf_counter()
    try:
        value = func(**kwargs)
    except BaseException as exc:  # everything the function raises goes back to the caller
        # SystemExit and KeyboardInterrupt too: where tasks run, Ctrl-C is ignored, so either
        # one is the function's own, and fails its call rather than the worker (which would
        # count as a crash and be retried).
        return failure_outcome(exc, where)
    duration = time.perf_counter() - t0
    try:
        parts = pack_parts(value, what=f"result of {label}")
        address = value_address(value)
    except SerializationError as exc:
        return failure_outcome(exc, where)
    meta = result_meta(func.__qualname__, fp, started, duration, worker=where)
    if store is not None and sum(memoryview(p).nbytes for p in parts) > INLINE_VALUE_LIMIT:
        try:
            store.put_value(address, parts)  # written piece by piece: a large result is not copied
            return Ok(address, None, meta)
        except StoreFullError:
            pass  # the value goes back itself; the caller says it could not be kept
    return Ok(address, b"".join(parts), meta)


def run_calls(
    cloud: Backend, fn: Any, calls: Iterable[dict], *, return_exceptions: bool, progress: bool | None,
    timeout: float | None = None,
) -> list:
    """Run calls of ``fn`` through ``cloud``'s dispatcher; see ``PureFunction.sync_parallel``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    store: Store = cloud.store
    identity = fn.identity()  # calls run with the values their addresses are computed from
    fp = identity.fp
    memo: dict = {}
    index: dict[bytes, int] = {}
    unique: list[tuple[bytes, dict, dict]] = []
    positions: list[int] = []
    for kwargs in calls:
        call, addresses = call_address(fp, kwargs, memo)
        slot = index.get(call)
        if slot is None:
            slot = index[call] = len(unique)
            unique.append((call, kwargs, addresses))
        positions.append(slot)
    del memo, index

    found = store.get_results([u[0] for u in unique])
    results: list[Any] = [found.get(u[0], MISSING) for u in unique]
    todo = [i for i, r in enumerate(results) if r is MISSING]
    if todo:  # stored elsewhere (on a peer)? one bulk lookup before anything runs
        found = cloud._lookup_elsewhere([unique[i][0] for i in todo], before_running=True)
        if found:
            for i in todo:
                results[i] = found.get(unique[i][0], MISSING)
            todo = [i for i in todo if results[i] is MISSING]
    del found
    bar = ProgressBar(fn.name, len(unique), len(unique) - len(todo), enabled=progress)
    failed = timed_out = False
    unstored, why_unstored = 0, None  # results returned but not kept (a full store), and why
    if todo:
        try:
            cloud._register_function(fn, identity)
        except StoreFullError as exc:  # no worker can load the function: each call fails so
            for i in todo:
                results[i] = exc
            failed, todo = True, []
    if todo:
        written: list[bytes] = []  # transient copies held for these calls, let go at the end
        kept: set[bytes] = set()  # large arguments already handed to the backend
        unkept: set[bytes] = set()  # those the store had no room for: they travel with each call
        guard = threading.Lock()
        over = [False]  # once the calls are over, no copy is held for them

        def keep(address: bytes, name: str, value: Any) -> bool:
            # On the backend's thread, which may still make a task after a Ctrl-C ended this.
            with guard:
                if over[0]:
                    raise PythagorasError(f"{fn.name}: these calls were cancelled")
                if address in kept:  # 40 calls sharing one DataFrame: handled once
                    return True
                if address in unkept:
                    return False
                try:
                    cloud._keep_argument(address, name, value, written)
                except StoreFullError:
                    unkept.add(address)
                    return False
                kept.add(address)
                return True

        def make_task(i: int) -> Task:
            call, kwargs, addresses = unique[i]
            payload, refs = encode_args(kwargs, addresses, keep)
            return Task(i, fp, call, payload, describe_call(fn.name, kwargs), refs)

        tasks = (make_task(i) for i in todo)
        batch = cloud._submit(tasks, len(todo))
        leases = cloud._leases  # the batch holds the leases of the calls its pool sends
        try:
            while not batch.finished:
                if deadline is None:
                    outcomes = batch.next_outcomes()
                else:
                    outcomes = batch.next_outcomes(max(0.0, deadline - time.monotonic()))
                    if not outcomes and time.monotonic() >= deadline:
                        batch.cancel()  # on peers too; a cancelled call stores nothing
                        expired = TimeoutError(
                            f"{fn.name}: calls still running after timeout={timeout} s were "
                            f"cancelled")
                        for i in todo:
                            if results[i] is MISSING:
                                results[i] = expired
                        failed = timed_out = True
                        break
                records = []
                for tid, outcome in outcomes:
                    call = unique[tid][0]
                    kind = type(outcome)
                    if kind is Ok:
                        value = _value_of(outcome, store)
                        if value is MISSING:  # a large result lost (or damaged) before it was read
                            failed = True
                            results[tid] = PythagorasError(
                                f"{describe_call(fn.name, unique[tid][1])}: its result was lost "
                                f"before it could be read; call it again")
                            continue
                        records.append((call, outcome.address, outcome.blob, outcome.meta))
                        results[tid] = value
                    elif kind is Stored:  # by another process of this home
                        results[tid] = outcome.value
                    else:
                        failed = True
                        results[tid] = rebuild_exception(outcome, describe_call(fn.name, unique[tid][1]))
                if records:
                    try:
                        cloud._store_results(records)
                    except StoreFullError as exc:  # the results are returned all the same
                        unstored, why_unstored = unstored + len(records), exc
                leases.release([unique[tid][0] for tid, _ in outcomes], batch)  # committed
                bar.advance(len(outcomes))
        except BaseException:
            batch.cancel()
            raise
        finally:
            leases.release_all(batch)
            bar.close()
            with guard:
                over[0] = True  # a task made from now on holds nothing
            if written:  # the calls are over: their arguments' transient copies are not needed
                cloud._release_values(written)
    if unstored:
        warn_not_stored(fn.name, unstored, why_unstored)
    out = [results[p] for p in positions]
    if timed_out and not return_exceptions:
        raise next(v for v in out if isinstance(v, TimeoutError))
    if failed and not return_exceptions:
        for value in out:
            if isinstance(value, BaseException):
                raise value
    return out


def _value_of(outcome: Ok, store: Store) -> Any:
    """The result an outcome carries, or the large one its worker stored (MISSING if gone)."""
    return unpack(outcome.blob) if outcome.blob is not None else store.get_value(outcome.address)


def current_where(worker: str) -> str:
    import socket

    return f"{socket.gethostname()}/{worker}"

