"""What a swarm shares: argument values (once per node), the work (only where ``requires=`` holds),
Ctrl-C (on every node), and what calls print (back to the caller, marked with the host).

One LAN of three hosts serves the whole module; host 2's node (only) sees a fake installed
distribution ``fakepkg 1.0``. Each test uses calls of its own, so none is a cache hit for another.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from clients import Client, read_marks, whole_swarm_known
from helpers import wait_for
from netns import start_lan


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharing")
    dist = root / "site" / "fakepkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    lan = start_lan(root / "lan", 3, node_env={2: {"PYTHONPATH": str(root / "site")}})
    try:
        whole_swarm_known(lan)
        yield lan
    finally:
        lan.close()


def _homes(lan) -> dict[str, int]:
    return {str(h.home): h.index for h in lan.hosts}


def test_an_argument_travels_once_to_each_node(lan):
    before = [h.status()["node"] for h in lan.hosts]
    out = Client(lan.hosts[0], """
        import numpy as np
        from pythagoras_p2p.identity.encoding import value_address
        from pythagoras_p2p.store.packing import pack

        @cloud.add_pure_function
        def weigh(*, a, i, pause):
            import os, time
            time.sleep(pause)
            return [i, float(a[i]) * i, os.environ["PYTHAGORAS_HOME"]]

        a = np.random.default_rng(5).random(1 << 20)  # 8 MiB
        results = weigh.sync_parallel(kw_args(a=a, i=i, pause=0.3) for i in range(12))
        emit(results=results, expected=[[i, float(a[i]) * i] for i in range(12)],
             address=value_address(a).hex(), size=len(pack(a)))
    """).result()
    assert [r[:2] for r in out["results"]] == out["expected"]
    ran = [_homes(lan)[r[2]] for r in out["results"]]
    assert set(ran) == {0, 1, 2}, ran  # every node needed the value
    after = [h.status()["node"] for h in lan.hosts]
    received = [a["values_received"] - b["values_received"] for a, b in zip(after, before, strict=True)]
    sent = [a["value_bytes_received"] - b["value_bytes_received"] for a, b in zip(after, before, strict=True)]
    # host 0's node shares the caller's store: the value is already there
    assert received == [0, 1, 1]
    assert sent == [0, out["size"], out["size"]]
    name = out["address"]
    for host in lan.hosts:  # once the calls are over, the client releases the copies it made
        wait_for(lambda host=host: not [p for p in (host.home / "blobs").rglob("*") if name in p.name],
                 timeout=10, message=f"host {host.index} to drop its copy of the argument")
        assert list((host.home / "incoming").iterdir()) == []


def test_calls_run_only_where_requires_holds(lan):
    client = Client(lan.hosts[0], """
        remote = where.sync_remote(x=1000)
        results = where.sync_parallel(kw_args(x=i, pause=0.1) for i in range(8))
        emit(results=results, remote=remote)

        other = PCloud(requires="fakepkg>=2")

        @other.add_pure_function
        def where2(*, x):
            return x

        t = time.monotonic()
        try:
            where2.sync_parallel(kw_args(x=i) for i in range(3))
        except RequirementsError as exc:
            emit(results=results, remote=remote, error=str(exc), seconds=time.monotonic() - t)
    """, cloud='cloud = PCloud(requires="fakepkg>=1")')
    out = client.result()
    satisfying = str(lan.hosts[2].home)
    assert out["remote"] == [1000 * 1000, satisfying]
    assert out["results"] == [[i * i, satisfying] for i in range(8)]
    error = out.get("error")
    assert error is not None, f"no RequirementsError:\n{client.stderr()}"
    assert "fakepkg>=2" in error
    assert "fakepkg>=2 (installed: 1.0)" in error  # what host 2 has
    assert "fakepkg>=2 (not installed)" in error  # what the others have
    assert out["seconds"] < 10
    print(f"\nrequires=: RequirementsError after {out['seconds']:.2f} s: {error}")


def test_a_functions_own_requires_joins_its_clouds(lan):
    client = Client(lan.hosts[0], """
        @cloud.add_pure_function(requires="fakepkg>=1")
        def picky(*, x, pause=0.05):
            import os, time
            time.sleep(pause)
            return [x, os.environ["PYTHAGORAS_HOME"]]

        @cloud.add_pure_function(requires="fakepkg>=2")
        def pickier(*, x):
            return x

        results = picky.sync_parallel(kw_args(x=i) for i in range(8))
        plain = where.sync_parallel(kw_args(x=50 + i, pause=0.2) for i in range(9))
        t = time.monotonic()
        try:
            pickier.sync_remote(x=1)
        except RequirementsError as exc:
            emit(results=results, plain=plain, error=str(exc), seconds=time.monotonic() - t)
    """)
    out = client.result()
    satisfying = str(lan.hosts[2].home)
    assert out["results"] == [[i, satisfying] for i in range(8)]  # only where fakepkg is
    assert {r[1] for r in out["plain"]} == {str(h.home) for h in lan.hosts}  # the cloud's: all
    assert "fakepkg>=2" in out["error"] and out["seconds"] < 10


def test_what_a_call_prints_reaches_the_caller_marked_with_its_host(lan):
    client = Client(lan.hosts[0], """
        @cloud.add_pure_function
        def chatty(*, x):
            import os, sys, time
            time.sleep(0.2)
            print(f"token-{x} on {os.environ['PYTHAGORAS_HOME']}")
            print(f"warning-{x}", file=sys.stderr)
            return os.environ["PYTHAGORAS_HOME"]

        emit(results=chatty.sync_parallel(kw_args(x=i) for i in range(12)))
    """)
    results = client.result()["results"]
    homes = _homes(lan)
    assert set(results) == set(homes)  # every host printed something
    lines = client.stderr().splitlines()
    for i, home in enumerate(results):
        hostname = lan.hosts[homes[home]].hostname
        printed = [m for m in (re.fullmatch(r"\[(.+?)\] token-(\d+) on (.+)", line) for line in lines)
                   if m and m.group(2) == str(i)]
        assert len(printed) == 1, (i, lines)
        assert printed[0].group(3) == home
        assert printed[0].group(1).split("/")[0] == hostname, printed[0].group(0)
        warned = [line for line in lines if line.endswith(f"] warning-{i}")]
        assert len(warned) == 1 and warned[0].startswith(f"[{hostname}/"), (i, warned)
    assert "token-" not in client.out.read_text()


def test_a_machine_without_a_node_finds_the_swarm_on_mdns_at_once(lan, tmp_path):
    roaming = tmp_path / "roaming"  # a member's home with no node running for it
    lan.admit(roaming)
    out = Client(lan.hosts[1], """
        t = time.monotonic()
        results = where.sync_parallel(kw_args(x=i, pause=0.3) for i in range(200, 212))
        emit(results=results, seconds=time.monotonic() - t)
    """, cloud="cloud = SwarmCloud()", env={"PYTHAGORAS_HOME": str(roaming)}).result()
    assert [r[0] for r in out["results"]] == [i * i for i in range(200, 212)]
    assert {r[1] for r in out["results"]} <= set(_homes(lan))  # ran on nodes it found
    assert out["seconds"] < 10  # mDNS finds nodes in about 2 s; calls wait for them meanwhile


def test_ctrl_c_cancels_the_calls_on_every_node(lan, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    client = Client(lan.hosts[0], f"""
        emit(ready=True)
        try:
            where.sync_parallel(kw_args(x=i, pause=120, marks={str(marks)!r}) for i in range(12))
        except KeyboardInterrupt:
            emit(interrupted=time.time())
            raise
        emit(finished=True)
    """)
    # Six slots on three nodes: six calls start, six wait in the client.
    wait_for(lambda: len(read_marks(marks)) == 6, 30, message="six calls to start")
    assert {m["home"] for m in read_marks(marks)} == set(_homes(lan))
    wait_for(lambda: all(h.status()["node"]["workers_busy"] == 2 for h in lan.hosts), 10,
             message="every node to be busy")
    client.proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    assert client.wait(10) == -signal.SIGINT  # KeyboardInterrupt, not caught
    assert "interrupted" in client.emitted()[-1], client.stderr()
    wait_for(lambda: all(h.status()["node"]["workers_busy"] == 0 for h in lan.hosts), 10,
             interval=0.1, message="every node to stop the calls")
    idle = time.monotonic() - sent
    assert idle < 5, idle
    # The workers were freed, not just forgotten: six quick calls take every slot at once.
    out = Client(lan.hosts[1], """
        t = time.monotonic()
        results = where.sync_parallel(kw_args(x=i, pause=1.0) for i in range(100, 106))
        emit(results=results, seconds=time.monotonic() - t)
    """).result()
    assert [r[0] for r in out["results"]] == [i * i for i in range(100, 106)]
    assert out["seconds"] < 1.0 + 2.0, out
    assert len(read_marks(marks)) == 6  # the queued calls never started anywhere
