"""How the LAN design grows: discovery, idle traffic, lookup latency and memory from 3 to 64 hosts.

For each swarm size N (default 3, 8, 16, 32, 64) one run makes N Linux network namespaces on a
private bridge (the harness of ``tests/swarm/netns.py``), one real ``pythagoras-node start
--workers 1`` in each (mDNS on, announced on the namespace address only), all holding one swarm
key, and measures:

1. discovery — the N nodes are started at once (one ``Popen`` each, in host order);
   * ``nodes serving``: from the last ``Popen`` until every node has written ``node.json``;
   * ``nodes see all``: from the last ``Popen`` until one round of ``status`` requests (what
     ``pythagoras-node status --json`` asks; sent to every node at once, every 0.25 s, by one
     poller process in host 0) finds every node listing all N nodes (itself and N-1 live peers);
   * ``client, started with the nodes``: a client process started on host 0 right after the last
     ``Popen`` waits for host 0's node to serve, builds ``PCloud()`` (automatic connection: its
     own node, then the peers that node lists) and waits until ``cloud.ready_peers()`` holds N
     peers; from the last ``Popen`` until then;
   * ``client joins a settled swarm``: once the nodes see each other, a fresh client on host 0:
     from just before ``PCloud()`` until ``ready_peers()`` holds N peers (imports excluded).
2. idle traffic — nothing runs but the nodes (clients have exited, 3 s earlier); over a
   ``--window`` (10 s) window: bytes and packets of each host's ``eth0`` (its veth end; the
   namespace's ``/proc/<node pid>/net/dev``, the same counters as
   ``/sys/class/net/eth0/statistics``), rx + tx; mDNS (UDP port 5353) counted apart by a packet
   socket with a kernel BPF filter in the bridge's namespace (every frame a host sends, once,
   at the bridge port it enters by), so "ZeroMQ and other" = all − mDNS; the swarm's total is
   the sum over hosts of bytes *sent* (every frame put on the LAN counted once). CPU: user +
   system seconds of every node process and its worker, summed, / window (100 % = one core).
3. memo lookup latency, client on host 0 (``PCloud()``, connected to all N nodes), medians over
   ``--lookups`` fresh calls of a tiny pure function (``probe(i=, salt=)``, returns a 2-item list):
   * ``miss, lookup only``: ``cloud._results.elsewhere([call])`` for a call no node holds — the
     one bounded parallel lookup a memo miss makes (every peer asked at once, answer when all
     replied or after 2 s);
   * ``miss, full call``: ``probe(i=, salt=fresh)``: local store miss, that lookup, computing
     here and storing the result (one LMDB commit with fdatasync);
   * ``hit on host N, lookup only``: ``_results.elsewhere([call])`` for a call whose result only
     host N-1's store holds (computed there first through its node), value copied into the
     local store behind the caller (write-behind);
   * ``hit on host N, full call``: ``probe(...)`` of such a call: local miss, lookup, return.
4. memory and descriptors, read during the idle window: RSS of each node process and of its
   worker (host 0's node, the median and the largest); the USS and PSS of every node and worker
   process summed (what the whole swarm costs this machine); open descriptors and threads of a
   node.

Also counted: mDNS bytes all hosts sent from the last ``Popen`` until the nodes saw each other,
and warnings in the node logs (peers dropped as silent, errors). The N hosts share this machine's
CPUs, so every figure that involves many nodes answering (discovery, lookup latency) includes
waiting for CPU time that separate machines would not; the idle CPU row says how much the whole
swarm uses. From 17 hosts on the harness gives hosts permanent neighbour entries instead of ARP
(the kernel's ARP table is shared by all namespaces; see ``tests/swarm/netns.py``).

Each size gets its own LAN, torn down (every namespace and process) before the next, also on
failure. Needs root and iproute2.

    python benchmarks/bench_scaling.py [--quick] [--sizes 3,8,16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from report import print_node_logs  # benchmarks/ is on sys.path when run as a script

from pythagoras_p2p.trust.enroll import admit_all

REPO = Path(__file__).resolve().parent.parent
PORT = 7575
SIZES = (3, 8, 16, 32, 64)
QUICK_SIZES = (3, 8)
POLL_EVERY = 0.25  # seconds between status rounds of the discovery poller
MDNS_PORT = 5353


# --------------------------------------------------------------------- the function under test


def probe(*, i: int, salt: str) -> list:
    return [i, salt]


# --------------------------------------------------------------------- parts (in a namespace)


def wait_path(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {path}")
        time.sleep(0.02)


def part_poll(p: dict) -> dict:
    """Discovery as the nodes see it: status rounds to every node at once, from host 0."""
    import zmq

    from pythagoras_p2p.net import wire
    from pythagoras_p2p.net.security import curve_client, load_key

    homes = [Path(h) for h in p["homes"]]
    key = load_key(homes[0])
    deadline = time.monotonic() + p["timeout"]
    infos: dict[int, dict] = {}
    while len(infos) < len(homes):
        for i, home in enumerate(homes):
            if i not in infos:
                try:
                    infos[i] = json.loads((home / "node.json").read_text())
                except (FileNotFoundError, ValueError):
                    pass
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(infos)} of {len(homes)} nodes served in time")
        time.sleep(0.02)
    all_serving = time.time()
    ids = {info["id"] for info in infos.values()}
    context = zmq.Context()
    socks = []
    for i in range(len(homes)):
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        curve_client(sock, key, load_key(homes[i]).public)  # each node serves with its own key
        sock.connect(infos[i]["endpoint"])
        socks.append(sock)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    first_full: dict[int, float] = {}
    seen_counts: list[list[int]] = []
    rounds, all_full = 0, None
    while all_full is None:
        if time.monotonic() > deadline:
            break
        rounds += 1
        started = time.monotonic()
        for sock in socks:
            sock.send_multipart(wire.build("status", rounds))
        answered: dict[int, int] = {}
        while len(answered) < len(socks) and time.monotonic() - started < 3.0:
            for sock, _ in poller.poll(100):
                i = socks.index(sock)
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = wire.parse(frames)
                    if msg.id != rounds or msg.op != "ok":
                        continue
                    listed = {row["id"] for row in msg.fields["peers"]} & ids
                    answered[i] = len(listed)
                    if len(listed) == len(ids) and i not in first_full:
                        first_full[i] = time.time()
        counts = [answered.get(i, -1) for i in range(len(socks))]
        seen_counts.append(counts)
        if all(c == len(ids) for c in counts):
            all_full = time.time()
            break
        time.sleep(max(0.0, POLL_EVERY - (time.monotonic() - started)))
    context.destroy(0)
    return {"all_serving": all_serving, "all_full": all_full, "first_full": first_full,
            "rounds": rounds, "last_counts": seen_counts[-1] if seen_counts else [],
            "ids": sorted(ids)}


def part_client_join(p: dict) -> dict:
    """A client on this host: PCloud() until it has N ready peers."""
    from pythagoras_p2p import PCloud

    wait_path(p["node_file"], p["timeout"])
    t0 = time.time()
    cloud = PCloud()
    if type(cloud).__name__ != "SwarmCloud":
        raise SystemExit(f"expected a SwarmCloud, got {cloud!r}")
    built = time.time()
    deadline = time.monotonic() + p["timeout"]
    counts = []
    while True:
        ready = len(cloud.ready_peers())
        if not counts or counts[-1][1] != ready:
            counts.append((round(time.time() - t0, 3), ready))
        if ready >= p["n"]:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the client reached {ready} of {p['n']} nodes: {counts}")
        time.sleep(0.05)
    done = time.time()
    cloud.close()
    return {"started": t0, "built": built, "ready": done, "progress": counts}


def part_compute(p: dict) -> dict:
    """Put ``count`` results of ``probe`` into this host's node's store, through that node only."""
    from pythagoras_p2p import PCloud, kw_args

    cloud = PCloud(connection=f"{p['ip']}:{PORT}")
    deadline = time.monotonic() + 60
    while len(cloud.ready_peers()) < 1:
        if time.monotonic() > deadline:
            raise SystemExit("the node of this host did not answer")
    fn = cloud.add_pure_function(probe)
    out = fn.sync_parallel([kw_args(i=i, salt=p["salt"]) for i in range(p["count"])],
                           progress=False)
    assert out == [[i, p["salt"]] for i in range(p["count"])], out
    cloud.close()
    return {"computed": len(out)}


def part_lookup(p: dict) -> dict:
    """(3): memo lookups from a client on host 0 connected to all N nodes."""
    from pythagoras_p2p import PCloud

    n, reps = p["n"], p["reps"]
    cloud = PCloud()
    deadline = time.monotonic() + 120
    while len(cloud.ready_peers()) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"the client reached {len(cloud.ready_peers())} of {n} nodes")
        time.sleep(0.05)
    fn = cloud.add_pure_function(probe)
    fn.address(i=0, salt="warm")  # fingerprint once, outside the timings
    fresh = f"miss-{time.time_ns()}-{os.getpid()}"
    for w in range(3):  # warm every connection and the lookup path
        cloud._results.elsewhere([fn.address(i=-1 - w, salt=fresh)])

    def timed(action):
        t0 = time.perf_counter()
        value = action()
        return time.perf_counter() - t0, value

    out: dict[str, list] = {"miss_lookup": [], "miss_call": [], "hit_lookup": [], "hit_call": []}
    found = {"miss_lookup": 0, "hit_lookup": 0, "hit_call_right": 0}
    salt = p["salt"]
    for r in range(reps):
        call = fn.address(i=r, salt=fresh + "-a")
        took, got = timed(lambda call=call: cloud._results.elsewhere([call]))
        out["miss_lookup"].append(took)
        found["miss_lookup"] += call in got
        took, got = timed(lambda r=r: fn(i=r, salt=fresh + "-b"))
        out["miss_call"].append(took)
        call = fn.address(i=r, salt=salt)  # results 0..reps-1: lookup only
        took, got = timed(lambda call=call: cloud._results.elsewhere([call]))
        out["hit_lookup"].append(took)
        found["hit_lookup"] += call in got
        took, got = timed(lambda r=r: fn(i=reps + r, salt=salt))  # reps..2reps-1: full call
        out["hit_call"].append(took)
        found["hit_call_right"] += got == [reps + r, salt]
    peers = len(cloud.ready_peers())
    cloud.close()
    return {**out, "found": found, "peers": peers}


def _bpf_udp_port(port: int) -> bytes:
    """A classic BPF program accepting IPv4 UDP frames from or to ``port`` (as tcpdump -dd)."""
    prog = [
        (0x28, 0, 0, 12),          # ldh [12]           ethertype
        (0x15, 0, 10, 0x0800),     # jeq IPv4 else drop
        (0x30, 0, 0, 23),          # ldb [23]           IP protocol
        (0x15, 0, 8, 17),          # jeq UDP else drop
        (0x28, 0, 0, 20),          # ldh [20]           flags + fragment offset
        (0x45, 6, 0, 0x1FFF),      # jset: a fragment → drop
        (0xB1, 0, 0, 14),          # ldxb 4*([14]&0xf)  IP header length
        (0x48, 0, 0, 14),          # ldh [x+14]         source port
        (0x15, 2, 0, port),        # jeq port → accept
        (0x48, 0, 0, 16),          # ldh [x+16]         destination port
        (0x15, 0, 1, port),        # jeq port → accept else drop
        (0x06, 0, 0, 0x40000),     # accept
        (0x06, 0, 0, 0),           # drop
    ]
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def part_sniff(p: dict) -> dict:
    """In the bridge's namespace: count mDNS frames entering the bridge at each port (= sent by
    that port's host); each "snap" line on stdin prints the counts so far, "stop" ends."""
    import ctypes

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    program = _bpf_udp_port(MDNS_PORT)
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
    sock.setblocking(False)
    while True:  # frames queued before the filter was attached
        try:
            sock.recv(65535)
        except BlockingIOError:
            break
    print("ready", flush=True)
    per_port: dict[str, list[int]] = {}
    stdin = sys.stdin.fileno()
    pending = ""
    while True:
        readable, _, _ = select.select([sock, stdin], [], [], 1.0)
        if sock in readable:
            while True:
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] != socket.PACKET_OUTGOING and addr[0].startswith("v"):
                    entry = per_port.setdefault(addr[0], [0, 0])
                    entry[0] += len(data)
                    entry[1] += 1
        if stdin in readable:
            chunk = os.read(stdin, 256).decode()
            pending += chunk
            while "\n" in pending:
                line, pending = pending.split("\n", 1)
                if line.strip() == "snap":
                    print("SNAP " + json.dumps(per_port), flush=True)
            if not chunk or "stop" in pending:
                break
    return {"per_port": per_port}


class MdnsCounter:
    """The mDNS counter of one LAN: started before the nodes, read at any time."""

    def __init__(self, lan):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", f"{lan.name}-sw", *part_argv("sniff", {})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=str(lan.root))
        lan.processes.append(self.proc)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"the mDNS counter did not start: {line}{self.proc.stderr.read()}")

    def snap(self) -> dict[int, list[int]]:
        """host index → [bytes, frames] of mDNS it sent so far."""
        self.proc.stdin.write("snap\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.startswith("SNAP "):
            raise RuntimeError(f"the mDNS counter failed: {line}{self.proc.stderr.read()}")
        return {int(k[1:]): v for k, v in json.loads(line[5:]).items()}

    def stop(self) -> None:
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def mdns_delta(before: dict, after: dict, n: int, seconds: float) -> dict:
    """mDNS sent by each host and by all, between two snaps, per second."""
    sent = {i: [after.get(i, [0, 0])[k] - before.get(i, [0, 0])[k] for k in (0, 1)]
            for i in range(n)}
    return {"per_host_tx": {i: [v[0] / seconds, v[1] / seconds] for i, v in sent.items()},
            "total_Bps": sum(v[0] for v in sent.values()) / seconds,
            "total_pps": sum(v[1] for v in sent.values()) / seconds,
            "total_bytes": sum(v[0] for v in sent.values()),
            "total_frames": sum(v[1] for v in sent.values()), "seconds": seconds}


PARTS = {"poll": part_poll, "client_join": part_client_join, "compute": part_compute,
         "lookup": part_lookup, "sniff": part_sniff}


def run_part_here(name: str, params: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = PARTS[name](json.loads(params))
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------- orchestration


def part_argv(name: str, params: dict) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--part", name, "--params",
            json.dumps(params)]


def start_part(host, name: str, params: dict):
    return host.popen(part_argv(name, params), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True, cwd=str(host.home))


def finish_part(proc, name: str, timeout: float = 600) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"part {name} took over {timeout:g} s:\n{out}\n{err}") from None
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"part {name} failed (exit {proc.returncode}):\n{out}\n{err[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def machine_cpu() -> tuple[int, int]:
    """(total, idle) jiffies of all CPUs of this machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def net_dev(pid: int, dev: str = "eth0") -> tuple[int, int, int, int]:
    """(rx_bytes, rx_packets, tx_bytes, tx_packets) of ``dev`` in the network namespace of ``pid``."""
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == dev:
                v = [int(x) for x in rest.split()]
                return v[0], v[1], v[8], v[9]
    raise RuntimeError(f"no {dev} in the namespace of pid {pid}")


def tcp_segments(pid: int) -> tuple[int, int]:
    """(InSegs, OutSegs) of the network namespace of ``pid``."""
    with open(f"/proc/{pid}/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    named = dict(zip(rows[0][1:], rows[1][1:], strict=True))
    return int(named["InSegs"]), int(named["OutSegs"])


def tree_cpu(pid: int) -> tuple[float, list[int]]:
    """User + system CPU seconds of ``pid`` and its descendants now, and their pids."""
    import psutil

    proc = psutil.Process(pid)
    total, pids = 0.0, []
    for pr in [proc, *proc.children(recursive=True)]:
        try:
            t = pr.cpu_times()
            total += t.user + t.system
            pids.append(pr.pid)
        except psutil.NoSuchProcess:
            pass
    return total, pids


def measure_idle(lan, window: float, mdns: MdnsCounter) -> dict:
    """(2) and (4): traffic, CPU and memory of the idle swarm over ``window`` seconds."""
    import psutil

    hosts = lan.hosts
    pids = [h.node_pid() for h in hosts]
    m0 = mdns.snap()
    c0 = machine_cpu()
    t0 = time.monotonic()
    dev0 = [net_dev(pid) for pid in pids]
    tcp0 = [tcp_segments(pid) for pid in pids]
    cpu0 = [tree_cpu(pid)[0] for pid in pids]
    time.sleep(window)
    dev1 = [net_dev(pid) for pid in pids]
    tcp1 = [tcp_segments(pid) for pid in pids]
    cpu1 = [tree_cpu(pid) for pid in pids]
    took = time.monotonic() - t0
    c1 = machine_cpu()
    m1 = mdns.snap()
    busy = 1 - (c1[1] - c0[1]) / max(1, c1[0] - c0[0])

    # per host, per second
    rows = []
    mdns_tx = {i: [m1.get(i, [0, 0])[k] - m0.get(i, [0, 0])[k] for k in (0, 1)]
               for i in range(len(hosts))}
    multicast_bytes = sum(v[0] for v in mdns_tx.values())
    multicast_packets = sum(v[1] for v in mdns_tx.values())
    for i, host in enumerate(hosts):
        d = [(b - a) / took for a, b in zip(dev0[i], dev1[i], strict=True)]
        mb, mp = mdns_tx.get(i, [0, 0])
        # mDNS is multicast: what a host sends it sends once; it receives everyone else's
        mdns_rx_b, mdns_rx_p = multicast_bytes - mb, multicast_packets - mp
        rows.append({
            "host": host.index,
            "rx_Bps": d[0], "rx_pps": d[1], "tx_Bps": d[2], "tx_pps": d[3],
            "mdns_tx_Bps": mb / took, "mdns_tx_pps": mp / took,
            "mdns_rx_Bps": mdns_rx_b / took, "mdns_rx_pps": mdns_rx_p / took,
            "tcp_in_segs_ps": (tcp1[i][0] - tcp0[i][0]) / took,
            "tcp_out_segs_ps": (tcp1[i][1] - tcp0[i][1]) / took,
            "cpu_pct": 100 * (cpu1[i][0] - cpu0[i]) / took,
        })
    mem = []
    for i, pid in enumerate(pids):
        node = psutil.Process(pid)
        workers = [pr for pr in node.children(recursive=True)]
        full = [pr.memory_full_info() for pr in (node, *workers)]
        mem.append({
            "host": i,
            "node_rss": node.memory_info().rss,
            "worker_rss": sum(w.memory_info().rss for w in workers),
            "uss_all": sum(f.uss for f in full),
            "pss_all": sum(f.pss for f in full),
            "node_fds": node.num_fds(),
            "node_threads": node.num_threads(),
            "processes": 1 + len(workers),
        })
    return {"window_s": took, "machine_busy": busy, "hosts": rows, "memory": mem}


def node_log_facts(lan) -> dict:
    """Warnings and errors the nodes logged, counted by kind."""
    facts = {"dropped_silent": 0, "errors": 0, "tracebacks": 0, "examples": []}
    for host in lan.hosts:
        try:
            text = host.log.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if "silent for" in line and "dropped" in line:
                facts["dropped_silent"] += 1
            if " ERROR " in line or "ERROR" in line.split(" ", 3)[:3]:
                facts["errors"] += 1
                if len(facts["examples"]) < 5:
                    facts["examples"].append(f"host {host.index}: {line[:300]}")
            if line.startswith("Traceback"):
                facts["tracebacks"] += 1
    return facts


def run_size(n: int, root: Path, args) -> dict:
    """Every measurement for one swarm of ``n`` hosts."""
    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    from netns import Lan

    from pythagoras_p2p.net.security import create_key

    result: dict = {"n": n}
    avail0 = mem_available()
    timeout = args.timeout
    with Lan(n, root / f"lan{n}") as lan:
        t = time.monotonic()
        first, last = lan.hosts[0], lan.hosts[-1]
        create_key(first.home, name=f"bench-scaling-{n}")
        admit_all(first.home, [h.home for h in lan.hosts[1:]], admin=True)
        result["lan_built_s"] = time.monotonic() - t
        mdns = MdnsCounter(lan)
        try:
            # (1) discovery: nodes started at once, a poller and a client started with them
            m_start = mdns.snap()
            poller = start_part(first, "poll", {"homes": [str(h.home) for h in lan.hosts],
                                                "timeout": timeout})
            for host in lan.hosts:
                host.start_node(workers=1)
            last_start = time.time()
            early = start_part(first, "client_join", {"n": n, "timeout": timeout,
                                                      "node_file": str(first.home / "node.json")})
            polled = finish_part(poller, "poll", timeout=timeout + 30)
            if polled["all_full"] is None:
                raise RuntimeError(f"the nodes did not all see each other within {timeout} s; "
                                   f"peers listed per node in the last round: "
                                   f"{polled['last_counts']}")
            m_seen = mdns.snap()
            result["mdns_until_seen"] = mdns_delta(m_start, m_seen, n,
                                                   polled["all_full"] - last_start)
            joined_early = finish_part(early, "client_join", timeout=timeout + 30)
            firsts = sorted(polled["first_full"].values())
            result["discovery"] = {
                "nodes_serving_s": polled["all_serving"] - last_start,
                "nodes_see_all_s": polled["all_full"] - last_start,
                "nodes_see_all_after_serving_s": polled["all_full"] - polled["all_serving"],
                "first_node_full_s": firsts[0] - last_start,
                "median_node_full_s": median(firsts) - last_start,
                "status_rounds": polled["rounds"],
                "client_with_nodes_s": joined_early["ready"] - last_start,
                "client_with_nodes_progress": joined_early["progress"],
            }
            joined = finish_part(start_part(first, "client_join", {
                "n": n, "timeout": timeout, "node_file": str(first.home / "node.json")}),
                "client_join", timeout=timeout + 30)
            result["discovery"]["client_joins_settled_s"] = joined["ready"] - joined["started"]
            result["discovery"]["client_joins_settled_construct_s"] = joined["built"] - joined["started"]
            print(f"  N={n}: every node sees all {n} {result['discovery']['nodes_see_all_s']:.1f} s "
                  f"after the last start; a client joins in "
                  f"{result['discovery']['client_joins_settled_s']:.2f} s", flush=True)

            # results only host N-1 holds, for (3)
            salt = f"hit-{time.time_ns()}"
            finish_part(start_part(last, "compute", {"ip": last.ip, "salt": salt,
                                                     "count": 2 * args.lookups}), "compute")

            # (2) + (4) idle
            time.sleep(3.0)
            result["idle"] = measure_idle(lan, args.window, mdns)
            result["mem_available_drop"] = avail0 - mem_available()  # noisy: other work
            print(f"  N={n}: idle window done", flush=True)

            # (3) lookups from host 0
            result["lookup"] = finish_part(start_part(first, "lookup", {
                "n": n, "reps": args.lookups, "salt": salt}), "lookup")
            result["log"] = node_log_facts(lan)
            print(f"  N={n}: lookups done ({time.monotonic() - t:.0f} s in all)", flush=True)
        except BaseException:
            print_node_logs(lan, 15, 4)
            result["log"] = node_log_facts(lan)
            raise
        finally:
            mdns.stop()
    return result


# --------------------------------------------------------------------- report


def summarize(r: dict) -> dict:
    """The figures of the table, from one size's raw results."""
    s: dict = {}
    d = r.get("discovery")
    if d:
        s["nodes serving (s after last start)"] = f"{d['nodes_serving_s']:.1f}"
        s["nodes see all N (s after last start)"] = f"{d['nodes_see_all_s']:.1f}"
        s["  of which after all serve (s)"] = f"{d['nodes_see_all_after_serving_s']:.1f}"
        md = r.get("mdns_until_seen")
        if md:
            s["mDNS sent, last start → all see all (kB, all hosts)"] = f"{md['total_bytes'] / 1e3:.1f}"
        s["client started with nodes: N ready (s)"] = f"{d['client_with_nodes_s']:.1f}"
        s["client joins settled swarm: N ready (s)"] = f"{d['client_joins_settled_s']:.2f}"
    idle = r.get("idle")
    if idle:
        hosts = idle["hosts"]
        rxtx_b = [h["rx_Bps"] + h["tx_Bps"] for h in hosts]
        rxtx_p = [h["rx_pps"] + h["tx_pps"] for h in hosts]
        mdns_b = [h["mdns_tx_Bps"] + h["mdns_rx_Bps"] for h in hosts]
        mdns_p = [h["mdns_tx_pps"] + h["mdns_rx_pps"] for h in hosts]
        s["per node rx+tx, all (kB/s, median)"] = f"{median(rxtx_b) / 1e3:.1f}"
        s["per node rx+tx, all (packets/s, median)"] = f"{median(rxtx_p):.0f}"
        s["per node rx+tx, mDNS (B/s, median)"] = f"{median(mdns_b):.0f}"
        s["per node rx+tx, mDNS (packets/s, median)"] = f"{median(mdns_p):.2f}"
        s["per node rx+tx, ZeroMQ+other (kB/s, median)"] = (
            f"{median(a - m for a, m in zip(rxtx_b, mdns_b, strict=True)) / 1e3:.1f}")
        s["swarm total sent (kB/s)"] = f"{sum(h['tx_Bps'] for h in hosts) / 1e3:.1f}"
        s["swarm total sent (packets/s)"] = f"{sum(h['tx_pps'] for h in hosts):.0f}"
        s["swarm total sent, mDNS (B/s)"] = f"{sum(h['mdns_tx_Bps'] for h in hosts):.0f}"
        cpu = [h["cpu_pct"] for h in hosts]
        s["idle CPU, all nodes+workers (% of a core)"] = f"{sum(cpu):.1f}"
        s["idle CPU per node (% of a core, median)"] = f"{median(cpu):.2f}"
        cores = os.cpu_count() or 1
        other = idle["machine_busy"] * cores * 100 - sum(cpu)
        s["other work on the machine in the window (% of a core)"] = f"{max(0.0, other):.0f}"
        mem = idle["memory"]
        mib = 1 << 20
        s["RSS node of host 0 (MiB)"] = f"{mem[0]['node_rss'] / mib:.1f}"
        s["RSS node, median / max (MiB)"] = (f"{median(m['node_rss'] for m in mem) / mib:.1f} / "
                                             f"{max(m['node_rss'] for m in mem) / mib:.1f}")
        s["RSS worker, median (MiB)"] = f"{median(m['worker_rss'] for m in mem) / mib:.1f}"
        s["open fds per node, median / max"] = (f"{median(m['node_fds'] for m in mem):.0f} / "
                                                f"{max(m['node_fds'] for m in mem)}")
        s["threads per node, max"] = f"{max(m['node_threads'] for m in mem)}"
        s["all node+worker processes, USS sum (MiB)"] = f"{sum(m['uss_all'] for m in mem) / mib:.0f}"
        s["all node+worker processes, PSS sum (MiB)"] = f"{sum(m['pss_all'] for m in mem) / mib:.0f}"
    lk = r.get("lookup")
    if lk:
        ms = 1e3
        reps = len(lk["miss_lookup"])
        s["lookup miss, _results.elsewhere (ms, median)"] = f"{median(lk['miss_lookup']) * ms:.2f}"
        s["memo call miss, full (ms, median)"] = f"{median(lk['miss_call']) * ms:.2f}"
        s["lookup hit on host N, _results.elsewhere (ms)"] = f"{median(lk['hit_lookup']) * ms:.2f}"
        s["memo call hit on host N, full (ms, median)"] = f"{median(lk['hit_call']) * ms:.2f}"
        s["hits found / asked (lookup; call)"] = (f"{lk['found']['hit_lookup']}/{reps}; "
                                                  f"{lk['found']['hit_call_right']}/{reps}")
    log = r.get("log")
    if log:
        s["node log: peers dropped as silent / errors"] = f"{log['dropped_silent']} / {log['errors']}"
    if r.get("error"):
        s["error"] = r["error"].splitlines()[0][:60]
    return s


def print_matrix(results: list[dict]) -> None:
    """One row per figure, one column per swarm size (the column style of report.print_table)."""
    sums = [summarize(r) for r in results]
    metrics: list[str] = []
    for s in sums:
        for k in s:
            if k not in metrics:
                metrics.append(k)
    header = ("metric", *[f"N={r['n']}" for r in results])
    cells = [header] + [(m, *[s.get(m, "-") for s in sums]) for m in metrics]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    print("\n".join(lines))


def check_limits(sizes: list[int]) -> list[str]:
    """What a swarm of max(sizes) hosts needs of this machine, against what it has."""
    import resource

    notes = []
    n = max(sizes)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    notes.append(f"open files limit {soft} (hard {hard}); every node inherits it")
    if soft < 40 + 3 * n:
        notes.append(f"WARNING: a node of a {n}-host swarm holds ~30 + 3 descriptors per peer")
    avail = mem_available() / (1 << 30)
    notes.append(f"memory available at the start: {avail:.1f} GiB")
    return notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="sizes 3 and 8, fewer lookups")
    parser.add_argument("--sizes", help="comma-separated swarm sizes (default 3,8,16,32,64)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--window", type=float, default=10.0, help="idle window, seconds")
    parser.add_argument("--lookups", type=int, default=None, help="lookups of each kind")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for a swarm to start or converge")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        run_part_here(args.part, args.params)
        return 0
    sizes = ([int(x) for x in args.sizes.split(",")] if args.sizes
             else list(QUICK_SIZES if args.quick else SIZES))
    if args.lookups is None:
        args.lookups = 10 if args.quick else 30
    if max(sizes) > 240 or min(sizes) < 2:
        parser.error("sizes must be between 2 and 240 hosts (one /24, addresses .10 up)")
    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    from netns import namespaces_available

    reason = namespaces_available()
    if reason is not None:
        raise SystemExit(f"bench_scaling needs Linux network namespaces: {reason}")

    notes = check_limits(sizes)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; sizes {sizes}; idle window "
          f"{args.window:g} s; {args.lookups} lookups of each kind; 1 worker per node", flush=True)
    for note in notes:
        print("  " + note)
    root = Path(tempfile.mkdtemp(prefix="pythagoras-bench-scaling-", dir="/tmp"))
    results: list[dict] = []
    t0 = time.perf_counter()
    interrupted = False
    try:
        for n in sizes:
            print(f"N={n}: starting", flush=True)
            try:
                results.append(run_size(n, root, args))
            except KeyboardInterrupt:
                interrupted = True
                break
            except Exception as exc:  # keep the other sizes
                print(f"N={n} FAILED: {exc}", file=sys.stderr, flush=True)
                results.append({"n": n, "error": f"{type(exc).__name__}: {exc}"})
            finally:
                shutil.rmtree(root / f"lan{n}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nall done in {time.perf_counter() - t0:.0f} s\n")
    print_matrix(results)
    if args.json:
        doc = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "sizes": sizes,
               "window_s": args.window, "lookups": args.lookups, "workers_per_node": 1,
               "notes": notes, "results": results,
               "summary": {str(r["n"]): summarize(r) for r in results}}
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"\nresults written to {args.json}")
    if interrupted:
        return 130
    return 0 if all("error" not in r for r in results) else 1


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    if "--part" not in sys.argv:  # SIGTERM tears every LAN down, as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
