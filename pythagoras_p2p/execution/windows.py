"""Many calls of one function as a stream of windows: the driver of ``sync_parallel``.

A generator of a million calls is never held whole. It is consumed :data:`RUN_WINDOW` calls at
a time, each window a :class:`~.runs.CallRun` of its own: the next window is hashed, looked up
and launched while the one before still runs, so workers and peers never wait for the caller,
and a window's bookkeeping goes as soon as its results are taken. The caller's memory thus
grows with the results it returns, not with a cost per call in flight.

What a run promises holds across windows: identical calls in different windows run once (a
later window joins the earlier one's call in flight, or finds its result stored); a large
argument shared by every call is kept (and sent to each peer) once for the whole stream; one
progress bar, one deadline; without ``return_exceptions``, the first failure in input order is
raised once every call has ended.

``async_parallel`` returns a future per call, so it takes its input whole; its windows are
launched two at a time all the same (each one as the one two before it closes), so the workers
never run far ahead of the thread that stores their results, and the outcomes waiting to be
stored stay a window's worth.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from itertools import chain, islice
from typing import TYPE_CHECKING, Any

from ..defaults import RUN_WINDOW
from .arguments import Arguments
from .progress import ProgressBar
from .runs import CallRun
from .waiting import SyncWait

if TYPE_CHECKING:
    from .interfaces import Collaborators

__all__ = ["run_calls", "submit_calls"]

_AHEAD = 2  # windows launched at once: the one whose outcomes are taken, and the next


def run_calls(seams: Collaborators, fn: Any, calls: Iterable[dict], *, return_exceptions: bool,
              progress: bool | None, timeout: float | None = None,
              total: int | None = None) -> list:
    """Run calls of ``fn`` with a cloud's collaborators; see ``PureFunction.sync_parallel``.
    ``total``: how many calls there are, when known (for the progress bar)."""
    source = iter(calls)
    first = list(islice(source, RUN_WINDOW))
    after = list(islice(source, 1))
    if not after:  # one window: one run
        return SyncWait(CallRun(seams, fn, first, futures=False, progress=progress)).wait(
            return_exceptions=return_exceptions, timeout=timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    source = chain(after, source)
    window: list[dict] | None = first
    arguments = Arguments(seams.executor)
    bar = ProgressBar(fn.name, total, enabled=progress, owner=seams)
    out: list = []
    late: TimeoutError | None = None
    first_error: BaseException | None = None
    ahead: deque[SyncWait] = deque()
    wait = None
    try:
        while window or ahead:
            while window and len(ahead) < _AHEAD:
                wait = SyncWait(CallRun(seams, fn, window, futures=False, arguments=arguments,
                                        bar=bar))
                window = None  # the run holds the calls now
                ahead.append(wait)
                if deadline is not None and time.monotonic() >= deadline:
                    wait.expire()
                else:
                    wait.run.launch()
                window = list(islice(source, RUN_WINDOW))
            wait = ahead.popleft()
            wait.finish(deadline)  # (lets go of its calls itself if it raises)
            results, run_late, run_error = wait.ordered(timeout)
            bar.advance(len(wait.run.positions) - len(wait.run.unique))  # repeated calls count too
            out += results
            late = late or run_late
            first_error = first_error or run_error
    except BaseException:
        for other in ahead:
            other.leave()
        if not any(r.run.running for r in (wait, *ahead) if r is not None):  # else a call another run wants goes on
            arguments.release()
        raise
    finally:
        bar.close()
    arguments.release()
    failure = late or first_error
    if not return_exceptions and failure is not None:
        raise failure
    return out


def submit_calls(seams: Collaborators, fn: Any, calls: Iterable[dict], *, memoize: bool = True,
                 arguments: Arguments | None = None, unaddressed: frozenset = frozenset()) -> list:
    """Start calls of ``fn`` and return a future per call, in input order (``async_parallel``).

    ``memoize=False``: every call runs, none is stored (joblib tasks); ``arguments``: the scope
    that holds large arguments across runs (by default, each window's own); ``unaddressed``:
    names of arguments passed to each call but left out of its address (what cannot change its
    result)."""
    from .futures import collector

    source = iter(calls)
    runs = []
    while window := list(islice(source, RUN_WINDOW)):
        runs.append(CallRun(seams, fn, window, futures=True, memoize=memoize,
                            arguments=arguments, unaddressed=unaddressed))
    started = [run for run in runs if run.own]
    for before, after in zip(started, started[_AHEAD:], strict=False):
        before.then = after
    for run in started[:_AHEAD]:
        collector().adopt(run, launched=False)
    if len(runs) == 1:
        return runs[0].futures or []
    return [future for run in runs for future in run.futures or ()]
