"""Node benchmarks: one remote call's round trip, start-up time, and what an idle node costs.

Everything runs on loopback in one run, beside the anchors:

1. ``sync_remote`` round trip of a cache miss (a trivial function, fresh arguments each call)
   to a node on 127.0.0.1, its result journaled on the node before the reply — beside
   ``ProcessPoolExecutor.submit().result()``, a bare ZeroMQ REQ/REP round trip, and Dask's
   ``client.submit().result()`` on a 1-worker ``LocalCluster`` (if installed), and the bare
   chain: the same three processes and hops with no work at all (see :func:`chain_round_trip`);
2. ``pythagoras-node start`` until it serves (``node.json`` written), from process start;
3. CPU of an idle node, all its processes together (node + workers), over a quiet window,
   beside an idle Dask ``LocalCluster`` with two worker processes.

Nodes run with ``--bind 127.0.0.1 --no-mdns``: nothing leaves this machine.

    python benchmarks/bench_node.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

import psutil
from report import (  # benchmarks/ is on sys.path when run as a script
    median_seconds,
    start_loopback_node,
)

from pythagoras_p2p import PCloud
from pythagoras_p2p.net.security import create_key
from pythagoras_p2p.trust.enroll import admit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(home: Path, port: int) -> tuple[subprocess.Popen, float]:
    """Start a node; return it and the seconds until it served."""
    t0 = time.perf_counter()
    proc = start_loopback_node(home, port, "--workers", "2", "--dedicated", timeout=30,
                               poll=0.002)
    return proc, time.perf_counter() - t0


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def trivial(x: int) -> int:
    return x


def bench_round_trip(port: int, client_home: Path, n: int) -> dict[str, float]:
    out = {}
    cloud = PCloud(connection=f"127.0.0.1:{port}", home=client_home)

    @cloud.add_pure_function
    def echo(*, x: int, salt: float) -> int:
        return x

    salt = time.time()
    out["ours"] = median_seconds(lambda i: echo.sync_remote(x=i, salt=salt), n, warmup=20)
    cloud.close()
    with ProcessPoolExecutor(1) as pool:
        out["ProcessPoolExecutor"] = median_seconds(lambda i: pool.submit(trivial, i).result(), n, warmup=20)
    out["bare ZeroMQ REQ/REP"] = zmq_round_trip(n)
    out["bare chain"] = chain_round_trip(n)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return out
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        out["Dask"] = median_seconds(lambda i: client.submit(trivial, i, pure=False).result(), min(n, 300),
                                       warmup=20)
    return out


def zmq_round_trip(n: int) -> float:
    import threading

    import zmq

    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")

    def serve() -> None:
        for _ in range(n + 20):
            rep.send(rep.recv())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    req = ctx.socket(zmq.REQ)
    req.connect(f"tcp://127.0.0.1:{port}")
    result = _echo_median(req, n, 32)
    thread.join(5)
    req.close(0)
    rep.close(0)
    ctx.term()
    return result


def _echo_median(sock, n: int, size: int) -> float:
    """Median seconds for ``sock`` to send ``size`` bytes and receive the answer."""
    def once(i: int) -> None:
        sock.send(b"x" * size)
        sock.recv()

    return median_seconds(once, n, warmup=20)


def _chain_node(ready, stop_after: int) -> None:
    """The bare chain's node process: a CurveZMQ ROUTER that hands each message over a pipe to
    a worker process and the worker's answer back, polling without sleeping while one is out."""
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    if os.fork() == 0:  # the worker (forked before any socket exists): answer each message
        os.close(to_worker_w)
        os.close(from_worker_r)
        while data := os.read(to_worker_r, 65536):
            os.write(from_worker_w, data)
        os._exit(0)
    os.close(to_worker_r)
    os.close(from_worker_w)
    import zmq

    ctx = zmq.Context()
    public, secret = zmq.curve_keypair()
    router = ctx.socket(zmq.ROUTER)
    router.curve_server, router.curve_secretkey, router.curve_publickey = True, secret, public
    port = router.bind_to_random_port("tcp://127.0.0.1")
    os.set_blocking(from_worker_r, False)
    ready.put((port, public))
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    for _ in range(stop_after):
        while not poller.poll(1000):
            pass
        ident, body = router.recv_multipart()
        os.write(to_worker_w, body)
        while True:
            try:
                answer = os.read(from_worker_r, 65536)
                break
            except BlockingIOError:
                continue
        router.send_multipart([ident, answer])
    os.close(to_worker_w)
    os.wait()


def chain_round_trip(n: int) -> float:
    """The hops of a remote call with no work at all: a CurveZMQ DEALER here → a ROUTER in a
    node process → a pipe → a worker process, and back the same way: what this machine's
    scheduler and sockets alone cost a call that crosses three processes."""
    import multiprocessing

    import zmq

    mp = multiprocessing.get_context("fork")
    ready = mp.Queue()
    node = mp.Process(target=_chain_node, args=(ready, n + 20), daemon=True)
    node.start()
    port, server_public = ready.get(timeout=30)
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.curve_serverkey = server_public
    dealer.curve_publickey, dealer.curve_secretkey = zmq.curve_keypair()
    dealer.connect(f"tcp://127.0.0.1:{port}")
    result = _echo_median(dealer, n, 100)
    node.join(10)
    dealer.close(0)
    ctx.term()
    return result


def cpu_fraction(pids: list[int], seconds: float) -> float:
    """CPU time of ``pids`` and their children over ``seconds``, as a fraction of one core."""
    procs = []
    for pid in pids:
        p = psutil.Process(pid)
        procs += [p, *p.children(recursive=True)]

    def total() -> float:
        t = 0.0
        for p in procs:
            try:
                c = p.cpu_times()
                t += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return t

    before = total()
    time.sleep(seconds)
    return (total() - before) / seconds


def idle_dask(seconds: float) -> float | None:
    try:
        from dask.distributed import LocalCluster
    except ImportError:
        return None
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None):
        time.sleep(2)
        return cpu_fraction([os.getpid()], seconds)  # the scheduler runs here, workers are children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    n = 200 if args.quick else 1000
    idle_seconds = 3.0 if args.quick else 10.0
    root = Path(tempfile.mkdtemp(prefix="pythagoras-bench-"))
    try:
        home, client_home = root / "node", root / "client"
        create_key(home, name="bench")
        client_home.mkdir()
        admit(home, client_home, node=False)
        starts = []
        for _ in range(3 if args.quick else 5):
            port = free_port()
            proc, took = start_node(home, port)
            starts.append(took)
            stop(proc)
        port = free_port()
        proc, _ = start_node(home, port)
        try:
            rt = bench_round_trip(port, client_home, n)
            time.sleep(2)
            idle_ours = cpu_fraction([proc.pid], idle_seconds)
        finally:
            stop(proc)
        idle_anchor = idle_dask(idle_seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"python {sys.version.split()[0]}; medians; loopback only")
    print(f"{'metric':44} | {'ours':>10} | anchors")
    ours = rt.pop("ours")
    anchors = ", ".join(f"{k} {v * 1e6:.0f} µs ({v / ours:.2f}× ours)" for k, v in rt.items())
    print(f"{'sync_remote round trip (miss, journaled)':44} | {ours * 1e6:8.0f}µs | {anchors}"
          f"  [target ≤ 250 µs]")
    print(f"{'start → serving':44} | {median(starts):9.3f}s | [target ≤ 0.5 s]")
    dask = "n/a" if idle_anchor is None else f"Dask LocalCluster(2) {idle_anchor:.2%} of a core"
    print(f"{'idle node, all processes':44} | {idle_ours:9.2%} | {dask}  [target ≤ 0.5 %]")


if __name__ == "__main__":
    main()
