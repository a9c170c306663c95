"""The joblib backend on the embedded default, and futures at the edges of a process.

``register_joblib_backend`` makes joblib (and so scikit-learn's ``n_jobs``) run its tasks as
calls of a cloud: results equal joblib's own, in order; exceptions as joblib raises them;
``memoize=True`` stores each task so a rerun executes nothing; without it nothing is stored.
Also here: a pure function that starts futures inside a worker, and a process that exits with
futures pending.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time

import psutil
import pytest
from helpers import run_python, wait_for

from pythagoras_p2p import ConfigurationError, LocalCloud, register_joblib_backend
from pythagoras_p2p.store.listing import listing

joblib = pytest.importorskip("joblib", reason="the joblib extra")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    cloud = LocalCloud(home=tmp_path_factory.mktemp("joblib") / "home", workers=2)
    register_joblib_backend("pythagoras-test", cloud=cloud)
    yield cloud
    cloud.close()


def mark(path, value):
    """A task with a side effect a test can count: appends ``value`` to ``path``."""
    with open(path, "a") as fh:
        fh.write(f"{value}\n")
    return value * 10


def lines(path) -> list[str]:
    return open(path).read().split() if os.path.exists(path) else []


def test_parallel_returns_joblibs_results_in_order(cloud):
    with joblib.parallel_config(backend="pythagoras-test", n_jobs=-1):
        assert joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(50)) == [i * i for i in range(50)]
        generator = joblib.Parallel(return_as="generator")(joblib.delayed(divmod)(i, 3) for i in range(7))
        assert list(generator) == [divmod(i, 3) for i in range(7)]
    with joblib.parallel_config(backend="pythagoras-test", n_jobs=-1) as config:
        assert joblib.effective_n_jobs(-1) == cloud.workers
        assert config is not None


def test_an_exception_is_raised_as_joblib_raises_it_and_the_rest_is_cancelled(cloud, tmp_path):
    path = str(tmp_path / "ran")

    def slow_or_fail(i, path):
        import time

        if i == 0:
            raise KeyError(f"task {i} failed")
        time.sleep(20)
        return mark(path, i)

    t0 = time.monotonic()
    with joblib.parallel_config(backend="pythagoras-test", n_jobs=2), pytest.raises(KeyError, match="task 0"):
        joblib.Parallel(batch_size=1)(joblib.delayed(slow_or_fail)(i, path) for i in range(6))
    assert time.monotonic() - t0 < 15  # the slow tasks were cancelled, not waited for
    assert lines(path) == []


def test_not_memoized_every_task_runs_and_nothing_is_stored(cloud, tmp_path):
    path = str(tmp_path / "ran")
    for _ in range(2):
        with joblib.parallel_config(backend="pythagoras-test", n_jobs=2):
            assert joblib.Parallel()(joblib.delayed(mark)(path, i) for i in [1, 1, 2]) == [10, 10, 20]
    assert sorted(lines(path)) == ["1", "1", "1", "1", "2", "2"]  # duplicates and reruns run
    assert listing(cloud.store, "joblib_task") == []  # nothing stored


def test_memoized_duplicates_run_once_and_a_rerun_executes_nothing(cloud, tmp_path):
    path = str(tmp_path / "ran")
    for _ in range(2):
        with joblib.parallel_config(backend="pythagoras-test", n_jobs=2, memoize=True):
            out = joblib.Parallel()(joblib.delayed(mark)(path, i) for i in [3, 4, 3, 5])
        assert out == [30, 40, 30, 50]
    assert sorted(lines(path)) == ["3", "4", "5"]


def test_grid_search_equals_n_jobs_1_and_a_memoized_rerun_executes_nothing(cloud, tmp_path):
    sklearn = pytest.importorskip("sklearn", reason="the test extra")
    del sklearn
    from sklearn.datasets import load_iris
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    path = str(tmp_path / "scored")

    def counted(estimator, X, y):  # a user scorer: counts the fits scored
        with open(path, "a") as fh:
            fh.write("x\n")
        return accuracy_score(y, estimator.predict(X))

    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1, 10], "gamma": ["scale", 0.1]}
    serial = GridSearchCV(SVC(), grid, cv=3, n_jobs=1, scoring=counted).fit(X, y)
    serial_count = len(lines(path))
    for memoize in (False, True, True):
        with joblib.parallel_config(backend="pythagoras-test", n_jobs=-1, memoize=memoize):
            found = GridSearchCV(SVC(), grid, cv=3, scoring=counted).fit(X, y)
        assert found.cv_results_["mean_test_score"].tolist() == serial.cv_results_["mean_test_score"].tolist()
        assert found.best_params_ == serial.best_params_
    # n_jobs=1, not memoized, memoized: 18 fits scored each; the memoized rerun none
    assert len(lines(path)) == 3 * serial_count


def test_register_checks_its_arguments(monkeypatch):
    with pytest.raises(ConfigurationError, match="cloud= takes a cloud"):
        register_joblib_backend(cloud="local")
    with pytest.raises(ConfigurationError, match="non-empty name"):
        register_joblib_backend(name="")
    monkeypatch.setitem(sys.modules, "joblib", None)  # as if it were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'pythagoras_p2p\[joblib\]'"):
        register_joblib_backend()


def test_memoize_must_be_a_bool(cloud):
    with pytest.raises(ConfigurationError, match="memoize='yes'"), \
            joblib.parallel_config(backend="pythagoras-test", memoize="yes"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-1) for _ in range(2))


# --------------------------------------------------------------------------- futures at the edges


def test_a_pure_function_starting_futures_inside_a_worker_does_not_deadlock(cloud):
    @cloud.add_pure_function
    def leaf(*, x):
        return x + 1

    @cloud.add_pure_function
    def fan_out(*, n):
        futures = leaf.async_parallel({"x": i} for i in range(n))
        return sum(f.result(timeout=60) for f in futures) + leaf.async_remote(x=100).result(60)

    # every worker busy with a fan_out that waits for its own futures
    assert fan_out.sync_parallel([{"n": 5}, {"n": 6}, {"n": 7}], timeout=120) == [
        sum(range(1, n + 1)) + 101 for n in (5, 6, 7)]


def test_a_process_that_exits_with_futures_pending_leaves_no_call_running(tmp_path):
    started = tmp_path / "started"
    code = textwrap.dedent(f"""
        import os, time
        from pythagoras_p2p import LocalCloud
        cloud = LocalCloud(home={str(tmp_path / "home")!r}, workers=2)

        @cloud.add_pure_function
        def linger(*, i):
            import os, time
            with open({str(started)!r} + str(i), "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(300)

        futures = linger.async_parallel({{"i": i}} for i in range(2))
        while not all(os.path.exists({str(started)!r} + str(i)) for i in range(2)):
            time.sleep(0.01)
        print("leaving", [f.done() for f in futures])
    """)
    out = run_python(code, timeout=120)
    assert "leaving [False, False]" in out.stdout
    pids = [int((tmp_path / f"started{i}").read_text()) for i in range(2)]
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                             for p in pids),
             timeout=20, message="the workers running the pending calls to end")


def test_a_package_missing_where_a_task_ran_is_named_with_the_machine():
    from pythagoras_p2p.integrations.joblib_backend import _clear

    missing = ModuleNotFoundError("No module named 'xgboost'", name="xgboost")
    missing.add_note("raised by joblib_task(...) on laptop-3/node-ab12:w1; remote traceback above")
    clear = _clear(missing)
    assert isinstance(clear, ModuleNotFoundError) and clear.name == "xgboost"
    assert "'xgboost'" in str(clear) and "laptop-3/node-ab12:w1" in str(clear)
    assert "requires=" in str(clear) and clear.__cause__ is missing
    other = KeyError("x")
    assert _clear(other) is other


def test_inside_a_task_joblib_runs_sequentially(cloud):
    def inner_backend():
        import joblib

        backend, _ = joblib.parallel.get_active_backend()
        return type(backend).__name__

    with joblib.parallel_config(backend="pythagoras-test", n_jobs=2):
        assert joblib.Parallel()(joblib.delayed(inner_backend)() for _ in range(2)) == [
            "SequentialBackend"] * 2
