"""Where the floor of storing every result is, and what another layout would buy.

The embedded default stores every result durably, and storing is most of what the caller spends
on a trivial call. This script writes the results of trivial calls in groups of 4,096 (what one
group commit holds at most) into a store that grows to ``--results`` results, and reports the
cost per result of the last groups, when the store is large:

1. ``Store.put_results`` as the product calls it (values, results and metadata tables; every
   commit synced);
2. the same rows written straight into LMDB, with the same keys and sizes, in today's layout:
   three tables keyed by random addresses (value, result, metadata);
3. one table keyed by the call, its record holding the value and the metadata;
4. a log in arrival order (one table keyed by a sequence number, appended) holding call, value
   and metadata, plus an index from call to sequence number (random keys, 8-byte records);
5. the log alone (what an index merged in the background would leave in the caller's path);
6. a log in a file of our own (appended, ``fdatasync``) plus the index in LMDB: two syncs per
   group, the layout the store would have with segment files of its own.

The store since the results log is variant 4 (``Store.put_results`` then measures it with the
product's own encoding of records, values and metadata).

Every variant commits with ``sync=True``, as the store does. The anchor is the time joblib's
``Parallel(n_jobs=2)`` spends on a whole trivial call (it stores nothing): what storing would
have to fit in for the embedded default to match it.

    python benchmarks/bench_store_floor.py [--results N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import tempfile
import time
from statistics import median

import lmdb
from report import Row, print_table  # benchmarks/ is on sys.path when run as a script

GROUP = 4096
MEASURED = 5  # the last groups, whose median is reported


def trivial_anchor(x: int) -> int:
    return x


def joblib_call_us(n: int = 20_000) -> float:
    from joblib import Parallel, delayed

    with Parallel(n_jobs=2) as parallel:
        parallel(delayed(trivial_anchor)(i) for i in range(n))  # warm the workers
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            parallel(delayed(trivial_anchor)(i) for i in range(n))
            times.append(time.perf_counter() - t0)
    return median(times) / n * 1e6


def rows_for(start: int, count: int) -> list[tuple[bytes, bytes, bytes, dict]]:
    """(call, value address, packed value, metadata) of ``count`` trivial results."""
    from pythagoras_p2p.identity.encoding import value_address
    from pythagoras_p2p.store.packing import pack
    from pythagoras_p2p.store.records import result_meta

    fp = b"\x01" * 32
    now = time.time()
    return [(os.urandom(32), value_address(i), pack(i),
             result_meta("trivial", fp, now, 1e-5, worker="w0"))
            for i in range(start, start + count)]


def grow(write, results: int) -> float:
    """µs per result of ``write(rows)`` over the last groups, the store grown to ``results``."""
    costs = []
    for start in range(0, results, GROUP):
        rows = rows_for(start, GROUP)
        t0 = time.perf_counter()
        write(rows)
        costs.append((time.perf_counter() - t0) / GROUP * 1e6)
    return median(costs[-MEASURED:])


def product(results: int, root: str) -> float:
    from pathlib import Path

    from pythagoras_p2p.store.core import Store

    store = Store(Path(root) / "home")
    try:
        return grow(lambda rows: store.put_results(rows), results)
    finally:
        store.close()


def raw(layout: str, results: int, root: str) -> float:
    from pythagoras_p2p.store.records import checksum, encode_meta, inline_record

    env = lmdb.open(os.path.join(root, layout), max_dbs=8, map_size=1 << 34, sync=True,
                    metasync=False, readahead=False, meminit=False)
    values, results_db, meta = (env.open_db(name) for name in (b"values", b"results", b"meta"))
    log, index = env.open_db(b"log"), env.open_db(b"index")
    sequence = [0]
    segment = open(os.path.join(root, layout + ".seg"), "ab")

    def write(rows):
        records = [(call, address, inline_record(checksum([blob]), [blob]), encode_meta(m))
                   for call, address, blob, m in rows]
        if layout == "log file + index":
            first = sequence[0]
            sequence[0] += len(records)
            segment.write(b"".join(c + a + v + m for c, a, v, m in records))
            segment.flush()
            os.fdatasync(segment.fileno())
            with env.begin(write=True) as txn:
                txn.cursor(db=index).putmulti(sorted(
                    (c, struct.pack(">Q", first + i)) for i, (c, _, _, _) in enumerate(records)))
            return
        with env.begin(write=True) as txn:
            if layout == "three tables":
                txn.cursor(db=values).putmulti(sorted((a, v) for _, a, v, _ in records))
                txn.cursor(db=results_db).putmulti(sorted((c, a) for c, a, _, _ in records))
                txn.cursor(db=meta).putmulti(sorted((c, m) for c, _, _, m in records))
            elif layout == "one table":
                txn.cursor(db=results_db).putmulti(sorted((c, a + v + m) for c, a, v, m in records))
            else:
                first = sequence[0]
                sequence[0] += len(records)
                keys = [struct.pack(">Q", first + i) for i in range(len(records))]
                txn.cursor(db=log).putmulti(
                    [(k, c + a + v + m) for k, (c, a, v, m) in zip(keys, records, strict=True)],
                    append=True)
                if layout == "log + index":
                    txn.cursor(db=index).putmulti(
                        sorted((c, k) for k, (c, _, _, _) in zip(keys, records, strict=True)))

    try:
        return grow(write, results)
    finally:
        segment.close()
        env.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=200_000,
                        help="results in the store at the end (default 200,000)")
    parser.add_argument("--group", type=int, default=4096,
                        help="results per commit (default 4,096; 1 is a miss of one call)")
    args = parser.parse_args()
    global GROUP
    GROUP = args.group
    anchor = joblib_call_us()
    measured = {}
    root = tempfile.mkdtemp(prefix="store-floor-")
    try:
        measured["Store.put_results (results log)"] = product(args.results, root)
        for layout in ("three tables", "one table", "log + index", "log alone", "log file + index"):
            measured[f"LMDB, {layout}"] = raw(layout, args.results, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    today = measured["LMDB, three tables"]
    rows = [Row(f"{name}, {args.results:,} results stored", f"{us:.1f} µs/result",
                f"joblib {anchor:.1f} µs/call", f"{today / us:.2f}× today's layout",
                f"≤ {anchor:.1f} µs", us <= anchor)
            for name, us in measured.items()]
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
