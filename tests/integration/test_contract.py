"""The user contract, one scenario run against every backend.

:class:`Contract` holds the scenario: memo hits, ``sync_remote``, ``sync_parallel`` (input order,
identical calls run once, stored calls not at all), exceptions (same type, the remote traceback
as ``__cause__``, never stored; ``return_exceptions=True``), and the one cache format every
backend shares. Each subclass supplies ``cloud`` for one backend: LocalCloud (the embedded
default), a SwarmCloud connected to one ``pythagoras-node`` on 127.0.0.1 (no mDNS), and a
DaskCloud on a ``distributed.LocalCluster`` on 127.0.0.1. Each backend is started once for its
class. Executions are counted by lines a call appends to a file of the test's ``tmp_path``.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest
from helpers import wait_for
from node_harness import (
    RunningNode,
    copy_key,
    free_port,
    make_key,
    marker_function,
    spawn_node,
    wait_serving,
)

from pythagoras_p2p import DaskCloud, LocalCloud, PCloud, SwarmCloud, kw_args
from pythagoras_p2p.execution.outcomes import RemoteTraceback
from pythagoras_p2p.store.core import MISSING


def recorder():
    """``record(path, x, delay)``: appends ``x`` to ``path``, waits ``delay`` s, returns x²."""

    def record(*, path, x, delay):
        import time

        with open(path, "a") as fh:
            fh.write(f"{x}\n")
        if delay:
            time.sleep(delay)
        return x * x

    return record


def failing():
    """``check(path, x)``: appends ``x`` to ``path`` and fails with ValueError when 3 divides x."""

    def check(*, path, x):
        with open(path, "a") as fh:
            fh.write(f"{x}\n")
        if x % 3 == 0:
            raise ValueError(f"x={x} is a multiple of three")
        return -x

    return check


def runs(path) -> int:
    """How many calls ran (lines they appended to ``path``)."""
    return len(open(path).read().splitlines()) if os.path.exists(path) else 0


class Contract:
    """The scenario; subclasses provide a class-scoped ``cloud`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def record(cls, cloud):
        return cloud.add_pure_function(recorder())

    @pytest.fixture(scope="class")
    @classmethod
    def check(cls, cloud):
        return cloud.add_pure_function(failing())

    # ------------------------------------------------------------------ memo hits

    def test_a_second_call_is_a_hit(self, record, tmp_path):
        path = str(tmp_path / "runs")
        assert record.sync_remote(path=path, x=3, delay=0) == 9
        assert runs(path) == 1
        assert record.sync_remote(path=path, x=3, delay=0) == 9
        assert record(path=path, x=3, delay=0) == 9
        assert record.sync_parallel([kw_args(path=path, x=3, delay=0)]) == [9]
        assert runs(path) == 1

    def test_sync_remote_runs_the_call_elsewhere_and_returns_its_value(self, cloud, tmp_path):
        write_marker = cloud.add_pure_function(marker_function())
        path = str(tmp_path / "marks")
        pid = write_marker.sync_remote(path=path)
        assert isinstance(pid, int) and pid != os.getpid()
        assert open(path).read() == f"ran in {pid}\n"
        assert write_marker(path=path) == pid  # and it was stored

    # ------------------------------------------------------------------ sync_parallel

    def test_sync_parallel_returns_results_in_input_order(self, record, tmp_path):
        path = str(tmp_path / "runs")
        xs = list(range(12))
        # the first calls take longest, so completions come in about the reverse order
        calls = [kw_args(path=path, x=x, delay=0.01 * (len(xs) - x)) for x in xs]
        assert record.sync_parallel(calls) == [x * x for x in xs]
        assert runs(path) == len(xs)

    def test_sync_parallel_takes_a_generator_and_plain_dicts(self, record, tmp_path):
        path = str(tmp_path / "runs")
        assert record.sync_parallel(kw_args(path=path, x=x, delay=0) for x in range(3)) == [0, 1, 4]
        assert record.sync_parallel([{"path": path, "x": 5, "delay": 0}]) == [25]
        assert record.sync_parallel([]) == []

    def test_identical_calls_run_once(self, record, tmp_path):
        path = str(tmp_path / "runs")
        calls = [kw_args(path=path, x=1, delay=0)] * 4 + [kw_args(path=path, x=2, delay=0)] * 3
        calls.append(kw_args(delay=0, x=1, path=path))  # the same call, keywords in another order
        assert record.sync_parallel(calls) == [1] * 4 + [4] * 3 + [1]
        assert sorted(open(path).read().split()) == ["1", "2"]

    def test_stored_calls_are_answered_without_running(self, record, tmp_path):
        path = str(tmp_path / "runs")
        assert record.sync_remote(path=path, x=1, delay=0) == 1
        assert record(path=path, x=4, delay=0) == 16  # computed in this process
        assert record.sync_parallel(kw_args(path=path, x=x, delay=0) for x in range(6)) == [
            x * x for x in range(6)]
        assert sorted(map(int, open(path).read().split())) == [0, 1, 2, 3, 4, 5]

    # ------------------------------------------------------------------ exceptions

    def test_an_exception_arrives_with_its_type_and_remote_traceback_and_is_not_stored(
            self, cloud, check, tmp_path):
        path = str(tmp_path / "runs")
        with pytest.raises(ValueError, match="x=3 is a multiple of three") as info:
            check.sync_remote(path=path, x=3)
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "ValueError: x=3 is a multiple of three" in cause.text
        assert "check" in cause.text  # the frame of the function that raised
        # with the file it was defined in and the line that raised, wherever it ran
        assert f'File "{__file__}"' in cause.text and "raise ValueError(" in cause.text, cause.text
        assert runs(path) == 1
        assert cloud.store.get_result(check.address(path=path, x=3)) is MISSING
        with pytest.raises(ValueError, match="x=3 is"):
            check.sync_remote(path=path, x=3)
        assert cloud.store.get_result(check.address(path=path, x=3)) is MISSING

    def test_a_failed_call_runs_again_each_time_it_is_retried(self, check, tmp_path):
        path = str(tmp_path / "runs")
        retries = 10
        for _ in range(1 + retries):
            with pytest.raises(ValueError, match="x=6 is"):
                check.sync_remote(path=path, x=6)
        assert runs(path) == 1 + retries
        for _ in range(retries):
            with pytest.raises(ValueError, match="x=9 is"):
                check.sync_parallel([kw_args(path=path, x=9), kw_args(path=path, x=1)])
        assert open(path).read().split().count("9") == retries

    def test_return_exceptions_puts_each_exception_in_its_slot(self, check, tmp_path):
        path = str(tmp_path / "runs")
        xs = [1, 3, 4, 6, 7]
        out = check.sync_parallel([kw_args(path=path, x=x) for x in xs], return_exceptions=True)
        assert len(out) == len(xs)
        for x, result in zip(xs, out, strict=True):
            if x % 3:
                assert result == -x
            else:
                assert type(result) is ValueError and f"x={x} is" in str(result)
                assert isinstance(result.__cause__, RemoteTraceback)
        assert runs(path) == len(xs)
        # without it, the first failure in input order is raised; successes were stored
        with pytest.raises(ValueError, match="x=3 is"):
            check.sync_parallel([kw_args(path=path, x=x) for x in xs])
        ran = open(path).read().split()
        assert [ran.count(str(x)) for x in xs if x % 3] == [1, 1, 1]

    # ------------------------------------------------------------------ one cache format

    def test_lookup_describes_results_as_soon_as_sync_parallel_returns(self, record, tmp_path):
        path = str(tmp_path / "runs")
        record.sync_parallel([kw_args(path=path, x=x, delay=0) for x in range(3)])
        for x in range(3):
            info = record.lookup(path=path, x=x, delay=0)
            assert info is not None and info.computed_on and info.worker, info
            assert info.duration is not None and info.stored is not None
        assert record.forget(path=path, x=0, delay=0)
        assert record.lookup(path=path, x=0, delay=0) is None

    def test_a_timeout_cancels_what_still_runs_and_raises_timeout_error(self, record, tmp_path):
        path = str(tmp_path / "runs")
        quick = record.sync_parallel([kw_args(path=path, x=1, delay=0)], timeout=60)
        assert quick == [1]
        calls = [kw_args(path=path, x=2, delay=0), kw_args(path=path, x=3, delay=10)]
        t0 = time.monotonic()
        out = record.sync_parallel(calls, timeout=2, return_exceptions=True)
        assert time.monotonic() - t0 < 8  # not the 10 s the slow call would take
        assert out[0] == 4 and isinstance(out[1], TimeoutError)
        assert record.lookup(path=path, x=3, delay=10) is None  # nothing stored for it
        with pytest.raises(TimeoutError, match="timeout=1"):
            record.sync_parallel([kw_args(path=path, x=5, delay=10)], timeout=1)

    def test_results_are_shared_with_another_backend_both_ways(self, cloud, record, tmp_path):
        path = str(tmp_path / "runs")
        assert record.sync_remote(path=path, x=7, delay=0) == 49
        address = record.address(path=path, x=7, delay=0)
        # a swarm client stores what nodes computed behind the caller's back
        wait_for(lambda: cloud.store.get_result(address) == 49,
                 message="the result to reach this home's store")
        other = LocalCloud(home=cloud.home, workers=1)
        try:
            there = other.add_pure_function(recorder())
            assert there.address(path=path, x=7, delay=0) == address
            assert there(path=path, x=7, delay=0) == 49  # a hit: not run again
            assert there.sync_remote(path=path, x=8, delay=0) == 64  # computed by LocalCloud
        finally:
            other.close()
        assert record.sync_remote(path=path, x=8, delay=0) == 64  # a hit for this backend
        assert record.sync_parallel([kw_args(path=path, x=x, delay=0) for x in (7, 8)]) == [49, 64]
        assert open(path).read().split() == ["7", "8"]


    # ------------------------------------------------------------------ futures

    #: Whether cancelling a running call stops it where it runs (Dask cannot stop a running task:
    #: there its result is dropped, and never stored).
    stops_running_calls = True

    def test_async_remote_returns_a_future_at_once(self, record, tmp_path):
        path = str(tmp_path / "runs")
        t0 = time.monotonic()
        future = record.async_remote(path=path, x=3, delay=1.5)
        assert time.monotonic() - t0 < 1.0  # it did not wait for the call
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=60) == 9 and future.done() and not future.cancelled()
        again = record.async_remote(path=path, x=3, delay=1.5)
        assert again.done() and again.result() == 9  # a stored result: a future already done
        assert runs(path) == 1

    def test_async_parallel_futures_in_input_order_with_wait_and_as_completed(self, record, tmp_path):
        path = str(tmp_path / "runs")
        calls = [kw_args(path=path, x=x, delay=0.05 * (x % 3)) for x in range(8)]
        futures = record.async_parallel(iter(calls))
        assert [f.result(timeout=60) for f in futures] == [x * x for x in range(8)]
        futures = record.async_parallel(calls + [kw_args(path=path, x=20, delay=0)])
        done = list(concurrent.futures.as_completed(futures, timeout=60))
        assert sorted(f.result() for f in done) == sorted([x * x for x in range(8)] + [400])
        finished, pending = concurrent.futures.wait(futures, timeout=60)
        assert not pending and len(finished) == 9
        assert runs(path) == 9  # the second time, eight were hits

    def test_waiting_on_one_future_outlasts_its_siblings_settling(self, record, tmp_path):
        # the futures of one run share one condition: a sibling's result wakes every waiter
        path = str(tmp_path / "runs")
        futures = record.async_parallel([kw_args(path=path, x=x, delay=1.5 if x == 0 else 0)
                                         for x in range(4)])
        with pytest.raises(concurrent.futures.TimeoutError):
            futures[0].result(timeout=0.2)  # the siblings settle meanwhile: still not done
        assert futures[0].result(timeout=60) == 0
        assert futures[0].exception(timeout=0) is None
        assert [f.result(timeout=60) for f in futures[1:]] == [1, 4, 9]

    def test_identical_calls_in_flight_share_one_execution(self, record, tmp_path):
        path = str(tmp_path / "runs")
        first = record.async_remote(path=path, x=4, delay=1)
        second = record.async_parallel([kw_args(path=path, x=4, delay=1)] * 2)
        assert first.result(timeout=60) == 16
        assert [f.result(timeout=60) for f in second] == [16, 16]
        assert runs(path) == 1
        # one who waits cancelling does not cancel it for the others
        a, b = record.async_parallel([kw_args(path=path, x=5, delay=1)] * 2)
        assert a.cancel() and a.cancelled()
        assert b.result(timeout=60) == 25

    def test_a_future_holds_the_exception_with_its_remote_traceback(self, check, tmp_path):
        path = str(tmp_path / "runs")
        futures = check.async_parallel([kw_args(path=path, x=x) for x in (1, 3)])
        assert futures[0].result(timeout=60) == -1
        exc = futures[1].exception(timeout=60)
        assert isinstance(exc, ValueError) and "multiple of three" in str(exc)
        assert isinstance(exc.__cause__, RemoteTraceback)
        with pytest.raises(ValueError, match="multiple of three"):
            futures[1].result()
        assert check.lookup(path=path, x=3) is None  # failures are never stored

    def test_done_callbacks_run_on_their_own_thread(self, record, tmp_path):
        import threading

        path = str(tmp_path / "runs")
        seen = []
        future = record.async_remote(path=path, x=6, delay=0.3)
        future.add_done_callback(lambda f: seen.append((threading.current_thread().name, f.result())))
        assert future.result(timeout=60) == 36
        wait_for(lambda: seen, message="the callback")
        assert seen == [("pythagoras-callbacks", 36)]
        late = []
        future.add_done_callback(late.append)  # already done: called at once, here
        assert late == [future]

    def test_cancel_stops_queued_and_running_calls_and_stores_nothing(self, record, tmp_path):
        path = str(tmp_path / "runs")
        long = 30 if self.stops_running_calls else 3  # Dask's workers run it to its end
        futures = record.async_parallel(kw_args(path=path, x=x, delay=long) for x in (100, 101, 102))
        wait_for(lambda: runs(path) >= 2, message="two calls to start")
        t0 = time.monotonic()
        assert all(f.cancel() for f in futures)
        assert time.monotonic() - t0 < 5
        assert all(f.cancelled() for f in futures)
        with pytest.raises(concurrent.futures.CancelledError):
            futures[0].result()
        assert not futures[0].cancel() or futures[0].cancelled()
        if self.stops_running_calls:  # the workers are free again at once, not in 30 s
            quick = record.sync_parallel([kw_args(path=path, x=x, delay=0) for x in (103, 104)],
                                         timeout=20)
            assert quick == [103 * 103, 104 * 104]
        for x in (100, 101, 102):
            assert record.lookup(path=path, x=x, delay=long) is None

    def test_an_argument_changed_once_async_returned_does_not_change_the_call(self, cloud):
        import numpy as np

        @cloud.add_pure_function
        def total(*, a, pause):
            import time

            time.sleep(pause)
            return float(a.sum())

        small, big = np.zeros(10), np.zeros(1 << 18)  # big: 2 MiB, travels by address
        futures = [total.async_remote(a=small, pause=0.5), total.async_remote(a=big, pause=0.5)]
        small += 1  # changed in place while the calls wait or run
        big += 1
        assert [f.result(timeout=60) for f in futures] == [0.0, 0.0]
        # what was stored under the zeros' addresses is the zeros' result
        assert total(a=np.zeros(10), pause=0.5) == 0.0
        assert total(a=np.zeros(1 << 18), pause=0.5) == 0.0
        assert total.sync_remote(a=small, pause=0) == 10.0

    def test_a_done_future_cannot_be_cancelled(self, record, tmp_path):
        future = record.async_remote(path=str(tmp_path / "runs"), x=9, delay=0)
        assert future.result(timeout=60) == 81
        assert not future.cancel() and not future.cancelled()


# --------------------------------------------------------------------------- the backends


class TestLocalCloud(Contract):
    @pytest.fixture(scope="class")
    @classmethod
    def cloud(cls, tmp_path_factory):
        cloud = LocalCloud(home=tmp_path_factory.mktemp("local") / "home", workers=2)
        yield cloud
        cloud.close()


@pytest.fixture(scope="module")
def loopback_node(tmp_path_factory):
    """One ``pythagoras-node start`` on 127.0.0.1 (no mDNS, two workers) for this module."""
    base = tmp_path_factory.mktemp("swarm")
    home = base / "node"
    home.mkdir()
    make_key(home)
    port = free_port()
    log_path = base / "node.log"
    from pythagoras_p2p.net.security import load_key

    node = RunningNode(home, port, spawn_node(home, port, workers=2, log_path=log_path), log_path,
                       load_key(home))
    try:
        wait_serving(node)
        yield node
    finally:
        node.terminate()
    assert not node.killed and node.exit_code == 0, f"the node did not stop cleanly:\n{node.log()}"
    assert "Traceback" not in node.log(), node.log()


class TestSwarmCloud(Contract):
    @pytest.fixture(scope="class")
    @classmethod
    def cloud(cls, loopback_node, tmp_path_factory):
        home = tmp_path_factory.mktemp("client") / "home"
        copy_key(loopback_node.home, home)
        cloud = PCloud(connection=loopback_node.connection, home=home)
        assert isinstance(cloud, SwarmCloud)
        yield cloud
        cloud.close()


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed", reason="DaskCloud needs the dask extra")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    yield cluster
    cluster.close()


class TestDaskCloud(Contract):
    stops_running_calls = False

    @pytest.fixture(scope="class")
    @classmethod
    def cloud(cls, dask_cluster, tmp_path_factory):
        cloud = DaskCloud(scheduler=dask_cluster.scheduler_address,
                          home=tmp_path_factory.mktemp("dask") / "home")
        yield cloud
        cloud.close()
