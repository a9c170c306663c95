"""Many small calls (issue 15): trivial calls per second, ours beside the anchors, one run.

1. 20,000 trivial calls through ``sync_parallel`` on the embedded default (2 workers, every
   result stored durably);
2. 5,000 through one node on 127.0.0.1 (``--workers 2 --no-mdns``; the client's home has no
   node of its own), every result journaled on the node and copied into the client's store;
3. anchors: ``joblib.Parallel(n_jobs=2)`` auto-batched, ``ProcessPoolExecutor(2).map`` with
   ``chunksize`` 1 and 64, and Dask ``client.map`` on a 2-worker ``LocalCluster`` (stores
   nothing). Every pool is warmed first; fresh arguments each repetition; medians.

    python benchmarks/bench_small_calls.py [--quick]
"""

from __future__ import annotations

import argparse
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
    shutil.copy(home / "swarm.key", client / "swarm.key")
    port = 17000 + os.getpid() % 1000
    env = {**os.environ, "PYTHAGORAS_HOME": str(home)}
    node = subprocess.Popen([sys.executable, "-m", "pythagoras_p2p.cli.main", "start", "--bind",
                             "127.0.0.1", "--port", str(port), "--no-mdns", "--workers", "2"],
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
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    big, small = (4000, 2000) if args.quick else (20_000, 5_000)
    embedded = ours_embedded(big, repeats)
    node = ours_node(small, repeats)
    theirs = anchors(big, repeats)
    joblib_rate = theirs["joblib.Parallel(n_jobs=2)"]
    listed = "; ".join(f"{k} {v:,.0f}/s" for k, v in theirs.items())
    rows = [
        Row(f"{big:,} trivial calls, embedded default (stored)", f"{embedded:,.0f}/s", listed,
            f"{embedded / joblib_rate:.2f}× joblib", "≥ 1.0× joblib", embedded >= joblib_rate),
        Row(f"{small:,} trivial calls through one loopback node", f"{node:,.0f}/s",
            f"joblib {joblib_rate:,.0f}/s", f"{node / joblib_rate:.2f}× joblib", "≥ 0.3× joblib",
            node >= 0.3 * joblib_rate),
    ]
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
