"""The embedded default end to end: LocalCloud, its worker processes and the store they share."""

from __future__ import annotations

import _thread
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
from node_harness import wait_for

from pythagoras_p2p import (
    ConfigurationError,
    LocalCloud,
    PCloud,
    PythagorasError,
    RemoteError,
    RequirementsError,
    WorkerCrashedError,
    kw_args,
)
from pythagoras_p2p.defaults import MAX_TASK_CRASHES
from pythagoras_p2p.store.core import MISSING


def runs(log, key) -> int:
    """How many times a call that records itself under ``key`` in directory ``log`` ran."""
    return len([p for p in os.listdir(log) if p.split(".")[0] == str(key)])


def record_run(log, key) -> None:
    """Called inside a pure function: leave one file per execution (in whichever process)."""
    import uuid

    with open(os.path.join(log, f"{key}.{uuid.uuid4().hex}"), "w"):
        pass


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "runs"
    path.mkdir()
    return str(path)


# --------------------------------------------------------------------------- sync_remote


def test_sync_remote_runs_in_a_worker_and_stores_the_result(cloud):
    @cloud.add_pure_function
    def where(*, x):
        import random

        return x, os.getpid(), random.random()

    first = where.sync_remote(x=1)
    assert first[0] == 1
    assert first[1] != os.getpid()  # ran in another process
    assert where.sync_remote(x=1) == first  # a hit: the random number did not change
    assert where(x=1) == first  # the memoized call reads the same entry
    assert cloud.store.get_result(where.address(x=1)) == first
    meta = cloud.store.get_meta(where.address(x=1))
    assert meta["pid"] == first[1] and meta["host"] == socket.gethostname()
    second = where.sync_remote(x=2)
    assert second[2] != first[2]


def test_memoized_call_runs_here_then_hits(cloud, log):
    @cloud.add_pure_function
    def here(*, x, log):
        record_run(log, x)
        return os.getpid()

    assert here(x=1, log=log) == os.getpid()
    assert here(x=1, log=log) == os.getpid()
    assert here.sync_remote(x=1, log=log) == os.getpid()  # stored by the caller, hit by remote
    assert runs(log, 1) == 1


# --------------------------------------------------------------------------- sync_parallel


def test_sync_parallel_keeps_input_order(cloud):
    @cloud.add_pure_function
    def slow_first(*, x):
        import time

        time.sleep(0.03 * (6 - x))  # early inputs finish last
        return x * 10

    assert slow_first.sync_parallel(kw_args(x=i) for i in range(6)) == [0, 10, 20, 30, 40, 50]


def test_sync_parallel_runs_identical_calls_once_and_cached_calls_never(cloud, log):
    @cloud.add_pure_function
    def square(*, x, log):
        record_run(log, x)
        return x * x

    calls = (kw_args(x=i % 5, log=log) for i in range(20))  # a generator with duplicates
    assert square.sync_parallel(calls) == [(i % 5) ** 2 for i in range(20)]
    assert [runs(log, x) for x in range(5)] == [1] * 5

    # plain dicts and kw_args mixed; 3 is stored, 7 is new, and the order of keys does not matter
    assert square.sync_parallel([{"x": 3, "log": log}, kw_args(log=log, x=7), {"log": log, "x": 7}]) == [9, 49, 49]
    assert runs(log, 3) == 1 and runs(log, 7) == 1
    assert square.sync_parallel([kw_args(x=x, log=log) for x in (0, 1, 2, 3, 4, 7)]) == [0, 1, 4, 9, 16, 49]
    assert [runs(log, x) for x in (0, 1, 2, 3, 4, 7)] == [1] * 6
    assert square.sync_parallel([]) == []


def test_sync_parallel_applies_defaults_before_hashing(cloud, log):
    @cloud.add_pure_function
    def scaled(*, x, factor=2, log):
        record_run(log, x)
        return x * factor

    assert scaled.sync_parallel([kw_args(x=1, log=log), kw_args(x=1, factor=2, log=log)]) == [2, 2]
    assert runs(log, 1) == 1


def test_many_fast_calls_are_batched_and_all_stored(cloud):
    @cloud.add_pure_function
    def inc(*, x):
        return x + 1

    out = inc.sync_parallel(kw_args(x=i) for i in range(3000))
    assert out == list(range(1, 3001))
    found = cloud.store.get_results([inc.address(x=i) for i in range(3000)])
    assert len(found) == 3000 and found[inc.address(x=2999)] == 3000


def test_tasks_larger_than_a_pipe_reach_their_worker(cloud):
    """Arguments below the inline limit but above a pipe's 64 KiB travel in the task itself:
    the supervisor must wait for room in the pipe, not for the worker to speak first."""

    @cloud.add_pure_function
    def size(*, b, i):
        return len(b) + i

    calls = [kw_args(b=bytes([i]) * 200_000, i=i) for i in range(6)]
    assert size.sync_parallel(calls) == [200_000 + i for i in range(6)]


def test_large_arguments_and_results_travel_through_the_store(cloud):
    np = pytest.importorskip("numpy")
    from pythagoras_p2p.identity.encoding import value_address

    @cloud.add_pure_function
    def describe(*, a, k):
        return bool(a.flags.writeable), float(a.sum()), a * k

    a = np.arange(200_000, dtype=np.float64)  # 1.6 MB: passed by its address, not pickled
    out = describe.sync_parallel(kw_args(a=a, k=k) for k in (1, 2, 3))
    for k, (writeable, total, scaled) in zip((1, 2, 3), out, strict=True):
        assert writeable  # read in place from the store's file, privately (copy-on-write)
        assert total == float(a.sum())
        assert np.array_equal(scaled, a * k)
    # the argument's transient copy lived while the calls ran; neither record nor file is left
    assert cloud.store.get_value(value_address(a)) is MISSING
    assert not list(cloud.store.blobs.glob(f"*/{value_address(a).hex()}*"))
    again = describe(a=a, k=3)  # a hit: the large result was stored by the worker
    assert np.array_equal(again[2], a * 3)


def test_workers_inherit_the_environment_with_one_blas_thread(home, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    monkeypatch.setenv("PYTHAGORAS_TEST_MARKER", "inherited")
    with LocalCloud(home=home, workers=1) as cloud:
        @cloud.add_pure_function
        def env(*, names):
            return [os.environ.get(n) for n in names]

        names = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "PYTHAGORAS_TEST_MARKER", "PYTHAGORAS_HOME"]
        assert env.sync_remote(names=names) == ["1", "1", "3", "inherited", str(home)]


# --------------------------------------------------------------------------- exceptions


def test_exception_reaches_the_caller_with_the_remote_traceback(cloud, log):
    @cloud.add_pure_function
    def fail(*, x, log):
        record_run(log, x)
        raise ValueError(f"odd {x}")

    with pytest.raises(ValueError, match="odd 1") as info:
        fail.sync_remote(x=1, log=log)
    exc = info.value
    assert type(exc) is ValueError
    cause = exc.__cause__
    assert cause is not None
    assert "Traceback (most recent call last)" in str(cause)
    assert ", in fail" in str(cause)
    assert "ValueError: odd 1" in str(cause)
    notes = "\n".join(getattr(exc, "__notes__", []))
    assert "fail(" in notes and "x=1" in notes
    assert socket.gethostname() in notes

    # Failures are not cached: the call runs again, and fails again.
    assert cloud.store.get_result(fail.address(x=1, log=log)) is MISSING
    with pytest.raises(ValueError, match="odd 1"):
        fail.sync_remote(x=1, log=log)
    assert runs(log, 1) == 2


def test_return_exceptions_puts_them_in_place(cloud):
    @cloud.add_pure_function
    def odd_fails(*, x):
        if x % 2:
            raise KeyError(x)
        return x

    out = odd_fails.sync_parallel((kw_args(x=i) for i in range(6)), return_exceptions=True)
    assert [v for v in out[::2]] == [0, 2, 4]
    for i, value in zip((1, 3, 5), out[1::2], strict=True):
        assert isinstance(value, KeyError) and value.args == (i,)
        assert value.__cause__ is not None


def test_first_failure_in_input_order_is_raised_after_every_call_ended(cloud, log):
    @cloud.add_pure_function
    def mixed(*, x, log):
        import time

        if x == 3:
            time.sleep(0.3)  # fails last in time, but comes first in input order
            raise ValueError("three")
        if x == 1:
            raise ValueError("one")
        time.sleep(0.1)
        record_run(log, x)
        return x

    with pytest.raises(ValueError, match="three"):
        mixed.sync_parallel([kw_args(x=x, log=log) for x in (0, 3, 2, 1, 4, 6)])
    # every call ran to its end, and the successes are stored
    for x in (0, 2, 4, 6):
        assert runs(log, x) == 1
        assert cloud.store.get_result(mixed.address(x=x, log=log)) == x


@pytest.mark.parametrize("kind", ["cannot-unpickle", "cannot-pickle"])
def test_exception_that_cannot_travel_arrives_as_remote_error(cloud, kind):
    @cloud.add_pure_function
    def picky(*, kind):
        if kind == "cannot-unpickle":
            class PickyError(Exception):
                def __init__(self, a, b):
                    super().__init__(a)
                    self.b = b

            raise PickyError("picky failure", 2)
        import threading

        exc = RuntimeError("carries a lock")
        exc.lock = threading.Lock()
        raise exc

    with pytest.raises(RemoteError) as info:
        picky.sync_remote(kind=kind)
    exc = info.value
    assert isinstance(exc, PythagorasError)
    expected = "PickyError" if kind == "cannot-unpickle" else "RuntimeError"
    assert expected in exc.remote_type and expected in str(exc)
    assert "picky(" in str(exc)
    assert expected in exc.remote_traceback and "Traceback" in exc.remote_traceback
    assert expected in str(exc.__cause__)


def test_result_that_cannot_be_pickled_is_an_error_and_not_stored(cloud):
    from pythagoras_p2p import SerializationError

    @cloud.add_pure_function
    def make_lock(*, x):
        import threading

        return threading.Lock()

    with pytest.raises(SerializationError, match="cannot be pickled"):
        make_lock.sync_remote(x=1)
    assert cloud.store.get_result(make_lock.address(x=1)) is MISSING


# --------------------------------------------------------------------------- worker crashes


def test_crashing_calls_fail_alone_after_three_attempts(cloud, log):
    @cloud.add_pure_function
    def fragile(*, how, n, log):
        record_run(log, how)
        if how == "exit":
            os._exit(3)
        if how == "segv":
            import ctypes

            ctypes.string_at(0)
        return n

    calls = [kw_args(how="exit", n=0, log=log)]
    calls += [kw_args(how="ok", n=n, log=log) for n in range(1, 6)]
    calls += [kw_args(how="segv", n=6, log=log)]
    out = fragile.sync_parallel(calls, return_exceptions=True)
    assert out[1:6] == [1, 2, 3, 4, 5]
    exited, segfaulted = out[0], out[6]
    assert isinstance(exited, WorkerCrashedError) and isinstance(segfaulted, WorkerCrashedError)
    assert "fragile(" in str(exited) and "how='exit'" in str(exited)
    assert "exited with status 3" in str(exited)
    assert "how='segv'" in str(segfaulted) and "SIGSEGV" in str(segfaulted)
    assert f"{MAX_TASK_CRASHES} attempts" in str(exited)
    assert runs(log, "exit") == MAX_TASK_CRASHES and runs(log, "segv") == MAX_TASK_CRASHES
    assert cloud.store.get_result(fragile.address(how="exit", n=0, log=log)) is MISSING

    # without return_exceptions the crash is raised; and the pool keeps working afterwards
    with pytest.raises(WorkerCrashedError, match="how='exit'"):
        fragile.sync_remote(how="exit", n=7, log=log)
    assert fragile.sync_parallel([kw_args(how="ok", n=n, log=log) for n in (8, 9, 10)]) == [8, 9, 10]


def test_a_call_that_crashes_twice_then_succeeds_is_not_failed(cloud, log):
    """Each call gets its own three attempts, however many calls crashed before it."""

    @cloud.add_pure_function
    def flaky(*, key, log):
        record_run(log, key)
        if runs(log, key) < MAX_TASK_CRASHES:
            os._exit(9)
        return key

    for key in ("a", "b", "c", "d"):  # one batch each: batches come and go between them
        assert flaky.sync_remote(key=key, log=log) == key
        assert runs(log, key) == MAX_TASK_CRASHES


def test_workers_that_cannot_start_fail_calls_without_hanging(home, monkeypatch):
    monkeypatch.setenv("PYTHAGORAS_WORKER_MEMORY_LIMIT", "1M")  # too little to start at all
    with LocalCloud(home=home, workers=1) as cloud:
        @cloud.add_pure_function
        def plain(*, x):
            return x

        for x in range(3):  # every call gets the error: none waits for workers that never come
            with pytest.raises(WorkerCrashedError, match="fail to start"):
                plain.sync_remote(x=x)
        monkeypatch.delenv("PYTHAGORAS_WORKER_MEMORY_LIMIT")  # the cause is fixed: workers start
        assert plain.sync_parallel(kw_args(x=x) for x in range(4)) == [0, 1, 2, 3]


def test_a_crash_among_many_fast_calls_fails_only_that_call(cloud):
    @cloud.add_pure_function
    def fast(*, x):
        if x == 300:  # late, once calls are sent in batches of many
            os._exit(5)
        return -x

    out = fast.sync_parallel((kw_args(x=i) for i in range(600)), return_exceptions=True)
    assert isinstance(out[300], WorkerCrashedError) and "x=300" in str(out[300])
    assert out[:300] == [-i for i in range(300)] and out[301:] == [-i for i in range(301, 600)]


def test_interrupt_cancels_running_calls_and_the_pool_goes_on(cloud, log):
    @cloud.add_pure_function
    def sleepy(*, x, log):
        import time

        open(os.path.join(log, f"started.{x}.{os.getpid()}"), "w").close()
        time.sleep(60)
        return x

    def interrupt_when_both_workers_run():
        wait_for(lambda: len(os.listdir(log)) == 2, 60, message="two calls to start")
        _thread.interrupt_main(signal.SIGINT)

    helper = threading.Thread(target=interrupt_when_both_workers_run)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sleepy.sync_parallel(kw_args(x=i, log=log) for i in range(6))
    finally:
        helper.join()
    pids = [int(name.split(".")[2]) for name in os.listdir(log)]

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(lambda: all(gone(p) for p in pids), 30, message="the running calls to be stopped")
    assert len(os.listdir(log)) == 2  # the queued calls never started
    assert cloud.store.get_result(sleepy.address(x=0, log=log)) is MISSING

    @cloud.add_pure_function
    def quick(*, x):
        return x

    assert quick.sync_parallel(kw_args(x=i) for i in range(4)) == [0, 1, 2, 3]


def test_memory_limit_gives_a_memory_error_and_spares_the_worker(home, monkeypatch):
    monkeypatch.setenv("PYTHAGORAS_WORKER_MEMORY_LIMIT", "300M")
    with LocalCloud(home=home, workers=1) as cloud:
        @cloud.add_pure_function
        def hog(*, size):
            return len(bytearray(size)), os.getpid()

        small = hog.sync_remote(size=10)
        with pytest.raises(MemoryError) as info:
            hog.sync_remote(size=10**9)
        assert "hog(size=1000000000)" in "\n".join(info.value.__notes__)
        assert cloud.store.get_result(hog.address(size=10**9)) is MISSING
        after = hog.sync_remote(size=11)
        assert after[1] == small[1]  # the same worker: a MemoryError does not cost a process


def test_memory_limit_does_not_count_the_store_map(home, monkeypatch):
    """Workers under a memory limit still start when the store's map is larger than the limit."""
    from pythagoras_p2p.store.core import open_store

    store = open_store(home)
    store.env._gate.resize(lambda: store.env._env.set_mapsize(1 << 30))  # as a grown store would be
    store.put_value(b"\1" * 32, b"Pfiller")  # the commit records the larger map
    monkeypatch.setenv("PYTHAGORAS_WORKER_MEMORY_LIMIT", "300M")
    with LocalCloud(home=home, workers=1) as cloud:
        @cloud.add_pure_function
        def answer(*, x):
            return x + 1

        assert answer.sync_remote(x=41) == 42


# --------------------------------------------------------------------------- output


def test_printed_output_reaches_the_caller_prefixed_by_where_it_ran(cloud, capfd):
    @cloud.add_pure_function
    def chatty(*, x):
        import sys

        print(f"hello from call {x}")
        print(f"warning from call {x}", file=sys.stderr)
        print("no newline at the end", end="")
        return x

    assert chatty.sync_remote(x=7) == 7
    err = capfd.readouterr().err
    host = re.escape(socket.gethostname())
    assert re.search(rf"^\[{host}/w\d+\] hello from call 7$", err, re.M), err
    assert re.search(rf"^\[{host}/w\d+\] warning from call 7$", err, re.M), err
    assert re.search(rf"^\[{host}/w\d+\] no newline at the end$", err, re.M), err


# --------------------------------------------------------------------------- nesting


@pytest.mark.timeout(120)
def test_pure_functions_called_inside_a_worker_share_the_store(cloud):
    @cloud.add_pure_function
    def inner(*, x):
        return x, os.getpid()

    @cloud.add_pure_function
    def outer(*, x):
        return [inner(x=x), inner(x=x + 1)]

    result = outer.sync_remote(x=10)
    worker_pid = result[0][1]
    assert worker_pid != os.getpid() and result[1][1] == worker_pid
    # the inner calls were memoized in the same store: hits here, computed there
    assert cloud.store.get_result(inner.address(x=10)) == (10, worker_pid)
    assert inner(x=11) == (11, worker_pid)


@pytest.mark.timeout(120)
def test_sync_parallel_inside_a_worker_does_not_deadlock(cloud):
    @cloud.add_pure_function
    def leaf(*, x):
        return x * x

    @cloud.add_pure_function
    def fan_out(*, n):
        squares = leaf.sync_parallel(kw_args(x=i) for i in range(n))
        return sum(squares) + leaf.sync_remote(x=100)

    # more outer calls than workers: every worker is busy with one when it fans out
    out = fan_out.sync_parallel(kw_args(n=n) for n in range(2, 7))
    assert out == [sum(i * i for i in range(n)) + 10_000 for n in range(2, 7)]
    assert leaf(x=5) == 25 and cloud.store.get_result(leaf.address(x=100)) == 10_000


def test_recursive_pure_function(cloud):
    @cloud.add_pure_function
    def fib(*, n):
        return n if n < 2 else fib(n=n - 1) + fib(n=n - 2)

    assert fib(n=30) == 832040  # memoized recursion: each n is computed once
    assert fib.sync_remote(n=60) == 1548008755920
    assert cloud.store.get_result(fib.address(n=45)) == 1134903170  # stored by the worker


# --------------------------------------------------------------------------- scripts


def test_script_without_main_guard(tmp_path, home):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""\
        import os
        from pythagoras_p2p import LocalCloud, kw_args

        print("module level ran in", os.getpid(), flush=True)
        cloud = LocalCloud(workers=2)

        @cloud.add_pure_function
        def cube(*, x):
            return x ** 3, os.getpid()

        out = cube.sync_parallel(kw_args(x=i) for i in range(6))
        print("results", [v for v, _ in out])
        print("remote", all(pid != os.getpid() for _, pid in out))
    """))
    env = dict(os.environ, PYTHAGORAS_HOME=str(home))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("module level ran in") == 1
    assert "results [0, 1, 8, 27, 64, 125]" in proc.stdout
    assert "remote True" in proc.stdout
    assert "module level ran" not in proc.stderr  # workers never re-ran the script


# --------------------------------------------------------------------------- requires=


def test_requires_names_what_is_missing(home):
    with pytest.raises(RequirementsError, match="definitely-not-a-package"):
        LocalCloud(home=home, requires="definitely-not-a-package>=1")
    with pytest.raises(RequirementsError, match="definitely-not-a-package"):
        PCloud(requires="pytest definitely-not-a-package>=1", connection="local")
    with pytest.raises(RequirementsError, match=r"pytest>=999 \(installed: "):
        LocalCloud(home=home, requires=["pytest>=999"])


def test_requires_satisfied(home):
    with LocalCloud(home=home, requires="pytest", workers=1) as cloud:
        @cloud.add_pure_function
        def one(*, x):
            return x

        assert one.sync_remote(x=1) == 1
    with LocalCloud(home=home, requires="pytest>=7, packaging") as cloud:
        assert cloud.requires == ("pytest>=7", "packaging")


@pytest.mark.parametrize("requires", ["numpy>=>2", "pandas >= 2 ==", "!!", 42])
def test_invalid_requirement_is_a_configuration_error(home, requires):
    with pytest.raises(ConfigurationError):
        LocalCloud(home=home, requires=requires)


# --------------------------------------------------------------------------- connection=


@pytest.mark.parametrize("connection", [
    42,
    ["host"],
    "",
    ",",
    "host:0",
    "host:65536",
    "host:port",
    "[::1",
    {"bogus": 1},
    {"discovery": "carrier-pigeon"},
    {"peers": ["good:7575", "bad:-1"]},
])
def test_malformed_connection_is_a_configuration_error(home, connection):
    with pytest.raises(ConfigurationError):
        PCloud(connection=connection)


def test_positional_arguments_are_a_configuration_error(home):
    with pytest.raises(ConfigurationError, match="keyword"):
        PCloud("local")


@pytest.mark.parametrize("connection", ["local", {"discovery": "off"}, None])
def test_local_connections_give_the_embedded_default(home, connection):
    cloud = PCloud(connection=connection)
    try:
        assert isinstance(cloud, LocalCloud)
        assert cloud.home == home
    finally:
        cloud.close()


def test_damaged_member_keys_are_named_when_pcloud_falls_back(home, caplog):
    import json
    import logging

    from pythagoras_p2p.clouds import choice
    from pythagoras_p2p.net.security import create_key

    key = create_key(home)
    path = home / "trust" / "node.key"
    data = json.loads(path.read_text())
    data["curve_secret"] = data["curve_secret"][:-1] + ("A" if data["curve_secret"][-1] != "A" else "B")
    path.write_text(json.dumps(data))
    choice._warned.discard(str(home))
    with caplog.at_level(logging.WARNING):
        cloud = PCloud(connection={"discovery": "static"})
        PCloud(connection={"discovery": "static"}).close()
    cloud.close()
    assert isinstance(cloud, LocalCloud) and key.name
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in message and "not a valid key file" in message
    assert "pythagoras-node join TOKEN" in message and "embedded default" in message


def test_a_member_home_with_no_node_says_so_once_at_warning(home, caplog):
    import logging

    from pythagoras_p2p.clouds import choice
    from pythagoras_p2p.net.security import create_key

    create_key(home, name="lab")
    choice._warned.discard(str(home))
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            PCloud(connection={"discovery": "static"}).close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "'lab'" in warnings[0] and "pythagoras-node start" in warnings[0]


def test_local_cloud_refuses_peers(home):
    with pytest.raises(ConfigurationError):
        LocalCloud(home=home, connection="otherhost:7575")


def test_workers_die_with_the_process_that_supervises_them(tmp_path):
    """A caller killed with SIGKILL leaves no worker behind running its call."""
    import subprocess
    import sys

    marker = tmp_path / "worker.pid"
    code = f"""
import time
from pythagoras_p2p import LocalCloud
cloud = LocalCloud(home={str(tmp_path / 'home')!r}, workers=1)

@cloud.add_pure_function
def slow(*, x):
    import os, time
    open({str(marker)!r}, "w").write(str(os.getpid()))
    time.sleep(60)

slow.sync_remote(x=time.time())
"""
    caller = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: marker.exists() and marker.read_text(), 60, message="the call to start")
        worker = int(marker.read_text())
    finally:
        caller.kill()
        caller.wait()

    def gone() -> bool:
        try:
            return open(f"/proc/{worker}/stat").read().split()[2] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, 10, message="the orphaned worker to end")
