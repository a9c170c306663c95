"""A client on one host uses the whole swarm: work spreads over every node, results are shared."""

from __future__ import annotations

import json
import textwrap

from helpers import wait_for as wait_until

PRELUDE = textwrap.dedent("""
    import json, os, time
    from pythagoras_p2p import *

    cloud = PCloud()

    @cloud.add_pure_function
    def where(*, x, pause=0.0):
        import os, time
        time.sleep(pause)
        return [x * x, os.environ["PYTHAGORAS_HOME"]]
""")


def _client(host, body: str) -> dict:
    done = host.run_python(PRELUDE + textwrap.dedent(body), timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _whole_swarm_known(lan) -> None:
    """Wait until every node lists every node (a client starts from its own node's list)."""
    ids = {h.node_info()["id"] for h in lan.hosts}
    for host in lan.hosts:
        wait_until(lambda h=host: {p["id"] for p in h.status()["peers"]} == ids, 30,
                   message=f"{host.ns} to know every node")


def test_sync_parallel_spreads_over_every_host(lan_factory):
    lan = lan_factory(3)
    _whole_swarm_known(lan)
    out = _client(lan.hosts[0], """
        assert type(cloud).__name__ == "SwarmCloud", cloud
        t = time.perf_counter()
        results = where.sync_parallel(kw_args(x=i, pause=0.3) for i in range(18))
        print(json.dumps({"results": results, "seconds": time.perf_counter() - t}))
    """)
    assert [r[0] for r in out["results"]] == [i * i for i in range(18)]
    homes = {r[1] for r in out["results"]}
    assert homes == {str(h.home) for h in lan.hosts}  # every host ran some
    assert out["seconds"] < 18 * 0.3 / 2  # faster than one 2-worker host could be


def test_a_result_computed_on_one_host_is_fetched_on_another(lan_factory):
    lan = lan_factory(2)
    _whole_swarm_known(lan)
    first = _client(lan.hosts[0], """
        print(json.dumps(where.sync_remote(x=7)))
    """)
    second = _client(lan.hosts[1], """
        print(json.dumps(where(x=7)))  # a plain call: found on a peer, not computed here
    """)
    assert second == first


def test_pcloud_on_a_machine_without_a_node_finds_the_swarm_on_mdns(lan_factory):

    lan = lan_factory(2)
    _whole_swarm_known(lan)
    visitor = lan.root / "visitor"  # a member's home with no node of its own
    lan.admit(visitor)
    done = lan.hosts[0].run_python(PRELUDE + textwrap.dedent("""
        print(json.dumps([type(cloud).__name__, where.sync_remote(x=3)]))
    """), env={"PYTHAGORAS_HOME": str(visitor)})
    assert done.returncode == 0, done.stderr
    kind, (value, ran_in) = json.loads(done.stdout.strip().splitlines()[-1])
    assert kind == "SwarmCloud" and value == 9
    assert ran_in in {str(h.home) for h in lan.hosts}
