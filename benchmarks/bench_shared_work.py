"""What per-call leases cost one process, and what they save several.

1. one process, 2000 trivial misses through ``sync_parallel`` on 2 local workers (the pool warmed
   first, fresh arguments every repetition, results stored);
2. one process, 2000 trivial misses as plain calls ``f(x=i)`` computed in the caller (each one a
   commit);
3. six processes on one home running the same 120 calls of ~20 ms (``sync_parallel``, then plain
   calls): how many executions, and the wall time.

Figures are medians over repetitions. Run it on two commits to compare them:

    python benchmarks/bench_shared_work.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from statistics import median

from pythagoras_p2p import LocalCloud, kw_args

CALLS = 2000


def trivial(*, x, salt):
    return x + 1


def single_process(repeats: int) -> tuple[float, float]:
    """Median seconds for 2000 misses through sync_parallel, and as plain calls."""
    with tempfile.TemporaryDirectory() as home, LocalCloud(home=home, workers=2) as cloud:
        f = cloud.add_pure_function(trivial)
        f.sync_parallel(kw_args(x=i, salt=-1) for i in range(200))  # start and warm the pool
        parallel, plain = [], []
        for rep in range(repeats):
            t0 = time.perf_counter()
            f.sync_parallel(kw_args(x=i, salt=rep) for i in range(CALLS))
            parallel.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(CALLS):
                f(x=i, salt=-2 - rep)
            plain.append(time.perf_counter() - t0)
    return median(parallel), median(plain)


_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pythagoras_p2p import LocalCloud, kw_args

    def slow(*, x, log):
        with open(log, "a") as fh:
            fh.write(f"{x}\\n")
        time.sleep(0.02)
        return x * x

    mode, log = sys.argv[1], sys.argv[2]
    with LocalCloud(workers=2) as cloud:
        f = cloud.add_pure_function(slow)
        if mode == "parallel":
            out = f.sync_parallel(kw_args(x=i, log=log) for i in range(120))
        else:
            out = [f(x=i, log=log) for i in range(120)]
    assert out == [i * i for i in range(120)], out
""")


def six_processes(mode: str) -> tuple[int, float]:
    """Executions and wall seconds of six processes running the same 120 calls on one home."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "runs")
        env = dict(os.environ, PYTHAGORAS_HOME=os.path.join(tmp, "home"))
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT, mode, log], env=env)
                 for _ in range(6)]
        codes = [p.wait() for p in procs]
        elapsed = time.perf_counter() - t0
        if any(codes):
            raise SystemExit(f"a process failed: exit codes {codes}")
        with open(log) as fh:
            return len(fh.read().split()), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    parallel, plain = single_process(repeats)
    print(f"one process, {CALLS} trivial misses: sync_parallel {parallel * 1e3:.1f} ms "
          f"({parallel / CALLS * 1e6:.1f} us/call), plain calls {plain * 1e3:.1f} ms "
          f"({plain / CALLS * 1e6:.1f} us/call)")
    for mode in ("parallel", "plain"):
        runs, elapsed = six_processes(mode)
        print(f"six processes x the same 120 calls ({mode}): {runs} executions, {elapsed:.2f} s")


if __name__ == "__main__":
    main()
