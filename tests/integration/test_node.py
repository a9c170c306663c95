"""A real node on loopback: status, remote calls, memo lookups, failures, crashes and shutdown.

Every test starts its own ``pythagoras-node start`` process (see conftest.py) and talks to it as
a client of another home, the way a second machine of the swarm would.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from node_harness import Call, ask, cli, copy_key, dealer, free_port, make_key, wait_for

from pythagoras_p2p import PCloud, PythagorasError, WorkerCrashedError, kw_args
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.net.rpc import NodeUnreachable
from pythagoras_p2p.store.core import MISSING, open_store

STATUS_KEYS = {"id", "address", "self", "workers_busy", "workers_total", "load", "tasks_done",
               "cache_entries", "cache_bytes", "hit_rate", "last_seen_s"}


def _where_it_ran():
    # Defined inside a function, so it travels by value whatever function_record does with
    # module-level functions (test_a_function_of_a_module_the_node_cannot_import checks those).
    def where_it_ran(*, x):
        """A result that says which process computed it."""
        import os

        return {"x": x, "pid": os.getpid()}

    return where_it_ran


where_it_ran = _where_it_ran()


def module_level_square(*, x):
    return x * x


def worker_pids(node) -> set[int]:
    return {p.pid for p in psutil.Process(node.pid).children(recursive=True)}


# --------------------------------------------------------------------------- status


def test_status_json_lists_this_node_and_counts_calls(node, make_client):
    out = cli(node.home, "status", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"node", "peers", "members"}
    [member] = [m for m in data["members"] if m["self"]]
    assert member["node_id"] == data["node"]["id"] and member["roles"] == ["admin", "node"]
    assert data["node"]["hostname"] == member["hostname"] == node.home.name
    me = [p for p in data["peers"] if p.get("self") is True]
    assert len(me) == 1, data["peers"]
    me = me[0]
    assert STATUS_KEYS <= set(me), STATUS_KEYS - set(me)
    assert STATUS_KEYS <= set(data["node"])
    node_id = json.loads((node.home / "node.json").read_text())["id"]
    assert me["id"] == data["node"]["id"] == node_id
    assert me["address"] == f"127.0.0.1:{node.port}"
    assert me["workers_total"] == 2 and me["workers_busy"] == 0
    assert me["tasks_done"] == 0 and me["hit_rate"] is None
    assert isinstance(me["load"], (int, float)) and isinstance(me["last_seen_s"], (int, float))
    assert isinstance(me["cache_entries"], int) and isinstance(me["cache_bytes"], int)

    a = make_client(node, "a")
    f = a.add_pure_function(where_it_ran)
    first = f.sync_remote(x=3)
    b = make_client(node, "b")  # a fresh home: the node answers it from its store (a hit)
    g = b.add_pure_function(where_it_ran)
    assert g.sync_remote(x=3) == first

    out = cli(node.home, "status", "--json")
    assert out.returncode == 0, out.stderr
    after = json.loads(out.stdout)
    me = next(p for p in after["peers"] if p["self"])
    assert me["tasks_done"] == 1
    assert me["hit_rate"] == 0.5  # one miss (ran), one hit (answered from the store)
    wait_for(lambda: node.status()["cache_entries"] >= 1, timeout=15,
             message="the node's status to count the stored result")


# --------------------------------------------------------------------------- remote calls


def test_sync_remote_runs_on_the_node_and_the_result_is_copied_here(node, make_client):
    cloud = make_client(node)
    f = cloud.add_pure_function(where_it_ran)
    result = f.sync_remote(x=1)
    assert result["x"] == 1
    assert result["pid"] not in (os.getpid(), node.pid)
    assert result["pid"] in worker_pids(node), "the call did not run in one of the node's workers"
    call = f.address(x=1)
    cloud.close()
    assert open_store(cloud.home).get_result(call) == result


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _threads_cpu_seconds(tids: list[int]) -> float:
    """CPU seconds these threads of this process have run, to the nanosecond
    (/proc/self/task/TID/schedstat; its stat's utime and stime count whole clock ticks, an
    error of up to a tick per thread)."""
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except OSError:  # the thread ended
            continue
    return total / 1e9


def test_after_a_loop_of_fast_calls_neither_node_nor_client_keeps_polling(node, make_client):
    """Waiting for a fast call's reply (client) and for a loop's next request (node) polls
    without sleeping, but only for moments: once the calls stop, both sleep."""
    cloud = make_client(node)
    f = cloud.add_pure_function(where_it_ran)
    for i in range(300):
        assert f.sync_remote(x=i)["x"] == i
    node_pids = [node.pid, *worker_pids(node)]
    here = [os.getpid()]
    window = 1.0
    node_before, here_before, t0 = _cpu_seconds(node_pids), _cpu_seconds(here), time.monotonic()
    time.sleep(window)  # the measured quiet window, not a wait for something to happen
    elapsed = time.monotonic() - t0
    node_busy = (_cpu_seconds(node_pids) - node_before) / elapsed
    here_busy = (_cpu_seconds(here) - here_before) / elapsed
    assert node_busy < 0.05, f"an idle node used {node_busy:.1%} of a core"
    assert here_busy < 0.05, f"an idle client used {here_busy:.1%} of a core"
    cloud.close()


def _sleeper():
    def sleep_for(*, seconds):
        import time

        time.sleep(seconds)
        return seconds

    return sleep_for


def test_a_thread_waiting_for_a_slow_call_does_not_hold_up_another_thread_s_calls(node, make_client):
    """The thread that runs the client's loop while it waits for a slow call sends another
    thread's calls at once (it does not finish waiting in its poll first)."""
    cloud = make_client(node)
    slow = cloud.add_pure_function(_sleeper())
    fast = cloud.add_pure_function(where_it_ran)
    assert fast.sync_remote(x=-1)["x"] == -1
    slow_thread = threading.Thread(target=lambda: slow.sync_remote(seconds=6.0), daemon=True)
    slow_thread.start()
    wait_for(lambda: node.status()["workers_busy"] >= 1, 30, message="the slow call to run")
    for i in range(100):
        assert fast.sync_remote(x=i)["x"] == i
    assert slow_thread.is_alive(), "100 fast calls took longer than one 6 s call"
    slow_thread.join(30)
    cloud.close()


def test_threads_waiting_for_their_calls_sleep(node, make_client):
    """Twelve threads wait for slow calls at once: one runs the client's loop, the others sleep
    until a turn is over instead of polling for the loop."""
    cloud = make_client(node)
    slow = cloud.add_pure_function(_sleeper())
    ended, waiting = [], []

    def wait_for_a_slow_call(seconds: float) -> None:
        waiting.append(threading.get_native_id())
        try:
            slow.sync_remote(seconds=seconds)
        except (PythagorasError, RuntimeError) as exc:  # the cloud is closed under it at the end
            ended.append(exc)

    threads = [threading.Thread(target=wait_for_a_slow_call, args=(5.0 + i / 1000,), daemon=True)
               for i in range(12)]
    for thread in threads:
        thread.start()
    wait_for(lambda: node.status()["workers_busy"] >= 2, 30, message="the slow calls to run")
    # The waiting threads' own CPU (one of them runs the client's loop), not the whole test
    # process's: threads that earlier tests of this process left running are not measured.
    before, t0 = _threads_cpu_seconds(waiting), time.monotonic()
    time.sleep(1.0)  # the measured window, not a wait for something to happen
    busy = (_threads_cpu_seconds(waiting) - before) / (time.monotonic() - t0)
    assert busy < 0.03, f"twelve waiting threads used {busy:.1%} of a core"
    cloud.close()
    for thread in threads:
        thread.join(30)
    assert len(ended) >= 8  # at most the first two slow calls could have ended by now


def test_a_memo_lookup_asks_the_node_before_computing(node, make_client):
    """A plain call of a fresh client gets the node's stored result instead of running here."""
    a = make_client(node, "a")
    remote = a.add_pure_function(where_it_ran).sync_remote(x=7)
    b = make_client(node, "b")
    assert b.ready_peers(timeout=10), "the node never became ready for client b"
    g = b.add_pure_function(where_it_ran)
    assert g(x=7) == remote  # the node's worker pid, not ours: nothing ran here
    b.close()
    assert open_store(b.home).get_result(g.address(x=7)) == remote


def test_thousands_of_stored_calls_are_found_in_one_lookup(node, make_client):
    """More calls than one message can name (or answer with their results): asked in parts."""
    a = make_client(node, "a")
    f = a.add_pure_function(module_level_square)
    xs = range(5000)
    assert f.sync_parallel(kw_args(x=x) for x in xs) == [x * x for x in xs]
    done = node.status()["tasks_done"]
    b = make_client(node, "b")
    assert b.ready_peers(timeout=10), "the node never became ready for client b"
    g = b.add_pure_function(module_level_square)
    calls = [g.address(x=x) for x in xs]
    assert len(b._dispatcher.lookup(calls, timeout=30)) == 5000
    assert g.sync_parallel(kw_args(x=x) for x in xs) == [x * x for x in xs]
    assert node.status()["tasks_done"] == done  # every one was found, none ran again


def test_a_function_of_a_module_the_node_cannot_import(node, client):
    """This test module is not importable on the node: the function must travel by value."""
    f = client.add_pure_function(module_level_square)
    assert f.sync_remote(x=12) == 144


def test_a_memo_lookup_of_a_new_cloud_asks_the_node(node, make_client):
    a = make_client(node, "a")
    remote = a.add_pure_function(where_it_ran).sync_remote(x=8)
    b = make_client(node, "b")
    assert b.add_pure_function(where_it_ran)(x=8) == remote


def test_sync_parallel_over_the_node_returns_results_in_order(node, client):
    f = client.add_pure_function(where_it_ran)
    xs = [5, 3, 9, 0, 3, 7, 1, 8, 2, 6, 4, 5]
    results = f.sync_parallel(kw_args(x=x) for x in xs)
    assert [r["x"] for r in results] == xs
    assert results[1] == results[4] and results[0] == results[-1]  # duplicates ran once
    pids = {r["pid"] for r in results}
    assert pids <= worker_pids(node) and os.getpid() not in pids
    assert node.status()["tasks_done"] == len(set(xs))


def test_large_numpy_argument_and_result_round_trip(node, client):
    def scaled(*, a, k):
        return a * k

    f = client.add_pure_function(scaled)
    a = np.arange(6 * 1024 * 1024 // 8, dtype=np.float64)  # 6 MiB: more than one 4 MiB chunk
    out = f.sync_remote(a=a, k=3.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == a.shape
    assert np.array_equal(out, a * 3.0)
    call = f.address(a=a, k=3.0)
    client.close()
    stored = open_store(client.home).get_result(call)
    assert np.array_equal(stored, a * 3.0)


def test_released_arguments_are_dropped_unless_a_call_still_reads_them(node, client, tmp_path):
    def slow_sum(*, a, gate):
        import os
        import time

        open(gate + ".started", "w").close()
        while not os.path.exists(gate):  # held open until the test has sent its release
            time.sleep(0.01)
        return float(a.sum())

    f = client.add_pure_function(slow_sum)
    a = np.arange(1 << 17, dtype=np.float64)  # 1 MiB: sent as a transient copy
    address = value_address(a)
    gate = tmp_path / "gate"
    box: list = []
    thread = threading.Thread(target=lambda: box.append(f.sync_remote(a=a, gate=str(gate))))
    thread.start()
    try:
        node_store = open_store(node.home)
        wait_for(lambda: node_store.has_value(address), message="the argument to reach the node")
        wait_for((tmp_path / "gate.started").exists, message="the call to run on the node")
        reply = node.request("release", addresses=[address.hex()])  # another member, too early
        assert reply.op == "ok" and reply.fields["dropped"] == 0
        assert node_store.has_value(address)
    finally:
        gate.touch()
        thread.join(30)
    assert box == [float(a.sum())]
    # the client released it itself once its call was over
    wait_for(lambda: not node_store.has_value(address), timeout=10,
             message="the node to drop the released argument")
    assert not list((node.home / "blobs").rglob(f"{address.hex()}*"))


def test_a_download_of_a_value_the_node_no_longer_holds_fails_at_once(node, make_client):
    def big(*, n):
        return np.full(n, 1.5)

    f = make_client(node, "first").add_pure_function(big)
    f.sync_remote(n=1 << 17)  # 1 MiB: a large result, fetched separately
    cloud = make_client(node, "second")
    call = cloud.add_pure_function(big).address(n=1 << 17)
    found = cloud._dispatcher.lookup([call], timeout=10)
    address, blob, _, peer = found[call]
    assert blob is None  # large: it must be downloaded
    node_store = open_store(node.home)  # meanwhile `cache gc` there removed it
    node_store.env.write(lambda txn: txn.delete(address, db=node_store.env.values))
    node_store.blob_path(address).unlink()
    t = time.monotonic()
    outcome = cloud._dispatcher.fetch(peer, address, timeout=10)
    assert isinstance(outcome, str) and "no longer holds" in outcome, outcome
    assert time.monotonic() - t < 5


def test_a_node_on_an_ipv6_address_serves_a_client_that_names_it(tmp_path):
    home = tmp_path / "node"
    make_key(home)
    port = free_port()
    started = cli(home, "start", "--bind", "::1", "--port", str(port), "--no-mdns", "--detach")
    if started.returncode != 0 and "cannot listen" in started.stderr:
        pytest.skip(f"no IPv6 loopback here: {started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    try:
        client_home = tmp_path / "client"
        copy_key(home, client_home)
        cloud = PCloud(connection=f"[::1]:{port}", home=client_home, connect_timeout=5)
        try:
            @cloud.add_pure_function
            def square(*, x):
                return x * x

            assert square.sync_remote(x=12) == 144
        finally:
            cloud.close()
        status = json.loads(cli(home, "status", "--json").stdout)
        assert status["node"]["address"] == f"[::1]:{port}"
    finally:
        assert cli(home, "stop").returncode == 0


# --------------------------------------------------------------------------- failures


def test_an_exception_on_the_node_reaches_the_caller_and_is_not_cached(node, client):
    class Refused(Exception):
        pass

    def picky(*, x):
        if x < 0:
            raise Refused(f"x={x} is negative")
        raise ValueError(f"cannot take x={x}")

    f = client.add_pure_function(picky)
    with pytest.raises(ValueError, match="cannot take x=1") as info:
        f.sync_remote(x=1)
    cause = info.value.__cause__
    assert cause is not None
    text = str(cause)
    assert "Traceback" in text and "picky" in text and "ValueError: cannot take x=1" in text
    notes = getattr(info.value, "__notes__", [])
    assert any("picky(x=1)" in note for note in notes), notes

    with pytest.raises(Refused, match="x=-1 is negative"):  # a class of the caller's own
        f.sync_remote(x=-1)

    assert node.status()["tasks_done"] == 2
    with pytest.raises(ValueError):  # not cached: it runs again
        f.sync_remote(x=1)
    assert node.status()["tasks_done"] == 3
    call = f.address(x=1)
    assert client.store.get_result(call) is MISSING
    assert node.request("lookup", calls=[call.hex()]).fields["found"] == []


def test_a_call_that_kills_its_worker_fails_and_the_node_carries_on(node, client):
    def die(*, x):
        import os

        os._exit(1)

    f = client.add_pure_function(die)
    with pytest.raises(WorkerCrashedError, match=r"die\(x=1\)"):
        f.sync_remote(x=1)
    assert node.alive()
    g = client.add_pure_function(where_it_ran)
    results = g.sync_parallel(kw_args(x=i) for i in range(4))
    assert [r["x"] for r in results] == [0, 1, 2, 3]
    status = node.status()
    assert status["workers_total"] == 2 and status["workers_busy"] == 0
    assert len(worker_pids(node)) >= 2  # the crashed worker was replaced


def test_an_unreachable_node_is_a_clear_error_in_bounded_time(tmp_path):
    home = tmp_path / "lonely"
    make_key(home)
    port = free_port()
    cloud = PCloud(connection=f"127.0.0.1:{port}", home=home)
    try:
        f = cloud.add_pure_function(where_it_ran)
        started = time.monotonic()
        with pytest.raises(PythagorasError) as info:
            f.sync_remote(x=1)
        elapsed = time.monotonic() - started
    finally:
        cloud.close()
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert isinstance(info.value, NodeUnreachable), repr(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


# --------------------------------------------------------------------------- shutdown


def test_sigterm_lets_the_running_call_finish_then_exits_cleanly(node, client, zctx, tmp_path):
    def slow(*, x):
        import time

        time.sleep(2)
        return x + 1

    f = client.add_pure_function(slow)
    box: list = []

    def call():
        try:
            box.append(f.sync_remote(x=5))
        except BaseException as exc:  # reported by the assertion below
            box.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    wait_for(lambda: node.status()["workers_busy"] >= 1, timeout=15,
             message="the node to report the call running")
    os.kill(node.pid, signal.SIGTERM)

    # It takes no new work meanwhile: a member's new calls are refused once it has the signal
    # (one sent before it got there may still run; each of these calls is a new one).
    member = dealer(zctx, node, key=node.key)
    refused = None
    for i in range(200):
        late = Call(tmp_path / f"late-{i}.txt")
        if i == 0:
            late.store(member)
        reply = ask(member, late.run(100 + i))
        if reply.op == "error":
            refused = (reply, late)
            break
    assert refused is not None, "the stopping node kept taking new calls"
    assert refused[0].fields["code"] == "stopping", refused[0]
    assert not refused[1].ran()
    member.close(0)

    thread.join(30)
    assert not thread.is_alive(), "the call never returned"
    assert box == [6]
    assert node.proc.wait(30) == 0, node.log()
    assert not (node.home / "node.json").exists()
    assert open_store(node.home).get_result(f.address(x=5)) == 6  # journaled and applied
