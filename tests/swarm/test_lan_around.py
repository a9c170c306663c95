"""A swarm among other machines on namespace hosts: scoped forgetting, another swarm next door,
a node that stops saying so, and a swarm too small for the copies asked.

One LAN of four hosts serves the module: hosts 0–2 are one swarm (``--replicas 3``), host 3 is
a swarm of its own (another key) on the same network. The tests run in file order and build on
each other; the last one stops host 2.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from clients import WHERE, Client
from helpers import wait_for
from netns import start_lan

R = 3


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    from pythagoras_p2p.net.security import create_key

    root = tmp_path_factory.mktemp("lan-around")
    lan = start_lan(root / "lan", 4, start=False)
    try:
        create_key(lan.hosts[3].home, name="next-door", force=True)  # another swarm
        for host in lan.hosts:
            host.start_node(workers=1, extra=["--replicas", str(R)])
        wait_for(lambda: all(h.node_info() for h in lan.hosts), 30, message="nodes to serve")
        team = {h.node_info()["id"] for h in lan.hosts[:3]}
        for host in lan.hosts[:3]:
            wait_for(lambda host=host: {p["id"] for p in host.status()["peers"]} == team, 30,
                     interval=0.1, message=f"host {host.index} to list the swarm's nodes")
        yield lan
    finally:
        lan.close()


def _held(host, name: str) -> int:
    out = host.cli("cache", "ls", name, "--json")
    assert out.returncode == 0, out.stderr
    return sum(e["results"] for e in json.loads(out.stdout))


def test_a_node_says_once_that_another_swarm_is_on_its_network(lan):
    lonely = lan.hosts[3]

    def heard():
        others = lonely.status()["node"]["other_swarms"]
        return others if others and others[0]["nodes"] == 3 else None

    others = wait_for(heard, 30, interval=0.2, message="host 3 to hear the other swarm's nodes")
    assert sorted(others[0]["addresses"]) == sorted(h.ip for h in lan.hosts[:3])
    assert "3 nodes of another swarm" in others[0]["notice"] and "to join it" in others[0]["notice"]
    assert "pythagoras-node join" in others[0]["notice"]
    shown = lonely.cli("status")
    assert shown.returncode == 0 and "of another swarm" in shown.stdout, shown.stdout
    # and the swarm's nodes hear host 3: one node of another swarm, said once in the log
    wait_for(lambda: "1 node of another swarm" in lan.hosts[0].log.read_text() or None, 30,
             interval=0.2, message="host 0 to log the other swarm's node")
    assert lonely.log.read_text().count("of another swarm") == 1
    assert lan.hosts[0].status()["node"]["other_swarms"][0]["addresses"] == [lonely.ip]


def test_cache_forget_without_swarm_leaves_the_peers_stores_alone(lan):
    h0, h1, h2 = lan.hosts[:3]
    out = Client(h0, WHERE + textwrap.dedent("""
        results = where.sync_parallel(kw_args(x=i) for i in range(12))
        emit(results=[r[0] for r in results], name=where.qualified_name)
    """)).result()
    assert out["results"] == [i * i for i in range(12)]
    name = out["name"]
    wait_for(lambda: all(_held(h, name) == 12 for h in (h0, h1, h2)) or None, 60, interval=0.2,
             message="every node (R = 3 of 3) to hold the 12 results")
    done = h0.cli("cache", "forget", name)
    assert done.returncode == 0, done.stderr
    assert "deleting 12 result(s)" in done.stdout and "forgot 12 results" in done.stdout
    assert _held(h1, name) == 12 and _held(h2, name) == 12  # the peers' stores are untouched
    assert "forgot" not in h1.log.read_text() and "forgot" not in h2.log.read_text()


def test_a_stopped_node_is_logged_as_left_not_dead(lan):
    h0, h1, h2 = lan.hosts[:3]
    gone = h2.node_info()["id"]
    assert _copies(h0).get("fewer_copies") is None  # three members live, three copies asked
    stopped = h2.cli("stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    for host in (h0, h1):
        wait_for(lambda host=host: f"peer {gone}" in host.log.read_text() or None, 30,
                 interval=0.1, message=f"host {host.index} to log that host 2 left")
        lines = [line for line in host.log.read_text().splitlines() if f"peer {gone}" in line]
        assert any(line.endswith("left") for line in lines), lines
        assert not any("silent for" in line for line in lines), lines


def test_status_says_results_have_fewer_copies_than_asked(lan):
    h0 = lan.hosts[0]
    copies = wait_for(lambda: _copies(h0) if _copies(h0).get("members_live") == 2 else None, 30,
                      interval=0.2, message="host 0 to count two live members")
    assert copies["copies"] == 2 and "fewer than the 3 asked" in copies["fewer_copies"]
    shown = h0.cli("status")
    assert shown.returncode == 0 and "fewer than the 3 asked" in shown.stdout, shown.stdout


def _copies(host) -> dict:
    return host.status()["node"]["replication"]
