"""Resources across a swarm: calls go only where the resources they ask for are, and hold them.

One LAN of three hosts (two workers each) serves the module; only host 1's node is started with
``--resources license=1`` (a custom resource, say a licence server's seat) (through ``PYTHAGORAS_RESOURCES``). Where and when each call ran is read
from the marks it leaves (see ``clients.py``); overlaps from their start and end times.
"""

from __future__ import annotations

import json
import os
import time

import psutil
import pytest
from clients import Client, whole_swarm_known
from helpers import wait_for
from netns import start_lan

SPANS = """
    @cloud.add_pure_function(resources=RESOURCES)
    def held(*, x, pause, marks):
        import json, os, time, uuid
        start = time.time()
        time.sleep(pause)
        path = os.path.join(marks, f"{x}.{uuid.uuid4().hex}")
        with open(path + ".tmp", "w") as f:
            json.dump({"x": x, "home": os.environ["PYTHAGORAS_HOME"], "start": start,
                       "end": time.time()}, f)
        os.rename(path + ".tmp", path)
        return x
"""


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    lan = start_lan(tmp_path_factory.mktemp("resources") / "lan", 3,
                    node_env={1: {"PYTHAGORAS_RESOURCES": "license=1"}})
    try:
        whole_swarm_known(lan)
        yield lan
    finally:
        lan.close()


def spans(folder) -> list[dict]:
    return [json.loads((folder / name).read_text()) for name in os.listdir(folder)
            if not name.endswith(".tmp")]


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_only_the_node_with_a_licence_runs_its_calls_one_at_a_time(lan, tmp_path):
    gpu_marks, plain_marks = tmp_path / "gpu", tmp_path / "plain"
    gpu_marks.mkdir()
    plain_marks.mkdir()
    out = Client(lan.hosts[0], "    RESOURCES = {'license': 1}\n" + SPANS + f"""
    futures = held.async_parallel(kw_args(x=i, pause=0.4, marks={str(gpu_marks)!r}) for i in range(4))
    plain = where.sync_parallel(kw_args(x=100 + i, pause=0.3, marks={str(plain_marks)!r})
                                for i in range(12))
    emit(gpu=[f.result(120) for f in futures], plain=[r[0] for r in plain])
    """).result()
    assert out["gpu"] == [0, 1, 2, 3]
    assert out["plain"] == [(100 + i) ** 2 for i in range(12)]
    done = spans(gpu_marks)
    assert {s["home"] for s in done} == {str(lan.hosts[1].home)}
    assert not any(overlapping(a, b) for a in done for b in done if a is not b)
    homes = {json.loads((plain_marks / n).read_text())["home"] for n in os.listdir(plain_marks)
             if not n.endswith(".tmp")}
    assert homes == {str(h.home) for h in lan.hosts}  # plain calls used every host


def test_status_shows_what_a_node_has_and_what_its_calls_hold(lan, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    node = lan.hosts[1].status()["node"]
    assert node["resources"]["license"] == 1 and node["resources"]["cpus"] == 2
    assert node["resources"]["memory"] > 0
    client = Client(lan.hosts[2], "    RESOURCES = {'license': 1}\n" + SPANS + f"""
    emit(result=held.sync_remote(x=7, pause=3, marks={str(marks)!r}))
    """)
    wait_for(lambda: lan.hosts[1].status()["node"]["resources_in_use"].get("license") == 1,
             message="host 1 to show its licence held")
    assert client.result()["result"] == 7
    wait_for(lambda: not lan.hosts[1].status()["node"]["resources_in_use"].get("license"),
             message="the licence to be let go")
    peers = lan.hosts[0].status()["peers"]  # the others see it too, through the heartbeat
    wait_for(lambda: any(p.get("resources", {}).get("license") == 1
                         for p in lan.hosts[0].status()["peers"]),
             message="host 0 to know host 1's resources")
    assert peers


def test_a_call_no_node_could_ever_run_fails_fast_naming_the_resource(lan):
    t0 = time.monotonic()
    out = Client(lan.hosts[0], "    RESOURCES = {'license': 2}\n" + SPANS + """
    try:
        held.sync_remote(x=1, pause=0, marks="/nonexistent")
    except ResourcesError as exc:
        emit(error=str(exc))
    """).result()
    assert time.monotonic() - t0 < 30  # the client's start-up included
    assert "license=2" in out["error"] and "license=1" in out["error"]  # asked, and what host 1 has
    assert "--resources" in out["error"]


def test_memory_reservations_keep_two_big_calls_off_one_node(lan, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    big = int(psutil.virtual_memory().total * 0.6)
    out = Client(lan.hosts[0], f"    RESOURCES = {{'memory': {big}}}\n" + SPANS + f"""
    emit(done=held.sync_parallel(kw_args(x=i, pause=0.5, marks={str(marks)!r}) for i in range(6)))
    """).result()
    assert out["done"] == list(range(6))
    done = spans(marks)
    for a in done:
        for b in done:
            if a is not b and overlapping(a, b):
                assert a["home"] != b["home"], (a, b)


def test_a_node_refuses_bad_resources_at_start(lan):
    for bad in ("gpu=1", "license=-1", "=3", "a=b"):
        result = lan.hosts[0].cli("start", "--resources", bad, "--port", "7999")
        assert result.returncode == 2, result
        assert "Error:" in result.stderr and bad in result.stderr, result.stderr
