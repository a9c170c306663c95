"""What member keys cost a call: this checkout beside the commit before them, one run.

Member keys add to a node's path the check of each message's sender against the member list
(the ``User-Id`` ZAP gave its connection, looked up in the list of the moment), and to a new
connection the ZAP handler's look-up of the client's key; a client finds the node's public key in
the member list. The targets are relative to the one-key code, so both run here, alternately,
each in fresh processes (``PYTHONPATH`` pointing at a tree of its own, the earlier one checked out
with ``git worktree``), against a node of the same tree on 127.0.0.1 (one worker, --dedicated):

1. a remote call's round trip: ``sync_remote`` of a trivial function, a new argument each time,
   ms per call (target: within noise of the earlier commit's, ≤ 1.10×);
2. a lookup's round trip on an open connection (``lookup`` of one stored call), µs;
3. a lookup on a new connection (handshake, ZAP and the answer), ms.

    python benchmarks/bench_members.py [--against 5a975ee] [--rounds 3] [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from report import (  # benchmarks/ is on sys.path when run as a script
    Row,
    child_result,
    print_table,
    start_loopback_node,
)

REPO = Path(__file__).resolve().parents[1]


def stage(source: Path, into: Path) -> Path:
    """``into/pythagoras_p2p``: the package of ``source`` with its daemon/ and cli/ placed as
    setup.cfg's package_dir places them, out of symlinks (no install needed)."""
    top = into / "pythagoras_p2p"
    top.mkdir(parents=True)
    for entry in (source / "pythagoras_p2p").iterdir():
        (top / entry.name).symlink_to(entry)
    for name in ("daemon", "cli"):
        (top / name).symlink_to(source / name)
    return into


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child(calls: int) -> None:
    """One measurement with the code on ``PYTHONPATH``: a node, a member client, the timings."""
    import zmq

    import pythagoras_p2p.net.security as security
    from pythagoras_p2p.net.rpc import client_socket, request
    from pythagoras_p2p.net.wire import build, parse

    member_keys = hasattr(security, "Credentials")
    root = Path(tempfile.mkdtemp(prefix="bench-members-"))
    node_home, client_home = root / "node", root / "client"
    security.create_key(node_home)
    if member_keys:
        from pythagoras_p2p.trust.enroll import admit

        admit(node_home, client_home, hostname="bench-client", node=False)
    else:
        client_home.mkdir()
        shutil.copy(node_home / "swarm.key", client_home / "swarm.key")
    port = _free_port()
    node = start_loopback_node(node_home, port, "--workers", "1", cwd=root,
                               env={"PYTHAGORAS_YIELD_TO_OWNER": "0",
                                    "PYTHAGORAS_PRIORITY": "normal",
                                    "PYTHAGORAS_LOG_LEVEL": "WARNING"})
    try:
        os.environ["PYTHAGORAS_HOME"] = str(client_home)
        from pythagoras_p2p import PCloud

        cloud = PCloud(connection=f"127.0.0.1:{port}")

        @cloud.add_pure_function
        def trivial(*, x):
            return x + 1

        rtts = []
        for i in range(calls + 20):
            t0 = time.perf_counter()
            assert trivial.sync_remote(x=i) == i + 1
            if i >= 20:
                rtts.append(time.perf_counter() - t0)
        key = security.load_key(client_home)
        endpoint = f"tcp://127.0.0.1:{port}"
        stored = "00" * 32  # looked up: whether held or not, the same work for the node
        extra = [key.server_key("127.0.0.1", port)] if member_keys else []
        sock = client_socket(zmq.Context.instance(), key, *extra)
        sock.connect(endpoint)
        lookups = []
        for i in range(calls + 20):
            t0 = time.perf_counter()
            sock.send_multipart(build("lookup", i + 1, calls=[stored]))
            assert parse(sock.recv_multipart()).op == "ok"
            if i >= 20:
                lookups.append(time.perf_counter() - t0)
        sock.close(0)
        fresh = []
        for _ in range(max(20, calls // 10)):
            t0 = time.perf_counter()
            request(endpoint, key, "lookup", calls=[stored], timeout=10)
            fresh.append(time.perf_counter() - t0)
        cloud.close()
        print("RESULT " + json.dumps({"call_ms": median(rtts) * 1e3,
                                      "lookup_us": median(lookups) * 1e6,
                                      "fresh_lookup_ms": median(fresh) * 1e3}), flush=True)
    finally:
        node.terminate()
        node.wait(60)
        shutil.rmtree(root, ignore_errors=True)


def measure(tree: Path, calls: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{Path(__file__).resolve().parent}"}
    return child_result(__file__, ["--child", "--calls", str(calls)], env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="5a975ee", help="the earlier commit (default: the "
                        "last commit before member keys)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh-process rounds of each")
    parser.add_argument("--calls", type=int, default=300, help="calls and lookups per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.calls)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        earlier = Path(tmp) / "earlier"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(earlier),
                        args.against], check=True, capture_output=True)
        try:
            trees = {"ours": stage(REPO, Path(tmp) / "ours"),
                     "then": stage(earlier, Path(tmp) / "then")}
            rows: dict[str, list[dict]] = {"ours": [], "then": []}
            for _ in range(args.rounds):  # alternately, so both see the same noise
                for name in ("then", "ours"):
                    rows[name].append(measure(trees[name], args.calls))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(earlier)], capture_output=True)

    def med(name: str, key: str) -> float:
        return median(r[key] for r in rows[name])

    call, call_then = med("ours", "call_ms"), med("then", "call_ms")
    look, look_then = med("ours", "lookup_us"), med("then", "lookup_us")
    fresh, fresh_then = med("ours", "fresh_lookup_ms"), med("then", "fresh_lookup_ms")
    print(f"earlier commit: {args.against} (one shared swarm key); {args.rounds} rounds of fresh "
          f"processes, {args.calls} calls each, medians\n")
    print_table([
        Row("remote call round trip (sync_remote)", f"{call:.3f} ms", f"then {call_then:.3f} ms",
            f"{call / call_then:.2f}× then", "≤ 1.10× then", call <= 1.10 * call_then),
        Row("lookup on an open connection", f"{look:.0f} µs", f"then {look_then:.0f} µs",
            f"{look / look_then:.2f}× then", "≤ 1.10× then", look <= 1.10 * look_then),
        Row("lookup on a new connection (handshake + ZAP)", f"{fresh:.2f} ms",
            f"then {fresh_then:.2f} ms", f"{fresh / fresh_then:.2f}× then", "-", True),
    ], ratio_header="ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
