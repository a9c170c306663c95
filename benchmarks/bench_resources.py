"""What placement by resources costs a call: the same trivial function with and without
``resources=``, in one run.

1. ``sync_remote`` round trip (a miss each time) on the embedded default (2 workers), and through
   one node on 127.0.0.1 (``--bind 127.0.0.1 --no-mdns``, 2 workers, declared ``--resources
   license=4``): plain, and asking ``{"license": 1, "memory": "1M"}``;
2. ``sync_parallel`` of 2,000 trivial calls on the embedded default, plain and asking the same:
   a call that asks for resources goes alone to an idle worker (it must hold them while it runs),
   so it is not batched with others — this row says what that costs on calls of no duration.

Medians; nothing leaves this machine.

    python benchmarks/bench_resources.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from bench_node import free_port, start_node  # benchmarks/ is on sys.path when run as a script
from report import Row, print_table

NEEDS = {"license": 1, "memory": "1M"}


def round_trips(fn, n: int) -> float:
    salt = time.time_ns()
    fn.sync_remote(x=-1, salt=salt)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        fn.sync_remote(x=i, salt=salt)
        samples.append(time.perf_counter() - t0)
    return median(samples)


def throughput(fn, n: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        salt = time.time_ns()
        t0 = time.perf_counter()
        fn.sync_parallel({"x": i, "salt": salt} for i in range(n))
        rates.append(n / (time.perf_counter() - t0))
    return median(rates)


def functions(cloud):
    def inc(*, x, salt):
        return x + 1

    return cloud.add_pure_function(inc), cloud.add_pure_function(resources=NEEDS)(inc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    args = parser.parse_args()
    n, repeats = (100, 2) if args.quick else (400, 5)
    from pythagoras_p2p import LocalCloud, PCloud
    from pythagoras_p2p.net.security import create_key

    rows = []
    tmp = Path(tempfile.mkdtemp())
    os.environ["PYTHAGORAS_RESOURCES"] = "license=4"
    try:
        local = LocalCloud(home=tmp / "local", workers=2)
        plain, needy = functions(local)
        local_plain, local_needy = round_trips(plain, n), round_trips(needy, n)
        rate_plain = throughput(plain, 2000, repeats)
        rate_needy = throughput(needy, 2000, repeats)
        local.close()

        home = tmp / "node"
        home.mkdir()
        create_key(home, name="bench-resources")
        port = free_port()
        node, _ = start_node(home, port)
        try:
            cloud = PCloud(connection=f"127.0.0.1:{port}", home=home)
            plain, needy = functions(cloud)
            node_plain, node_needy = round_trips(plain, n), round_trips(needy, n)
            cloud.close()
        finally:
            node.terminate()
            node.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.0f} µs"

    rows.append(Row("sync_remote, embedded default", us(local_needy), f"plain {us(local_plain)}",
                    f"{(local_needy - local_plain) * 1e6:+.0f} µs per call", "placement only", True))
    rows.append(Row("sync_remote, loopback node", us(node_needy), f"plain {us(node_plain)}",
                    f"{(node_needy - node_plain) * 1e6:+.0f} µs per call", "placement only", True))
    rows.append(Row("sync_parallel 2,000 trivial, embedded", f"{rate_needy:,.0f}/s",
                    f"plain {rate_plain:,.0f}/s", f"{rate_needy / rate_plain:.2f}× plain",
                    "one call per worker while it holds resources", True))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {n} round trips, "
          f"{repeats} repetitions; medians")
    print_table(rows, "cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
