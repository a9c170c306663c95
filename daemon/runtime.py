"""Running a node as a program: start (foreground or detached), signals, and stop.

``pythagoras-node start`` runs in the foreground like ``dask worker`` (systemd ``Type=simple``);
``--detach`` starts the same command in a new session with its log in ``home/node.log`` and
returns once the node serves. SIGTERM and SIGINT stop taking work, let running calls finish for
a bounded time, unregister from mDNS, close the store, and exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pythagoras_p2p.errors import PythagorasError
from pythagoras_p2p.net.nodefile import read_node_file, remove_node_file, write_node_file
from pythagoras_p2p.net.security import SecurityError, load_key

from .node import Node, NodeConfig

__all__ = ["run_node", "start_detached", "stop_node", "NodeError", "HANDOVER_FILE"]

HANDOVER_FILE = "handover.timeout"

log = logging.getLogger(__name__)


class NodeError(PythagorasError):
    """A node cannot be started or stopped (the message says why and what to do)."""


def _configure_logging() -> None:
    level = os.environ.get("PYTHAGORAS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_node(config: NodeConfig) -> int:
    """Serve in this process until SIGTERM/SIGINT; return the exit code."""
    _configure_logging()
    home = Path(config.home)
    try:
        key = load_key(home)
    except SecurityError as exc:
        raise NodeError(str(exc)) from None
    if key is None:
        raise NodeError(
            f"{home} is not a member of a swarm: run `pythagoras-node init` to make a new swarm, "
            f"or `pythagoras-node join TOKEN` (a token from `pythagoras-node invite` on an admin) "
            f"to join one"
        )
    running = read_node_file(home)
    if running is not None:
        raise NodeError(_already_runs(home, running))
    started = time.perf_counter()
    try:
        node = Node(config, key)
    except SecurityError as exc:
        raise NodeError(str(exc)) from None
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    signal.signal(signal.SIGINT, lambda *_: node.stop())
    write_node_file(home, {
        "pid": os.getpid(), "id": node.node_id, "bind": config.bind, "port": config.port,
        "endpoint": node.local_endpoint, "started": node.started,
    })
    log.info("serving %.3f s after start", time.perf_counter() - started)
    node.announce()
    try:
        node.serve()
    finally:
        remove_node_file(home)
        node.close()
        log.info("node %s stopped", node.node_id)
    return 0


def _already_runs(home: Path, running: dict) -> str:
    return (f"a node already runs for {home} (pid {running['pid']}, port {running['port']}); "
            f"stop it with `pythagoras-node stop`, or give this one another PYTHAGORAS_HOME")


def start_detached(argv: list[str], home: Path, timeout: float = 30.0) -> dict:
    """Start ``pythagoras-node <argv>`` in the background; return its node file once it serves."""
    running = read_node_file(home)
    if running is not None:  # said here, before anything is written into that node's log
        raise NodeError(_already_runs(home, running))
    log_path = Path(home) / "node.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        before = log_file.tell()  # what this start writes comes after
        proc = subprocess.Popen(
            [sys.executable, "-m", "pythagoras_p2p.cli.main", *argv], stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=log_file, start_new_session=True, cwd=home,
            env={**os.environ, "PYTHAGORAS_HOME": str(home)},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_node_file(home)
        if info is not None and info.get("pid") == proc.pid:
            return info
        if proc.poll() is not None:
            with open(log_path, "rb") as f:
                f.seek(before)
                written = f.read().decode(errors="replace").strip().splitlines()
            errors = [line.removeprefix("Error: ") for line in written if line.startswith("Error: ")]
            if errors:
                raise NodeError(errors[-1])
            raise NodeError("the node did not start:\n  " + "\n  ".join(written[-5:]))
        time.sleep(0.05)
    proc.terminate()
    raise NodeError(f"the node did not start serving within {timeout:.0f} s; see {log_path}")


def stop_node(home: Path, timeout: float = 60.0) -> dict:
    """SIGTERM the node of ``home`` and wait until it has exited; return what it was."""
    info = read_node_file(home)
    if info is None:
        raise NodeError(f"no node is running for {home} (nothing to stop)")
    pid = info["pid"]
    # How long the node may take to hand its results over: what is left of ``timeout`` once
    # its running calls are done (it reads this when it gets to the hand-over).
    try:
        (Path(home) / HANDOVER_FILE).write_text(f"{max(1.0, timeout - 2.0):.3f}")
    except OSError:
        pass
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return info
        time.sleep(0.05)
    raise NodeError(f"node pid {pid} did not stop within {timeout:.0f} s; `kill -9 {pid}` ends it "
                    f"(results it acknowledged are safe)")


def _exited(pid: int) -> bool:
    """True once ``pid`` has ended (a zombie its parent has not reaped yet counts as ended)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
