"""DaskCloud against a real ``distributed.LocalCluster``: 2 worker processes on 127.0.0.1, no dashboard.

Results computed on the cluster land in the local store under the same call addresses as on the
other backends, so they are hits for a LocalCloud and for a swarm node of the same home.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from helpers import wait_for
from node_harness import marker_function

distributed = pytest.importorskip("distributed", reason="DaskCloud tests need the dask extra")
np = pytest.importorskip("numpy")

from pythagoras_p2p import (  # noqa: E402
    ConfigurationError,
    DaskCloud,
    LocalCloud,
    RequirementsError,
    WorkerCrashedError,
    kw_args,
)
from pythagoras_p2p.net.rpc import NodeUnreachable  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    )
    yield cluster
    cluster.close()


@pytest.fixture
def dask_cloud(cluster, home):
    cloud = DaskCloud(scheduler=cluster.scheduler_address, home=home)
    yield cloud
    cloud.close()


def scheduler_keys(cloud) -> list[str]:
    """Every key the scheduler holds right now."""
    return cloud.client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])


def runs(path) -> int:
    return len(open(path).read().splitlines()) if os.path.exists(path) else 0


def test_sync_remote_runs_on_a_worker_and_stores_the_result(dask_cloud, tmp_path):
    write_marker = dask_cloud.add_pure_function(marker_function())
    path = str(tmp_path / "marks")
    pid = write_marker.sync_remote(path=path)
    assert pid != os.getpid()
    assert runs(path) == 1
    assert write_marker.sync_remote(path=path) == pid  # a hit: not run again
    assert write_marker(path=path) == pid
    assert runs(path) == 1
    assert dask_cloud.store.get_result(write_marker.address(path=path)) == pid


def test_a_result_from_dask_is_a_hit_for_a_local_cloud_and_the_other_way_round(
        dask_cloud, home, tmp_path):
    write_marker = dask_cloud.add_pure_function(marker_function())
    on_dask = str(tmp_path / "on-dask")
    pid = write_marker.sync_remote(path=on_dask)
    local = LocalCloud(home=home, workers=1)
    try:
        local_marker = local.add_pure_function(marker_function())
        assert local_marker.sync_remote(path=on_dask) == pid
        assert local_marker(path=on_dask) == pid
        on_laptop = str(tmp_path / "on-laptop")
        here = local_marker(path=on_laptop)
    finally:
        local.close()
    assert runs(on_dask) == 1
    assert write_marker.sync_parallel([kw_args(path=on_laptop)]) == [here]
    assert runs(on_laptop) == 1
    assert not [k for k in scheduler_keys(dask_cloud) if k.endswith(write_marker.address(path=on_laptop).hex())]


def test_results_are_shared_with_a_swarm_node_both_ways(cluster, start_node, make_client, tmp_path):
    node = start_node("node")
    cloud = DaskCloud(scheduler=cluster.scheduler_address, home=node.home)  # the node's own store
    client = make_client(node)
    try:
        on_dask = cloud.add_pure_function(marker_function())
        on_node = client.add_pure_function(marker_function())
        path = str(tmp_path / "from-dask")
        pid = on_dask.sync_remote(path=path)
        assert on_node.sync_remote(path=path) == pid  # the node answers from its store
        assert runs(path) == 1
        path = str(tmp_path / "from-node")
        pid = on_node.sync_remote(path=path)
        wait_for(lambda: cloud.store.get_result(on_dask.address(path=path)) == pid,
                 message="the node to move the result from its journal into its store")
        assert on_dask.sync_parallel([kw_args(path=path)]) == [pid]
        assert runs(path) == 1
    finally:
        cloud.close()


def test_sync_parallel_keeps_order_runs_identical_calls_once_and_returns_exceptions(dask_cloud, tmp_path):
    @dask_cloud.add_pure_function
    def divide(*, a, b, path):
        with open(path, "a") as fh:
            fh.write(f"{a}/{b}\n")
        return a / b

    path = str(tmp_path / "marks")
    calls = [kw_args(a=i, b=i % 4, path=path) for i in range(12)] + [kw_args(a=50, b=2, path=path)] * 5
    out = divide.sync_parallel(calls, return_exceptions=True)
    assert runs(path) == 13  # 12 distinct calls + one for the five identical ones
    for i in range(12):
        if i % 4 == 0:
            assert isinstance(out[i], ZeroDivisionError)
            assert "divide" in out[i].__notes__[0] and "dask-" in out[i].__notes__[0]
        else:
            assert out[i] == i / (i % 4)
    assert out[12:] == [25.0] * 5
    with pytest.raises(ZeroDivisionError):
        divide.sync_parallel(calls[:3])


def test_a_large_argument_is_scattered_once_under_its_address(dask_cloud):
    @dask_cloud.add_pure_function
    def total(*, data, k):
        return float(data.sum()) + k

    data = np.arange(1_000_000, dtype=np.float64)  # 8 MB
    expected = float(data.sum())
    assert total.sync_parallel(kw_args(data=data, k=k) for k in range(8)) == [expected + k for k in range(8)]
    values = [k for k in scheduler_keys(dask_cloud) if k.startswith("pythagoras-value-")]
    from pythagoras_p2p.identity.encoding import value_address

    assert values == [f"pythagoras-value-{value_address(data).hex()}"]
    # a later call reuses what is on the cluster instead of sending it again
    scattered = dask_cloud.client.scatter
    sent = []
    dask_cloud.client.scatter = lambda *a, **kw: sent.append(a) or scattered(*a, **kw)
    try:
        assert total.sync_remote(data=data, k=100) == expected + 100
    finally:
        dask_cloud.client.scatter = scattered
    assert sent == []


def test_a_call_that_changes_a_scattered_argument_changes_nothing_the_next_call_sees(dask_cloud):
    @dask_cloud.add_pure_function
    def bump_then_sum(*, data, k):
        data += 1  # in place: the scattered copy on the worker must not keep it
        return float(data.sum()) + k

    data = np.zeros(100_000)  # large enough to travel by address (scattered once)
    got = bump_then_sum.sync_parallel(kw_args(data=data, k=k) for k in range(6))
    assert got == [100_000.0 + k for k in range(6)]
    assert not data.any()  # the caller's own array is untouched too


def test_what_a_call_prints_reaches_the_caller_marked_with_its_worker(dask_cloud, capfd):
    @dask_cloud.add_pure_function
    def chatty(*, x):
        print(f"hello from call {x}")
        return x

    assert chatty.sync_parallel(kw_args(x=i) for i in range(3)) == [0, 1, 2]
    err = capfd.readouterr().err
    for i in range(3):
        assert any(line.endswith(f"hello from call {i}") and "/dask-" in line
                   for line in err.splitlines()), err


def test_a_call_that_kills_its_worker_every_time_fails_with_a_clear_error(dask_cloud, cluster):
    @dask_cloud.add_pure_function
    def die(*, code):
        import os

        os._exit(code)

    with pytest.raises(WorkerCrashedError, match=r"die\(code=3\).*(killed|lost with) its Dask worker"):
        die.sync_remote(code=3)
    wait_for(lambda: len(dask_cloud.client.scheduler_info()["workers"]) == 2, timeout=60,
             message="the nanny to restart the killed workers")


def test_requires_is_checked_on_the_workers(cluster, home):
    with pytest.raises(RequirementsError, match="surely-not-installed-pkg.*not installed"):
        DaskCloud(scheduler=cluster.scheduler_address, home=home, requires="surely-not-installed-pkg")
    cloud = DaskCloud(scheduler=cluster.scheduler_address, home=home, requires="pytest")
    try:
        @cloud.add_pure_function
        def one(*, x):
            return x + 1

        assert one.sync_remote(x=1) == 2
    finally:
        cloud.close()


def test_bad_schedulers_are_clear_errors(home):
    with pytest.raises(ConfigurationError, match="scheduler= takes"):
        DaskCloud(scheduler=8786, home=home)
    with pytest.raises(ConfigurationError, match="names no scheduler"):
        DaskCloud(scheduler=" ", home=home)
    with pytest.raises(NodeUnreachable, match="cannot reach the Dask scheduler"):
        DaskCloud(scheduler="tcp://127.0.0.1:9", home=home, connect_timeout=1)


def test_importing_the_package_does_not_import_dask():
    code = "import sys, pythagoras_p2p; print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/")
    assert out.stdout.strip() == "[]"


def test_an_interrupt_cancels_the_calls_still_queued_on_the_cluster(dask_cloud, tmp_path, monkeypatch):
    @dask_cloud.add_pure_function
    def nap(*, i, path):
        import time

        with open(path, "a") as fh:
            fh.write(f"{i}\n")
        time.sleep(0.3)
        return i

    from pythagoras_p2p.execution import progress

    def interrupt(self, n):  # Ctrl-C as the first result arrives
        raise KeyboardInterrupt

    monkeypatch.setattr(progress.ProgressBar, "advance", interrupt)
    path = str(tmp_path / "marks")
    with pytest.raises(KeyboardInterrupt):
        nap.sync_parallel(kw_args(i=i, path=path) for i in range(20))
    wait_for(lambda: not [k for k in scheduler_keys(dask_cloud) if ".nap-" in k],
             timeout=30, message="the scheduler to forget the cancelled calls")
    assert runs(path) < 10  # those running when it came finish (Dask cannot stop a thread)


def test_a_function_requires_is_checked_on_the_workers(dask_cloud):
    @dask_cloud.add_pure_function(requires="surely-not-installed-pkg")
    def needs_pkg(*, x):
        return x

    with pytest.raises(RequirementsError, match="surely-not-installed-pkg.*not installed"):
        needs_pkg.sync_remote(x=1)

    @dask_cloud.add_pure_function(requires="pytest")
    def has_pkg(*, x):
        return x + 1

    assert has_pkg.sync_remote(x=1) == 2


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")  # the second cluster's own
def test_resources_become_dask_worker_resources(dask_cloud, home):
    from pythagoras_p2p import ResourcesError

    @dask_cloud.add_pure_function(resources={"gpus": 1})
    def on_gpu(*, x):
        return x

    t0 = time.monotonic()
    with pytest.raises(ResourcesError, match=r"no Dask worker declares.*gpus"):
        on_gpu.sync_remote(x=1)  # this cluster declares none: at once, not a task that waits
    assert time.monotonic() - t0 < 30
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  resources={"gpus": 1}) as gpu_cluster:
        cloud = DaskCloud(scheduler=gpu_cluster.scheduler_address, home=home)
        try:
            there = cloud.add_pure_function(resources={"gpus": 1})(_slow_identity)
            futures = there.async_parallel(kw_args(x=i) for i in range(2))
            spans = [f.result(120) for f in futures]
            assert [s[0] for s in spans] == [0, 1]
            (_, a0, a1), (_, b0, b1) = spans
            assert a1 <= b0 or b1 <= a0  # one GPU: never two calls at once, on 2 threads
        finally:
            cloud.close()


def _slow_identity(*, x):
    import time

    start = time.time()
    time.sleep(0.5)
    return [x, start, time.time()]


def read_on_worker(*, path):
    with open(path) as f:
        return [f.read(), os.getpid()]


def test_a_file_read_on_a_dask_worker_is_checked_before_a_hit(dask_cloud, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("one")
    f = dask_cloud.add_pure_function(read_on_worker)
    first = f.sync_remote(path=str(data))
    assert first[0] == "one" and f.lookup(path=str(data)).inputs["files"][str(data)]
    assert f.sync_remote(path=str(data)) == first and f(path=str(data)) == first
    data.write_text("two")
    assert f.sync_remote(path=str(data))[0] == "two"
