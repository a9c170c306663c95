"""Function records: made once per identity by the caller, loaded by key where calls run.

A record holds what a worker needs to run exactly the caller's function: its cloudpickle, with
the user modules it reaches as the caller has them in memory (:mod:`.shipping`), its source and the files and lines of its code (for
tracebacks), the fingerprint its results are stored under, and the user modules the caller had
loaded, each with the hash of its file (:mod:`.modules`). It is stored, sent and loaded under
its record key, the hash of its bytes (:mod:`pythagoras_p2p.store.functions`), so a task names
the very code to run, never "whatever was stored first under this fingerprint".

A process loads a record once (:func:`loaded`) and, before each task of a record other than the
one it ran last, puts the module versions the record lists in place (:class:`.modules.ModuleVersions`):
the modules shipped with it, and, for those that could not be shipped, the files the caller
loaded (checked: a call is refused rather than run with other code).
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import PythagorasError, SerializationError
from ..store.functions import record_key
from ..store.packing import pack, unpack
from .modules import ModuleVersions, caller_modules
from .shipping import ship

__all__ = ["FunctionRecord", "Loaded", "function_record", "function_from_record", "load_record",
           "load_function", "loaded", "from_record"]


class FunctionRecord(NamedTuple):
    """A function as workers get it: the record's key and its bytes."""

    key: bytes
    data: bytes


class Loaded(NamedTuple):
    """A function loaded from its record, with what running it needs."""

    func: Any  # the plain function (wrapped when its calls record no inputs: identity/inputs.py)
    fingerprint: bytes  # its results are stored under this (the record's key is not)
    modules: dict  # user module name -> hash of its file as the caller had it (or of its
    # version shipped with the record)
    unshipped: tuple = ()  # user modules the record could not ship: checked against its files


def function_record(fn: Any, identity: Any = None) -> FunctionRecord:
    """The record of pure function ``fn`` made for ``identity`` (default: its own now), with
    the identity's manifest (a digest per part of the fingerprint, for explain)."""

    func = fn.__pythagoras_function__
    if identity is None:
        identity = fn.identity()
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source = None  # python -c, exec(): the code object is all there is
    # The user's own modules are not installed on peers, and may differ from their files here:
    # they travel by value, with the function (see .shipping).
    try:
        shipment = ship(func, getattr(identity, "coarse", False))
    except Exception as exc:
        raise SerializationError(
            f"{fn.name} cannot be sent to a worker process because it cannot be pickled "
            f"({type(exc).__name__}: {exc}); create what it uses inside its body or pass it as "
            f"an argument"
        ) from None
    from ..identity.usercode import is_user_code
    from .sources import collect

    where = collect(func, is_user_code)  # file names and lines, for tracebacks where it runs
    _VERSIONS.caller = True
    fields = {"name": fn.name, "fp": identity.fp, "source": source, "pickle": shipment.pickled,
              "where": where, "modules": caller_modules()}
    if shipment.shipped:
        fields["shipped"] = shipment.shipped
    if shipment.unshipped:
        fields["unshipped"] = shipment.unshipped
    if not fn.track_inputs:  # where it runs, its calls record nothing (identity/inputs.py)
        fields["track_inputs"] = False
    if identity.components:
        fields["manifest"] = identity.manifest()
    data = pack(fields)
    return FunctionRecord(record_key(data), data)


# ---------------------------------------------------------------------- where calls run

_VERSIONS = ModuleVersions()  # the user modules this process holds
_LOADED: dict[bytes, Loaded] = {}  # record key -> the function loaded from it
_LOCK = threading.RLock()
_current: list = [None]  # the key of the record whose module versions are in place


def load_record(record: bytes | memoryview, *, check_files: bool = True) -> Loaded:
    """The function a record holds, with its file names and source lines back (for tracebacks
    where it runs), unpickled with the module versions the record lists in place."""
    import cloudpickle

    fields = unpack(record)
    modules = {**(fields.get("modules") or {}), **(fields.get("shipped") or {})}
    unshipped = tuple(fields.get("unshipped") or ())
    with _LOCK:
        _VERSIONS.align(modules, check_files=check_files)
        obj = cloudpickle.loads(fields["pickle"])
        if isinstance(obj, tuple):  # (function, the user modules shipped with it)
            obj, shipped = obj
            _VERSIONS.keep(shipped, fields.get("shipped") or {})
            _VERSIONS.align(modules, check_files=False)
        _VERSIONS.observe()
        _VERSIONS.check(unshipped, modules)
    func = getattr(obj, "__pythagoras_function__", obj)
    from ..identity.usercode import is_user_code
    from .sources import restore

    restore(func, fields.get("where"), is_user_code)
    if fields.get("track_inputs") is False:
        from ..identity.inputs import untracked

        func = untracked(func)
    return Loaded(func, fields["fp"], modules, unshipped)


def function_from_record(record: bytes | memoryview) -> Any:
    """The plain function a record holds (see :func:`load_record`)."""
    return load_record(record).func


def load_function(store: Any, key: bytes) -> Loaded:
    """The function stored under record key ``key`` (checked: see ``Store.get_function``)."""
    record = store.get_function(key)
    if record is None:
        raise PythagorasError(
            f"the record of function {key.hex()[:16]} is not in the store at {store.home}; "
            f"call again (the caller stores it before its calls run)")
    return load_record(record)


def loaded(store: Any, key: bytes) -> Loaded:
    """The function of record ``key``, ready to run: loaded once per process, its module
    versions put in place when another record ran last. Call :func:`ran` after the task."""
    return _ready(key, load_function, store, key)


def from_record(key: bytes, record: bytes) -> Loaded:
    """Like :func:`loaded`, for a record handed over with the task (a Dask worker's)."""
    return _ready(key, _checked_record, key, record)


def _checked_record(key: bytes, record: bytes) -> Loaded:
    if record_key(record) != key:
        raise PythagorasError(
            f"the record of function {key.hex()[:16]} that reached this worker does not "
            f"hash to its key (damaged on the way); it was not run")
    return load_record(record)


def _ready(key: bytes, load: Callable[..., Loaded], *args: Any) -> Loaded:
    """The function of record ``key``, loaded with ``load(*args)`` the first time."""
    found = _LOADED.get(key)
    if found is None:
        found = _LOADED[key] = load(*args)
    elif _current[0] != key:
        with _LOCK:
            _VERSIONS.align(found.modules, check_files=False)
            _VERSIONS.check(found.unshipped, found.modules)
    _current[0] = key
    return found


def ran() -> None:
    """A task just ran: note the user modules it imported (nothing to do when it imported none)."""
    if len(sys.modules) != _VERSIONS.count:
        with _LOCK:
            _VERSIONS.observe()
