"""The replicated cache on network-namespace hosts of this machine.

Each LAN is made of Linux network namespaces on a private bridge (``tests/swarm/netns.py``),
one real ``pythagoras-node start --workers 1 --replicas R`` in each; every client runs inside a
host, as a child process of this script (``--part NAME``). Measured:

1. **Lookups at 3, 8 and 16 hosts** (R = 3): from a client on host 0 connected to every node,
   after 30 results were stored and every node is settled, the median time of a lookup of one
   call that no node holds (a miss) and of one that is stored (a hit), and the requests the
   nodes served per lookup (the sum of their ``lookups`` counters). Beside it, in the same
   client, the same lookups asked of every node (the design before homes: the anchor).
2. **The second copy**: the round trip of ``sync_remote`` of a fresh trivial call from a client
   on host 0 to host 1's node, on a 3-host LAN with ``--replicas 3``, beside a 3-host LAN with
   ``--replicas 1`` (no copy), one after the other in the same run; twice: a client of host 0's
   home (its node runs: the client keeps the second copy) and a client of a home with no node
   (host 1's node copies the result to another member before it answers).
3. **Repair**: 4 hosts, R = 3, 10,000 trivial results stored from host 0 and on their homes;
   ``kill -9`` of host 3's node; the time until the three survivors hold three copies of every
   result again (the sum of the results each is a home of, as their status reports it), from
   the kill and from the moment the survivors saw the node gone (5 s of silence).

    python benchmarks/bench_replication.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from report import Row, print_table, wait_until  # benchmarks/ is on sys.path when run as a script

from pythagoras_p2p.trust.enroll import admit, admit_all

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------- parts (inside a host)

def _nodes(params: dict):
    from pythagoras_p2p.net.security import load_key
    from pythagoras_p2p.net.sockets import endpoint

    key = load_key(os.environ["PYTHAGORAS_HOME"])
    return key, [endpoint(ip, 7575) for ip in params["ips"]]


def _status(address: str, key) -> dict:
    from pythagoras_p2p.net.rpc import request

    return request(address, key, "status", timeout=10).fields["node"]


def _connected(nodes: list) -> tuple:
    """A cloud of this host's home, once every node answers, and a trivial pure function."""
    from pythagoras_p2p import PCloud

    cloud = PCloud()

    @cloud.add_pure_function
    def trivial(*, x: int, salt: str) -> int:
        return x

    wait_until(lambda: len(cloud.ready_peers()) >= len(nodes), 60, "every node to be ready")
    return cloud, trivial


def part_lookups(params: dict) -> dict:
    from pythagoras_p2p import kw_args

    key, nodes = _nodes(params)
    cloud, trivial = _connected(nodes)
    salt = os.urandom(8).hex()
    trivial.sync_parallel(kw_args(x=i, salt=salt) for i in range(params["stored"]))
    stored = [trivial.address(x=i, salt=salt) for i in range(params["stored"])]
    wait_until(lambda: all(_status(n, key)["replication"]["settled"]
                           and not _status(n, key)["replication"]["under_replicated"]
                           for n in nodes), 120, "every node to settle")

    def lookups() -> int:
        return sum(_status(n, key)["lookups"] for n in nodes)

    peers = list(cloud._dispatcher.peers.values())

    def measure(calls: list[bytes], everyone: bool) -> tuple[float, float, int]:
        for peer in peers:  # a node's R above the peer count: every node is asked, as before
            peer.replicas = 99 if everyone else params["replicas"]
        before = lookups()
        times, found = [], 0
        for call in calls:
            t0 = time.perf_counter()
            found += call in cloud._results.elsewhere([call])
            times.append(time.perf_counter() - t0)
        return median(times), (lookups() - before) / len(calls), found

    n = params["samples"]
    misses = [os.urandom(32) for _ in range(n)]
    hits = stored[:n]
    out = {}
    for everyone in (False, True):
        tag = "all" if everyone else "homes"
        out[f"miss_{tag}"] = measure(misses, everyone)
        out[f"hit_{tag}"] = measure(hits, everyone)
    cloud.close()
    return out


def part_roundtrip(params: dict) -> dict:
    from pythagoras_p2p import PCloud

    home = None
    if not params["own_node"]:  # a client whose machine runs no node: the node copies
        home = Path(os.environ["PYTHAGORAS_HOME"]) / "client-without-node"
        home.mkdir(exist_ok=True)
        admit(Path(os.environ["PYTHAGORAS_HOME"]), home, node=False)
    cloud = PCloud(connection=f"{params['target']}:7575", home=home)

    @cloud.add_pure_function
    def trivial(*, x: int, salt: str) -> int:
        return x

    salt = os.urandom(8).hex()
    for i in range(20):  # warm: connections, the function on the node, the second copy's path
        trivial.sync_remote(x=-1 - i, salt=salt)
    times = []
    for i in range(params["samples"]):
        t0 = time.perf_counter()
        trivial.sync_remote(x=i, salt=salt)
        times.append(time.perf_counter() - t0)
    cloud.close()
    return {"median": median(times)}


def part_store(params: dict) -> dict:
    from pythagoras_p2p import kw_args

    key, nodes = _nodes(params)
    cloud, trivial = _connected(nodes)
    salt = os.urandom(8).hex()
    t0 = time.perf_counter()
    trivial.sync_parallel(kw_args(x=i, salt=salt) for i in range(params["count"]))
    computed = time.perf_counter() - t0
    cloud.close()
    t0 = time.perf_counter()
    wait_until(lambda: sum(_status(n, key)["replication"]["homed"] for n in nodes)
               >= params["replicas"] * params["count"]
               and all(_status(n, key)["replication"]["settled"] for n in nodes),
               600, "R copies of every result")
    return {"computed_s": computed, "copied_after_s": time.perf_counter() - t0}


def part_restore(params: dict) -> dict:
    """Poll the survivors until they hold R copies of every result again."""
    key, nodes = _nodes(params)
    go = Path(params["go"])
    wait_until(go.exists, 600, "the kill")
    killed = float(go.read_text())
    seen_gone = None
    while True:
        facts = [_status(n, key) for n in nodes]
        now = time.time()
        if seen_gone is None and all(_peers(n, key) == len(nodes) for n in nodes):
            seen_gone = now
        homed = sum(f["replication"]["homed"] for f in facts)
        if (seen_gone is not None and homed >= params["replicas"] * params["count"]
                and all(f["replication"]["settled"] and not f["replication"]["under_replicated"]
                        for f in facts)):
            return {"from_kill_s": now - killed, "from_detection_s": now - seen_gone,
                    "homed": homed}
        if now - killed > 600:
            raise RuntimeError(f"not restored after 600 s: {homed} copies")
        time.sleep(0.05)


def _peers(address: str, key) -> int:
    from pythagoras_p2p.net.rpc import request

    return len(request(address, key, "status", timeout=10).fields["peers"])


PARTS = {"lookups": part_lookups, "roundtrip": part_roundtrip, "store": part_store,
         "restore": part_restore}


# --------------------------------------------------------------------- orchestration

def lan_of(root: Path, count: int, replicas: int):
    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    from netns import Lan

    from pythagoras_p2p.net.security import create_key

    lan = Lan(count, root).__enter__()
    try:
        create_key(lan.hosts[0].home, name="bench-replication")
        admit_all(lan.hosts[0].home, [h.home for h in lan.hosts[1:]], admin=True)
        for host in lan.hosts:
            host.start_node(workers=1, extra=["--replicas", str(replicas)])
        wait_until(lambda: all(h.node_info() for h in lan.hosts), 120, "every node to serve")
        ids = {h.node_info()["id"] for h in lan.hosts}
        for host in lan.hosts:
            wait_until(lambda host=host: {p["id"] for p in host.status()["peers"]} == ids, 120,
                       f"host {host.index} to know every node")
    except BaseException:
        lan.close()
        raise
    return lan


def run_part(host, name: str, params: dict, timeout: float = 1200) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--part", name,
            "--params", json.dumps(params)]
    proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                      cwd=str(host.home))
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"part {name} failed (exit {proc.returncode}):\n{out}\n{err}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part")
    parser.add_argument("--params", default="{}")
    parser.add_argument("--quick", action="store_true", help="fewer samples, 3 and 8 hosts only")
    args = parser.parse_args()
    if args.part:
        result = PARTS[args.part](json.loads(args.params))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    from netns import namespaces_available

    reason = namespaces_available()
    if reason is not None:
        raise SystemExit(f"bench_replication needs Linux network namespaces: {reason}")
    samples = 20 if args.quick else 50
    rows: list[Row] = []
    root = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    flat = {}
    for count in ((3, 8) if args.quick else (3, 8, 16)):
        lan = lan_of(root / f"lan{count}", count, 3)
        try:
            found = run_part(lan.hosts[0], "lookups", {
                "ips": [h.ip for h in lan.hosts], "stored": max(30, samples), "samples": samples,
                "replicas": 3})
        finally:
            lan.close()
        flat[count] = found
        for kind in ("miss", "hit"):
            homes, everyone = found[f"{kind}_homes"], found[f"{kind}_all"]
            rows.append(Row(f"{kind} lookup, {count} hosts (ms; requests per lookup)",
                            f"{homes[0] * 1e3:.2f} ms; {homes[1]:.1f}",
                            f"ask every node: {everyone[0] * 1e3:.2f} ms; {everyone[1]:.1f}",
                            f"{everyone[0] / homes[0]:.2f}× faster",
                            "requests ≤ R = 3", homes[1] <= 3.0 + 1e-9))
    first, last = min(flat), max(flat)
    for kind in ("miss", "hit"):
        a, b = flat[first][f"{kind}_homes"], flat[last][f"{kind}_homes"]
        rows.append(Row(f"{kind} lookup, {first} → {last} hosts", f"{a[0] * 1e3:.2f} → {b[0] * 1e3:.2f} ms",
                        "", f"{b[0] / a[0]:.2f}×", "flat in N (≤ 1.5×)", b[0] / a[0] <= 1.5))
    trips = {}
    for replicas in (3, 1):
        lan = lan_of(root / f"rt{replicas}", 3, replicas)
        try:
            for own in (True, False):
                trips[replicas, own] = run_part(lan.hosts[0], "roundtrip", {
                    "target": lan.hosts[1].ip, "samples": 10 * samples, "own_node": own})["median"]
        finally:
            lan.close()
    for own, who in ((True, "the caller's machine keeps it"), (False, "another node keeps it")):
        with_copy, without = trips[3, own], trips[1, own]
        rows.append(Row(f"sync_remote round trip, second copy: {who}", f"{with_copy * 1e6:.0f} µs",
                        f"R=1 (no copy): {without * 1e6:.0f} µs",
                        f"{(with_copy - without) * 1e6:+.0f} µs ({with_copy / without:.2f}×)",
                        "reported", True))
    count = 2000 if args.quick else 10_000
    lan = lan_of(root / "restore", 4, 3)
    try:
        ips = [h.ip for h in lan.hosts]
        stored = run_part(lan.hosts[0], "store", {"ips": ips, "count": count, "replicas": 3})
        go = root / "restore-go"
        watcher = lan.hosts[0].popen(
            [sys.executable, str(Path(__file__).resolve()), "--part", "restore", "--params",
             json.dumps({"ips": ips[:3], "count": count, "replicas": 3, "go": str(go)})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(lan.hosts[0].home))
        killed = lan.hosts[3].kill_node()
        go.write_text(repr(killed))
        out, err = watcher.communicate(timeout=900)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if watcher.returncode != 0 or not lines:
            raise RuntimeError(f"restore part failed:\n{out}\n{err}")
        restored = json.loads(lines[-1][len("RESULT "):])
    finally:
        lan.close()
    rows.append(Row(f"{count:,} results: stored from host 0, then on their 3 homes",
                    f"{stored['computed_s']:.1f} s + {stored['copied_after_s']:.1f} s", "", "",
                    "reported", True))
    rows.append(Row(f"restore R=3 copies of {count:,} results after kill -9 of 1 of 4 nodes",
                    f"{restored['from_detection_s']:.1f} s after the death was seen",
                    f"{restored['from_kill_s']:.1f} s after the kill (5 s of silence first)",
                    "", "reported", True))
    print_table(rows)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
