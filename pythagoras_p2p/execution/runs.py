"""One run of calls of one function: the algorithm behind ``sync_*`` and ``async_*`` alike.

A :class:`CallRun` hashes every call, runs identical calls once, answers stored results from one
read transaction, joins calls that another run of this process already has in flight, hands the
rest to its executor as :class:`~.tasks.Task` objects, stores results as they arrive in
grouped transactions, and resolves each call's *slot* (one per distinct call address).

A run works only with what its cloud hands it (:class:`~.interfaces.Collaborators`): the
cloud's :class:`~.interfaces.Results`, its :class:`~.interfaces.Executor`, the leases of its
home, and its :class:`~.inflight.InflightCalls`.

Who drives a run differs, nothing else: ``sync_remote``/``sync_parallel`` launch the run and
pump its outcomes on the caller's thread (the swarm client then runs its I/O loop there too,
which keeps a remote round trip short) and return the results in input order; ``async_*`` give
the run to the process's :class:`~.futures.Collector`, which launches and pumps it on its own
thread and sets a :class:`~.futures.CallFuture` per input position. A sync caller that leaves
early (Ctrl-C, ``timeout=``) while another run still wants one of its calls hands the run to the
collector, so that call goes on for the one that wants it.

A slot's execution is wanted by each future (or the sync caller) of this run that waits for
it, and by each later run that joined it. It is cancelled — dropped from the queue, stopped on
its worker or peer, its result never stored — when the last of them lets go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from ..defaults import RESULT_GATHER
from ..errors import PythagorasError, StoreFullError
from ..identity.calls import argument_digests
from ..identity.inputs import note as note_inputs
from ..store.core import MISSING, warn_not_stored
from ..store.packing import unpack
from .arguments import Arguments, distinct_calls
from .outcomes import Ok, Stored, rebuild_exception
from .progress import ProgressBar
from .tasks import Task, describe_call, encode_args

if TYPE_CHECKING:
    from ..store.journal import JournalRecord
    from .inflight import Leader
    from .interfaces import Collaborators, TaskBatch
    from .outcomes import Crashed, Failed, Refused

__all__ = ["CallRun", "CANCELLED"]

CANCELLED = object()  # a slot nobody wants any more: its outcome is dropped, never stored

_GATHER_MOST = 4096  # results stored in one commit, at most


class CallRun:
    """The calls of one ``sync_parallel``/``async_parallel`` (or ``*_remote``) of ``fn``."""

    def __init__(self, seams: Collaborators, fn: Any, calls: Iterable[dict], *, futures: bool,
                 progress: bool | None = False, memoize: bool = True,
                 arguments: Arguments | None = None, unaddressed: frozenset = frozenset(),
                 bar: ProgressBar | None = None):
        self.seams = seams
        self.fn = fn
        self.memoize = memoize
        self._own_arguments = arguments is None
        self.arguments = arguments = Arguments(seams.executor) if arguments is None else arguments
        self.identity = fn.identity()  # calls run with the values their addresses are made from
        fp = self.fp = self.identity.fp
        self.unique, self.positions = distinct_calls(fp, calls, memoize, unaddressed, fn.named)
        n = len(self.unique)
        self.results: list[Any] = [MISSING] * n
        self.errors: set[int] = set()  # slots whose result is an exception to raise
        self.lock = threading.RLock()
        self.pumping = threading.Lock()  # held by the one thread taking this run's outcomes
        self.all_done = threading.Event()
        self.open = n  # slots not resolved yet
        self.batch: TaskBatch | None = None
        self.own: list[int] = []  # slots this run executes itself
        self.followers: dict[int, list[tuple[Leader, int]]] = {}  # slot -> later runs that joined it
        self.leaders: dict[int, tuple[Leader, int]] = {}  # slot -> the run it joined
        self.slot_futures: dict[int, list] | None = None
        self.futures: list | None = None
        if futures:
            from .futures import CallFuture

            self.wants = [0] * n
            self.condition = threading.Condition()  # shared by its futures (see CallFuture)
            self.futures = [CallFuture(self, slot) for slot in self.positions]
            self.slot_futures = {}
            for future in self.futures:
                self.slot_futures.setdefault(future.slot, []).append(future)
                self.wants[future.slot] += 1
        else:
            self.wants = [1] * n
        self._own_bar = bar is None  # else the bar of many runs (see windows.run_calls)
        self.bar = (ProgressBar(fn.name, n, 0, enabled=progress, owner=seams) if bar is None
                    else bar)
        self.unstored = 0  # results returned but not kept
        self.why_unstored: StoreFullError | None = None
        self._closed = False
        self.then: CallRun | None = None  # launched once this run closes (async windows)
        self.dropped = False  # some slot was given up (cancelled): its place is not a result
        if memoize:
            self._answer_stored()
            self._join_inflight()
        else:
            self.own = list(range(n))
        self._payloads: dict[int, tuple] | None = None
        if futures and self.own:
            self._snapshot()

    def _snapshot(self) -> None:
        """Pickle the arguments of this run's own calls now, on the caller's thread (large ones
        staged by the executor now too): the caller may change an argument in place once
        ``async_*`` returned, and a call must run with the values its address was made from."""
        unique, stage = self.unique, self.arguments.stage
        try:
            self._payloads = {slot: encode_args(unique[slot][1], unique[slot][2], stage)
                              for slot in self.own}
        except BaseException:
            self.abandon()  # nothing registered for these calls stays behind
            raise

    # ------------------------------------------------------------------ before anything runs

    def _answer_stored(self) -> None:
        """Answer every stored call from one read transaction."""
        calls = [u[0] for u in self.unique]
        results = self.seams.results
        found = results.lookup(calls)
        missed = [call for call, value in zip(calls, found, strict=True) if value is MISSING]
        pending = results.pending(missed) if missed else None  # on their way in
        if pending:
            found = [pending.get(call, MISSING) if value is MISSING else value
                     for call, value in zip(calls, found, strict=True)]
        if len(missed) < len(calls) or pending:  # (not registered in flight yet: nothing to leave)
            self._resolve_many([(slot, value, False) for slot, value in enumerate(found)
                                if value is not MISSING], registered=False)
        self.bar.advance(len(self.unique) - self.open)

    def _join_inflight(self) -> None:
        """Calls another run of this process is executing are joined, not started again; the
        others are registered as this run's, for later runs to join."""
        results = self.results
        self.own, self.leaders = self.seams.inflight.join_or_register(
            self, [(slot, u[0]) for slot, u in enumerate(self.unique) if results[slot] is MISSING])

    def follow(self, slot: int, run: Leader, their_slot: int) -> bool:
        """``run`` wants ``slot`` too (its ``their_slot``); False once it is resolved."""
        with self.lock:
            if self.results[slot] is not MISSING:
                return False
            self.followers.setdefault(slot, []).append((run, their_slot))
            self.wants[slot] += 1
            return True

    # ------------------------------------------------------------------ launching

    def launch(self) -> None:
        """Look the missed calls up elsewhere, then hand them to the backend.

        Anything that fails here fails the run's own unresolved calls (each one the same error).
        """
        try:
            self._launch()
        except BaseException as exc:
            self._fail_open(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            if self.batch is None:
                self.close()

    def _launch(self) -> None:
        seams, unique = self.seams, self.unique
        todo = [s for s in self.own if self.results[s] is MISSING]
        if todo and self.memoize:  # stored elsewhere (on a peer)? one lookup before anything runs
            found = seams.results.elsewhere([unique[s][0] for s in todo], before_running=True)
            if found:
                self._resolve_many([(s, found[unique[s][0]], False) for s in todo
                                    if unique[s][0] in found])
                self.bar.advance(sum(unique[s][0] in found for s in todo))
        if not any(self.results[s] is MISSING for s in todo):
            return
        try:
            key = seams.executor.register_function(self.fn, self.identity)
        except StoreFullError as exc:  # no worker can load the function: each call fails so
            self._fail_open(exc)
            return
        name, stage, memoize = self.fn.name, self.arguments.stage, self.memoize
        needs, requires = self.fn.needs, self.fn.requires

        payloads = self._payloads

        def make_task(slot: int) -> Task:
            call, kwargs, addresses = unique[slot]
            if payloads is not None:  # made when async_* was called
                payload, refs = payloads.pop(slot)
            else:
                payload, refs = encode_args(kwargs, addresses, stage)
            return Task(slot, key, call, payload, describe_call(name, kwargs), refs, memoize,
                        needs, requires)

        with self.lock:  # a future cancelled from now on cancels its task in the batch
            todo = [s for s in todo if self.results[s] is MISSING]
            if todo:
                self.batch = seams.executor.submit((make_task(s) for s in todo), len(todo))

    # ------------------------------------------------------------------ outcomes

    @property
    def running(self) -> bool:
        """Whether this run still waits for outcomes of its own batch."""
        return self.batch is not None and not self.batch.finished and not self._closed

    def pump(self, timeout: float | None) -> None:
        """Take the outcomes that arrived (waiting up to ``timeout`` for one), store the results
        in one group commit, resolve their slots. Only the thread holding :attr:`pumping`."""
        batch = self.batch
        assert batch is not None, "pumped before it was launched"
        outcomes = batch.next_outcomes(timeout)
        if not outcomes:
            return
        if self.memoize and not batch.finished:  # more on their way: gather one group commit
            until = time.monotonic() + RESULT_GATHER
            while not batch.finished and len(outcomes) < _GATHER_MOST:
                left = until - time.monotonic()
                more = batch.next_outcomes(left) if left > 0 else None
                if not more:
                    break
                outcomes += more
        unique, results, name = self.unique, self.seams.results, self.fn.name
        records: list[JournalRecord] = []
        resolved: list[tuple[int, Any, bool]] = []
        for tid, outcome in outcomes:
            if self.results[tid] is CANCELLED:
                continue
            if type(outcome) is Ok:
                blob = outcome.blob
                value = unpack(blob) if blob is not None else results.value(outcome.address)
                if value is MISSING:  # a large result lost (or damaged) before it was read
                    resolved.append((tid, PythagorasError(
                        f"{describe_call(name, unique[tid][1])}: its result was lost before it "
                        f"could be read; call it again"), True))
                    continue
                call, kwargs, addresses = unique[tid]
                meta = {**outcome.meta, "args": argument_digests(kwargs, addresses)}
                if "inputs" in meta:  # a call recording on this thread read them through it
                    note_inputs(meta["inputs"])
                records.append((call, outcome.address, outcome.blob, meta))
                resolved.append((tid, value, False))
            elif type(outcome) is Stored:  # by another process of this home
                resolved.append((tid, outcome.value, False))
            else:
                failure = cast("Failed | Crashed | Refused", outcome)
                resolved.append((tid, rebuild_exception(failure, describe_call(name, unique[tid][1])),
                                 True))
        if records and self.memoize:
            try:
                results.store(records)  # stored before anyone sees the result
            except StoreFullError as exc:  # the results are returned all the same
                self.unstored, self.why_unstored = self.unstored + len(records), exc
        self.seams.leases.release([unique[tid][0] for tid, _ in outcomes], batch)  # committed
        self._resolve_many(resolved)
        self.bar.advance(len(outcomes), sum(1 for _, _, error in resolved if error))
        if batch.finished:
            self.close()

    def resolve(self, slot: int, value: Any, *, error: bool = False) -> None:
        """``slot`` has its result (or its exception): tell its futures and followers."""
        self._resolve_many([(slot, value, error)])

    def _resolve_many(self, resolved: list, registered: bool = True) -> None:
        """Each ``(slot, value, error)``: the slot has its result; one lock round for them all."""
        results, slot_futures, followers = self.results, self.slot_futures, self.followers
        told = []  # (futures, followers, value, error) to tell once the lock is let go
        settled = []
        with self.lock:
            for slot, value, error in resolved:
                if results[slot] is not MISSING:
                    continue
                results[slot] = value
                if error:
                    self.errors.add(slot)
                settled.append(slot)
                futures = slot_futures.pop(slot, ()) if slot_futures else ()
                joined = followers.pop(slot, ()) if followers else ()
                if futures or joined:
                    told.append((futures, joined, value, error))
            self.open -= len(settled)
            if not self.open:
                self.all_done.set()
        if registered:
            self._leave_inflight(settled)
        for futures, joined, value, error in told:
            for future in futures:
                future._settle(value, error)
            for run, their_slot in joined:
                run.resolve(their_slot, value, error=error)

    def _leave_inflight(self, slots: list[int]) -> None:
        """These slots are no longer this run's to execute: later runs do not join them."""
        if not slots or not self.memoize:
            return
        unique = self.unique
        self.seams.inflight.leave(self, [unique[slot][0] for slot in slots])

    # ------------------------------------------------------------------ letting go

    def unwant(self, slot: int) -> None:
        """One who wanted ``slot`` (a future, a follower, the sync caller) lets go of it; with
        the last one, its execution is cancelled (on peers too) and nothing is stored for it."""
        self._unwant([slot])

    def unwant_all(self) -> None:
        """The sync caller lets go of every call still open (Ctrl-C, a timeout, an error)."""
        self._unwant([s for s in range(len(self.unique)) if self.results[s] is MISSING])

    def _unwant(self, slots: list[int]) -> None:
        dropped, leaders = [], []
        with self.lock:
            for slot in slots:
                if self.results[slot] is not MISSING:
                    continue
                self.wants[slot] -= 1
                if self.wants[slot] > 0:
                    continue
                self.results[slot] = CANCELLED
                self.dropped = True
                self.open -= 1
                self.followers.pop(slot, None)
                leader = self.leaders.pop(slot, None)
                if leader is not None:
                    leaders.append(leader)
                else:
                    dropped.append(slot)
            batch = self.batch
            if not self.open:
                self.all_done.set()
        self._leave_inflight([slot for slot in slots if self.results[slot] is CANCELLED])
        for run, their_slot in leaders:
            run.unwant(their_slot)
        if dropped and batch is not None:
            if not any(self.results[s] is MISSING for s in self.own):
                self.close()  # nothing of the batch is wanted: it is cancelled whole
                return
            batch.cancel_tasks(dropped)  # one request for them all
            self.seams.leases.release([self.unique[s][0] for s in dropped], batch)
            if batch.finished:
                self.close()

    def close(self) -> None:
        """The run's own batch is over: let go of its leases and argument copies (once)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
        batch = self.batch
        if batch is not None:
            if not batch.finished:
                batch.cancel()
            self.seams.leases.release_all(batch)
        if self._own_bar:
            self.bar.close()
        if self._own_arguments:  # the calls are over: their arguments' copies are not needed
            self.arguments.release()
        if self.unstored and self.why_unstored is not None:
            warn_not_stored(self.fn.name, self.unstored, self.why_unstored)
        then, self.then = self.then, None
        if then is not None:
            from .futures import collector

            collector().adopt(then, launched=False)

    def fail(self, exc: BaseException) -> None:
        """The run cannot go on (a task could not be made): its open calls fail with ``exc``."""
        self._fail_open(exc)
        self.close()

    def _fail_open(self, exc: BaseException) -> None:
        """Each of this run's own calls still open fails with ``exc``."""
        self._resolve_many([(slot, exc, True) for slot in self.own])

    def abandon(self) -> None:
        """The process exits: cancel everything still running for this run, everywhere."""
        then, self.then = self.then, None  # and the windows after it are never launched
        if then is not None:
            then.abandon()
        with self.lock:
            for slot in range(len(self.unique)):
                self.wants[slot] = 1
        self.unwant_all()
        self.close()
