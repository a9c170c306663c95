"""The task queue the worker pool and the swarm dispatcher share: a closed cloud's calls end alike.

A call still queued when its cloud is closed never ran: it did not crash anything, so both pools
end it with one refusal (raised as a ``PythagorasError`` saying the cloud was closed), never as
a ``WorkerCrashedError``.
"""

from __future__ import annotations

import threading

from pythagoras_p2p.errors import PythagorasError, WorkerCrashedError
from pythagoras_p2p.execution.outcomes import CLOSED, Refused, rebuild_exception
from pythagoras_p2p.execution.tasks import Task


def _tasks(n: int) -> list[Task]:
    # Functions no store holds: a task that does reach a worker fails at once, it never runs.
    return [Task(tid, bytes(32), tid.to_bytes(32, "big"), b"", f"f(x={tid})") for tid in range(n)]


def _assert_refused_as_closed(outcomes: list, at_least: int) -> None:
    closed = [o for o in outcomes if type(o) is Refused]
    assert len(closed) >= at_least, outcomes
    for outcome in closed:
        assert outcome.code == CLOSED and "the cloud was closed" in outcome.message
        error = rebuild_exception(outcome, "f(x=1)")
        assert isinstance(error, PythagorasError) and not isinstance(error, WorkerCrashedError)


def test_a_worker_pool_closed_with_tasks_queued_refuses_them_as_closed(tmp_path):
    from pythagoras_p2p.execution.pool import WorkerPool

    outcomes: list = []
    lock = threading.Lock()

    def record(tid, outcome):
        with lock:
            outcomes.append(outcome)

    pool = WorkerPool(tmp_path, 1, label="test")
    pool.submit(_tasks(20), 20, on_outcome=record)
    pool.close()
    assert not pool.alive
    # One worker takes one task at a time while calls are not known to be fast: it may have
    # been given one or two before the close; every other task is refused, none crashed.
    _assert_refused_as_closed(outcomes, at_least=15)


def test_a_swarm_dispatcher_closed_with_tasks_queued_refuses_them_as_closed(tmp_path):
    from pythagoras_p2p.net.security import create_key, load_key
    from pythagoras_p2p.store.core import open_store
    from pythagoras_p2p.swarm.dispatcher import SwarmDispatcher

    create_key(tmp_path)
    # Nothing listens on port 9 of loopback: no peer becomes ready, every task stays queued.
    dispatcher = SwarmDispatcher(load_key(tmp_path), open_store(tmp_path), [("127.0.0.1", 9)],
                                 connect_timeout=60.0)
    batch = dispatcher.submit(_tasks(20), 20)
    dispatcher.close()
    assert not dispatcher.alive
    outcomes = [outcome for _, outcome in batch.next_outcomes(timeout=10)]
    assert len(outcomes) == 20
    _assert_refused_as_closed(outcomes, at_least=20)
