"""Never hang on a stopped process: a worker stopped with SIGSTOP mid-call is replaced and its
call runs elsewhere; a lease held by a stopped process is taken over; a slow one is not.

Every process under test is a fresh interpreter with ``PYTHAGORAS_STALLED_AFTER=1`` (a stopped
process is given up after 1 s instead of 3 s). Calls wait for a *go* file rather than sleeping,
so a call is stopped in its middle for sure; every process stopped is continued or killed at
teardown, even when the test failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from helpers import wait_for

STALLED_AFTER = 1.0

# wait(x, marks) writes marks/x.PID when it starts, then waits for marks/go-x (if x is one of
# the calls told to wait), and returns x * x. The same code in every process: the same calls.
_FUNCTION = textwrap.dedent("""
    def wait(*, x, marks, waits):
        import os, time
        open(os.path.join(marks, f"{x}.{os.getpid()}"), "w").close()
        deadline = time.monotonic() + 120
        while x in waits and not os.path.exists(os.path.join(marks, f"go-{x}")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no go for {x}")
            time.sleep(0.01)
        return x * x
""")

_SCRIPT = _FUNCTION + textwrap.dedent("""
    import sys
    from pythagoras_p2p import LocalCloud, kw_args

    mode, marks, xs, waits = sys.argv[1], sys.argv[2], eval(sys.argv[3]), eval(sys.argv[4])
    with LocalCloud(workers=2) as cloud:
        f = cloud.add_pure_function(wait)
        if mode == "parallel":
            out = f.sync_parallel(kw_args(x=x, marks=marks, waits=waits) for x in xs)
        else:
            out = [f(x=x, marks=marks, waits=waits) for x in xs]
    print(" ".join(map(str, out)), flush=True)
""")


@pytest.fixture
def procs():
    """Processes started or stopped by the test: continued, then killed, at teardown."""
    started: list = []
    yield started
    for proc in started:  # a psutil.Process never signals another process that got its pid
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                proc.send_signal(sig)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        if isinstance(proc, subprocess.Popen):
            proc.wait(30)


def start(procs: list, home: Path, mode: str, marks: Path, xs, waits=()) -> subprocess.Popen:
    env = dict(os.environ, PYTHAGORAS_HOME=str(home), PYTHAGORAS_STALLED_AFTER=str(STALLED_AFTER))
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, mode, str(marks), repr(list(xs)),
                             repr(tuple(waits))],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


def runs(marks: Path, x: int) -> list[int]:
    """The pids of the processes that started the call of ``x``, one per attempt."""
    return [int(p.name.split(".")[1]) for p in marks.iterdir() if p.name.startswith(f"{x}.")]


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out.strip()


def stop(procs: list, pid: int) -> None:
    proc = psutil.Process(pid)
    procs.append(proc)
    proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: proc.status() == psutil.STATUS_STOPPED, 30, message=f"{pid} to stop")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def marks(tmp_path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


def test_sync_parallel_completes_when_a_worker_is_stopped_mid_call(home, marks, procs):
    caller = start(procs, home, "parallel", marks, range(6), waits=(0,))
    (worker,) = wait_for(lambda: runs(marks, 0), 60, message="a worker to start x=0")
    stop(procs, worker)
    (marks / "go-0").touch()  # too late for the stopped worker: another must run x=0 again
    assert finish(caller) == " ".join(str(x * x) for x in range(6))  # no timeout= given
    assert gone(worker)  # killed, not left stopped
    assert len(runs(marks, 0)) == 2 and worker in runs(marks, 0)
    assert all(len(runs(marks, x)) == 1 for x in range(1, 6))  # the other calls ran once


def test_a_worker_running_a_long_call_is_not_replaced(home, marks, procs):
    caller = start(procs, home, "parallel", marks, range(3), waits=(0,))
    (worker,) = wait_for(lambda: runs(marks, 0), 60, message="a worker to start x=0")
    # busy (waiting, not stopped) for several times STALLED_AFTER: it keeps its call
    deadline = time.monotonic() + 3 * STALLED_AFTER
    while time.monotonic() < deadline:
        assert not gone(worker)
        time.sleep(0.1)
    (marks / "go-0").touch()
    assert finish(caller) == "0 1 4"
    assert runs(marks, 0) == [worker]


@pytest.mark.parametrize("mode", ["plain", "parallel"])
def test_a_call_whose_worker_is_stopped_in_another_process_completes(home, marks, procs, mode):
    holder = start(procs, home, "parallel", marks, [0], waits=(0,))
    (worker,) = wait_for(lambda: runs(marks, 0), 60, message="the holder's worker to start x=0")
    stop(procs, worker)  # its process holds the lease, and keeps running
    waiter = start(procs, home, mode, marks, [0, 1], waits=(0,))
    (marks / "go-0").touch()
    assert finish(waiter) == "0 1"
    assert finish(holder) == "0"
    assert len(runs(marks, 0)) == 2  # the stopped worker's attempt, and one more


@pytest.mark.parametrize("mode", ["plain", "parallel"])
def test_a_lease_held_by_a_stopped_process_is_taken_over(home, marks, procs, mode):
    holder = start(procs, home, "plain", marks, [0], waits=(0,))  # computes x=0 itself
    (pid,) = wait_for(lambda: runs(marks, 0), 60, message="the holder to start x=0")
    assert pid == holder.pid
    stop(procs, pid)
    waiter = start(procs, home, mode, marks, [0, 1], waits=(0,))
    (marks / "go-0").touch()
    assert finish(waiter) == "0 1"
    assert len(runs(marks, 0)) == 2 and len(runs(marks, 1)) == 1
    os.kill(pid, signal.SIGCONT)  # continued, the holder finishes its own copy: the same result
    assert finish(holder) == "0"


@pytest.mark.parametrize("mode", ["plain", "parallel"])
def test_a_lease_held_by_a_slow_process_is_not_taken_over(home, marks, procs, mode):
    holder = start(procs, home, "plain", marks, [0], waits=(0,))
    wait_for(lambda: runs(marks, 0), 60, message="the holder to start x=0")
    waiter = start(procs, home, mode, marks, [1, 0], waits=(0,))
    wait_for(lambda: runs(marks, 1), 60, message="the waiter to reach x=0")
    # the waiter waits for the running holder for several times STALLED_AFTER, computing nothing
    deadline = time.monotonic() + 3 * STALLED_AFTER
    while time.monotonic() < deadline:
        assert runs(marks, 0) == [holder.pid] and waiter.poll() is None
        time.sleep(0.1)
    (marks / "go-0").touch()
    assert finish(waiter) == "1 0"
    assert finish(holder) == "0"
    assert runs(marks, 0) == [holder.pid]


def _waiting():
    # Defined inside a function so that it travels by value (this module is not on the node).
    namespace: dict = {}
    exec(_FUNCTION, namespace)
    return namespace["wait"]


def test_a_node_replaces_a_worker_stopped_mid_call(start_node, make_client, marks, procs):
    from pythagoras_p2p import kw_args

    node = start_node(env={"PYTHAGORAS_STALLED_AFTER": str(STALLED_AFTER)})
    f = make_client(node).add_pure_function(_waiting())
    futures = f.async_parallel(kw_args(x=x, marks=str(marks), waits=(0,)) for x in range(4))
    (worker,) = wait_for(lambda: runs(marks, 0), 60, message="a worker of the node to start x=0")
    assert worker in {p.pid for p in psutil.Process(node.pid).children()}
    stop(procs, worker)
    (marks / "go-0").touch()
    assert [fut.result(timeout=120) for fut in futures] == [0, 1, 4, 9]
    assert gone(worker) and len(runs(marks, 0)) == 2
