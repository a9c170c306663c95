"""The replicated cache on namespace hosts: results outlive the machines that computed them.

One LAN of five hosts serves the module (``--replicas 3``); hosts 0–3 start with it, host 4
joins late. The tests run in file order and build on each other: lookups of a stable swarm
ask at most R nodes; a batch computed from host 0 survives ``kill -9`` of hosts 0 and 1, a
graceful stop of host 2 hands over to host 3, and host 4, joining, receives its share; a copy
that does not match its address is refused.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from clients import WHERE, Client, read_marks, whole_swarm_known
from helpers import wait_for
from netns import start_lan

R = 3
BATCH = 40


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    root = tmp_path_factory.mktemp("replication")
    lan = start_lan(root / "lan", 5, start=False)
    try:
        for host in lan.hosts[:4]:
            host.start_node(workers=1, extra=["--replicas", str(R)])
        wait_for(lambda: all(h.node_info() for h in lan.hosts[:4]), 30, message="nodes to serve")
        whole_swarm_known(lan)
        yield lan
    finally:
        lan.close()


def _replication(host) -> dict:
    return host.status()["node"]["replication"]


def _settled(hosts) -> bool:
    return all(_replication(h)["settled"] and not _replication(h)["under_replicated"] for h in hosts)


def test_lookups_of_a_stable_swarm_ask_at_most_r_nodes(lan):
    hosts = lan.hosts[:4]
    for host in hosts:  # every node sees every other: their views, and so the homes, agree
        whole_swarm_known(lan, host.index)
    wait_for(lambda: _settled(hosts), 60, interval=0.2, message="every node to be settled")
    client = Client(hosts[0], WHERE + textwrap.dedent("""
        import time
        deadline = time.monotonic() + 30
        while len(cloud.ready_peers()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        emit(ready=len(cloud.ready_peers()))
        wait_file(os.environ["GO"])
        for i in range(10):  # ten misses, one lookup round each
            cloud._results.elsewhere([bytes([i]) * 32])
        emit(done=True)
    """), env={"GO": str(lan.root / "go-lookups")})
    assert client.wait_emit("ready")["ready"] == 4
    before = sum(h.status()["node"]["lookups"] for h in hosts)
    (lan.root / "go-lookups").touch()
    client.result()
    asked = sum(h.status()["node"]["lookups"] for h in hosts) - before
    assert asked <= 10 * R, asked  # the fan-out to every node would be 40


def test_results_outlive_the_hosts_that_computed_them(lan):
    h0, h1, h2, h3, h4 = lan.hosts
    marks = lan.root / "marks-churn"
    marks.mkdir()
    out = Client(h0, WHERE + textwrap.dedent(f"""
        results = where.sync_parallel(kw_args(x=i, marks={str(marks)!r}) for i in range(1000, 1000 + {BATCH}))
        emit(results=[r[0] for r in results])
    """)).result()
    assert out["results"] == [i * i for i in range(1000, 1000 + BATCH)]
    ran = len(read_marks(marks))
    assert ran == BATCH
    live = [h0, h1, h2, h3]
    # Within seconds, every result is on its R homes: each node holds what it is a home of.
    wait_for(lambda: _settled(live) and sum(_replication(h)["homed"] for h in live)
             == R * _replication(h0)["held"], 60, interval=0.2, message="R copies of every result")

    # kill -9 the caller's host and one more: the survivors answer everything, computing nothing.
    h0.kill_node()
    h1.kill_node()
    ids = {h2.node_info()["id"], h3.node_info()["id"]}
    wait_for(lambda: {p["id"] for p in h3.status()["peers"]} == ids, 30, interval=0.2,
             message="the survivors to see each other only")

    def ask_all(host) -> list:
        return Client(host, WHERE + textwrap.dedent(f"""
            results = where.sync_parallel(kw_args(x=i, marks={str(marks)!r}) for i in range(1000, 1000 + {BATCH}))
            emit(results=[r[0] for r in results])
        """)).result()["results"]

    assert ask_all(h3) == [i * i for i in range(1000, 1000 + BATCH)]
    assert len(read_marks(marks)) == ran  # no call ran again

    # A graceful stop of a third hands over: the last node still answers everything.
    stopped = h2.cli("stop", "--timeout", "60", timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    assert "hand-over done" in h2.log.read_text()
    wait_for(lambda: {p["id"] for p in h3.status()["peers"]} == {h3.node_info()["id"]}, 30,
             interval=0.2, message="the last node to be alone")
    wait_for(lambda: _replication(h3)["held"] >= BATCH, 30, interval=0.2,
             message="the last node to hold every result")
    assert ask_all(h3) == [i * i for i in range(1000, 1000 + BATCH)]
    assert len(read_marks(marks)) == ran

    # A node that joins receives its share (with two members and R = 3: everything).
    h4.start_node(workers=1, extra=["--replicas", str(R)])
    wait_for(lambda: h4.node_info() is not None, 30, message="the new node to serve")
    held = _replication(h3)["held"]
    wait_for(lambda: _replication(h4)["held"] >= held, 60, interval=0.2,
             message="the new node to receive its share")
    h3.kill_node()
    assert ask_all(h4) == [i * i for i in range(1000, 1000 + BATCH)]
    assert len(read_marks(marks)) == ran


def test_a_copy_that_does_not_match_its_address_is_refused(lan):
    h4 = lan.hosts[4]
    if h4.node_info() is None:  # run on its own: the host that joins late has not joined yet
        h4.start_node(workers=1, extra=["--replicas", str(R)])
        wait_for(lambda: h4.node_info() is not None, 30, message="host 4's node to serve")
    # Both copies are signed by a member (host 4's own keys, certified on the member list), so
    # the only thing wrong with the bad one is that its bytes do not have its value address.
    out = h4.run_python(textwrap.dedent(f"""
        import json, os
        from pythagoras_p2p.identity.encoding import value_address
        from pythagoras_p2p.net.rpc import request
        from pythagoras_p2p.net.security import load_key
        from pythagoras_p2p.net.wire import WireError
        from pythagoras_p2p.store.packing import pack
        from pythagoras_p2p.trust.provenance import stamp
        key = load_key(os.environ["PYTHAGORAS_HOME"])
        node = "tcp://{h4.ip}:7575"
        good, bad = os.urandom(32), os.urandom(32)
        address = value_address(41)
        head = [{{"call": call.hex(), "address": address.hex(), "large": False,
                  "meta": stamp({{}}, call, address, key.trust.keys)}} for call in (good, bad)]
        reply = request(node, key, "replicate", bodies=[json.dumps(head).encode(), pack(41), pack(42)])
        import time
        deadline = time.monotonic() + 30
        while True:  # acknowledged once journaled unchecked; in the store once checked
            want = request(node, key, "offer", bodies=[good + bad])
            if good not in bytes(want.bodies[0]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        try:
            request(node, key, "replicate", bodies=[b"not json"])
            malformed = None
        except WireError as exc:
            malformed = str(exc)
        print(json.dumps({{"stored": reply.fields["stored"], "refused": reply.fields["refused"],
                          "lacks": [bytes(want.bodies[0][i:i + 32]).hex() for i in range(0, len(want.bodies[0]), 32)],
                          "good": good.hex(), "bad": bad.hex(), "malformed": malformed}}))
    """))
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["refused"] == []  # signed by a member: nothing refused before the check
    assert found["stored"] == 2  # both kept aside, as durable as journaled, until checked
    assert found["lacks"] == [found["bad"]]  # then the good copy is stored, the bad one never
    assert _replication(h4)["refused"] == 1
    assert f"refused a copy of result {found['bad'][:16]}: its bytes do not have the address" \
        in h4.log.read_text()
    assert "not JSON" in found["malformed"]
