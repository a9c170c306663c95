"""``pythagoras-node doctor``: a healthy loopback node passes, then one thing is broken at a
time and the finding names it and what to do.

Nodes listen on 127.0.0.1 and never use mDNS; the doctor runs with ``--no-mdns`` (its mDNS
check would announce on the network).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from helpers import run_python
from node_harness import free_port, make_key, node_env


def _fake_package(folder: Path, version: str) -> str:
    """A folder holding the metadata of an installed ``doctorpkg`` at ``version``."""
    info = folder / f"doctorpkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: doctorpkg\nVersion: {version}\n")
    return str(folder)


def doctor(home: Path, *args: str, env: dict | None = None) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "pythagoras_p2p.cli.main", "doctor", "--json",
                           "--no-mdns", *args], env={**node_env(home), **(env or {})},
                          capture_output=True, text=True, timeout=60, cwd=home.parent)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _by_level(report: dict, *levels: str) -> list[dict]:
    return [f for f in report["findings"] if f["level"] in levels]


def test_a_healthy_node_then_one_thing_broken_at_a_time(start_node, tmp_path):
    v2 = _fake_package(tmp_path / "v2", "2.0")
    node = start_node("doc", workers=1, env={"PYTHONPATH": v2})
    same = {"PYTHONPATH": v2}
    run_python(textwrap.dedent("""
        from pythagoras_p2p import LocalCloud
        cloud = LocalCloud(connection="local", workers=1)
        @cloud.add_pure_function
        def square(*, x):
            return x * x
        assert [square(x=i) for i in range(3)] == [0, 1, 4]
    """), env={"PYTHAGORAS_HOME": str(node.home)})

    code, report = doctor(node.home, env=same)
    assert code == 0 and report["ok"], report
    assert not _by_level(report, "warn", "fail"), report
    checks = {f["check"] for f in report["findings"]}
    assert {"store", "key", "node", "port", "mdns", "peer", "log"} <= checks
    peer = next(f for f in report["findings"] if f["check"] == "peer")
    assert peer["details"]["round_trip_ms"] < 1000 and abs(peer["details"]["clock_skew_s"]) < 2
    assert peer["details"]["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert any(f["check"] == "store" and "3 values" in f["message"] for f in report["findings"])

    # 1. the node runs other package versions than this interpreter
    v1 = _fake_package(tmp_path / "v1", "1.0")
    code, report = doctor(node.home, env={"PYTHONPATH": v1})
    [warned] = _by_level(report, "warn", "fail")
    assert code == 0 and warned["check"] == "peer", report
    assert "doctorpkg 1.0 here, 2.0 there" in warned["message"] and "pip install" in warned["fix"]

    # 2. the machine's keys readable by everyone
    key = node.home / "trust" / "node.key"
    os.chmod(key, 0o644)
    code, report = doctor(node.home, env=same)
    [warned] = _by_level(report, "warn", "fail")
    assert warned["check"] == "key" and warned["fix"] == f"chmod 600 {key}", report
    os.chmod(key, 0o600)

    # 3. an error in the node's log within the hour
    log = node.home / "node.log"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log.write_text(f"{stamp},123 ERROR daemon.node: the disk caught fire\n")
    code, report = doctor(node.home, env=same)
    [warned] = _by_level(report, "warn", "fail")
    assert warned["check"] == "log" and "the disk caught fire" in warned["message"], report
    log.write_text("")

    # 4. peers that cannot be reached, each said as what it is
    refused, nowhere = f"127.0.0.1:{free_port()}", "no-such-host.invalid"
    code, report = doctor(node.home, "--peer", refused, "--peer", nowhere, env=same)
    failed = {f["details"]["address"]: f for f in _by_level(report, "fail")}
    assert code == 1 and not report["ok"] and len(_by_level(report, "warn", "fail")) == 2
    assert "refused" in failed[refused]["message"] and "pythagoras-node start" in failed[refused]["fix"]
    assert "no such host" in failed[f"{nowhere}:7575"]["message"]

    # 5. a result whose value is gone from the store
    run_python(textwrap.dedent("""
        from pythagoras_p2p.store.core import open_store
        store = open_store()  # a result naming a value that is not here (its file was lost)
        store.put_results([(b"d" * 32, b"v" * 32, None, {})])
    """), env={"PYTHAGORAS_HOME": str(node.home)})
    code, report = doctor(node.home, env=same)
    [failed] = _by_level(report, "warn", "fail")
    assert code == 1 and failed["check"] == "store", report
    assert "missing value" in failed["message"] and "cache verify --repair" in failed["fix"]


def test_a_node_of_another_swarm_is_told_apart(start_node, tmp_path):
    other = start_node("other", workers=1)
    home = tmp_path / "mine"
    make_key(home)
    code, report = doctor(home, "--peer", other.connection, "--port", str(free_port()))
    [failed] = _by_level(report, "fail")
    assert code == 1 and failed["check"] == "peer", report
    assert "another swarm" in failed["message"] and "join --force" in failed["fix"]


def test_a_port_taken_by_another_program(tmp_path):
    home = tmp_path / "home"
    make_key(home)
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, report = doctor(home, "--port", str(port))
    failed = _by_level(report, "fail")
    assert code == 1 and [f["check"] for f in failed] == ["port"], report
    assert "--port" in failed[0]["fix"]
    assert [f["check"] for f in _by_level(report, "warn")] == ["node"]  # not running: start it


def test_a_damaged_key(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "trust").mkdir()
    (home / "trust" / "members.json").write_text("{ damaged")
    code, report = doctor(home, "--port", str(free_port()))
    failed = _by_level(report, "fail")
    assert code == 1 and [f["check"] for f in failed] == ["key"], report
    assert "join --force TOKEN" in failed[0]["fix"]
