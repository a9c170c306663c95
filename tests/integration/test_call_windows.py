"""``sync_parallel`` over many calls: a stream of windows, with a run's promises kept across them.

The window is made small here (8 calls) so that a few dozen calls cross many windows.
"""

from __future__ import annotations

import os
import time

import pytest

from pythagoras_p2p import kw_args
from pythagoras_p2p.execution import windows
from pythagoras_p2p.store.core import MISSING

WINDOW = 8


@pytest.fixture(autouse=True)
def small_windows(monkeypatch):
    monkeypatch.setattr(windows, "RUN_WINDOW", WINDOW)


def runs(log, key) -> int:
    return len([p for p in os.listdir(log) if p.split(".")[0] == str(key)])


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "runs"
    path.mkdir()
    return str(path)


def test_results_in_input_order_and_repeated_calls_run_once_across_windows(cloud, log):
    @cloud.add_pure_function
    def square(*, x, log):
        import uuid

        with open(os.path.join(log, f"{x}.{uuid.uuid4().hex}"), "w"):
            pass
        return x * x

    xs = [i % 7 for i in range(60)]  # each distinct call comes back in most windows
    assert square.sync_parallel(kw_args(x=x, log=log) for x in xs) == [x * x for x in xs]
    assert all(runs(log, x) == 1 for x in range(7))
    assert square.sync_parallel([kw_args(x=x, log=log) for x in xs]) == [x * x for x in xs]
    assert all(runs(log, x) == 1 for x in range(7))  # the rerun is answered from the store


def test_the_input_is_consumed_a_window_or_two_ahead_of_the_results(cloud):
    @cloud.add_pure_function
    def ident(*, x):
        return x

    store, ahead = cloud.store, []

    def calls():
        for i in range(120):
            if i % WINDOW == 0:  # how many calls were taken but have no stored result yet
                ahead.append(i - len(store.result_calls()))
            yield kw_args(x=i)

    assert ident.sync_parallel(calls()) == list(range(120))
    assert len(ahead) == 120 // WINDOW
    assert max(ahead) <= 2 * WINDOW  # two windows in flight, never the whole input


def test_a_failure_in_a_late_window_is_raised_once_every_call_ended(cloud):
    @cloud.add_pure_function
    def fails_at(*, x, bad):
        if x in bad:
            raise ValueError(f"bad {x}")
        return x

    with pytest.raises(ValueError, match="bad 21"):
        fails_at.sync_parallel(kw_args(x=i, bad=(21, 50)) for i in range(64))
    stored = [i for i in range(64)
              if cloud.store.get_result(fails_at.address(x=i, bad=(21, 50))) is not MISSING]
    assert len(stored) == 62  # every other call of every window ran and was stored

    out = fails_at.sync_parallel((kw_args(x=i, bad=(21, 50)) for i in range(64)),
                                 return_exceptions=True)
    assert [type(v) for v in (out[21], out[50])] == [ValueError, ValueError]
    assert [v for i, v in enumerate(out) if i not in (21, 50)] == [
        i for i in range(64) if i not in (21, 50)]


def test_a_timeout_gives_up_every_window_still_open_and_answers_stored_calls(cloud):
    @cloud.add_pure_function
    def slow(*, x):
        import time

        if x >= 0:
            time.sleep(30)
        return x

    assert slow.sync_parallel(kw_args(x=-i) for i in range(1, 4)) == [-1, -2, -3]
    calls = [kw_args(x=i) for i in range(20)] + [kw_args(x=-1), kw_args(x=-3)]
    started = time.monotonic()
    out = slow.sync_parallel(iter(calls), timeout=1.0, return_exceptions=True)
    assert time.monotonic() - started < 20
    assert all(isinstance(v, TimeoutError) for v in out[:20])
    assert out[20:] == [-1, -3]  # in the last window, after the deadline: found stored
    with pytest.raises(TimeoutError):
        slow.sync_parallel((kw_args(x=i) for i in range(20)), timeout=0.5)


def test_async_windows_give_futures_in_input_order_and_run_each_call_once(cloud, log):
    @cloud.add_pure_function
    def square(*, x, log, pause):
        import time
        import uuid

        with open(os.path.join(log, f"{x}.{uuid.uuid4().hex}"), "w"):
            pass
        time.sleep(pause)
        return x * x

    xs = [i % 11 for i in range(60)]
    futures = square.async_parallel(kw_args(x=x, log=log, pause=0.01) for x in xs)
    assert len(futures) == 60
    assert futures[-1].cancel()  # its window is not launched yet: it never runs for it
    assert [f.result(timeout=60) for f in futures[:-1]] == [x * x for x in xs[:-1]]
    assert futures[-1].cancelled()
    assert all(runs(log, x) == 1 for x in range(11))  # xs[-1] also ran earlier, once
