"""``PCloud``: the base of every backend, the user contract they share, and the choice of backend.

A cloud owns a store (the LMDB store of its home), the functions added to it, and the
collaborators it hands each run of calls: its results (:class:`~.seams.StoreResults`, or the
swarm's), its executor (where tasks run: each backend has its own), the leases of its home and
the calls its runs have in flight. What happens on a call is the same everywhere: the memoized
call and the ``sync_parallel`` algorithm live in :mod:`..function` and :mod:`..execution`; a
backend only says where tasks run and where results are.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..defaults import home_dir, worker_count
from ..errors import ConfigurationError, FingerprintError, ResourcesError, StoreFullError
from ..execution.context import in_worker
from ..execution.inflight import InflightCalls
from ..execution.interfaces import Collaborators, Executor, Results
from ..execution.windows import run_calls, submit_calls
from ..function import PureFunction
from ..identity import inputs
from ..identity.calls import NO_ADDRESSES as _NO_ADDRESSES
from ..identity.calls import argument_digests
from ..identity.encoding import value_address
from ..identity.fingerprint import parse_ignore_globals
from ..requirements import parse_requirements
from ..resources import custom_resources, lacking, machine_resources, parse_needs
from ..store.core import MISSING, ResultRecord, Store, open_store, warn_not_stored
from ..store.leases import leases_of
from ..store.packing import pack_parts
from ..store.records import result_meta
from .choice import choose_backend
from .connection import parse_connection
from .seams import StoreResults

if TYPE_CHECKING:
    from ..execution.arguments import Arguments

__all__ = ["PCloud"]

_COMPUTING = threading.local()  # the calls each thread is computing in _compute_here

log = logging.getLogger(__name__)

class PCloud:
    """A cloud of pure functions. ``PCloud(...)`` itself gives the default backend.

    ``requires``: pip requirement specifiers a machine must satisfy to run calls.
    ``connection``: ``None`` (automatic), ``"local"``, ``"host[:port],..."``, or a mapping.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        if args:
            raise ConfigurationError(
                f"{cls.__name__}() takes keyword arguments only, e.g. "
                f"{cls.__name__}(requires=None, connection=None)"
            )
        if cls is PCloud:
            cls = choose_backend(parse_connection(kwargs.get("connection")), kwargs.get("home"))
        return object.__new__(cls)

    def __init__(self, *, requires: Any = None, connection: Any = None, home: Any = None):
        self.requires = parse_requirements(requires)
        self.connection = parse_connection(connection)
        self.home = home_dir(home or self.connection["home"])
        self.store: Store = open_store(self.home)
        self._leases = leases_of(self.store.path)  # shared by every cloud of this home here
        self.functions: list[PureFunction] = []
        self._lock = threading.Lock()
        # Calls being executed for runs of this cloud: call address -> (run, slot), so that
        # an identical call started meanwhile joins that execution instead of starting another.
        self._inflight = InflightCalls()
        # results computed here are claimed by this machine's member as they are stored
        self._results: Results = StoreResults(self.store, sign=self._sign)
        self._executor: Executor  # each backend makes its own
        self._machine: dict[str, float] | None = None  # see machine_resources

    def add_pure_function(self, func: Any = None, *, resources: Any = None,
                          requires: Any = None, track_inputs: bool = True,
                          ignore_globals: Any = ()) -> Any:
        """Decorator: make ``func`` a memoized pure function of this cloud.

        Bare (``@cloud.add_pure_function``) or with options:
        ``@cloud.add_pure_function(resources={"gpus": 1, "memory": "8G"}, requires="torch>=2")``.
        ``resources``: what a call holds where it runs — it runs only on a machine whose free
        resources cover it (placement only: never part of a call's address). ``requires``:
        requirement specifiers a machine must satisfy to run its calls, beyond the cloud's.
        ``track_inputs=False``: do not record the files and environment variables its calls
        read (data too large to hash): a stored result is then answered even after they
        changed — your promise that they do not (``f.lookup()`` says so).
        ``ignore_globals``: names of globals (of the function or of any helper it reaches) that
        are not inputs, e.g. a module-level memo dict: ``ignore_globals=("_memo",)``. They are
        neither fingerprinted nor checked: the user promises that results do not depend on them.
        """
        if not isinstance(track_inputs, bool):
            raise ConfigurationError(
                f"add_pure_function(track_inputs={track_inputs!r}): give True (the default: "
                f"the files and environment variables a call reads are checked before its "
                f"result is answered again) or False")
        needs = parse_needs(resources)
        extra = parse_requirements(requires)
        ignore = parse_ignore_globals(ignore_globals)
        if func is None:
            return lambda f: self._add(f, needs, extra, track_inputs, ignore)
        return self._add(func, needs, extra, track_inputs, ignore)

    def _add(self, func: Any, needs: tuple, requires: tuple,
             track_inputs: bool = True, ignore: tuple = ()) -> PureFunction:
        self._check_function(needs, requires)
        fn = PureFunction(func, self, needs=needs, requires=requires, track_inputs=track_inputs,
                          ignore_globals=ignore)
        self.functions.append(fn)
        return fn

    def _check_function(self, needs: tuple, requires: tuple) -> None:
        """A backend refuses at decoration what it can never run (see LocalCloud)."""

    # ------------------------------------------------------------------ backend interface

    def _compute_here(self, fn: PureFunction, fp: bytes, call: bytes, kwargs: dict,
                      addresses: Mapping[str, bytes] = _NO_ADDRESSES) -> Any:
        """Run a missed call (of ``fn`` at fingerprint ``fp``; ``addresses``: those of its
        large arguments, from ``call_address``) in this process, store its result
        durably, return it (even when the store is full: it is then only said that the result
        was not kept).

        The call's lease is held from before the function runs until its result is committed,
        so another process (or thread) of this home missing the same call waits for the result
        instead of computing it too; this one waits likewise when another holds the lease
        (except in a worker, see :mod:`pythagoras_p2p.store.leases`).

        Whatever the function raises propagates as-is, as from calling a plain function, and
        nothing is stored: a ``sys.exit(3)`` inside it ends this process like any
        ``sys.exit(3)`` would. (Run in a worker, the same call fails with a
        :class:`~pythagoras_p2p.errors.RemoteError` instead: see ``rebuild_exception``.)
        """
        if fn.needs:
            lacking = self._lacking_here(fn.needs)
            if lacking:
                raise ResourcesError(
                    f"{fn.name} asks for more than this machine has ({'; '.join(lacking)}), so "
                    f"its calls cannot run here: {self._elsewhere(fn.name)}")
        computing = _COMPUTING.__dict__.setdefault("calls", set())
        if call in computing:  # the call calls itself with the same arguments, on this thread:
            # waiting for its own lease would never end; run on, as plain Python would, to
            # its RecursionError (nothing is stored on the way)
            return fn.__pythagoras_function__(**kwargs)
        owner = object()
        found = self._leases.claim(call, owner, lambda: self.store.get_result(call), MISSING,
                                   wait=not in_worker())
        if found is not MISSING:
            return found
        computing.add(call)
        try:
            return self._compute_and_store(fn, fp, call, kwargs, addresses)
        finally:
            computing.discard(call)
            self._leases.release([call], owner)

    def _elsewhere(self, name: str) -> str:
        """What to do about a call this machine could never run (a backend whose calls all run
        here says otherwise)."""
        return (f"run them where a node has it, with {name}.sync_remote(...) or "
                f"sync_parallel(...), or ask for less (resources=)")

    def _lacking_here(self, needs: tuple) -> list[str]:
        """What of ``needs`` this machine could never give a call."""
        return lacking(needs, self.machine_resources())

    def machine_resources(self) -> dict[str, float]:
        """What this machine offers the calls this cloud runs on it: its worker slots, RAM,
        GPUs and ``PYTHAGORAS_RESOURCES`` (found once)."""
        if self._machine is None:
            self._machine = machine_resources(self._local_workers(), custom_resources())
        return self._machine

    def _local_workers(self) -> int:
        """Worker slots of this machine for this cloud's calls (its cores, by default)."""
        return worker_count()

    def _compute_and_store(self, fn: PureFunction, fp: bytes, call: bytes, kwargs: dict,
                           addresses: Mapping[str, bytes] = _NO_ADDRESSES) -> Any:
        """Run the call here and store its result under ``call``, unless what the function
        reads changed while it ran: it then ran with values other than those ``fp`` (and so
        ``call``) was computed from, and its result is returned but not stored."""
        started = time.time()
        recording = inputs.start() if fn.track_inputs else None
        t0 = time.perf_counter()
        try:
            value = fn.__pythagoras_function__(**kwargs)
        finally:
            trace = None if recording is None else inputs.stop(recording, fn)
        duration = time.perf_counter() - t0
        if not _still(fn, fp):  # another thread rebound or changed a global meanwhile
            log.warning(
                "result of %s not stored: a global it reads changed while it ran (another "
                "thread?), so it may have run with values other than those of its address; "
                "its next call computes it again", fn.name)
            return value
        parts = pack_parts(value, what=f"result of {fn.name}")  # large ones are not joined
        meta = result_meta(fn.qualified_name, fp, started, duration, worker="caller")
        if trace is not None:  # what it read, checked before its result is answered again
            meta["inputs"] = trace
        meta["args"] = argument_digests(kwargs, addresses)  # for explain
        address = value_address(value)
        self._sign([(call, address, parts, meta)])
        try:
            self.store.put_results([ResultRecord(call, address, parts, meta)])
        except StoreFullError as exc:
            warn_not_stored(fn.name, 1, exc)
        else:
            self._note_version(fn)
        return value

    def _note_version(self, fn: PureFunction) -> None:
        """Keep the record of the version of ``fn`` a result was just stored for (once per
        version and process), so ``explain`` can compare versions part by part. Only for
        that: a function whose record cannot be made still runs and stores here."""
        identity = fn._identity
        if identity is None or identity.record is not None:
            return
        try:
            self._executor.register_function(fn, identity)
        except Exception as exc:  # noqa: BLE001 - only explain's view of versions is lost
            log.debug("no record of %s kept for explain: %s", fn.name, exc)

    @functools.cached_property
    def _seams(self) -> Collaborators:
        """What each run of this cloud is given to work with (see :mod:`..execution.interfaces`),
        made once its backend has made its executor; also the owner of its runs' progress bars
        (see :func:`~..execution.progress.open_runs`)."""
        return Collaborators(self._results, self._executor, self._leases, self._inflight)

    def _run(self, fn: PureFunction, calls: Iterable[dict], *, return_exceptions: bool,
             progress: bool | None, timeout: float | None = None,
             total: int | None = None) -> list:
        return run_calls(self._seams, fn, calls, return_exceptions=return_exceptions,
                         progress=progress, timeout=timeout, total=total)

    def _start(self, fn: PureFunction, calls: Iterable[dict], *, memoize: bool = True,
               arguments: Arguments | None = None, unaddressed: frozenset = frozenset()) -> list:
        """Start calls of ``fn``; a future per call, in input order (see ``async_parallel``,
        and :func:`~..execution.windows.submit_calls` for the options)."""
        return submit_calls(self._seams, fn, calls, memoize=memoize, arguments=arguments,
                            unaddressed=unaddressed)

    def _arguments(self) -> Arguments:
        """A scope for large arguments shared by several runs (a joblib ``Parallel`` call)."""
        from ..execution.arguments import Arguments

        return Arguments(self._executor)

    def worker_slots(self) -> int:
        """How many calls this cloud can run at once (every worker of every machine it uses)."""
        raise NotImplementedError  # pragma: no cover - each backend has one

    def _sign(self, records: list) -> None:
        """Say that this machine's member computed these results, when its home has member keys
        (:func:`~pythagoras_p2p.trust.provenance.claim`: the home's node signs a copy as it
        leaves the machine; the swarm's other members refuse unsigned ones)."""
        keys = getattr(self, "_member_keys", False)
        if keys is False:
            from ..errors import SecurityError
            from ..trust import NodeKeys

            try:
                keys = NodeKeys.load(self.home)
            except SecurityError as exc:  # damaged keys: the results stay unsigned, said once
                log.warning("results computed here are not signed: %s", exc)
                keys = None
            self._member_keys = keys
        if keys is not None:
            from ..trust.provenance import claim

            for *_, meta in records:
                claim(meta, keys)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop this cloud's worker processes and connections (the store stays open)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(home={str(self.home)!r})"


def _still(fn: PureFunction, fp: bytes) -> bool:
    """Whether ``fn``'s fingerprint is still ``fp`` (a few identity checks when nothing changed)."""
    try:
        return fn.identity().fp == fp
    except FingerprintError:  # a global now holds what cannot be fingerprinted
        return False
