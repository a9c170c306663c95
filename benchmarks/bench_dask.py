"""DaskCloud beside plain Dask on the same cluster: what memoization costs and what it saves.

One ``distributed.LocalCluster`` (2 worker processes, 1 thread each, 127.0.0.1, no dashboard)
runs both sides, one after the other, in the same run:

1. trivial calls: ``f.sync_parallel`` of N fresh calls (results stored durably in the local
   store) vs ``client.gather(client.map(f, ...))``; the difference per call is our overhead;
2. one call: ``f.sync_remote`` of a fresh call vs ``client.submit(f, x).result()``;
3. the same N calls again: ours answers them from the local store without touching the cluster;
   plain Dask computes them again (its futures were released): the speed-up of a cached rerun;
4. calls that work (40 × 50 ms of sleep): wall time ours vs ``client.map``;
5. a 100 MiB numpy argument shared by 8 calls: ours (scattered once under its address) vs
   ``client.scatter`` + ``client.map``.

All figures are medians over repetitions; only loopback is used.

    python benchmarks/bench_dask.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from statistics import median

import numpy as np
from distributed import Client, LocalCluster
from report import Row, print_table  # benchmarks/ is on sys.path when run as a script

from pythagoras_p2p import DaskCloud, kw_args


def inc(*, x):
    return x + 1


def nap(*, x):
    time.sleep(0.05)
    return x


def total(*, data, k):
    return float(data[::4096].sum()) + k


def plain_inc(x):
    return x + 1


def plain_nap(x):
    time.sleep(0.05)
    return x


def plain_total(data, k):
    return float(data[::4096].sum()) + k


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repetitions")
    args = parser.parse_args()
    n, reps = (500, 3) if args.quick else (2000, 5)
    fresh = itertools.count(10**9)

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster, set_as_default=False)
    home = tempfile.mkdtemp(prefix="bench-dask-")
    cloud = DaskCloud(scheduler=client, home=home)
    f_inc, f_nap, f_total = (cloud.add_pure_function(fn) for fn in (inc, nap, total))
    rows: list[Row] = []
    try:
        f_inc.sync_parallel(kw_args(x=next(fresh)) for _ in range(50))  # warm both sides
        client.gather(client.map(plain_inc, range(50)))

        # 1. trivial calls, fresh each repetition
        ours, theirs = [], []
        for _ in range(reps):
            base = next(fresh) * 10_000
            ours.append(timed(lambda b=base: f_inc.sync_parallel(kw_args(x=b + i) for i in range(n))))
            theirs.append(timed(lambda b=base: client.gather(client.map(plain_inc, range(b, b + n)))))
        o, t = median(ours), median(theirs)
        rows.append(Row(f"{n} trivial calls (per call)", f"{o / n * 1e6:.0f} µs",
                        f"client.map {t / n * 1e6:.0f} µs", f"{o / t:.2f}× client.map",
                        "report", True))
        rows.append(Row("our overhead per call", f"{(o - t) / n * 1e6:+.0f} µs",
                        "(lookup, hashing, durable store)", "", "report", True))

        # 2. one call
        ours = [timed(lambda: f_inc.sync_remote(x=next(fresh))) for _ in range(reps * 10)]
        theirs = [timed(lambda: client.submit(plain_inc, next(fresh)).result()) for _ in range(reps * 10)]
        rows.append(Row("one call, round trip", f"{median(ours) * 1e3:.2f} ms",
                        f"client.submit {median(theirs) * 1e3:.2f} ms",
                        f"{median(ours) / median(theirs):.2f}× submit", "report", True))

        # 3. the same calls again
        base = next(fresh) * 10_000
        first = timed(lambda: f_inc.sync_parallel(kw_args(x=base + i) for i in range(n)))
        again = median(timed(lambda: f_inc.sync_parallel(kw_args(x=base + i) for i in range(n)))
                       for _ in range(reps))
        plain_again = median(timed(lambda: client.gather(client.map(plain_inc, range(base, base + n))))
                             for _ in range(reps))
        rows.append(Row(f"rerun of {n} stored calls", f"{again * 1e3:.1f} ms",
                        f"first run {first * 1e3:.0f} ms; client.map again {plain_again * 1e3:.0f} ms",
                        f"{first / again:.0f}× first; {plain_again / again:.0f}× client.map",
                        "report", True))

        # 4. calls that work
        ours, theirs = [], []
        for _ in range(reps):
            base = next(fresh) * 100
            ours.append(timed(lambda b=base: f_nap.sync_parallel(kw_args(x=b + i) for i in range(40))))
            theirs.append(timed(lambda b=base: client.gather(client.map(plain_nap, range(b, b + 40)))))
        o, t = median(ours), median(theirs)
        rows.append(Row("40 × 50 ms calls, 2 workers", f"{o:.3f} s", f"client.map {t:.3f} s",
                        f"{o / t:.2f}× client.map", "floor 1.0 s", True))

        # 5. a large argument shared by 8 calls (a fresh array each repetition)
        ours, theirs = [], []
        for rep in range(reps):
            data = np.full(100 * 2**20 // 8, float(rep + 10 * next(fresh)))
            ours.append(timed(lambda d=data: f_total.sync_parallel(kw_args(data=d, k=k) for k in range(8))))
            data = np.full(100 * 2**20 // 8, float(rep + 10 * next(fresh)))

            def plain(d=data):
                shared = client.scatter(d)
                client.gather(client.map(plain_total, [shared] * 8, range(8)))
                client.cancel(shared)

            theirs.append(timed(plain))
        o, t = median(ours), median(theirs)
        rows.append(Row("100 MiB argument × 8 calls", f"{o:.3f} s", f"scatter + map {t:.3f} s",
                        f"{o / t:.2f}× scatter+map", "report", True))
    finally:
        cloud.close()
        client.close()
        cluster.close()
    print_table(rows)


if __name__ == "__main__":
    main()
