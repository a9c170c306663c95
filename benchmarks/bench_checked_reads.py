"""What checking a value on read costs: the hit of a stored 1 MB and 100 MB numpy result.

Every value read from the store is checked against the blake3 checksum its record keeps of its
packed bytes. For each size this measures, on a warm page cache:

* ``checked``: ``Store.get_result`` (one read transaction, map the file, check, unpickle in
  place), then reading the value (``arr.sum()``, or ``bytes(arr)``, which touch every byte);
* ``unchecked``: the same read without the check (map the file, unpickle), then the same use;
* ``decode only``: the unchecked read alone, nothing touched (the array is a view of the map);
* ``checksum``: blake3 over the already mapped bytes, alone.

The cost of the check is ``checked - unchecked``, given against the read and use of the value
and against decode only. A file is hashed once per process and file identity (device, inode,
size, times): ``checked once`` is a hit after the first, ``checked`` one that hashes again (what
every read cost before). All figures are medians over repetitions.

    python benchmarks/bench_checked_reads.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from statistics import median

import numpy as np
from blake3 import blake3

from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.blobs import map_blob
from pythagoras_p2p.store.core import MISSING, open_store
from pythagoras_p2p.store.packing import pack_parts, unpack


def seconds(action: Callable[[], object], repeats: int, inner: int) -> float:
    """Median over ``repeats`` of the mean time of ``inner`` runs of ``action``."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            action()
        samples.append((time.perf_counter() - t0) / inner)
    return median(samples)


def measure(store, nbytes: int, repeats: int) -> dict[str, float]:
    array = np.random.default_rng(nbytes).random(nbytes // 8)
    call, address = blake3(b"bench-%d" % nbytes).digest(), value_address(array)
    store.put_results([(call, address, pack_parts(array), {})])
    record = store.value_record(address)
    inner = max(1, (20 << 20) // nbytes)

    def checked(use):
        value = store.get_result(call)
        assert value is not MISSING
        use(value)

    def checked_every_read(use):
        store.values._verified.clear()  # as if no file were known: hashed again on this read
        checked(use)

    def unchecked(use):
        use(unpack(map_blob(store.blobs, address, record)))

    def hash_mapped():
        blake3(mapped, max_threads=blake3.AUTO if nbytes >= 8 << 20 else 1).digest(16)

    mapped = map_blob(store.blobs, address, record)
    bytes(mapped)  # mapped and in the page cache
    uses = {"sum": lambda a: a.sum(), "bytes": lambda a: bytes(a)}
    times = {"decode only": seconds(lambda: unchecked(lambda a: None), repeats, inner),
             "checksum": seconds(hash_mapped, repeats, inner)}
    for name, use in uses.items():
        times[f"unchecked+{name}"] = seconds(lambda u=use: unchecked(u), repeats, inner)
        times[f"checked+{name}"] = seconds(lambda u=use: checked_every_read(u), repeats, inner)
        times[f"once+{name}"] = seconds(lambda u=use: checked(u), repeats, inner)
    return times


def report(nbytes: int, t: dict[str, float]) -> None:
    print(f"\n{nbytes / 1e6:.0f} MB numpy value (times in ms, medians)")
    print(f"  decode only (map + unpickle)       {t['decode only'] * 1e3:9.3f}")
    print(f"  blake3 of the mapped bytes         {t['checksum'] * 1e3:9.3f}")
    for use in ("sum", "bytes"):
        plain, checked = t[f"unchecked+{use}"], t[f"checked+{use}"]
        cost = checked - plain
        print(f"  read + {use + '()':<8} unchecked / checked {plain * 1e3:9.3f} / {checked * 1e3:9.3f}"
              f"   check costs {cost * 1e3:7.3f} = {cost / plain:6.1%} of reading the value,"
              f" {cost / t['decode only']:7.1f}x decode only")
        once = t[f"once+{use}"]
        print(f"  read + {use + '()':<8} checked once per process (file identity) {once * 1e3:9.3f}"
              f"   {(once - plain) * 1e3:7.3f} over unchecked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    home = tempfile.mkdtemp(prefix="bench-checked-", dir="/tmp")
    store = open_store(home)
    try:
        for nbytes in (1_000_000, 100_000_000):
            report(nbytes, measure(store, nbytes, repeats))
    finally:
        store.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
