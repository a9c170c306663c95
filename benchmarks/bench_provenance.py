"""What results' provenance costs: signing each result, checking each copy, dropping a member's.

1. A node signs every result its workers compute (Ed25519 over call, value address and key id)
   before journaling it; the anchor is what it already spends per result on its metadata
   (``encode_meta``).
2. A node checks the signature of every copy it receives (replication, hand-over) and a client
   every copy it fetches; the anchor is the check every copy already gets: blake3 of a 1 KiB
   value against its address, plus parsing its metadata.
3. ``remove MEMBER --drop-results``: every node scans its results' metadata once and deletes that
   member's. Measured on a store of ``--results`` results, a tenth of them the member's; the
   anchor is ``cache ls`` on the same store (one scan of the same metadata).

    python benchmarks/bench_provenance.py [--results N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from pythagoras_p2p.daemon.deletions import drop_computed_by
from report import Row, median_seconds, print_table  # benchmarks/ is on sys.path as a script

from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.core import open_store
from pythagoras_p2p.store.listing import listing
from pythagoras_p2p.store.packing import pack
from pythagoras_p2p.store.records import checksum, encode_meta, result_meta
from pythagoras_p2p.trust import Member, Members, NodeKeys, SwarmSigningKey
from pythagoras_p2p.trust.provenance import refusal, stamp

REPEATS = 2000


def _per_op(action) -> float:
    """Median seconds of one ``action()``, timed in groups of 100."""
    return median_seconds(lambda _: [action() for _ in range(100)], REPEATS // 100, warmup=2) / 100


def _members(tmp: str, keys: NodeKeys) -> Members:
    root = SwarmSigningKey.create(os.path.join(tmp, "admin"))
    cert = Member.certify(node_id="n", hostname="h", owner="o", roles=("admin", "node"),
                          curve_public=keys.curve_public, signing_public=keys.signing_public,
                          swarm_public=root.public, issuer="swarm", sign=root.sign)
    return Members.first("bench", root, cert)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=100_000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-provenance-")
    rows = []
    try:
        keys = NodeKeys.generate()
        members = _members(tmp, keys)
        call, value = os.urandom(32), os.urandom(1024)
        address = value_address(value)
        meta = result_meta("bench.f", os.urandom(32), time.time(), 0.001, worker="h/w0")

        sign = _per_op(lambda: stamp(dict(meta), call, address, keys))
        encode = _per_op(lambda: encode_meta(dict(meta)))
        rows.append(Row("sign one result (node, per result)", f"{sign * 1e6:.1f} µs",
                        f"encode_meta {encode * 1e6:.1f} µs", f"{sign / encode:.1f}x",
                        "report", True))

        signed = json.dumps(stamp(dict(meta), call, address, keys)).encode()
        packed = pack(value)
        verify = _per_op(lambda: refusal(json.loads(signed), call, address, members))
        check = _per_op(lambda: (checksum([packed]), json.loads(signed)))
        assert refusal(json.loads(signed), call, address, members) is None
        rows.append(Row("check one copy's signature (per copy)", f"{verify * 1e6:.1f} µs",
                        f"blake3 1 KiB + meta {check * 1e6:.1f} µs", f"{verify / check:.1f}x",
                        "report", True))

        home = os.path.join(tmp, "home")
        store = open_store(home)
        other = NodeKeys.generate()
        batch = []
        for i in range(args.results):
            c, v = os.urandom(32), i.to_bytes(8, "little")
            a = value_address(v)
            m = stamp(dict(meta), c, a, other if i % 10 == 0 else keys)
            batch.append((c, a, pack(v), m))
            if len(batch) == 4096:
                store.put_results(batch)
                batch = []
        if batch:
            store.put_results(batch)
        t0 = time.perf_counter()
        listing(store)
        scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        gone = drop_computed_by(store, frozenset({other.key_id}))
        drop = time.perf_counter() - t0
        assert gone == (args.results + 9) // 10, gone
        rows.append(Row(f"drop one member's results ({gone:,} of {args.results:,})",
                        f"{drop:.2f} s", f"cache ls {scan:.2f} s", f"{drop / scan:.1f}x",
                        "report", True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)


if __name__ == "__main__":
    main()
