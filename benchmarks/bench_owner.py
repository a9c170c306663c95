"""What yielding to the owner costs, and how fast it is.

1. CPU of an idle node that watches its owner (``--yield-to-owner``: one look a second at the
   machine's busy time and at its own processes), all its processes together, beside the same
   node ``--dedicated`` (no watcher). Target: ≤ 0.5 % of a core.
2. Time to yield: a client keeps a node busy with calls of 0.1 s; a CPU burner (the owner)
   starts; the time until the node says it is paused, and until the last call started there.
   The burner is named to the node as its owner (``PYTHAGORAS_TEST_OWNER_PIDS``), so that
   whatever else this machine runs does not count. Target: ≤ 5 s.

Nodes run with ``--bind 127.0.0.1 --no-mdns``: nothing leaves this machine.

    python benchmarks/bench_owner.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_node import cpu_fraction, free_port, stop  # benchmarks/ is on sys.path as a script
from report import start_loopback_node

from pythagoras_p2p import PCloud
from pythagoras_p2p.net.security import create_key
from pythagoras_p2p.trust.enroll import admit


def start(home: Path, port: int, *flags: str, env: dict | None = None) -> subprocess.Popen:
    return start_loopback_node(home, port, "--workers", "2", *flags, env=env, timeout=30,
                               poll=0.01)


def idle_cost(home: Path, seconds: float, *flags: str) -> float:
    proc = start(home, free_port(), *flags)
    try:
        time.sleep(2)  # past start-up
        return cpu_fraction([proc.pid], seconds)
    finally:
        stop(proc)
        (home / "node.json").unlink(missing_ok=True)


def work(*, x, marks):
    import os
    import time

    with open(os.path.join(marks, str(x)), "w") as f:
        f.write(repr(time.time()))
    time.sleep(0.1)
    return x


def time_to_yield(root: Path, home: Path) -> tuple[float, float]:
    """(seconds until the node is paused, seconds until the last call started there)."""
    pids, marks, client_home = root / "owner.pids", root / "marks", root / "client"
    pids.write_text("")
    marks.mkdir()
    client_home.mkdir()
    admit(home, client_home, node=False)
    port = free_port()
    proc = start(home, port, "--yield-to-owner", "--keep-free", "0",
                 env={"PYTHAGORAS_TEST_OWNER_PIDS": str(pids)})
    cloud = PCloud(connection=f"127.0.0.1:{port}", home=client_home)
    burner = None
    try:
        fn = cloud.add_pure_function(work)
        def keep_busy() -> None:
            try:
                fn.sync_parallel([{"x": i, "marks": str(marks)} for i in range(400)])
            except Exception:  # the cloud is closed once measured: its calls end unfinished
                pass

        runner = threading.Thread(target=keep_busy, daemon=True)
        runner.start()
        while len(os.listdir(marks)) < 10:
            time.sleep(0.01)
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        pids.write_text(f"{burner.pid}\n")
        busy_at = time.time()
        from pythagoras_p2p.net.rpc import request
        from pythagoras_p2p.net.security import load_key

        key = load_key(home)
        while not request(f"tcp://127.0.0.1:{port}", key, "status").fields["node"]["paused"]:
            time.sleep(0.05)
        paused = time.time() - busy_at
        time.sleep(1.0)
        last = max(float((marks / name).read_text()) for name in os.listdir(marks))
        return paused, last - busy_at
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        cloud.close()
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter idle window")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-owner-"))
    try:
        home = root / "node"
        create_key(home, name="bench")
        seconds = 5.0 if args.quick else 15.0
        watching = idle_cost(home, seconds, "--yield-to-owner")
        dedicated = idle_cost(home, seconds, "--dedicated")
        paused, last_start = time_to_yield(root, home)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"idle_watching": watching, "idle_dedicated": dedicated,
                      "paused_after_s": paused, "last_start_after_s": last_start}))
    print(f"{'idle node watching its owner, all processes':48} | {watching:8.2%} | "
          f"dedicated {dedicated:.2%}  [target ≤ 0.5 %]")
    print(f"{'owner busy → node paused':48} | {paused:7.2f}s | [target ≤ 5 s]")
    print(f"{'owner busy → last call started on the node':48} | {last_start:7.2f}s | [target ≤ 5 s]")


if __name__ == "__main__":
    main()
