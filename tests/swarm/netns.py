"""Hosts for swarm tests: Linux network namespaces on a private bridge, one real node in each.

Every run makes its own namespaces, named ``pyt<pid>x<n>-...``, with a bridge in a namespace
of its own (nothing is added to the machine's own network namespace), a /24 of 10.213.0.0/16
chosen per run, and a multicast route so mDNS works between the hosts. Everything is removed
on exit, even after a failure, and namespaces left by a dead earlier run are swept first.
Each host's processes also get a UTS namespace with the host's own name as hostname, as separate
machines would (what a call prints is marked with the hostname of the machine it ran on).

The kernel's ARP table is one table for every network namespace of the machine, capped by the
root namespace's ``net.ipv4.neigh.default.gc_thresh3`` (1024 by default): a LAN of n hosts whose
nodes all talk to each other needs n·(n-1) entries, which overflows it from ~32 hosts on ("arp_cache:
neighbor table overflow!" in dmesg, and a host that cannot resolve any peer). Where a real machine
needs only n-1 entries, large LANs here get fixed MAC addresses and permanent neighbour entries,
which the kernel exempts from that cap, instead of ARP.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "pyt"

#: From this many hosts on, hosts know each other's MAC addresses (permanent neighbour entries)
#: instead of resolving them by ARP: see the module docstring.
STATIC_NEIGHBOURS_FROM = 17


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def namespaces_available() -> str | None:
    """None if this process can make network namespaces, else the reason it cannot."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"{PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def sweep_stale() -> None:
    """Delete namespaces of earlier runs whose process is gone."""
    listed = _ip("netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"{PREFIX}(\d+)x", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _ip("netns", "del", name, check=False)


class Host:
    def __init__(self, lan: Lan, index: int):
        self.lan = lan
        self.index = index
        self.ns = f"{lan.name}-h{index}"
        self.ip = f"{lan.subnet}.{10 + index}"
        self.mac = f"02:00:0a:d5:{int(lan.subnet.rsplit('.', 1)[1]):02x}:{10 + index:02x}"
        self.home = lan.root / f"host{index}"
        self.home.mkdir(parents=True, exist_ok=True)
        self.node: subprocess.Popen | None = None
        self.log = self.home / "node.out"

    @property
    def hostname(self) -> str:
        return self.ns

    def popen(self, argv: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
        """Start ``argv`` on this host; ``ip netns exec``, ``unshare`` and ``sh`` all exec, so
        the returned process is ``argv`` itself (signals sent to it reach it)."""
        full = {**os.environ, "PYTHAGORAS_HOME": str(self.home), **(env or {})}
        kwargs.setdefault("cwd", self.home)  # not the repository root: see node_harness.cli
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--uts", "--", "sh", "-c",
             'hostname "$0" && exec "$@"', self.hostname, *argv], env=full, **kwargs)
        self.lan.processes.append(proc)
        return proc

    def run_python(self, code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = self.popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def start_node(self, workers: int = 2, extra: list[str] = (), env: dict | None = None) -> None:
        """Start this host's node (``env``: extra environment of the node and its workers).

        The node is ``--dedicated`` (``extra`` may say ``--yield-to-owner`` again): every host
        shares this machine's processors, so a node yielding to its owner would count the other
        hosts' nodes and the clients as its owner's programs and pause as soon as the swarm is
        busy, and a client whose nodes are all paused waits for them (a benchmark then hangs)."""
        with open(self.log, "ab") as log:
            self.node = self.popen(
                [sys.executable, "-m", "pythagoras_p2p.cli.main", "start", "--bind", self.ip,
                 "--port", "7575", "--mdns-interface", self.ip, "--workers", str(workers),
                 "--dedicated", *extra],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``pythagoras-node ARGS`` on this host, for this host's home."""
        proc = self.popen([sys.executable, "-m", "pythagoras_p2p.cli.main", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def node_info(self) -> dict | None:
        try:
            info = json.loads((self.home / "node.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return info if self.node is not None and self.node.poll() is None else None

    def status(self) -> dict:
        done = self.cli("status", "--json", timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"status on {self.ns} failed: {done.stderr}")
        return json.loads(done.stdout)

    def signal_node(self, sig: int) -> None:
        """Signal the node's Python process (the child of `ip netns exec`)."""
        os.kill(self.node_pid(), sig)

    def node_pid(self) -> int:
        info = json.loads((self.home / "node.json").read_text())
        return int(info["pid"])

    def kill_node(self) -> float:
        """``kill -9`` this host's node and its worker processes (the machine's daemon dies
        with everything it started); returns when, by ``time.time()``, the node was killed."""
        import psutil

        pid = self.node_pid()
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if self.node is not None:
            self.node.wait(10)
        return killed

    def signal_tree(self, sig: int) -> float:
        """Send ``sig`` to this host's node and its workers at once (``SIGSTOP`` freezes the
        host's whole daemon, as a suspended machine would); returns when, by ``time.time()``."""
        import psutil

        node = psutil.Process(self.node_pid())
        processes = [node, *node.children(recursive=True)]
        for process in processes:
            try:
                process.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        return time.time()

    def link(self, up: bool) -> None:
        _ip("-n", self.ns, "link", "set", "eth0", "up" if up else "down")


class Lan:
    """``with Lan(3, root) as lan:`` gives ``lan.hosts[0..2]``, each its own network namespace."""

    def __init__(self, count: int, root: Path, key_from: Path | None = None):
        self.count = count
        self.root = Path(root)
        self.name = f"{PREFIX}{os.getpid()}x{random.randrange(16**4):04x}"
        self.subnet = f"10.213.{random.randrange(1, 255)}"
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen] = []

    def admit(self, home: Path, *, hostname: str | None = None, node: bool = False):
        """Make ``home`` (a client's, or a host added later) a member, certified by the first
        host; every host's home gets the new list; returns its key id once every running node
        admits it."""
        from pythagoras_p2p.trust import NodeKeys
        from pythagoras_p2p.trust.enroll import admit

        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        admit(self.hosts[0].home, home, hostname=hostname or home.name, node=node,
              share_with=tuple(h.home for h in self.hosts))
        key_id = NodeKeys.load(home).key_id
        self.wait_for_members(key_id)
        return key_id

    def wait_for_members(self, key_id: str, admitted: bool = True, timeout: float = 20.0,
                         hosts: list | None = None) -> None:
        """Until the running nodes (of ``hosts``, default all) admit ``key_id`` in their member
        lists (or, ``admitted=False``, refuse it)."""
        from helpers import wait_for

        def agree() -> bool:
            for host in hosts or self.hosts:
                if host.node_info() is None:
                    continue
                try:
                    rows = {m["key_id"]: m for m in host.status().get("members", [])}
                except RuntimeError:  # its node did not answer in time (a loaded machine)
                    return False
                row = rows.get(key_id)
                if (row is not None and not row["removed"]) != admitted:
                    return False
            return True

        wait_for(agree, timeout, interval=0.2, message=f"every node to know {key_id}")

    def __enter__(self) -> Lan:
        sweep_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        switch = f"{self.name}-sw"
        _ip("netns", "add", switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for i in range(self.count):
            host = Host(self, i)
            self.hosts.append(host)
            _ip("netns", "add", host.ns)
            _ip("link", "add", f"v{i}", "netns", switch, "type", "veth", "peer", "name", "eth0",
                "address", host.mac, "netns", host.ns)
            _ip("-n", switch, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
            _ip("-n", host.ns, "link", "set", "lo", "up")
            _ip("-n", host.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        if self.count >= STATIC_NEIGHBOURS_FROM:
            for host in self.hosts:
                batch = "".join(f"neigh replace {o.ip} lladdr {o.mac} dev eth0 nud permanent\n"
                                for o in self.hosts if o is not host)
                subprocess.run(["ip", "-n", host.ns, "-batch", "-"], input=batch, text=True,
                               capture_output=True, check=True)

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # processes that outlived their parent inside a namespace (a killed node's workers)
        for host in self.hosts:
            pids = _ip("netns", "pids", host.ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        for host in self.hosts:
            _ip("netns", "del", host.ns, check=False)
        _ip("netns", "del", f"{self.name}-sw", check=False)

    def __exit__(self, *exc: object) -> None:
        self.close()


_UNAVAILABLE: list = []  # the reason namespaces cannot be made here, once known


def start_lan(root: Path, count: int, *, workers: int = 2, start: bool = True,
              node_env: dict[int, dict] | None = None) -> Lan:
    """A Lan of ``count`` hosts, members (and admins) of one swarm, each host's node started (``node_env``:
    extra environment for the node of some hosts, by index); skips the test where namespaces
    cannot be made. The caller closes it."""
    import pytest
    from helpers import wait_for

    from pythagoras_p2p.net.security import create_key
    from pythagoras_p2p.trust.enroll import admit_all

    if not _UNAVAILABLE:
        _UNAVAILABLE.append(namespaces_available())
    if _UNAVAILABLE[0] is not None:
        pytest.skip(f"swarm tests need network namespaces: {_UNAVAILABLE[0]}")
    lan = Lan(count, root).__enter__()
    try:
        create_key(lan.hosts[0].home, name="swarm-test", hostname=lan.hosts[0].hostname)
        admit_all(lan.hosts[0].home, [h.home for h in lan.hosts[1:]], admin=True,
                  hostnames=[h.hostname for h in lan.hosts[1:]])
        if start:
            for host in lan.hosts:
                host.start_node(workers=workers, env=(node_env or {}).get(host.index))
            wait_for(lambda: all(h.node_info() for h in lan.hosts), 30, message="every node to serve")
    except BaseException:
        lan.close()
        raise
    return lan
