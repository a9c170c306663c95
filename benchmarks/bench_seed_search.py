"""The seed's own workload: a cross-validated grid search written with ``sync_parallel``.

45 SVC fits on scikit-learn's digits data (1797 × 64): 9 (C, gamma) pairs × 5 folds, ``X`` and
``y`` passed as arguments of every call. Side by side, in one run: serial scikit-learn (a loop
of the same fits), ``GridSearchCV(n_jobs=2)`` (loky), our embedded default (2 workers), and a
client on host 0 of 3 network-namespace hosts × 2 workers (``PCloud()`` through host 0's node).
Each repetition uses fresh calls (a ``rep`` argument), so every fit runs; the first search of
each pool warms its workers (imports) and is reported apart, and so is the first search of a
second script run against the same nodes (a node's workers outlive the client that warmed them;
the embedded default's die with their script). All the rows share this machine's
2 cores, so the swarm's ratio to the embedded default is its own overhead (target ≤ 1.25×).

    python benchmarks/bench_seed_search.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from report import Row, print_table, wait_until  # benchmarks/ is on sys.path when run as a script

from pythagoras_p2p.trust.enroll import admit_all

REPO = Path(__file__).resolve().parents[1]
PAIRS = [(C, gamma) for C in (1, 5, 10) for gamma in (0.0005, 0.001, 0.002)]


def fit_fold(*, X, y, C, gamma, fold, rep):
    """One fit of the search: the score of SVC(C, gamma) on ``fold`` of 5 stratified folds."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    train, test = list(StratifiedKFold(5).split(X, y))[fold]
    return float(SVC(C=C, gamma=gamma).fit(X[train], y[train]).score(X[test], y[test]))


def data():
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def ours_search(cloud, rep: int) -> tuple[float, list]:
    from pythagoras_p2p import kw_args

    X, y = data()
    fn = cloud.add_pure_function(fit_fold)
    t0 = time.perf_counter()
    scores = fn.sync_parallel(kw_args(X=X, y=y, C=C, gamma=g, fold=f, rep=rep)
                              for C, g in PAIRS for f in range(5))
    return time.perf_counter() - t0, scores


def part_swarm(params: dict) -> dict:
    from pythagoras_p2p import PCloud

    cloud = PCloud()
    wait_until(lambda: len(cloud.ready_peers()) >= 3, 60, "3 nodes")
    first = ours_search(cloud, params["base"])
    runs = [ours_search(cloud, params["base"] + 1 + i) for i in range(params["repeats"])]
    cloud.close()
    return {"first": first[0], "times": [t for t, _ in runs], "scores": first[1]}


def local_rows(repeats: int, base: int) -> dict:
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    from pythagoras_p2p import LocalCloud

    X, y = data()
    t0 = time.perf_counter()
    serial = [fit_fold(X=X, y=y, C=C, gamma=g, fold=f, rep=0) for C, g in PAIRS for f in range(5)]
    serial_t = time.perf_counter() - t0
    grid = {"C": [1, 5, 10], "gamma": [0.0005, 0.001, 0.002]}

    def loky() -> float:
        t0 = time.perf_counter()
        GridSearchCV(SVC(), grid, cv=5, n_jobs=2, refit=False).fit(X, y)
        return time.perf_counter() - t0

    loky_first = loky()
    lokys = [loky() for _ in range(repeats)]
    with tempfile.TemporaryDirectory() as home:
        cloud = LocalCloud(home=home, workers=2)
        first = ours_search(cloud, base)
        runs = [ours_search(cloud, base + 1 + i) for i in range(repeats)]
        cloud.close()
    assert runs[0][1] == serial, "the embedded default's scores differ from serial"
    return {"serial": serial_t, "scores": serial, "loky_first": loky_first, "loky": lokys,
            "first": first[0], "ours": [t for t, _ in runs]}


def swarm_rows(repeats: int, base: int, root: Path) -> dict | None:
    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    from netns import Lan, namespaces_available

    from pythagoras_p2p.net.security import create_key

    reason = namespaces_available()
    if reason is not None:
        print(f"(no swarm row: {reason})")
        return None
    with Lan(3, root) as lan:
        create_key(lan.hosts[0].home, name="bench-seed")
        admit_all(lan.hosts[0].home, [h.home for h in lan.hosts[1:]], admin=True)
        for host in lan.hosts:
            host.start_node(workers=2)
        wait_until(lambda: all(h.node_info() for h in lan.hosts), 60, "every node to serve")
        ids = {h.node_info()["id"] for h in lan.hosts}
        wait_until(lambda: {p["id"] for p in lan.hosts[0].status()["peers"]} == ids, 60,
                   "host 0's node to know every node")

        def script(params: dict) -> dict:
            argv = [sys.executable, str(Path(__file__).resolve()), "--part", "swarm",
                    "--params", json.dumps(params)]
            proc = lan.hosts[0].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=str(lan.hosts[0].home))
            out, err = proc.communicate(timeout=1800)
            found = [line for line in out.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not found:
                raise RuntimeError(f"the swarm part failed:\n{out}\n{err}")
            return json.loads(found[-1][len("RESULT "):])

        found = script({"repeats": repeats, "base": base})
        # A new script against the same nodes: their workers outlive the client that warmed them
        found["next_script"] = script({"repeats": 0, "base": base + 50})["first"]
        return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--part")
    parser.add_argument("--params", default="{}")
    args = parser.parse_args()
    if args.part:
        print("RESULT " + json.dumps(part_swarm(json.loads(args.params))), flush=True)
        return 0
    repeats = 1 if args.quick else 3
    base = int(time.time())  # calls no earlier run stored
    local = local_rows(repeats, base)
    with tempfile.TemporaryDirectory() as tmp:
        swarm = swarm_rows(repeats, base + 100, Path(tmp) / "lan")
    serial, loky, ours = local["serial"], median(local["loky"]), median(local["ours"])
    rows = [
        Row("45 fits, serial scikit-learn", f"{serial:.2f} s", "", "", "", True),
        Row("GridSearchCV(n_jobs=2), loky", f"{loky:.2f} s (first {local['loky_first']:.2f} s)",
            f"serial {serial:.2f} s", f"{serial / loky:.2f}× serial", "", True),
        Row("ours, embedded default, 2 workers", f"{ours:.2f} s (first {local['first']:.2f} s)",
            f"loky {loky:.2f} s", f"{loky / ours:.2f}× loky", "≈ loky", True),
    ]
    if swarm is not None:
        assert swarm["scores"] == local["scores"], "the swarm's scores differ from serial"
        mine = median(swarm["times"])
        rows.append(Row("ours, 3 namespace hosts × 2 workers", f"{mine:.2f} s (first {swarm['first']:.2f} s)",
                        f"embedded {ours:.2f} s", f"{mine / ours:.2f}× embedded", "≤ 1.25× embedded",
                        mine / ours <= 1.25))
        cold, cold_swarm = local["first"], swarm["first"]
        rows.append(Row("first search, fresh workers everywhere", f"{cold_swarm:.2f} s (3 hosts)",
                        f"embedded first {cold:.2f} s", f"{cold_swarm / cold:.2f}× embedded",
                        "≤ 1.25× embedded", cold_swarm / cold <= 1.25))
        later = swarm["next_script"]
        rows.append(Row("first search of a new script, nodes up", f"{later:.2f} s (3 hosts)",
                        f"embedded first {cold:.2f} s", f"{later / cold:.2f}× embedded",
                        "≤ 1.25× embedded", later / cold <= 1.25))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
