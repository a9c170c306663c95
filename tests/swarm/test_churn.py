"""Stored results are found by a client that does not know the swarm yet, on namespace hosts.

One LAN of five hosts serves the module (``--replicas 3``, the default: each node holds only
part of the results). Host 0 computes 300 calls; then 60 of them are asked again from a machine
with no node that names one peer (``connection=``), from host 1 while its node is dead (the
client starts at once, finding the swarm on mDNS), and as soon as its restarted node serves (a
node that has just started does not know the others yet: it answers lookups as not settled,
and the client learns the swarm from it before it trusts a miss); also from a host whose node
is up (the control) and from a new client 10 s after its node was killed. Each time, no call
runs again: every execution leaves a marker file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from clients import WHERE, Client, read_marks, whole_swarm_known
from helpers import wait_for
from netns import start_lan

R = 3
CALLS = 300
ASKED = 60

#: Run in a host before its node starts: as soon as the node serves, one lookup; its ``settled``.
PROBE = textwrap.dedent('''
    import json, os, time
    from pythagoras_p2p.net.nodefile import local_node_address, read_node_file
    from pythagoras_p2p.net.rpc import request
    from pythagoras_p2p.net.security import load_key
    from pythagoras_p2p.net.sockets import endpoint

    home = os.environ["PYTHAGORAS_HOME"]
    key = load_key(home)
    deadline = time.monotonic() + 60
    while read_node_file(home) is None and time.monotonic() < deadline:
        time.sleep(0.005)
    reply = request(endpoint(*local_node_address(home)), key, "lookup", timeout=10,
                    calls=["00" * 32])
    print(json.dumps({"settled": reply.fields.get("settled")}), flush=True)
''')


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    root = tmp_path_factory.mktemp("churn")
    lan = start_lan(root / "lan", 5, workers=1)
    try:
        for host in lan.hosts:  # every node sees every other: their views, and so the homes, agree
            whole_swarm_known(lan, host.index)
        yield lan
    finally:
        lan.close()


@pytest.fixture(scope="module")
def computed(lan):
    """The marks folder of 300 calls computed from host 0, each result on its R homes."""
    marks = lan.root / "marks"
    marks.mkdir()
    out = Client(lan.hosts[0], WHERE + textwrap.dedent(f"""
        results = where.sync_parallel(kw_args(x=i, marks={str(marks)!r}) for i in range({CALLS}))
        emit(results=[r[0] for r in results])
    """)).result()
    assert out["results"] == [i * i for i in range(CALLS)]
    assert len(read_marks(marks)) == CALLS

    def replication(host) -> dict:
        return host.status()["node"]["replication"]

    def on_their_homes() -> bool:
        facts = [replication(h) for h in lan.hosts]
        return (all(f["settled"] and not f["under_replicated"] for f in facts)
                and sum(f["homed"] for f in facts) == R * CALLS)

    wait_for(on_their_homes, 60, interval=0.2, message="R copies of every result")
    return marks


def _ask_again(host, marks, first: int, *, cloud: str = "cloud = PCloud()",
               env: dict | None = None) -> None:
    """Ask 60 of the stored calls from ``host`` (from ``first`` on: those a client of this host
    asked before are in its store now): all answered, none computed again."""
    before = len(read_marks(marks))
    client = Client(host, textwrap.dedent(f"""
        results = where.sync_parallel(kw_args(x=i, marks={str(marks)!r})
                                      for i in range({first}, {first + ASKED}))
        emit(results=[r[0] for r in results])
    """), cloud=cloud, env=env)
    assert client.result(timeout=90)["results"] == [i * i for i in range(first, first + ASKED)]
    again = read_marks(marks)[before:]
    assert not again, f"{len(again)} of {ASKED} stored calls ran again:\n{client.stderr()}"


def test_a_client_with_no_node_naming_one_peer_finds_the_results(lan, computed):
    h3, h2 = lan.hosts[3], lan.hosts[2]
    home = lan.root / "laptop"  # a machine with no node: a home with its own member keys
    lan.admit(home)
    _ask_again(h3, computed, 0, cloud=f"cloud = PCloud(connection={h2.ip + ':7575'!r})",
               env={"PYTHAGORAS_HOME": str(home)})


def test_a_client_whose_node_is_up_finds_the_results(lan, computed):
    _ask_again(lan.hosts[4], computed, 3 * ASKED)  # the control


def test_a_client_whose_node_was_just_killed_finds_the_results(lan, computed):
    h1 = lan.hosts[1]
    h1.kill_node()
    killed = time.monotonic()
    _ask_again(h1, computed, 0)  # at once: the client finds the swarm on mDNS
    # The scenario, not a wait for a result: a new client process 10 s after the kill, when
    # the dead node's mDNS record is still listed.
    wait_for(lambda: time.monotonic() - killed >= 10, 30, interval=0.1, message="10 s")
    _ask_again(h1, computed, 2 * ASKED)


def test_a_just_started_node_is_not_settled_and_its_client_finds_the_results(lan, computed):
    h1 = lan.hosts[1]
    probe = h1.popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, text=True)
    h1.start_node(workers=1)
    wait_for(lambda: h1.node_info() is not None, 30, interval=0.01, message="the node to serve")
    _ask_again(h1, computed, ASKED)  # as soon as it serves: it knows no other node yet
    out, _ = probe.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1]) == {"settled": False}


def test_a_frozen_member_does_not_leave_a_result_with_one_copy(lan, computed):
    """The node that runs a call sends its second copy to another member before it answers: a
    member that does not confirm (frozen) is replaced by the next one, and no result is
    answered with one copy (README: "Results outlive the machine that computed them")."""
    h2, h3, h4 = lan.hosts[2], lan.hosts[3], lan.hosts[4]
    home = lan.root / "laptop2"  # no node here: the node that runs a call makes the second copy
    lan.admit(home)
    go = lan.root / "go-frozen"
    client = Client(h3, textwrap.dedent(f"""
        cloud._results.elsewhere([bytes(32)])  # returns once the swarm is known
        emit(ready=True)
        wait_file({str(go)!r})
        results = where.sync_parallel(kw_args(x=i) for i in range(5000, 5040))
        emit(results=[r[0] for r in results])
    """), cloud=f"cloud = PCloud(connection={h2.ip + ':7575'!r})",
        env={"PYTHAGORAS_HOME": str(home), "PYTHAGORAS_LOOKUP_TIMEOUT": "0.3"})
    client.wait_emit("ready")
    before = h2.status()["node"]["replication"]
    h4.signal_tree(signal.SIGSTOP)
    try:
        go.touch()
        assert client.result(timeout=60)["results"] == [i * i for i in range(5000, 5040)]
        after = h2.status()["node"]["replication"]
    finally:
        h4.signal_tree(signal.SIGCONT)
    assert after["copies_retried"] > before["copies_retried"]  # some went to h4 first
    assert after["late_acks"] == before["late_acks"]
