"""Foundation benchmarks of pythagoras_p2p against the tools people would otherwise use.

Each measurement runs our code and its anchors in the same run, one after the other:

1. memo hit, small arguments: ``f(x=1, y="abc")`` already stored, vs ``joblib.Memory`` hit; and
   the hit of functions whose global is a 1 KB dict or a 10 MB array (hashed again on every hit);
2. memo miss overhead: a trivial function on never-seen arguments, result stored durably (ours
   fdatasyncs every commit), vs ``joblib.Memory`` miss;
3. content address of a 100 MiB float64 array: ``value_address`` vs ``joblib.hash`` vs raw
   multi-threaded blake3 over the buffer;
4. throughput of trivial calls through ``sync_parallel`` on 2 local workers (fresh arguments each
   repetition, results stored) vs ``ProcessPoolExecutor(2).map(chunksize=1)``,
   ``joblib.Parallel(n_jobs=2)`` and, if installed, a 2-process Dask ``LocalCluster``; every pool
   is warmed before timing, so worker start-up is excluded; then the same calls again (every one
   stored: answered in bulk) beside ``joblib.Memory`` hits;
5. ``import pythagoras_p2p`` in a fresh interpreter, minus interpreter start-up, vs ``import joblib``.

All figures are medians over repetitions. Only local files and loopback are used.

    python benchmarks/bench_foundation.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import median

import blake3
import joblib
import numpy as np
from report import (  # benchmarks/ is on sys.path when run as a script
    Row,
    median_seconds,
    print_table,
)

from pythagoras_p2p import LocalCloud, kw_args
from pythagoras_p2p.identity.encoding import value_address


@dataclass
class Config:
    hit_calls: int  # calls per timed block of memo hits
    miss_calls: int  # calls per timed block of memo misses
    blocks: int  # timed blocks for (1) and (2)
    address_repeats: int
    parallel_calls: int
    parallel_repeats: int
    import_runs: int


FULL = Config(hit_calls=2000, miss_calls=200, blocks=9, address_repeats=5,
              parallel_calls=20_000, parallel_repeats=5, import_runs=9)
QUICK = Config(hit_calls=200, miss_calls=30, blocks=3, address_repeats=2,
               parallel_calls=2_000, parallel_repeats=2, import_runs=3)


# --------------------------------------------------------------------- functions under test
# Module level, so that worker processes of every pool can unpickle them.


def small(*, x: int, y: str) -> int:
    return x + len(y)


def small_anchor(x: int, y: str) -> int:
    return x + len(y)


# Globals that can change in place: every hit hashes them again (a rebound or mutated global is
# seen at the next call). joblib.Memory does not look at globals at all.
CONF_1K = {f"key{i:03d}": i for i in range(64)}  # ~1 KB of keys and values
ARRAY_10M = np.zeros((10 << 20) // 8)


def with_conf(*, x: int) -> int:
    return x + CONF_1K["key001"]


def with_array(*, x: int) -> float:
    return x + float(ARRAY_10M[0])


def trivial(*, x: int) -> int:
    return x


def trivial_anchor(x: int) -> int:
    return x


# --------------------------------------------------------------------- helpers


@contextmanager
def temp_dir(prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def local_cloud(prefix: str, workers: int = 2) -> Iterator[LocalCloud]:
    with temp_dir(prefix) as home:
        cloud = LocalCloud(home=home, workers=workers)
        try:
            yield cloud
        finally:
            cloud.close()
            cloud.store.close()


def per_call_us(call: Callable[[int], object], n: int, blocks: int, start: int = 0) -> float:
    """Median over ``blocks`` of the mean µs per ``call(k)``; ``k`` never repeats across blocks."""
    samples = []
    for b in range(blocks):
        first = start + b * n
        t0 = time.perf_counter()
        for k in range(first, first + n):
            call(k)
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return median(samples)


# --------------------------------------------------------------------- benchmarks


def bench_memo(cfg: Config) -> list[Row]:
    """(1) hits and (2) misses of a memoized call with small arguments."""
    with local_cloud("bench-memo-") as cloud, temp_dir("bench-joblib-") as location:
        ours = cloud.add_pure_function(small)
        theirs = joblib.Memory(location=location, verbose=0).cache(small_anchor)
        ours(x=1, y="abc")  # stored, and first-call costs (fingerprint, code check) paid
        theirs(x=1, y="abc")
        hit_ours = per_call_us(lambda _: ours(x=1, y="abc"), cfg.hit_calls, cfg.blocks)
        hit_theirs = per_call_us(lambda _: theirs(x=1, y="abc"), cfg.hit_calls, cfg.blocks)
        miss_ours = per_call_us(lambda k: ours(x=k, y="abc"), cfg.miss_calls, cfg.blocks, 10)
        miss_theirs = per_call_us(lambda k: theirs(x=k, y="abc"), cfg.miss_calls, cfg.blocks, 10)
        conf, array = cloud.add_pure_function(with_conf), cloud.add_pure_function(with_array)
        conf(x=1), array(x=1)
        hit_conf = per_call_us(lambda _: conf(x=1), cfg.hit_calls, cfg.blocks)
        hit_array = per_call_us(lambda _: array(x=1), max(cfg.hit_calls // 20, 10), cfg.blocks)
    hit_speedup = hit_theirs / hit_ours
    miss_speedup = miss_theirs / miss_ours
    return [
        Row("1b. memo hit, a 1 KB dict global", f"{hit_conf:.2f} µs",
            f"joblib.Memory {hit_theirs:.1f} µs (sees no global)",
            f"{hit_theirs / hit_conf:.1f}× joblib", "—", True),
        Row("1c. memo hit, a 10 MB array global", f"{hit_array:.0f} µs",
            f"joblib.Memory {hit_theirs:.1f} µs (sees no global)",
            f"{hit_theirs / hit_array:.2f}× joblib", "—", True),
        Row("1. memo hit, small args", f"{hit_ours:.2f} µs", f"joblib.Memory {hit_theirs:.1f} µs",
            f"{hit_speedup:.1f}× joblib", "≤ 10 µs and ≥ 6×",
            hit_ours <= 10 and hit_speedup >= 6),
        Row("2. memo miss, stored durably", f"{miss_ours:.0f} µs",
            f"joblib.Memory {miss_theirs:.0f} µs", f"{miss_speedup:.2f}× joblib",
            "≥ 1× (no worse)", miss_speedup >= 1),
    ]


def bench_address(cfg: Config) -> list[Row]:
    """(3) content address of a 100 MiB float64 array."""
    arr = np.random.default_rng(0).random((100 << 20) // 8)

    def raw_blake3(_: int) -> bytes:
        return blake3.blake3(memoryview(arr).cast("B"), max_threads=blake3.blake3.AUTO).digest()

    value_address(arr)  # warm the page cache and blake3's thread pool
    joblib.hash(arr)
    ours = median_seconds(lambda _: value_address(arr), cfg.address_repeats) * 1e3
    theirs = median_seconds(lambda _: joblib.hash(arr), cfg.address_repeats) * 1e3
    raw = median_seconds(raw_blake3, cfg.address_repeats) * 1e3
    return [Row("3. address of 100 MiB ndarray", f"{ours:.1f} ms",
                f"joblib.hash {theirs:.0f} ms; raw blake3 {raw:.1f} ms",
                f"{theirs / ours:.1f}× joblib.hash; {raw / ours:.2f}× raw blake3", "≤ 20 ms",
                ours <= 20)]


def bench_parallel(cfg: Config) -> list[Row]:
    """(4) trivial calls per second on 2 workers, pools warmed before timing."""
    n, reps = cfg.parallel_calls, cfg.parallel_repeats

    def rate(run: Callable[[int], list], repeats: int = reps) -> float:
        def checked(rep: int) -> None:
            out = run(rep * n)
            assert len(out) == n and out[0] == rep * n and out[-1] == rep * n + n - 1

        return n / median_seconds(checked, repeats)

    with local_cloud("bench-parallel-") as cloud:
        fn = cloud.add_pure_function(trivial)
        fn.sync_parallel((kw_args(x=-i - 1) for i in range(8)), progress=False)  # start workers
        ours = rate(lambda base: fn.sync_parallel(
            (kw_args(x=i) for i in range(base, base + n)), progress=False))
        # the same calls again: every one a stored result, answered in bulk
        rerun = rate(lambda base: fn.sync_parallel(
            (kw_args(x=i) for i in range(base, base + n)), progress=False), max(reps, 5))
    with temp_dir("bench-joblib-rerun-") as location:
        cached = joblib.Memory(location=location, verbose=0).cache(trivial_anchor)
        hits = min(n, 2000)  # joblib.Memory is ~100× slower per hit: a sample is enough
        for i in range(hits):
            cached(i)
        t0 = time.perf_counter()
        for i in range(hits):
            cached(i)
        joblib_hits = hits / (time.perf_counter() - t0)

    anchors: dict[str, float] = {}
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(trivial_anchor, range(8), chunksize=1))
        anchors["ProcessPool"] = rate(
            lambda base: list(pool.map(trivial_anchor, range(base, base + n), chunksize=1)))
    with joblib.Parallel(n_jobs=2) as parallel:
        parallel(joblib.delayed(trivial_anchor)(i) for i in range(8))
        anchors["joblib.Parallel"] = rate(
            lambda base: parallel(joblib.delayed(trivial_anchor)(i) for i in range(base, base + n)))
    dask_rate = bench_dask(rate, n, min(3, reps))
    if dask_rate is not None:
        anchors["dask"] = dask_rate

    return [Row(f"4. sync_parallel, {n:,} trivial calls", f"{ours:,.0f}/s",
                "; ".join(f"{k} {v:,.0f}/s" for k, v in anchors.items()),
                "; ".join(f"{ours / v:.1f}× {k}" for k, v in anchors.items()),
                "≥ 10,000/s", ours >= 10_000),
            Row(f"4b. sync_parallel again: {n:,} stored calls", f"{rerun:,.0f}/s",
                f"joblib.Memory hits {joblib_hits:,.0f}/s (a loop of calls)",
                f"{rerun / joblib_hits:.0f}× joblib.Memory", "≥ 200,000/s", rerun >= 200_000)]


def bench_dask(rate: Callable[..., float], n: int, repeats: int) -> float | None:
    """Calls per second on a warmed 2-process Dask LocalCluster, or None without Dask."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        print("dask.distributed is not installed: Dask anchor skipped")
        return None
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather(client.map(trivial_anchor, range(8)))
        return rate(lambda base: client.gather(
            client.map(trivial_anchor, range(base, base + n))), repeats)


def bench_import(cfg: Config) -> list[Row]:
    """(5) import time in a fresh interpreter, interpreter start-up subtracted."""

    def run(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t0

    statements = {"bare": "pass", "ours": "import pythagoras_p2p", "joblib": "import joblib"}
    for code in statements.values():  # bytecode caches written, files in the page cache
        run(code)
    samples: dict[str, list[float]] = {k: [] for k in statements}
    for _ in range(cfg.import_runs):  # interleaved, so drift hits all three alike
        for name, code in statements.items():
            samples[name].append(run(code))
    bare = median(samples["bare"])
    ours = median(samples["ours"]) - bare
    theirs = median(samples["joblib"]) - bare
    return [Row("5. import pythagoras_p2p", f"{ours:.3f} s", f"import joblib {theirs:.3f} s",
                f"{theirs / ours:.1f}× joblib", "≤ 0.15 s", ours <= 0.15)]


# --------------------------------------------------------------------- report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a fast smoke run")
    cfg = QUICK if parser.parse_args().quick else FULL
    print(f"python {sys.version.split()[0]}, joblib {joblib.__version__}, numpy {np.__version__}; "
          f"{'quick' if cfg is QUICK else 'full'} run, medians")
    rows: list[Row] = []
    for bench in (bench_memo, bench_address, bench_parallel, bench_import):
        t0 = time.perf_counter()
        rows += bench(cfg)
        print(f"  {bench.__name__} done in {time.perf_counter() - t0:.1f} s", flush=True)
    print("\n(4): every pool (ours, ProcessPoolExecutor, joblib, Dask) is warmed by a small run "
          "before timing: worker start-up is excluded. Ours also stores every result.\n")
    print_table(rows, "ratio (anchor time / ours)")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
