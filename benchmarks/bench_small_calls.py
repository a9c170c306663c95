"""Many small calls: trivial calls per second, ours beside the anchors, one run.

1. 20,000 trivial calls through ``sync_parallel`` on the embedded default (2 workers, every
   result stored durably);
2. 5,000 through one node on 127.0.0.1 (``--workers 2 --no-mdns``; the client's home has no
   node of its own), every result journaled on the node and copied into the client's store;
   and through 3 network-namespace hosts × 2 workers (a client on host 0, through its node:
   the calls spread over all three; skipped where namespaces cannot be made);
3. anchors: ``joblib.Parallel(n_jobs=2)`` auto-batched, ``ProcessPoolExecutor(2).map`` with
   ``chunksize`` 1 and 64, and Dask ``client.map`` on a 2-worker ``LocalCluster`` (stores
   nothing). Every pool is warmed first; fresh arguments each repetition; medians;
4. a rerun of 20,000 stored calls through ``sync_parallel`` (bulk hits), the memo hit of
   one call beside a ``joblib.Memory`` hit, and the miss of one call (computed in the caller,
   its result committed before it returns) beside a ``joblib.Memory`` miss;
5. the caller's memory for 200,000 trivial calls from a generator (``sync_parallel``, and
   ``async_parallel`` with its 200,000 futures), and for a million (``sync_parallel``, unless
   ``--quick``), each in a fresh process: the peak of its own (anonymous) memory, sampled every
   5 ms, and its peak resident size, which also counts the pages of the store's memory-mapped
   file it touched (the page cache of that file, shared and reclaimable, not the caller's).

    python benchmarks/bench_small_calls.py [--quick]
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

from report import Row, print_table, wait_until  # benchmarks/ is on sys.path when run as a script

from pythagoras_p2p.trust.enroll import admit, admit_all


def trivial(*, x: int) -> int:
    return x


def trivial_anchor(x: int) -> int:
    return x


def rate(run, n: int, repeats: int) -> float:
    times = []
    for rep in range(repeats):
        t0 = time.perf_counter()
        out = run(rep * n + 10 * n)
        times.append(time.perf_counter() - t0)
        assert len(out) == n
    return n / median(times)


def ours_embedded(n: int, repeats: int) -> float:
    from pythagoras_p2p import LocalCloud, kw_args

    with tempfile.TemporaryDirectory() as home:
        cloud = LocalCloud(home=home, workers=2)
        fn = cloud.add_pure_function(trivial)
        fn.sync_parallel(kw_args(x=-i - 1) for i in range(64))
        found = rate(lambda base: fn.sync_parallel(kw_args(x=i) for i in range(base, base + n)),
                     n, repeats)
        cloud.close()
    return found


def ours_node(n: int, repeats: int) -> float:
    from pythagoras_p2p import PCloud, kw_args
    from pythagoras_p2p.net.security import create_key

    root = Path(tempfile.mkdtemp(prefix="bench-small-"))
    home, client = root / "node", root / "client"
    create_key(home, name="bench-small")
    client.mkdir()
    admit(home, client, node=False)
    port = 17000 + os.getpid() % 1000
    env = {**os.environ, "PYTHAGORAS_HOME": str(home)}
    node = subprocess.Popen([sys.executable, "-m", "pythagoras_p2p.cli.main", "start", "--bind",
                             "127.0.0.1", "--port", str(port), "--no-mdns", "--workers", "2",
                             "--dedicated"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (home / "node.json").exists(), 60, "the node to serve")
        cloud = PCloud(connection=f"127.0.0.1:{port}", home=client)
        fn = cloud.add_pure_function(trivial)
        fn.sync_parallel(kw_args(x=-i - 1) for i in range(200))
        found = rate(lambda base: fn.sync_parallel(kw_args(x=i) for i in range(base, base + n)),
                     n, repeats)
        cloud.close()
    finally:
        node.terminate()
        node.wait(60)
        shutil.rmtree(root, ignore_errors=True)
    return found


def hits(n: int, repeats: int) -> tuple[float, float, float, float, float]:
    """Hits per second of a rerun of ``n`` stored calls; µs of one memo hit, ours and
    joblib.Memory's; µs of the miss of one call (computed in the caller, stored durably),
    ours and joblib.Memory's (which writes its files without syncing them)."""
    import joblib

    from pythagoras_p2p import LocalCloud, kw_args

    with tempfile.TemporaryDirectory() as home:
        cloud = LocalCloud(home=home, workers=2)
        fn = cloud.add_pure_function(trivial)
        fn.sync_parallel(kw_args(x=i) for i in range(n))
        rerun = rate(lambda base: fn.sync_parallel(kw_args(x=i) for i in range(n)), n,
                     max(repeats, 7))
        fn(x=1)
        ours = median(_per_call(lambda: fn(x=1)) for _ in range(repeats))
        fresh = iter(range(10 * n, 20 * n))
        ours_miss = median(_per_call(lambda: fn(x=next(fresh)), 200) for _ in range(repeats))
        cloud.close()
        memory = joblib.Memory(location=os.path.join(home, "joblib"), verbose=0)
        cached = memory.cache(trivial_anchor)
        cached(1)
        theirs = median(_per_call(lambda: cached(1)) for _ in range(repeats))
        theirs_miss = median(_per_call(lambda: cached(next(fresh)), 200) for _ in range(repeats))
    return rerun, ours, theirs, ours_miss, theirs_miss


def _per_call(call, calls: int = 2000) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - t0) / calls * 1e6


def memory_child(n: int, mode: str) -> None:
    """In a fresh process: run ``n`` trivial calls; print peak anonymous and resident MiB."""
    import threading

    from pythagoras_p2p import LocalCloud, kw_args

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], status("RssAnon"))

    with tempfile.TemporaryDirectory() as home:
        cloud = LocalCloud(home=home, workers=2)
        fn = cloud.add_pure_function(trivial)
        fn.sync_parallel(kw_args(x=-i - 1) for i in range(64))
        threading.Thread(target=sample, daemon=True).start()
        if mode == "async":
            futures = fn.async_parallel(kw_args(x=i) for i in range(n))
            out = [f.result() for f in futures]
        else:
            out = fn.sync_parallel(kw_args(x=i) for i in range(n))
        peak[0] = max(peak[0], status("RssAnon"))
        done.set()
        assert out == list(range(n))
        cloud.close()
    print(peak[0] / 1024, status("VmHWM") / 1024)


def memory(n: int, mode: str) -> tuple[float, float]:
    """(peak anonymous MiB, peak resident MiB) of a fresh process running ``n`` calls."""
    here = os.path.abspath(__file__)
    out = subprocess.run([sys.executable, here, "--memory-child", str(n), mode], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


REPO = Path(__file__).resolve().parents[1]


def part_swarm(params: dict) -> dict:
    """In host 0's namespace: trivial calls per second through its node, spread over 3 hosts."""
    from pythagoras_p2p import PCloud, kw_args

    cloud = PCloud()
    wait_until(lambda: len(cloud.ready_peers()) >= 3, 60, "3 nodes")
    fn = cloud.add_pure_function(trivial)
    fn.sync_parallel(kw_args(x=-i - 1) for i in range(600))
    n = params["n"]
    found = rate(lambda base: fn.sync_parallel(kw_args(x=i) for i in range(base, base + n)),
                 n, params["repeats"])
    cloud.close()
    return {"rate": found}


def ours_swarm(n: int, repeats: int) -> float | None:
    """Calls per second through 3 namespace hosts × 2 workers, or None without namespaces."""
    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    from netns import Lan, namespaces_available

    from pythagoras_p2p.net.security import create_key

    reason = namespaces_available()
    if reason is not None:
        print(f"(no 3-host row: {reason})")
        return None
    with tempfile.TemporaryDirectory() as tmp, Lan(3, Path(tmp) / "lan") as lan:
        create_key(lan.hosts[0].home, name="bench-small")
        admit_all(lan.hosts[0].home, [h.home for h in lan.hosts[1:]], admin=True)
        for host in lan.hosts:
            host.start_node(workers=2)
        wait_until(lambda: all(h.node_info() for h in lan.hosts), 60, "every node to serve")
        argv = [sys.executable, str(Path(__file__).resolve()), "--part", "swarm", "--params",
                json.dumps({"n": n, "repeats": repeats})]
        proc = lan.hosts[0].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=str(lan.hosts[0].home))
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += "".join(f"\n--- the node of host {h.index}, last lines:\n"
                           + "".join(h.log.read_text().splitlines(True)[-8:]) for h in lan.hosts)
        found = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"the 3-host part failed:\n{out}\n{err}")
        return json.loads(found[-1][len("RESULT "):])["rate"]


def anchors(n: int, repeats: int) -> dict[str, float]:
    import joblib

    out = {}
    with joblib.Parallel(n_jobs=2) as parallel:
        parallel(joblib.delayed(trivial_anchor)(i) for i in range(64))
        out["joblib.Parallel(n_jobs=2)"] = rate(
            lambda base: parallel(joblib.delayed(trivial_anchor)(i) for i in range(base, base + n)),
            n, repeats)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(trivial_anchor, range(64)))
        for chunk in (1, 64):
            out[f"ProcessPoolExecutor chunksize={chunk}"] = rate(
                lambda base, chunk=chunk: list(pool.map(trivial_anchor, range(base, base + n),
                                                        chunksize=chunk)), n, repeats)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return out
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather(client.map(trivial_anchor, range(64)))
        out["Dask client.map"] = rate(
            lambda base: client.gather(client.map(trivial_anchor, range(base, base + n))),
            n, min(repeats, 3))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repetitions")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print("RESULT " + json.dumps(part_swarm(json.loads(args.params))), flush=True)
        return 0
    if args.memory_child:
        memory_child(int(args.memory_child[0]), args.memory_child[1])
        return 0
    repeats = 3 if args.quick else 5
    big, small = (4000, 2000) if args.quick else (20_000, 5_000)
    embedded = ours_embedded(big, repeats)
    node = ours_node(small, repeats)
    swarm = ours_swarm(small, repeats)
    rerun, hit, joblib_hit, miss, joblib_miss = hits(20_000, repeats)
    sync_anon, sync_rss = memory(200_000, "sync")
    async_anon, async_rss = memory(200_000, "async")
    million = None if args.quick else memory(1_000_000, "sync")
    theirs = anchors(big, repeats)
    joblib_rate = theirs["joblib.Parallel(n_jobs=2)"]
    listed = "; ".join(f"{k} {v:,.0f}/s" for k, v in theirs.items())
    rows = [
        Row(f"{big:,} trivial calls, embedded default (stored)", f"{embedded:,.0f}/s", listed,
            f"{embedded / joblib_rate:.2f}× joblib", "≥ 1.0× joblib", embedded >= joblib_rate),
        Row(f"{small:,} trivial calls through one loopback node", f"{node:,.0f}/s",
            f"joblib {joblib_rate:,.0f}/s", f"{node / joblib_rate:.2f}× joblib", "≥ 0.3× joblib",
            node >= 0.3 * joblib_rate),
        *([] if swarm is None else [Row(
            f"{small:,} trivial calls over 3 namespace hosts × 2 workers", f"{swarm:,.0f}/s",
            f"one node {node:,.0f}/s", f"{swarm / node:.2f}× one node", "≥ one node",
            swarm >= node)]),
        Row("rerun of 20,000 stored calls (sync_parallel)", f"{rerun:,.0f}/s", "", "",
            "≥ 250,000/s", rerun >= 250_000),
        Row("memo hit of one call", f"{hit:.2f} µs", f"joblib.Memory {joblib_hit:.1f} µs",
            f"{joblib_hit / hit:.0f}× faster", "≤ 5 µs", hit <= 5),
        Row("miss of one call, stored durably", f"{miss:.0f} µs",
            f"joblib.Memory {joblib_miss:.0f} µs (no fsync)", f"{joblib_miss / miss:.2f}× theirs",
            "≤ joblib.Memory", miss <= joblib_miss),
        Row("caller's memory, 200,000 calls (sync_parallel)",
            f"{sync_anon:.0f} MiB own, {sync_rss:.0f} MiB resident", "", "", "≤ 150 MiB",
            sync_anon <= 150),
        Row("caller's memory, 200,000 futures (async_parallel)",
            f"{async_anon:.0f} MiB own, {async_rss:.0f} MiB resident", "", "", "≤ 150 MiB",
            async_anon <= 150),
    ]
    if million is not None:
        grown = million[0] - sync_anon
        results = 800_000 * (8 + 32) / 2**20  # the list, and an int (a 32-byte block) each
        rows.append(Row("caller's memory, 1,000,000 calls (sync_parallel)",
                        f"{million[0]:.0f} MiB own, {million[1]:.0f} MiB resident",
                        f"+{grown:.0f} MiB over 200,000; results +{results:.0f} MiB", "",
                        "grows by the results", grown <= results + 16))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
