"""Swarm benchmarks: the swarm's performance targets, on network-namespace hosts of this machine.

One run makes a LAN of three Linux network namespaces on a private bridge (the harness of
``tests/swarm/netns.py``), one real ``pythagoras-node start --workers 2`` in each, all holding
one swarm; every client and every anchor runs inside a namespace host, as a child process of
this script (``--part NAME``), so only the namespaces' own addresses are used (nodes announce
mDNS on their namespace address only). Measured side by side, in the same run:

1. 24 calls that sleep 0.3 s through ``sync_parallel`` from a client on host 0 (``PCloud()``,
   which finds the whole swarm through host 0's node), 3 hosts × 2 workers: seconds, timed after
   the client is constructed, connected to all 3 nodes and warmed by a small ``sync_parallel``.
   The floor is 24 × 0.3 / 6 = 1.2 s. Fresh arguments (a salt) each repetition: misses.
2. 8 CPU-bound calls (a pure-Python loop calibrated in this run to ~0.5 s single-threaded) on
   host 0's node alone: efficiency = (8 × single-call time / 2) / wall time, per repetition,
   the single-call time measured in the client right before and after each repetition. Also
   printed: how busy the two workers were (time inside the calls / (2 × wall)), which does not
   depend on that calibration (on some VMs one busy vCPU runs slower than two).
3. A 100 MiB float64 array shared by 8 trivial calls, client and node on host 0 with the same
   ``PYTHAGORAS_HOME``: overhead = wall time − wall time of the same 8 calls with a tiny
   argument (a fresh array each repetition, so it is hashed, stored and loaded every time);
   beside joblib ``Parallel(n_jobs=2)`` (its automatic memmapping), Dask ``client.scatter`` +
   ``submit`` on a 2-worker ``LocalCluster`` and ``ProcessPoolExecutor(2)``, measured the same
   way (big minus tiny), in host 0's namespace.
4. The same, but the calls go only to host 1's node (client on host 0, whose home holds the key
   and runs its own node; ``connection="<host 1>:7575"``): overhead beside a reference measured
   in the same run: one bare CurveZMQ DEALER→ROUTER transfer of 100 MiB in 4 MiB chunks from
   host 0 to a tiny receiver on host 1, plus one 100 MiB file write with ``fdatasync`` on host 1.
5. Trivial calls per second through host 0's node (client on host 0, same home, 2 workers,
   results stored; fresh arguments each repetition) beside a 2-worker Dask ``LocalCluster``
   (``client.map`` + ``gather``) on the same calls. No figure is set for this one: the
   target used here is "no slower than Dask".

Medians over repetitions. Needs root (network namespaces) and iproute2. Before the LAN is made,
4 GiB of memory is touched once (``--prefault-gib``; see :func:`prefault`), and before each item
the run waits up to ``--wait-quiet`` seconds for other work on the machine to stop; how busy the
machine still was is printed, as item 2 (all CPUs busy) suffers most from sharing them.

    python benchmarks/bench_swarm.py [--quick] [--profile DIR]

``--profile DIR`` also records py-spy profiles (raw collapsed stacks; client and node with its
workers) during items 3–5 into DIR; the timings of such a run are perturbed by the sampling.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

from report import (  # benchmarks/ is on sys.path when run as a script
    Row,
    print_node_logs,
    print_table,
    wait_until,
)

from pythagoras_p2p.trust.enroll import admit_all

REPO = Path(__file__).resolve().parent.parent
PORT = 7575
BARE_PORT = 7601
MIB = 1 << 20
BIG_BYTES = 100 * MIB
CHUNK = 4 * MIB


@dataclass
class Config:
    spread_reps: int  # (1)
    cpu_reps: int  # (2)
    big_reps: int  # (3) ours and the joblib/Dask anchors
    pool_reps: int  # (3) ProcessPoolExecutor, ~2.5 s a repetition
    remote_reps: int  # (4) ours and the bare transfer
    calls: int  # (5) calls per repetition
    rate_reps: int  # (5)


FULL = Config(spread_reps=7, cpu_reps=5, big_reps=7, pool_reps=3, remote_reps=7, calls=5000,
              rate_reps=3)
QUICK = Config(spread_reps=2, cpu_reps=2, big_reps=2, pool_reps=1, remote_reps=2, calls=1000,
               rate_reps=1)


# --------------------------------------------------------------------- functions under test
# Module level in this script (``__main__`` of every part), so they travel to the nodes by
# value, like a user's script. Pure functions take keyword-only parameters; the anchors'
# twins are positional. Their bodies import what they use: nothing else needs to travel.


def nap(*, i: int, salt: str, pause: float) -> list:
    import os
    import time

    time.sleep(pause)
    return [i, os.path.basename(os.environ.get("PYTHAGORAS_HOME", "?"))]


def spin(*, n: int, i: int, salt: str) -> list:
    """A pure-Python loop; returns [result, pid, start, end] (so where and when it ran)."""
    import os
    import time

    start, x = time.time(), 0
    for k in range(n):
        x = (x + k * i) & 0xFFFFFFFF
    return [x, os.getpid(), start, time.time()]


def touch(*, a, i: int, salt: str) -> float:
    return float(a[i]) + i


def touch_anchor(a, i: int) -> float:
    return float(a[i]) + i


def trivial(*, x: int, salt: str) -> int:
    return x


def trivial_anchor(x: int) -> int:
    return x


# --------------------------------------------------------------------- helpers for parts


def timed(action, *args, **kwargs) -> float:
    """Seconds ``action(*args, **kwargs)`` takes."""
    t0 = time.perf_counter()
    action(*args, **kwargs)
    return time.perf_counter() - t0


def fresh_salt(tag: str) -> str:
    return f"{tag}-{time.time_ns()}-{os.getpid()}"


def big_array(rep: int):
    """A 100 MiB float64 array whose content (so address) differs for every repetition and run."""
    import numpy as np

    a = np.random.default_rng(rep).random(BIG_BYTES // 8)
    a[-1] = time.time_ns()
    return a


def swarm_client(connection: str | None, *, peers: int):
    """``PCloud(connection=...)`` once it is connected to ``peers`` nodes."""
    from pythagoras_p2p import PCloud

    cloud = PCloud(connection=connection)
    if type(cloud).__name__ != "SwarmCloud":
        raise RuntimeError(f"expected a SwarmCloud, got {cloud!r}")
    deadline = time.monotonic() + 30
    while len(cloud.ready_peers()) < peers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the client reached {len(cloud.ready_peers())} of {peers} nodes")
        time.sleep(0.1)
    return cloud


def big_vs_tiny(run_big, run_tiny, reps: int) -> dict:
    """Per repetition: wall time with a fresh 100 MiB argument, then with a tiny one."""
    import numpy as np

    big, tiny = [], []
    for rep in range(reps):
        a = big_array(rep)  # made outside the timing
        big.append(timed(run_big, a, fresh_salt("big")))
        del a
        tiny.append(timed(run_tiny, np.arange(8.0) + rep, fresh_salt("tiny")))
    return {"big": big, "tiny": tiny, "overhead": [b - t for b, t in zip(big, tiny, strict=True)]}


# --------------------------------------------------------------------- parts (in a namespace)


def part_spread(p: dict) -> dict:
    """(1): PCloud() on host 0 spreads 24 calls of 0.3 s over the whole swarm."""
    from pythagoras_p2p import kw_args

    cloud = swarm_client(None, peers=p["hosts"])
    fn = cloud.add_pure_function(nap)
    warm = fresh_salt("warm")  # every node gets the function and loads it into its workers
    fn.sync_parallel((kw_args(i=i, salt=warm, pause=0.05) for i in range(2 * p["hosts"] * 2)),
                     progress=False)
    times, spread = [], {}
    for _ in range(p["reps"]):
        salt = fresh_salt("nap")
        t0 = time.perf_counter()
        out = fn.sync_parallel((kw_args(i=i, salt=salt, pause=0.3) for i in range(24)),
                               progress=False)
        times.append(time.perf_counter() - t0)
        assert [r[0] for r in out] == list(range(24)), out
        spread = {h: sum(1 for r in out if r[1] == h) for h in sorted({r[1] for r in out})}
    cloud.close()
    return {"times": times, "last_spread": spread}


def part_cpu(p: dict) -> dict:
    """(2): 8 calls of a ~0.5 s pure-Python loop on one 2-worker node.

    This machine's speed drifts by several per cent over seconds, so the single-call time of
    each repetition is measured right before and right after it, in this process.
    """
    from collections import Counter

    from pythagoras_p2p import kw_args

    n = 200_000
    for _ in range(6):  # calibrate in this process: ~0.5 s single-threaded
        took = timed(spin, n=n, i=3, salt="")
        n = max(1000, int(n * 0.5 / took))
        if abs(took - 0.5) < 0.02:
            break
    cloud = swarm_client(p["connection"], peers=1)
    fn = cloud.add_pure_function(spin)
    warm = fresh_salt("warm")
    fn.sync_parallel((kw_args(n=1000, i=i, salt=warm) for i in range(4)), progress=False)
    walls, singles, inside, workers = [], [], [], []
    for _ in range(p["reps"]):
        salt = fresh_salt("cpu")
        calls = [kw_args(n=n, i=i, salt=salt) for i in range(8)]
        before = timed(spin, n=n, i=3, salt="")
        t0 = time.perf_counter()
        out = fn.sync_parallel(calls, progress=False)
        walls.append(time.perf_counter() - t0)
        after = timed(spin, n=n, i=3, salt="")
        singles.append((before + after) / 2)
        inside.append(sum(end - start for _, _, start, end in out))  # seconds inside workers
        workers.append(sorted(Counter(pid for _, pid, _, _ in out).values()))
    cloud.close()
    return {"n": n, "singles": singles, "walls": walls, "inside": inside, "workers": workers}


def part_big_ours(p: dict) -> dict:
    """(3)/(4): 8 trivial calls sharing a fresh 100 MiB array, to the node named in connection."""
    from pythagoras_p2p import kw_args

    cloud = swarm_client(p["connection"], peers=1)
    fn = cloud.add_pure_function(touch)
    import numpy as np

    warm = fresh_salt("warm")
    fn.sync_parallel((kw_args(a=np.zeros(8), i=i, salt=warm) for i in range(8)), progress=False)

    def run(a, salt):
        out = fn.sync_parallel((kw_args(a=a, i=i, salt=salt) for i in range(8)), progress=False)
        assert out == [float(a[i]) + i for i in range(8)], out

    found = big_vs_tiny(run, run, p["reps"])
    cloud.close()
    return found


def part_big_anchors(p: dict) -> dict:
    """(3) anchors on one machine: joblib memmapping, Dask scatter, ProcessPoolExecutor."""
    from concurrent.futures import ProcessPoolExecutor

    import joblib
    import numpy as np

    out = {}

    def check(values, a) -> None:
        assert list(values) == [float(a[i]) + i for i in range(8)]

    with joblib.Parallel(n_jobs=2) as parallel:  # loky; arrays over 1 MB are memmapped
        parallel(joblib.delayed(touch_anchor)(np.zeros(8), i) for i in range(8))

        def run_joblib(a, salt):
            check(parallel(joblib.delayed(touch_anchor)(a, i) for i in range(8)), a)

        out["joblib"] = big_vs_tiny(run_joblib, run_joblib, p["reps"])

    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather(client.map(touch_anchor, [np.zeros(8)] * 8, range(8), pure=False))

        def run_dask_big(a, salt):
            shared = client.scatter(a)
            futures = [client.submit(touch_anchor, shared, i, pure=False) for i in range(8)]
            check(client.gather(futures), a)
            del futures, shared

        def run_dask_tiny(a, salt):
            futures = [client.submit(touch_anchor, a, i, pure=False) for i in range(8)]
            check(client.gather(futures), a)

        out["Dask"] = big_vs_tiny(run_dask_big, run_dask_tiny, p["reps"])

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(touch_anchor, [np.zeros(8)] * 8, range(8)))

        def run_pool(a, salt):
            check(pool.map(touch_anchor, [a] * 8, range(8)), a)

        out["ProcessPool"] = big_vs_tiny(run_pool, run_pool, p["pool_reps"])
    return out


def part_bare_receive(p: dict) -> dict:
    """(4) reference, on host 1: a CurveZMQ ROUTER that takes 100 MiB in chunks and writes it."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.rcvhwm = sock.sndhwm = 0
    sock.curve_server = True
    sock.curve_secretkey = p["server_secret"].encode()
    sock.curve_publickey = p["server_public"].encode()
    sock.bind(f"tcp://{p['ip']}:{BARE_PORT}")
    print("listening", flush=True)
    chunks: list = []
    writes = []
    while True:
        ident, op, *body = sock.recv_multipart(copy=False)
        op = op.bytes
        if op == b"chunk":
            chunks.append(body[0])
        elif op == b"end":
            got = sum(len(c) for c in chunks)
            sock.send_multipart([ident, str(got).encode()])
        elif op == b"write":  # one 100 MiB file with fdatasync, like a store's blob write
            path = Path(p["dir"]) / f"bare-write-{len(writes)}.bin"  # new, and kept, like a blob
            t0 = time.perf_counter()
            with open(path, "wb") as f:
                for c in chunks:
                    f.write(c.buffer)
                f.flush()
                os.fdatasync(f.fileno())
            writes.append(time.perf_counter() - t0)
            chunks = []
            sock.send_multipart([ident, b"written"])
        elif op == b"ping":
            sock.send_multipart([ident, b"pong"])
        elif op == b"quit":
            sock.send_multipart([ident, b"bye"])
            break
    sock.close(0)
    ctx.term()
    return {"writes": writes}


def part_bare_send(p: dict) -> dict:
    """(4) reference, on host 0: send 100 MiB in 4 MiB CurveZMQ messages; then ask for a write."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvhwm = sock.sndhwm = 0
    public, secret = zmq.curve_keypair()
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.curve_serverkey = p["server_public"].encode()
    sock.connect(f"tcp://{p['ip']}:{BARE_PORT}")
    sock.send_multipart([b"ping"])  # the CURVE handshake happens before timing
    assert sock.recv() == b"pong"
    transfers = []
    for rep in range(p["reps"]):
        view = memoryview(big_array(rep)).cast("B")
        t0 = time.perf_counter()
        for offset in range(0, len(view), CHUNK):
            sock.send_multipart([b"chunk", view[offset: offset + CHUNK]], copy=False)
        sock.send_multipart([b"end"])
        got = int(sock.recv())
        transfers.append(time.perf_counter() - t0)
        assert got == BIG_BYTES, got
        sock.send_multipart([b"write"])
        assert sock.recv() == b"written"
    sock.send_multipart([b"quit"])
    sock.recv()
    sock.close(0)
    ctx.term()
    return {"transfers": transfers}


def part_rate_ours(p: dict) -> dict:
    """(5): trivial calls through the node of this host (same home), results stored."""
    from pythagoras_p2p import kw_args

    cloud = swarm_client(p["connection"], peers=1)
    fn = cloud.add_pure_function(trivial)
    warm = fresh_salt("warm")
    fn.sync_parallel((kw_args(x=i, salt=warm) for i in range(200)), progress=False)
    n, rates = p["calls"], []

    def run(salt: str) -> None:
        out = fn.sync_parallel((kw_args(x=i, salt=salt) for i in range(n)), progress=False)
        assert out == list(range(n))

    for _ in range(p["reps"]):
        rates.append(n / timed(run, fresh_salt("rate")))
    cloud.close()
    return {"rates": rates}


def part_rate_dask(p: dict) -> dict:
    """(5) anchor: the same calls on a 2-worker Dask LocalCluster (client.map + gather)."""
    from dask.distributed import Client, LocalCluster

    n, rates = p["calls"], []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        def run(base: int) -> None:
            out = client.gather(client.map(trivial_anchor, range(base, base + n)))
            assert out[0] == base and out[-1] == base + n - 1

        run(-200)
        for rep in range(p["reps"]):
            rates.append(n / timed(run, (rep + 1) * 10 * n))
    return {"rates": rates}


PARTS = {
    "spread": part_spread, "cpu": part_cpu, "big_ours": part_big_ours,
    "big_anchors": part_big_anchors, "bare_receive": part_bare_receive,
    "bare_send": part_bare_send, "rate_ours": part_rate_ours, "rate_dask": part_rate_dask,
}


def run_part_here(name: str, params: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = PARTS[name](json.loads(params))
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------- orchestration


class Bench:
    """The LAN, its nodes, and how parts are run in its hosts."""

    def __init__(self, lan, profile: Path | None):
        self.lan = lan
        self.profile = profile

    def start_part(self, host, name: str, params: dict):
        argv = [sys.executable, str(Path(__file__).resolve()), "--part", name,
                "--params", json.dumps(params)]
        return host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=str(host.home))

    def finish_part(self, proc, name: str, timeout: float = 600) -> dict:
        out, err = proc.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"part {name} failed (exit {proc.returncode}):\n{out}\n{err}")
        return json.loads(lines[-1][len("RESULT "):])

    def part(self, host, name: str, params: dict, *, profile_node=None) -> dict:
        proc = self.start_part(host, name, params)
        spies = []
        if self.profile is not None and name in ("big_ours", "rate_ours"):
            tag = f"{name}-{params.get('tag', '')}".rstrip("-")
            spies.append(py_spy(proc.pid, self.profile / f"{tag}-client.txt", subprocesses=False))
            if profile_node is not None:
                spies.append(py_spy(profile_node.node_pid(),
                                    self.profile / f"{tag}-node-{profile_node.index}.txt",
                                    subprocesses=True))
        try:
            return self.finish_part(proc, name)
        finally:
            for spy in spies:  # the client's ends with it; the node's is stopped like Ctrl-C
                try:
                    spy.wait(5)
                except subprocess.TimeoutExpired:
                    spy.send_signal(signal.SIGINT)
                    try:
                        spy.wait(30)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        spy.wait()


def py_spy(pid: int, out: Path, *, subprocesses: bool) -> subprocess.Popen:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [exe, "record", "--format", "raw", "--rate", "250", "--nonblocking", "--threads",
            "-o", str(out), "--pid", str(pid)]
    if subprocesses:
        argv.append("--subprocesses")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_lan(root: Path):
    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    from netns import Lan, namespaces_available

    reason = namespaces_available()
    if reason is not None:
        raise SystemExit(f"bench_swarm needs Linux network namespaces: {reason}")
    return Lan(3, root)


def start_swarm(lan) -> None:
    from pythagoras_p2p.net.security import create_key

    first = lan.hosts[0]
    create_key(first.home, name="bench-swarm")
    admit_all(first.home, [h.home for h in lan.hosts[1:]], admin=True)
    for host in lan.hosts:
        host.start_node(workers=2)
    wait_until(lambda: all(h.node_info() for h in lan.hosts), 60, "every node to serve")
    ids = {h.node_info()["id"] for h in lan.hosts}

    def first_knows_all() -> bool:
        try:
            return {p["id"] for p in first.status()["peers"]} == ids
        except RuntimeError:
            return False

    wait_until(first_knows_all, 60, "host 0's node to know every node")


def prefault(gib: float) -> str:
    """Touch ``gib`` GiB of fresh memory in a child process, and say how fast that went.

    Some virtual machines back guest memory lazily: the first touch of a page the guest has
    never used costs ~20× a later one (2.4 s/GiB seen here, against 0.12 s/GiB). Page-cache
    growth (every stored 100 MiB value) would pay it, charged to whichever item comes first.
    Touching and freeing memory first makes the run measure the software, not the hypervisor.
    """
    if gib <= 0:
        return "memory not pre-touched (--prefault-gib 0)"
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    gib = min(gib, 0.4 * info["MemAvailable"] / (1 << 20))
    code = (f"import numpy as np, time; t = time.perf_counter(); a = np.ones({int(gib * (1 << 30)) // 8}); "
            f"print(time.perf_counter() - t)")
    took = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout)
    return (f"pre-touched {gib:.1f} GiB of memory in {took:.1f} s ({took / gib:.2f} s/GiB; "
            f"~0.12 s/GiB once the VM backs the pages)")


def run_all(cfg: Config, profile: Path | None, prefault_gib: float,
            wait_quiet: float) -> tuple[list[Row], list[str]]:
    root = Path(tempfile.mkdtemp(prefix="pythagoras-bench-swarm-", dir="/tmp"))
    notes: list[str] = [prefault(prefault_gib)]
    try:
        with make_lan(root) as lan:
            t0 = time.perf_counter()
            start_swarm(lan)
            h0, h1 = lan.hosts[0], lan.hosts[1]
            notes.append(f"swarm of 3 namespace hosts ({', '.join(h.ip for h in lan.hosts)}) "
                         f"serving in {time.perf_counter() - t0:.1f} s")
            bench = Bench(lan, profile)
            own = f"{h0.ip}:{PORT}"
            results, busy = {}, {}
            for name, step in (
                ("spread", lambda: bench.part(h0, "spread", {"hosts": 3, "reps": cfg.spread_reps})),
                ("cpu", lambda: bench.part(h0, "cpu", {"connection": own, "reps": cfg.cpu_reps})),
                ("local", lambda: bench.part(h0, "big_ours", {"connection": own, "tag": "local",
                                                              "reps": cfg.big_reps},
                                             profile_node=h0)),
                ("anchors", lambda: bench.part(h0, "big_anchors", {"reps": cfg.big_reps,
                                                                   "pool_reps": cfg.pool_reps})),
                ("bare", lambda: bare_transfer(bench, h0, h1, cfg.remote_reps)),
                ("remote", lambda: bench.part(h0, "big_ours", {"connection": f"{h1.ip}:{PORT}",
                                                               "tag": "remote",
                                                               "reps": cfg.remote_reps},
                                              profile_node=h1)),
                ("rate", lambda: bench.part(h0, "rate_ours", {"connection": own, "calls": cfg.calls,
                                                              "reps": cfg.rate_reps},
                                            profile_node=h0)),
                ("rate_dask", lambda: bench.part(h0, "rate_dask", {"calls": cfg.calls,
                                                                   "reps": cfg.rate_reps})),
            ):
                busy[name] = wait_for_quiet(wait_quiet)  # our swarm is idle: this is other work
                t = time.perf_counter()
                try:
                    results[name] = step()
                except BaseException:
                    print_node_logs(lan)
                    raise
                print(f"  {name} done in {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    notes.append("CPU busy (all cores, whole machine) in the 0.5 s before each item, while this "
                 "run was idle (other work): " + ", ".join(f"{k} {v:.0%}" for k, v in busy.items()))
    if max(busy.values()) > 0.15:
        notes.append("WARNING: other work was running on this machine during the run; "
                     "timings (item 2 above all) are perturbed")
    return make_rows(results, notes), notes


def wait_for_quiet(limit: float, threshold: float = 0.15) -> float:
    """Wait up to ``limit`` seconds for the machine to be under ``threshold`` busy; the last
    busy fraction seen (over 0.5 s)."""
    deadline = time.monotonic() + limit
    while True:
        busy = machine_busy(0.5)
        if busy < threshold or time.monotonic() > deadline:
            return busy


def machine_busy(seconds: float) -> float:
    """Fraction of every CPU of this machine busy over ``seconds`` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def bare_transfer(bench: Bench, h0, h1, reps: int) -> dict:
    import zmq

    public, secret = zmq.curve_keypair()
    keys = {"server_public": public.decode(), "server_secret": secret.decode()}
    receiver = bench.start_part(h1, "bare_receive", {"ip": h1.ip, "dir": str(h1.home), **keys})
    line = receiver.stdout.readline()
    if line.strip() != "listening":
        receiver.kill()
        raise RuntimeError(f"the bare receiver did not start: {line}{receiver.stderr.read()}")
    try:
        sent = bench.part(h0, "bare_send", {"ip": h1.ip, "reps": reps, **keys})
    finally:
        received = bench.finish_part(receiver, "bare_receive", timeout=120)
    return {**sent, **received}


# --------------------------------------------------------------------- report


def make_rows(r: dict, notes: list[str]) -> list[Row]:
    rows = []

    spread = median(r["spread"]["times"])
    floor = 24 * 0.3 / 6
    notes.append(f"(1) seconds per repetition {fmt_list(r['spread']['times'])}; calls per host "
                 f"in the last one {r['spread']['last_spread']}")
    rows.append(Row("1. 24 × 0.3 s sleeps, sync_parallel, 3 hosts × 2 workers", f"{spread:.3f} s",
                    f"floor {floor:.1f} s", f"{spread / floor:.2f}× floor", "≤ 1.5 s",
                    spread <= 1.5))

    cpu = r["cpu"]
    effs = [4 * s / w for s, w in zip(cpu["singles"], cpu["walls"], strict=True)]
    busy = [t / (2 * w) for t, w in zip(cpu["inside"], cpu["walls"], strict=True)]
    eff, single, wall = median(effs), median(cpu["singles"]), median(cpu["walls"])
    notes.append(f"(2) loop of {cpu['n']:,} steps; per repetition: single call (mean of before "
                 f"and after) {fmt_list(cpu['singles'])} s, wall {fmt_list(cpu['walls'])} s, "
                 f"efficiency {fmt_list(effs)}; seconds inside the workers, summed "
                 f"{fmt_list(cpu['inside'])}, so the 2 workers were busy {fmt_list(busy)} of the "
                 f"wall time; calls per worker {cpu['workers']}")
    rows.append(Row("2. 8 CPU-bound ~0.5 s calls, one 2-worker node", f"wall {wall:.3f} s",
                    f"ideal 8 × {single:.3f} s / 2 = {4 * single:.3f} s",
                    f"efficiency {eff:.3f} (workers busy {median(busy):.0%} of the wall time)",
                    "≥ 0.95", eff >= 0.95))

    local = r["local"]
    ours3 = median(local["overhead"])
    anchors = {k: median(v["overhead"]) for k, v in r["anchors"].items()}
    notes.append(f"(3) ours: big {fmt_list(local['big'])} s, tiny {fmt_list(local['tiny'])} s")
    for k, v in r["anchors"].items():
        notes.append(f"(3) {k}: big {fmt_list(v['big'])} s, tiny {fmt_list(v['tiny'])} s")
    names = {"joblib": "joblib memmap", "Dask": "Dask scatter", "ProcessPool": "ProcessPoolExecutor"}
    rows.append(Row("3. 100 MiB arg × 8 trivial calls, own node (same home): overhead",
                    f"{ours3:.3f} s",
                    "; ".join(f"{names[k]} {v:.3f} s" for k, v in anchors.items()),
                    "; ".join(f"{v / ours3:.2f}× {names[k]}" for k, v in anchors.items())
                    + " (anchor / ours)", "≤ 0.15 s", ours3 <= 0.15))

    remote, bare = r["remote"], r["bare"]
    ours4 = median(remote["overhead"])
    transfer, write = median(bare["transfers"]), median(bare["writes"])
    reference = transfer + write
    notes.append(f"(4) ours: big {fmt_list(remote['big'])} s, tiny {fmt_list(remote['tiny'])} s; "
                 f"bare transfers {fmt_list(bare['transfers'])} s "
                 f"({BIG_BYTES / MIB / transfer:.0f} MiB/s), writes {fmt_list(bare['writes'])} s")
    rows.append(Row("4. 100 MiB arg × 8 trivial calls, node on another host: overhead",
                    f"{ours4:.3f} s",
                    f"bare CurveZMQ 100 MiB {transfer:.3f} s + fdatasync write {write:.3f} s "
                    f"= {reference:.3f} s", f"{ours4 / reference:.2f}× reference",
                    "≤ 1.5× reference", ours4 <= 1.5 * reference))

    ours5, dask5 = median(r["rate"]["rates"]), median(r["rate_dask"]["rates"])
    notes.append(f"(5) ours calls/s {fmt_list(r['rate']['rates'], '.0f')}; Dask "
                 f"{fmt_list(r['rate_dask']['rates'], '.0f')}")
    rows.append(Row("5. trivial calls/s through one node (2 workers)", f"{ours5:,.0f}/s",
                    f"Dask LocalCluster(2) {dask5:,.0f}/s", f"{ours5 / dask5:.2f}× Dask",
                    "≥ Dask (no target set)", ours5 >= dask5))
    return rows


def fmt_list(values: list[float], spec: str = ".3f") -> str:
    return "[" + ", ".join(format(v, spec) for v in values) + "]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: a smoke run")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record py-spy profiles of items 3-5 into DIR (perturbs timings)")
    parser.add_argument("--prefault-gib", type=float, default=4.0, metavar="GIB",
                        help="touch this much memory first (see prefault(); 0: do not)")
    parser.add_argument("--wait-quiet", type=float, default=15.0, metavar="SECONDS",
                        help="before each item, wait up to this long for other work on the "
                             "machine to stop (it shares the CPUs)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        run_part_here(args.part, args.params)
        return 0
    cfg = QUICK if args.quick else FULL
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    import joblib
    import numpy as np

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, joblib {joblib.__version__}, "
          f"{os.cpu_count()} CPUs; {'quick' if cfg is QUICK else 'full'} run {asdict(cfg)}; "
          f"medians", flush=True)
    t0 = time.perf_counter()
    rows, notes = run_all(cfg, args.profile, args.prefault_gib, args.wait_quiet)
    print(f"\nall done in {time.perf_counter() - t0:.0f} s")
    for note in notes:
        print("  " + note)
    print()
    print_table(rows)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
