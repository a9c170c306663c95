"""Futures and scikit-learn on a swarm: cancelling on peers, exiting with futures pending, and
``GridSearchCV`` through the joblib backend on every host.

One LAN of three hosts (two workers each) serves the whole module; each test uses calls of its
own, so none is a cache hit for another.
"""

from __future__ import annotations

import pytest
from clients import Client, read_marks, whole_swarm_known
from helpers import wait_for
from netns import start_lan

pytest.importorskip("sklearn", reason="the joblib backend's tests need scikit-learn (the test extra)")


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    lan = start_lan(tmp_path_factory.mktemp("ecosystem") / "lan", 3)
    try:
        whole_swarm_known(lan)
        yield lan
    finally:
        lan.close()


def _busy(lan) -> int:
    return sum(h.status()["node"]["workers_busy"] for h in lan.hosts)


def _done(lan) -> list[int]:
    return [h.status()["node"]["tasks_done"] for h in lan.hosts]


def test_cancelling_futures_stops_their_calls_on_the_peers(lan, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    client = Client(lan.hosts[0], f"""
        futures = where.async_parallel(kw_args(x=x, pause=120, marks={str(marks)!r})
                                       for x in range(3))
        emit(started=True)
        wait_file({str(tmp_path / "go")!r})
        emit(cancelled=[f.cancel() for f in futures])
        emit(results=where.sync_parallel([kw_args(x=x, pause=0) for x in range(10, 16)]))
    """)
    client.wait_emit("started")
    wait_for(lambda: len(read_marks(marks)) == 3, message="the three calls to start")
    assert _busy(lan) == 3
    (tmp_path / "go").touch()
    assert client.wait_emit("cancelled")["cancelled"] == [True, True, True]
    wait_for(lambda: _busy(lan) == 0, timeout=20, message="the peers to stop the cancelled calls")
    assert [r[0] for r in client.result()["results"]] == [x * x for x in range(10, 16)]
    assert len(read_marks(marks)) == 3  # none ran again


def test_a_client_that_exits_with_futures_pending_leaves_nothing_running(lan, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    client = Client(lan.hosts[1], f"""
        futures = where.async_parallel(kw_args(x=x, pause=120, marks={str(marks)!r})
                                       for x in range(100, 104))
        wait_file({str(tmp_path / "go")!r})
        emit(leaving=[f.done() for f in futures])
    """)
    wait_for(lambda: len(read_marks(marks)) == 4, message="the four calls to start")
    (tmp_path / "go").touch()
    assert client.result()["leaving"] == [False] * 4
    wait_for(lambda: _busy(lan) == 0, timeout=20, message="every node to stop the calls")


GRID_SEARCH = """
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    register_joblib_backend(cloud=cloud)
    X, y = load_digits(return_X_y=True)
    grid = {"C": [1, 10, 100], "gamma": [0.0005, 0.001]}
    serial = GridSearchCV(SVC(), grid, cv=4, n_jobs=1).fit(X, y)

    def search(**config):
        with joblib.parallel_config(backend="pythagoras", n_jobs=-1, **config):
            found = GridSearchCV(SVC(), grid, cv=4).fit(X, y)
        return {"scores": found.cv_results_["mean_test_score"].tolist(),
                "params": [sorted(p.items()) for p in found.cv_results_["params"]],
                "best": sorted(found.best_params_.items())}

    expected = {"scores": serial.cv_results_["mean_test_score"].tolist(),
                "params": [sorted(p.items()) for p in serial.cv_results_["params"]],
                "best": sorted(serial.best_params_.items())}
"""


def test_grid_search_through_the_joblib_backend_runs_on_every_host(lan):
    before = _done(lan)
    out = Client(lan.hosts[0], GRID_SEARCH + """
    emit(plain=search(), expected=expected)
    """).result(timeout=300)
    assert out["plain"] == out["expected"]  # the same numbers as n_jobs=1, exactly
    ran = [a - b for a, b in zip(_done(lan), before, strict=True)]
    assert all(n > 0 for n in ran), ran  # every host took tasks (24 fits, 6 workers)
    assert sum(ran) <= 24


def test_a_memoized_grid_search_rerun_executes_nothing(lan):
    first = Client(lan.hosts[2], GRID_SEARCH + """
    emit(first=search(memoize=True), expected=expected)
    """).result(timeout=300)
    assert first["first"] == first["expected"]
    before = _done(lan)
    # another process, on another host: the results are found in the swarm, nothing runs
    again = Client(lan.hosts[1], GRID_SEARCH + """
    emit(again=search(memoize=True), expected=expected)
    """).result(timeout=300)
    assert again["again"] == again["expected"]
    assert _done(lan) == before
