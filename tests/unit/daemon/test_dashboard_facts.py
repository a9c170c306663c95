"""What a node keeps for ``pythagoras-node dashboard``: its history of the swarm, the runs its
callers report, the last failures; and what a client reports of its runs."""

from __future__ import annotations

import time

from pythagoras_p2p.daemon.history import FIELDS, History
from pythagoras_p2p.daemon.reports import Reports

from pythagoras_p2p.execution.outcomes import Crashed, Failed, Ok
from pythagoras_p2p.execution.progress import ProgressBar, open_runs


def _row(node: str, asked: int, done: int, hits: int, busy: int = 0, workers: int = 2) -> dict:
    return {"id": node, "asked": asked, "tasks_done": done, "hits": hits, "workers_busy": busy,
            "workers_total": workers}


def _fields(sample: tuple) -> dict:
    return dict(zip(FIELDS, sample, strict=True))


def test_history_counts_what_changed_since_the_sample_before_node_by_node():
    history = History(every=0.5)
    history.sample([_row("a", 10, 8, 2), _row("b", 5, 5, 0)], now=100.0)
    history.sample([_row("a", 16, 12, 4, busy=2), _row("b", 9, 9, 1, busy=1)], now=101.0)
    history.sample([_row("a", 16, 12, 4), _row("b", 3, 2, 0), _row("c", 50, 50, 50)], now=102.0)
    first, second, third = map(_fields, history.since(None))
    assert (first["calls"], first["done"], first["hits"]) == (0, 0, 0)  # counted before it watched
    assert (second["calls"], second["done"], second["hits"]) == (10, 8, 3)
    assert (second["busy"], second["workers"], second["nodes"]) == (3, 4, 2)
    # b restarted (its counters went back): what it counted since; c is new: nothing yet
    assert (third["calls"], third["done"], third["hits"], third["nodes"]) == (3, 2, 0, 3)
    assert [s[0] for s in history.since(100.5)] == [101.0, 102.0]
    assert history.since(102.0) == []


def test_history_keeps_fifteen_minutes_and_samples_at_most_once_per_interval():
    history = History(keep=10, every=1.0)
    assert history.samples.maxlen == 11
    assert history.sample([_row("a", 1, 1, 0)], now=1.0)
    assert not history.sample([_row("a", 2, 2, 0)], now=1.1)  # too soon: not a sample
    assert len(history.samples) == 1


def test_reports_keep_what_a_caller_says_of_its_runs_and_leave_out_what_does_not_parse():
    reports = Reports()
    good = {"run": "1f.2", "function": "train", "total": 40, "done": 12, "failed": 1,
            "elapsed": 3.5, "ended": False}
    bad = [{"run": 3}, {"run": "x", "function": "f", "done": -1}, "run", None,
           {"run": "y", "function": "f", "total": True}]
    reports.heard(b"\x01" * 5, "ann@laptop pid 7", [good, *bad])
    reports.heard(b"\x02" * 5, 12345, "not a list")  # malformed fields: kept as nothing
    reports.heard(b"\x03" * 5, None, None)  # a node's heartbeat: no caller at all
    runs = reports.runs()
    assert runs == [{**good, "caller": "01010101", "who": "ann@laptop pid 7"}]
    assert reports.names() == {"01010101": "ann@laptop pid 7"}


def test_reports_forget_a_caller_that_stopped_reporting(monkeypatch):
    from pythagoras_p2p.daemon import reports as module

    reports = Reports()
    reports.heard(b"\x01", "bo", [{"run": "r", "function": "f", "total": 1, "done": 0}])
    assert reports.runs()
    later = time.monotonic() + module.FORGET_AFTER + 1
    monkeypatch.setattr(module.time, "monotonic", lambda: later)
    assert reports.runs() == []


def test_reports_keep_the_last_failures_with_their_tracebacks_and_only_failures():
    reports = Reports()
    reports.ended("n1", "f(x=1)", Ok(b"\0" * 32, b"", {}))
    reports.ended("n1", "f(x=2)", Failed(None, "ValueError", "bad", "Traceback...\nValueError: bad", "h/w0"))
    reports.ended("n1", "f(x=3)", Crashed("the worker died (signal 9)"))
    failures = list(reports.failures)
    assert [f["call"] for f in failures] == ["f(x=2)", "f(x=3)"]
    assert failures[0]["traceback"].endswith("ValueError: bad") and failures[0]["where"] == "h/w0"
    assert failures[1]["error"] == "crashed" and "signal 9" in failures[1]["message"]
    for i in range(50):
        reports.ended("n1", f"g(i={i})", Crashed("x"))
    assert len(reports.failures) == 20 and reports.failures[-1]["call"] == "g(i=49)"


def test_open_runs_are_a_clouds_own_with_done_failed_and_a_closed_one_for_a_moment():
    mine, other = object(), object()
    bar = ProgressBar("train", 10, enabled=False, owner=mine)
    ProgressBar("other", 5, enabled=False, owner=other)
    bar.advance(4, failed=1)
    (run,) = open_runs(mine)
    assert (run["function"], run["total"], run["done"], run["failed"], run["ended"]) == \
        ("train", 10, 4, 1, False)
    bar.advance(6)
    bar.close()
    (run,) = open_runs(mine)
    assert run["done"] == 10 and run["ended"] is True


def test_a_swarm_client_adds_its_open_runs_to_a_ping_once_a_second_while_there_are_any():
    from pythagoras_p2p.swarm.connections import Connections
    from pythagoras_p2p.swarm.peers import PING_EVERY

    runs: list[dict] = []
    connections = Connections(None, None, {}, [], lost=lambda peer, why: None)
    assert connections._report(100.0) == {}  # no cloud set it up: nothing to say
    connections.reports = lambda: list(runs)
    assert connections._report(100.0) == {}  # no run open: a ping as before
    runs.append({"run": "1.1", "function": "f", "total": 3, "done": 1, "failed": 0})
    said = connections._report(100.0)
    assert said["runs"] == runs and "pid" in said["caller"]
    assert connections._report(100.0 + PING_EVERY / 2) == {}  # once a second at most
    assert connections._report(100.0 + PING_EVERY)["runs"] == runs
