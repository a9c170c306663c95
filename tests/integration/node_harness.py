"""Real nodes for integration tests: ``pythagoras-node start`` processes on loopback.

Every node gets its own ``PYTHAGORAS_HOME`` (under ``tmp_path``) and a free port, listens on
127.0.0.1 only and never announces on mDNS, so no test sends a packet out of this machine's
interfaces. A node counts as started once it has written ``home/node.json`` with its own pid
(it does so once it serves); it is stopped at teardown (SIGTERM, then SIGKILL) even when the
test failed. Clients are ``SwarmCloud`` objects of another home holding a copy of the node's key,
closed at teardown too.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
from helpers import REPO, run_python, wait_for  # noqa: F401  (re-exported for the tests)

from pythagoras_p2p.function import PureFunction, function_record
from pythagoras_p2p.net import wire
from pythagoras_p2p.net.security import create_key, curve_client, load_key
from pythagoras_p2p.trust import members_path
from pythagoras_p2p.trust.enroll import admit

START_TIMEOUT = 30.0  # seconds a node may take to serve (generous: CI machines are slow)
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(home: Path) -> dict:
    """The environment of a CLI process for ``home``: no stray PYTHAGORAS_* setting leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHAGORAS_")}
    env["PYTHAGORAS_HOME"] = str(home)
    # Every process of a test shares this machine: none of them is an owner to yield to (and
    # workers at nice 10 would stretch the timings tests measure; see tests/conftest.py).
    env["PYTHAGORAS_YIELD_TO_OWNER"] = "0"
    env["PYTHAGORAS_PRIORITY"] = "normal"
    return env


def cli(home: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``pythagoras-node ARGS`` (this venv's) for ``home`` and return what it did."""
    # cwd: `python -m` puts the working directory first on sys.path, and from the repository
    # root the source folder would stand in for the installed package (without daemon/, cli/).
    return subprocess.run([sys.executable, "-m", "pythagoras_p2p.cli.main", *args],
                          env=node_env(home), capture_output=True, text=True, timeout=timeout,
                          cwd=home.parent, stdin=subprocess.DEVNULL)  # no terminal to answer on


_SWARMS: dict[Path, list[Path]] = {}  # the first home of each swarm a test made → its homes


def make_key(home: Path):
    """A new swarm whose first admin is ``home``."""
    _SWARMS[Path(home)] = [Path(home)]
    return create_key(home)


def copy_key(source_home: Path, home: Path, *, node: bool = True) -> Path:
    """Make ``home`` a member (and an admin, so it may admit others) of ``source_home``'s swarm,
    certified by ``source_home`` (``node=False``: a client's home, which runs no node); every
    home of that swarm gets the new member list (their nodes take it from their homes)."""
    home.mkdir(parents=True, exist_ok=True)
    homes = next((h for h in _SWARMS.values() if Path(source_home) in h), None)
    if homes is None:
        homes = _SWARMS.setdefault(Path(source_home), [Path(source_home)])
    admit(source_home, home, hostname=home.name, admin=True, node=node, share_with=tuple(homes))
    homes.append(Path(home))
    return members_path(home)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody has reaped yet has stopped running)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------- raw protocol


def marker_function():
    """A pure function whose every run leaves a line in the file it is given."""

    def write_marker(*, path):
        import os

        with open(path, "a") as fh:
            fh.write(f"ran in {os.getpid()}\n")
        return os.getpid()

    return write_marker


class Call:
    """The wire messages a member sends to make a node run ``write_marker(path=...)``."""

    def __init__(self, path):
        self.path = str(path)
        fn = PureFunction(marker_function(), None)
        # A node loads the function by the key of its record (named fp on the wire).
        self.fp, self.record = function_record(fn)
        self.call = fn.address(path=self.path)
        self.payload = pickle.dumps({"path": self.path}, protocol=5)

    def function(self, request_id: int = 1) -> list:
        return wire.build("function", request_id, [self.record], fp=self.fp)

    def store(self, sock) -> None:
        """Give the node this function (as a member); its ``ok`` is read here."""
        reply = ask(sock, self.function())
        assert reply.op == "ok", reply

    def run(self, request_id: int = 7, *, payload: bytes | None = None, **fields) -> list:
        header = {"fp": self.fp, "call": self.call, "label": "write_marker(...)", "refs": []}
        header.update(fields)
        return wire.build("run", request_id, [self.payload if payload is None else payload],
                          **header)

    def ran(self) -> bool:
        return os.path.exists(self.path)


@pytest.fixture
def zctx():
    """A ZeroMQ context for raw sockets of the test (destroyed after it)."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def dealer(ctx, node, *, public=None, secret=None, server=None, key=None, curve=True):
    """A raw DEALER to ``node``: a member's (``key=``), a CURVE keypair's, or plaintext."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndtimeo = 5000  # a stranger's handshake fails, and then a send would block for good
    if key is not None:
        curve_client(sock, key, server or node.key.public)
    elif curve:
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = server or node.key.public
    sock.connect(node.endpoint)
    return sock


def ask(sock, frames: list, timeout: float = 10.0):
    """Send one message and return the parsed reply (failing the test if none comes)."""
    sock.send_multipart(frames)
    assert sock.poll(int(timeout * 1000)), "the node did not answer a member"
    return wire.parse(sock.recv_multipart())


@dataclass
class RunningNode:
    """One ``pythagoras-node start`` process and where to reach it."""

    home: Path
    port: int
    proc: subprocess.Popen
    log_path: Path
    key: object = None
    exit_code: int | None = field(default=None)
    killed: bool = False  # SIGTERM did not stop it in time

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def connection(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def request(self, op: str, *, timeout: float = 10.0, **fields):
        """One request as a member (raises NodeUnreachable / WireError)."""
        from pythagoras_p2p.net.rpc import request

        return request(self.endpoint, self.key, op, timeout=timeout, **fields)

    def status(self) -> dict:
        """This node's own entry of ``status``."""
        return self.request("status").fields["node"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def serves(self) -> bool:
        """The node answers a member's probe."""
        return self.alive() and self.request("probe", timeout=10.0).op == "ok"

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not go; return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(10)
        self.exit_code = self.proc.returncode
        return self.exit_code


def spawn_node(home: Path, port: int, *, workers: int = 2, extra: tuple = (),
               log_path: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """Start ``pythagoras-node start`` on 127.0.0.1:port without waiting for it."""
    log_path = log_path or home.parent / f"{home.name}.node.log"
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pythagoras_p2p.cli.main", "start", "--bind", "127.0.0.1",
             "--port", str(port), "--no-mdns", "--workers", str(workers), *extra],
            env={**node_env(home), **(env or {})}, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            cwd=home.parent,
        )


def wait_serving(node: RunningNode, timeout: float = START_TIMEOUT) -> None:
    """Wait until the node has written its node.json (it serves from then on)."""
    from pythagoras_p2p.net.nodefile import read_node_file

    def started():
        if node.proc.poll() is not None:
            pytest.fail(f"the node exited with {node.proc.returncode} before serving:\n{node.log()}")
        info = read_node_file(node.home)
        return info is not None and info.get("pid") == node.pid

    wait_for(started, timeout=timeout, message=f"the node of {node.home} to serve")


@pytest.fixture
def start_node(tmp_path):
    """Factory: ``start_node(name="node", workers=2)`` → a serving :class:`RunningNode`."""
    started: list[RunningNode] = []

    def start(name: str = "node", *, workers: int = 2, key_from: Path | None = None,
              extra: tuple = (), env: dict | None = None) -> RunningNode:
        home = tmp_path / name
        home.mkdir(parents=True, exist_ok=True)
        if key_from is not None:
            copy_key(key_from, home)
        elif not members_path(home).exists():
            make_key(home)
        port = free_port()
        proc = spawn_node(home, port, workers=workers, extra=extra,
                          log_path=tmp_path / f"{name}.log", env=env)
        node = RunningNode(home, port, proc, tmp_path / f"{name}.log", load_key(home))
        started.append(node)
        wait_serving(node)
        return node

    yield start
    problems = []
    for node in started:
        if node.proc.poll() is None:
            node.terminate()
            if node.killed or node.exit_code != 0:
                problems.append(f"{node.home.name}: SIGTERM did not stop it cleanly "
                                f"(exit {node.exit_code}, killed: {node.killed}):\n{node.log()}")
        elif node.exit_code is None:
            node.exit_code = node.proc.returncode
        for line in node.log().splitlines():
            if "Traceback" in line:
                problems.append(f"{node.home.name}: a traceback in its log:\n{node.log()}")
                break
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def node(start_node) -> RunningNode:
    """One serving node with two workers."""
    return start_node()


@pytest.fixture
def make_client(tmp_path):
    """Factory: ``make_client(node, name="client")`` → a SwarmCloud of a fresh home (closed after)."""
    from pythagoras_p2p import PCloud

    clouds = []

    def make(target: RunningNode, name: str = "client", **kwargs):
        home = tmp_path / name
        copy_key(target.home, home, node=False)
        cloud = PCloud(connection=target.connection, home=home, **kwargs)
        clouds.append(cloud)
        return cloud

    yield make
    for cloud in clouds:
        cloud.close()


@pytest.fixture
def client(node, make_client):
    """A SwarmCloud connected to ``node``, in its own home."""
    return make_client(node)
