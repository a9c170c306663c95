"""``pythagoras-node dashboard``'s snapshot: what the page is told of the swarm, from statuses."""

from __future__ import annotations

import json

from pythagoras_p2p.cli.web.gather import snapshot
from pythagoras_p2p.daemon.history import FIELDS


def _row(node: str, **extra) -> dict:
    row = {"id": node, "address": f"10.0.0.{len(node)}:7575", "hostname": f"host-{node}",
           "workers_busy": 1, "workers_total": 4, "cache_entries": 10, "cache_bytes": 1000,
           "hit_rate": 0.5, "last_seen_s": 0.3, "replication": {"replicas": 2, "settled": True},
           "callers": [], "resources": {"cpus": 4, "gpus": 1}, "resources_in_use": {"gpus": 1}}
    row.update(extra)
    return row


def _status(peers: list, **extra) -> dict:
    me = next(p for p in peers if p.get("self"))
    return {"node": {**me, "swarm": "lab", "tag": "0123456789abcdef"}, "peers": peers, **extra}


def test_each_node_shows_its_state_and_why():
    peers = [_row("a", self=True), _row("b", paused="paused by its owner", paused_since=5.0),
             _row("c", stopping=True, replication={"handover": "3 of 9 sent"}),
             _row("d", last_seen_s=4.0)]
    departed = [{"id": "e", "address": "10.0.0.9:7575", "hostname": "host-e", "state": "lost",
                 "since": 9.0}, {"id": "f", "address": "x:1", "hostname": None, "state": "left"}]
    snap = snapshot(_status(peers, departed=departed), [], [], {})
    shown = {n["hostname"]: (n["state"], n["why"]) for n in snap["nodes"]}
    assert shown["host-a"] == ("serving", "")
    assert shown["host-b"] == ("paused", "paused by its owner")
    assert shown["host-c"] == ("stopping", "hand-over 3 of 9 sent")
    assert shown["host-d"][0] == "silent"
    assert shown["host-e"][0] == "lost" and shown["x:1"][0] == "left"
    assert snap["nodes"][0]["self"] and snap["nodes"][0]["held"] == "gpus 1/1"


def test_runs_reported_to_several_nodes_show_once_with_the_furthest_count_and_an_eta():
    run = {"run": "1f.1", "function": "train", "total": 100, "done": 20, "failed": 1,
           "elapsed": 10.0, "ended": False, "caller": "aa", "who": "ann@laptop pid 7"}
    same_pid_elsewhere = {**run, "who": "bo@desk pid 7", "done": 5}
    status = _status([_row("a", self=True), _row("b")], runs=[run])
    details = {"a": (0.0, status), "b": (0.0, {"runs": [{**run, "done": 25}, same_pid_elsewhere]})}
    runs = snapshot(status, [], [], details)["runs"]
    assert [(r["who"], r["done"]) for r in runs] == [("ann@laptop pid 7", 25), ("bo@desk pid 7", 5)]
    assert runs[0]["eta"] == 30.0  # 25 done in 10 s: 75 more take 30 s


def test_callers_are_named_by_the_node_that_serves_them():
    peers = [_row("a", self=True, callers=[{"caller": "0a0a", "queued": 3, "running": 2, "done": 1}]),
             _row("b", callers=[{"caller": "0a0a", "queued": 0, "running": 1, "done": 0}])]
    details = {"a": (0.0, {"callers_named": {"0a0a": "ann@laptop pid 7"}})}
    nodes = {n["id"]: n for n in snapshot(_status(peers), [], [], details)["nodes"]}
    assert nodes["a"]["callers"][0]["who"] == "ann@laptop pid 7"
    assert nodes["b"]["callers"][0]["who"] == "caller 0a0a"  # b's 0a0a is another connection


def test_cache_sums_functions_over_nodes_and_the_hit_rate_of_recent_samples():
    import time

    now = time.time()
    samples = [(now - 1000, 100, 0, 100, 0, 4, 1), (now - 2, 10, 5, 5, 1, 4, 1),
               (now - 1, 30, 20, 10, 2, 4, 1)]
    details = {"a": (0, {"functions": [{"function": "f", "results": 3, "bytes": 30}]}),
               "b": (0, {"functions": [{"function": "f", "results": 2, "bytes": 20},
                                       {"function": "g", "results": 1, "bytes": 99}]})}
    cache = snapshot(_status([_row("a", self=True), _row("b")]), samples, list(FIELDS), details)["cache"]
    assert cache["functions"] == [{"function": "g", "results": 1, "bytes": 99},
                                  {"function": "f", "results": 5, "bytes": 50}]
    assert cache["hit_rate"] == 15 / 40  # the old sample is outside the window
    assert (cache["results"], cache["bytes"]) == (20, 2000)


def test_a_snapshot_holds_no_key_or_tag():
    status = _status([_row("a", self=True)])
    text = json.dumps(snapshot(status, [], [], {}))
    assert "0123456789abcdef" not in text and "secret" not in text


def test_without_its_extra_the_command_says_how_to_install_it(monkeypatch, tmp_path):
    import sys

    from click.testing import CliRunner
    from pythagoras_p2p.cli.main import cli

    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if not installed
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "dashboard"])
    assert result.exit_code == 1
    assert 'pip install "pythagoras_p2p[dashboard]"' in result.output


def test_each_node_shows_its_owner_from_the_signed_member_list():
    departed = [{"id": "c", "address": "x:1", "hostname": "host-c", "state": "lost"}]
    members = [{"node_id": "a", "owner": "ann", "removed": False},
               {"node_id": "c", "owner": "cy", "removed": False},
               {"node_id": "b", "owner": "bo", "removed": True},  # removed: not shown as b's
               {"node_id": "", "owner": "dee", "removed": False}]  # a client without a node
    status = _status([_row("a", self=True), _row("b")], members=members, departed=departed)
    owners = {n["id"]: n["owner"] for n in snapshot(status, [], [], {})["nodes"]}
    assert owners == {"a": "ann", "b": "", "c": "cy"}
