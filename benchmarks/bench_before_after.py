"""Before and after a change, in one run: the hot paths of a call, measured on two source trees.

A refactoring must not cost speed. This script measures, for the source tree of one or more git
refs (``--before``, each checked out into a temporary ``git worktree``) and for this working
tree, in fresh processes that alternate between them (before, after, after, before, ...):

1. a memo hit (µs per call of one stored call, in the caller's process);
2. a rerun of 20,000 stored calls through ``sync_parallel`` (bulk hits, calls per second);
3. a ``sync_remote`` round trip (a miss, fresh arguments each time) through a node on
   127.0.0.1 (``--workers 1 --no-mdns``), µs;
4. 20,000 trivial calls through ``sync_parallel`` on the embedded default (2 workers, every
   result stored), calls per second.

Each tree is staged as an installed package would be (``daemon/`` and ``cli/`` under
``pythagoras_p2p/``) and put first on ``PYTHONPATH``, for the measuring process, its worker
processes and its node alike. Medians over the rounds; the ratio is after / before, in the
direction "higher is better" (time ratios are inverted).

    python benchmarks/bench_before_after.py --before REF [--before REF2] [--rounds 5] [--quick]
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
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]

# metric -> (label, unit, higher is better); {n}: how many calls
METRICS = {
    "memo_hit": ("memo hit, one stored call", "µs", False),
    "rerun": ("rerun of {n:,} stored calls (sync_parallel)", "calls/s", True),
    "round_trip": ("sync_remote round trip, loopback node", "µs", False),
    "trivial": ("{n:,} trivial calls (sync_parallel, 2 workers)", "calls/s", True),
}


def trivial(*, x: int) -> int:
    return x


def echo(*, x: int, salt: str) -> int:
    return x


# ------------------------------------------------------------------ in a fresh process

def child(metric: str, n: int) -> float:
    from pythagoras_p2p import LocalCloud, PCloud, kw_args

    home = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    try:
        if metric == "memo_hit":
            cloud = LocalCloud(home=home / "h", workers=1)
            fn = cloud.add_pure_function(trivial)
            fn.sync_remote(x=1)
            fn(x=1)
            samples = []
            for _ in range(7):
                t0 = time.perf_counter()
                for _ in range(2000):
                    fn(x=1)
                samples.append((time.perf_counter() - t0) / 2000 * 1e6)
            cloud.close()
            return median(samples)
        if metric in ("rerun", "trivial"):
            cloud = LocalCloud(home=home / "h", workers=2)
            fn = cloud.add_pure_function(trivial)
            fn.sync_parallel(kw_args(x=-i - 1) for i in range(64))  # workers warm
            if metric == "rerun":
                fn.sync_parallel(kw_args(x=i) for i in range(n))
            t0 = time.perf_counter()
            out = fn.sync_parallel(kw_args(x=i) for i in range(n))
            took = time.perf_counter() - t0
            assert out == list(range(n))
            cloud.close()
            return n / took
        if metric == "round_trip":
            from pythagoras_p2p.net.security import create_key

            node_home, client = home / "node", home / "client"
            create_key(node_home, name="bench-ab")
            client.mkdir()
            if (node_home / "swarm.key").exists():  # a tree from before member keys
                shutil.copy(node_home / "swarm.key", client / "swarm.key")
            else:  # the client's home is admitted as a member (as `invite` / `join` do)
                from pythagoras_p2p.trust.enroll import admit

                admit(node_home, client, hostname="client", node=False)
            port = 18000 + os.getpid() % 2000
            from report import start_loopback_node  # benchmarks/: the script's own folder

            node = start_loopback_node(node_home, port, "--workers", "1", "--dedicated",
                                       cwd=Path.cwd())
            try:
                cloud = PCloud(connection=f"127.0.0.1:{port}", home=client)
                fn = cloud.add_pure_function(echo)
                salt = os.urandom(8).hex()
                for i in range(20):
                    fn.sync_remote(x=-1 - i, salt=salt)
                samples = []
                for i in range(n):
                    t0 = time.perf_counter()
                    fn.sync_remote(x=i, salt=salt)
                    samples.append(time.perf_counter() - t0)
                cloud.close()
                return median(samples) * 1e6
            finally:
                node.terminate()
                node.wait(60)
        raise ValueError(metric)
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ------------------------------------------------------------------ the driver

def stage(tree: Path, into: Path) -> Path:
    """``tree``'s package laid out as ``pip install .`` lays it out; the folder to put on
    PYTHONPATH."""
    package = into / "pythagoras_p2p"
    shutil.copytree(tree / "pythagoras_p2p", package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(tree / "daemon", package / "daemon", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(tree / "cli", package / "cli", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def measure(path: Path, metric: str, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(path)}
    env.pop("PYTHAGORAS_HOME", None)
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", metric,
                          str(n)], env=env, check=True, capture_output=True, text=True,
                         cwd=path)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", action="append", metavar="REF",
                        help="git ref of a tree before the change (repeat for several)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--child", nargs=2, metavar=("METRIC", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(child(args.child[0], int(args.child[1])))
        return
    if not args.before:
        parser.error("--before REF is required (e.g. the commit the change started from)")
    sizes = {"memo_hit": 0, "rerun": 20_000, "round_trip": 200, "trivial": 20_000}
    if args.quick:
        sizes = {"memo_hit": 0, "rerun": 2_000, "round_trip": 30, "trivial": 2_000}
    root = Path(tempfile.mkdtemp(prefix="bench-ab-trees-"))
    sides = [*args.before, "after"]
    sources: list[Path] = []
    try:
        trees = {}
        for i, ref in enumerate(args.before):
            source = root / f"src-{i}"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(source),
                            ref], check=True, capture_output=True)
            sources.append(source)
            trees[ref] = stage(source, root / f"tree-{i}")
        trees["after"] = stage(REPO, root / "after")
        found: dict[str, dict[str, list[float]]] = {m: {s: [] for s in sides} for m in METRICS}
        for rnd in range(args.rounds):
            for metric in METRICS:
                order = sides if rnd % 2 == 0 else sides[::-1]
                for side in order:
                    found[metric][side].append(measure(trees[side], metric, sizes[metric]))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for source in sources:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(source)],
                           check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print(f"before: {', '.join(args.before)}   after: this tree ({head}, with its uncommitted "
          f"changes)   rounds: {args.rounds}, alternating, each a fresh process")
    rows = [("metric", *(f"{s}: median (range)" for s in sides),
             *(f"after vs {ref}" for ref in args.before))]
    for metric, (label, unit, higher) in METRICS.items():
        cells = []
        for side in sides:
            values = found[metric][side]
            cells.append(f"{median(values):,.1f} {unit} ({min(values):,.0f}-{max(values):,.0f})")
        a = median(found[metric]["after"])
        ratios = []
        for ref in args.before:
            b = median(found[metric][ref])
            ratios.append(f"{(a / b if higher else b / a):.2f}x")
        rows.append((label.format(n=sizes[metric]), *cells, *ratios))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print(json.dumps(found), file=sys.stderr)


if __name__ == "__main__":
    main()
