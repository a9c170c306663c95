"""Processes of one home share work: a call one of them computes is not started by another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from node_harness import wait_for

from pythagoras_p2p import LocalCloud, kw_args
from pythagoras_p2p.store.core import MISSING

# Each process runs the same calls; every execution appends "x pid" to the log, so the log
# counts executions whichever process (or worker) ran them.
_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pythagoras_p2p import LocalCloud, kw_args

    def slow(*, x, log, pause):
        with open(log, "a") as fh:
            fh.write(f"{x} {os.getpid()}\\n")
        if x < 0:
            raise ValueError(f"no {x}")
        time.sleep(pause)
        return x * x

    mode, log, pause, first, count = sys.argv[1], sys.argv[2], float(sys.argv[3]), *map(int, sys.argv[4:6])
    xs = range(first, first + count)
    with LocalCloud(workers=2) as cloud:
        f = cloud.add_pure_function(slow)
        if mode == "parallel":
            out = f.sync_parallel((kw_args(x=x, log=log, pause=pause) for x in xs),
                                  return_exceptions=True)
        else:
            out = []
            for x in xs:
                try:
                    out.append(f(x=x, log=log, pause=pause))
                except ValueError as exc:
                    out.append(exc)
    print(" ".join(type(v).__name__ if isinstance(v, Exception) else str(v) for v in out))
""")


def slow(*, x, log, pause):  # the same code as in _SCRIPT: the same calls, the same results
    with open(log, "a") as fh:
        fh.write(f"{x} {os.getpid()}\n")
    if x < 0:
        raise ValueError(f"no {x}")
    import time

    time.sleep(pause)
    return x * x


def start(home, mode, log, *, pause=0.03, first=0, count=40):
    env = dict(os.environ, PYTHAGORAS_HOME=str(home))
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, mode, log, str(pause), str(first), str(count)],
        env=env, stdout=subprocess.PIPE, text=True,
    )


def executions(log) -> list[int]:
    if not os.path.exists(log):
        return []
    with open(log) as fh:
        return [int(line.split()[0]) for line in fh if line.strip()]


@pytest.mark.parametrize("mode", ["parallel", "plain"])
def test_six_processes_running_the_same_calls_execute_each_once(home, tmp_path, mode):
    log = str(tmp_path / "runs")
    procs = [start(home, mode, log) for _ in range(6)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6
    expected = " ".join(str(x * x) for x in range(40))
    assert [o.strip() for o in outputs] == [expected] * 6  # every process got every result
    assert sorted(executions(log)) == list(range(40))  # and each call ran once


def test_a_waiter_computes_the_call_of_a_holder_killed_mid_call(home, tmp_path):
    log = str(tmp_path / "runs")
    holder = start(home, "plain", log, pause=60, count=1)  # x=0 sleeps in the holder
    wait_for(lambda: executions(log) == [0], 60, message="the holder to start the call")
    with LocalCloud(home=home, workers=1) as cloud:
        f = cloud.add_pure_function(slow)
        os.kill(holder.pid, signal.SIGKILL)  # its lease is let go by the kernel
        holder.wait(30)
        assert f.sync_remote(x=0, log=log, pause=0.0) == 0
    assert executions(log) == [0, 0]


def test_a_plain_call_waits_for_a_holder_then_computes_when_it_is_killed(home, tmp_path):
    log = str(tmp_path / "runs")
    holder = start(home, "parallel", log, pause=60, count=1)
    wait_for(lambda: executions(log) == [0], 60, message="the holder to start the call")
    with LocalCloud(home=home, workers=1) as cloud:
        f = cloud.add_pure_function(slow)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        assert f(x=0, log=log, pause=0.0) == 0
    assert executions(log) == [0, 0]


@pytest.mark.parametrize("mode", ["parallel", "plain"])
def test_a_call_that_raises_fails_in_every_process_and_nothing_is_cached(home, tmp_path, mode):
    log = str(tmp_path / "runs")
    procs = [start(home, mode, log, first=-1, count=3, pause=0.2) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [o.strip() for o in outputs] == ["ValueError 0 1"] * 3
    runs = executions(log)
    assert sorted(set(runs)) == [-1, 0, 1]
    assert runs.count(0) == 1 and runs.count(1) == 1  # failures are not cached: -1 ran again
    with LocalCloud(home=home, workers=1) as cloud:
        f = cloud.add_pure_function(slow)
        assert cloud.store.get_result(f.address(x=-1, log=log, pause=0.2)) is MISSING


def test_threads_of_one_process_share_work(cloud, tmp_path):
    import threading

    log = str(tmp_path / "runs")
    f = cloud.add_pure_function(slow)
    out: list = []

    def run():
        out.append(f.sync_parallel(kw_args(x=x, log=log, pause=0.02) for x in range(20)))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    plain = [f(x=x, log=log, pause=0.02) for x in reversed(range(20))]
    for t in threads:
        t.join(60)
    assert out == [[x * x for x in range(20)]] * 3 and plain == [x * x for x in reversed(range(20))]
    assert sorted(executions(log)) == list(range(20))


def test_a_nested_call_does_not_wait_for_its_own_callers_lease(home, tmp_path):
    """With one worker, inner(x=1) is leased by the caller while outer runs it nested."""
    log = str(tmp_path / "runs")
    with LocalCloud(home=home, workers=1) as cloud:
        inner = cloud.add_pure_function(slow)

        @cloud.add_pure_function
        def outer(*, x, log):
            return inner(x=x, log=log, pause=0.0) + 1

        assert outer.sync_remote(x=1, log=log) == 2
        assert inner.sync_parallel([kw_args(x=1, log=log, pause=0.0)]) == [1]
