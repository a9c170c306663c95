"""Futures and scikit-learn on the swarm: the figures of the futures API and the joblib backend.

Measured side by side, in one run:

1. How long ``f.async_remote(x=i)`` takes to return its future (small arguments, a miss each
   time, the embedded default with 2 workers), beside ``ProcessPoolExecutor(2).submit``: target
   under 5 ms.
2. A ``GridSearchCV`` of 125 fits (``SVC`` on scikit-learn's digits, 5 × 5 parameters × 5 folds):
   serial (``n_jobs=1``), joblib's loky backend (``n_jobs=2``), Dask's joblib backend on a
   2-worker ``LocalCluster`` (127.0.0.1, no dashboard), ours on the embedded default
   (``LocalCloud(workers=2)``), and ours on 3 network-namespace hosts × 2 workers (a client on
   host 0, ``PCloud()``, which finds the swarm through host 0's node) — speed-up over loky;
   then the memoized rerun (``memoize=True``, after one memoized run filled the cache) on both.
   All of it shares this machine's 2 cores: the swarm's figure is its own overhead, not a
   speed-up from more machines.

Every search must find the same scores as the serial one (checked). Needs root for the
namespaces (item 2's swarm rows are left out without it).

    python benchmarks/bench_ecosystem.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

from report import Row, print_table  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent


def search_setup():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    grid = {"C": [0.5, 1, 5, 10, 50], "gamma": [0.0002, 0.0005, 0.001, 0.002, 0.005]}
    return X, y, grid


def one_search(backend: str | None, n_jobs: int, **config) -> tuple[float, list]:
    import joblib
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y, grid = search_setup()
    t0 = time.perf_counter()
    if backend is None:
        found = GridSearchCV(SVC(), grid, cv=5, n_jobs=n_jobs, refit=False).fit(X, y)
    else:
        with joblib.parallel_config(backend=backend, n_jobs=n_jobs, **config):
            found = GridSearchCV(SVC(), grid, cv=5, refit=False).fit(X, y)
    return time.perf_counter() - t0, found.cv_results_["mean_test_score"].tolist()


# --------------------------------------------------------------------- parts run in a namespace


def part_swarm_search(params: dict) -> dict:
    """In host 0: the search through the swarm, plain then memoized (fill, rerun)."""
    from pythagoras_p2p import PCloud, register_joblib_backend

    cloud = PCloud()
    register_joblib_backend(cloud=cloud)
    one_search("pythagoras", -1)  # warm: every worker has imported scikit-learn
    plain = [one_search("pythagoras", -1) for _ in range(params["repeats"])]
    one_search("pythagoras", -1, memoize=True)
    rerun = [one_search("pythagoras", -1, memoize=True) for _ in range(params["repeats"])]
    cloud.close()
    return {"plain": [t for t, _ in plain], "rerun": [t for t, _ in rerun],
            "scores": plain[0][1], "rerun_scores": rerun[0][1]}


PARTS = {"swarm_search": part_swarm_search}


# --------------------------------------------------------------------- items


def item_async_return(samples: int) -> tuple[float, float]:
    from pythagoras_p2p import LocalCloud

    with tempfile.TemporaryDirectory() as tmp:
        cloud = LocalCloud(home=Path(tmp) / "home", workers=2)

        @cloud.add_pure_function
        def inc(*, x: int) -> int:
            return x + 1

        inc.sync_parallel([{"x": -i} for i in range(1, 5)])  # workers started, fingerprinted
        ours = []
        futures = []
        for i in range(samples):
            t0 = time.perf_counter()
            futures.append(inc.async_remote(x=i))
            ours.append(time.perf_counter() - t0)
        assert [f.result(60) for f in futures] == [i + 1 for i in range(samples)]
        cloud.close()
    with ProcessPoolExecutor(2) as pool:
        pool.submit(abs, 1).result()
        anchor = []
        for i in range(samples):
            t0 = time.perf_counter()
            pool.submit(abs, -i)
            anchor.append(time.perf_counter() - t0)
    return median(ours), median(anchor)


def item_local_searches(repeats: int) -> dict:
    from dask.distributed import Client, LocalCluster
    from joblib import parallel_config

    from pythagoras_p2p import LocalCloud, register_joblib_backend

    out: dict = {}
    t, scores = one_search(None, 1)
    out["serial"], out["scores"] = [t], scores
    one_search(None, 2)  # loky's workers started
    out["loky"] = [one_search(None, 2)[0] for _ in range(repeats)]
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    with parallel_config(backend="dask"):
        one_search("dask", -1)
        runs = [one_search("dask", -1) for _ in range(repeats)]
    out["dask"] = [t for t, _ in runs]
    out["dask_scores"] = runs[0][1]
    client.close()
    cluster.close()
    with tempfile.TemporaryDirectory() as tmp:
        cloud = LocalCloud(home=Path(tmp) / "home", workers=2)
        register_joblib_backend(cloud=cloud)
        one_search("pythagoras", -1)
        runs = [one_search("pythagoras", -1) for _ in range(repeats)]
        out["ours"] = [t for t, _ in runs]
        out["ours_scores"] = runs[0][1]
        one_search("pythagoras", -1, memoize=True)
        runs = [one_search("pythagoras", -1, memoize=True) for _ in range(repeats)]
        out["ours_rerun"] = [t for t, _ in runs]
        out["rerun_scores"] = runs[0][1]
        cloud.close()
    return out


def item_swarm_search(repeats: int, root: Path) -> dict | None:
    import subprocess

    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    from bench_swarm import make_lan, start_swarm
    from netns import namespaces_available

    reason = namespaces_available()
    if reason is not None:
        print(f"  (no swarm rows: {reason})")
        return None
    with make_lan(root) as lan:
        start_swarm(lan)
        host = lan.hosts[0]
        argv = [sys.executable, str(Path(__file__).resolve()), "--part", "swarm_search",
                "--params", json.dumps({"repeats": repeats})]
        proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=str(host.home))
        out, err = proc.communicate(timeout=1800)
        found = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"the swarm part failed (exit {proc.returncode}):\n{out}\n{err}")
        return json.loads(found[-1][len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: a smoke run")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        import logging

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        print("RESULT " + json.dumps(PARTS[args.part](json.loads(args.params))), flush=True)
        return 0
    import dask
    import joblib
    import sklearn

    repeats = 1 if args.quick else 3
    print(f"python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, joblib "
          f"{joblib.__version__}, dask {dask.__version__}, {os.cpu_count()} CPUs; "
          f"{repeats} repetition(s), medians", flush=True)
    rows = []
    ours, anchor = item_async_return(50 if args.quick else 300)
    rows.append(Row("async_remote returns its future", f"{ours * 1e3:.3f} ms",
                    f"ProcessPoolExecutor.submit {anchor * 1e3:.3f} ms", f"{ours / anchor:.1f}×",
                    "< 5 ms", ours < 0.005))
    print("searching (serial, loky, Dask, embedded default)...", flush=True)
    local = item_local_searches(repeats)
    for key in ("dask_scores", "ours_scores", "rerun_scores"):
        assert local[key] == local["scores"], f"{key} differ from the serial search's"
    loky = median(local["loky"])
    serial = local["serial"][0]
    rows.append(Row("GridSearchCV 125 fits, serial n_jobs=1", f"{serial:.2f} s", "—", "—", "—", True))
    rows.append(Row("  loky n_jobs=2", f"{loky:.2f} s", "—", f"{serial / loky:.2f}× serial", "—", True))
    dask_t = median(local["dask"])
    rows.append(Row("  Dask joblib backend, LocalCluster(2)", f"{dask_t:.2f} s", f"loky {loky:.2f} s",
                    f"{loky / dask_t:.2f}× loky", "—", True))
    mine = median(local["ours"])
    rows.append(Row("  ours, embedded default (2 workers)", f"{mine:.2f} s", f"loky {loky:.2f} s",
                    f"{loky / mine:.2f}× loky", "≈ loky (same 2 cores)", loky / mine >= 0.8))
    rerun = median(local["ours_rerun"])
    rows.append(Row("  ours, memoized rerun, embedded", f"{rerun:.2f} s", f"loky {loky:.2f} s",
                    f"{loky / rerun:.1f}× loky", "executes nothing", rerun < loky))
    print("searching on 3 namespace hosts × 2 workers...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        swarm = item_swarm_search(repeats, Path(tmp) / "lan")
    if swarm is not None:
        assert swarm["scores"] == local["scores"] and swarm["rerun_scores"] == local["scores"]
        plain = median(swarm["plain"])
        rows.append(Row("  ours, 3 hosts × 2 workers", f"{plain:.2f} s", f"loky {loky:.2f} s",
                        f"{loky / plain:.2f}× loky", "shares the same 2 cores", True))
        again = median(swarm["rerun"])
        rows.append(Row("  ours, memoized rerun, 3 hosts", f"{again:.2f} s", f"loky {loky:.2f} s",
                        f"{loky / again:.1f}× loky", "executes nothing", again < loky))
    print()
    print_table(rows)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
