"""What identity v2 costs on hits: this checkout beside an earlier commit, one run.

Identity v2 adds checks to the hit path (a fingerprint that follows bound methods, wrappers and
function attributes; dict order and aliasing in argument addresses; a recorded input trace per
result). Its targets are relative to the code before it, so both run here, alternately, each in
fresh processes (``PYTHONPATH`` pointing at its own tree; the earlier one is checked out into a
temporary folder with ``git worktree``), beside ``joblib.Memory``'s hit in the same processes:

1. the memo hit of one trivial call (``f(x=1)``), µs (target: ≤ 10 µs);
2. a rerun of 20,000 stored trivial calls through ``sync_parallel`` (bulk hits), calls/s
   (target: within 10 % of the earlier commit's);
3. the memo hit of a call that read 10 small files when it ran (each checked by a stat), µs,
   and the miss of that call (recording the reads), ms — this checkout only where the earlier
   one records nothing.

    python benchmarks/bench_identity.py [--against e423778] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from report import Row, child_result, print_table  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
N_RERUN = 20_000


def trivial(*, x: int) -> int:
    return x


def trivial_anchor(x: int) -> int:
    return x


def reads_files(*, paths: tuple) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            total += len(fh.read())
    return total


def _per_call(call, calls: int = 5000) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - t0) / calls * 1e6


def child() -> None:
    """In a fresh process of one tree: print one JSON line of figures."""
    import joblib

    from pythagoras_p2p import LocalCloud, kw_args

    out = {}
    with tempfile.TemporaryDirectory() as home:
        cloud = LocalCloud(home=home, workers=2)
        fn = cloud.add_pure_function(trivial)
        fn(x=1)
        out["hit_us"] = median(_per_call(lambda: fn(x=1)) for _ in range(5))
        fn.sync_parallel(kw_args(x=i) for i in range(N_RERUN))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn.sync_parallel(kw_args(x=i) for i in range(N_RERUN))
            times.append(time.perf_counter() - t0)
        out["rerun_per_s"] = N_RERUN / median(times)
        files = []
        for i in range(10):
            path = Path(home) / f"input{i}.txt"
            path.write_text("x" * (100 + i))
            files.append(str(path))
        reader = cloud.add_pure_function(reads_files)
        misses = []
        for i in range(5):
            paths = tuple(files[i:] + files[:i])  # a new call each time: a miss
            t0 = time.perf_counter()
            reader(paths=paths)
            misses.append(time.perf_counter() - t0)
        out["files_miss_ms"] = median(misses) * 1e3
        paths = tuple(files)
        out["files_hit_us"] = median(_per_call(lambda: reader(paths=paths), 2000) for _ in range(5))
        cloud.close()
        memory = joblib.Memory(location=os.path.join(home, "joblib"), verbose=0)
        cached = memory.cache(trivial_anchor)
        cached(1)
        out["joblib_hit_us"] = median(_per_call(lambda: cached(1), 1000) for _ in range(5))
    print("RESULT " + json.dumps(out))


def measure(tree: Path) -> dict:
    return child_result(__file__, ["--child"], {**os.environ, "PYTHONPATH": str(tree)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="e423778", help="the earlier commit (default: the "
                        "last commit before identity v2)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh-process rounds of each")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        earlier = Path(tmp) / "earlier"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(earlier),
                        args.against], check=True, capture_output=True)
        try:
            ours, theirs = [], []
            for _ in range(args.rounds):  # alternately, so both see the same noise
                theirs.append(measure(earlier))
                ours.append(measure(REPO))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(earlier)], capture_output=True)

    def med(rows: list[dict], key: str) -> float:
        return median(r[key] for r in rows)

    joblib_hit = med(ours + theirs, "joblib_hit_us")
    hit, hit_then = med(ours, "hit_us"), med(theirs, "hit_us")
    rerun, rerun_then = med(ours, "rerun_per_s"), med(theirs, "rerun_per_s")
    fhit, fmiss = med(ours, "files_hit_us"), med(ours, "files_miss_ms")
    fhit_then, fmiss_then = med(theirs, "files_hit_us"), med(theirs, "files_miss_ms")
    print(f"earlier commit: {args.against}; {args.rounds} rounds of fresh processes, medians\n")
    print_table([
        Row("memo hit, trivial call", f"{hit:.2f} µs",
            f"then {hit_then:.2f} µs; joblib.Memory {joblib_hit:.1f} µs",
            f"{hit / hit_then:.2f}× then; {joblib_hit / hit:.0f}× faster than joblib",
            "≤ 10 µs", hit <= 10),
        Row("rerun of 20,000 stored calls", f"{rerun:,.0f}/s", f"then {rerun_then:,.0f}/s",
            f"{rerun / rerun_then:.2f}× then", "≥ 0.90× then", rerun >= 0.9 * rerun_then),
        Row("memo hit, a call that read 10 files", f"{fhit:.2f} µs",
            f"then {fhit_then:.2f} µs (unchecked)", f"{fhit / fhit_then:.2f}× then", "-", True),
        Row("miss, a call that reads 10 files", f"{fmiss:.2f} ms",
            f"then {fmiss_then:.2f} ms (unrecorded)", f"{fmiss / fmiss_then:.2f}× then", "-",
            True),
    ], ratio_header="ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
