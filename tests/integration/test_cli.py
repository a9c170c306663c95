"""The ``pythagoras-node`` command as a person uses it: keys, starting and stopping, status, cache.

Each command runs as its own process (this venv's interpreter) with its own PYTHAGORAS_HOME.
Every failure a person can cause must exit non-zero with a message saying what to do, and
never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time

import numpy as np
import pytest
from node_harness import REPO, cli, free_port, pid_alive, spawn_node, wait_for


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout


def join_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if "pythagoras-node join " in line]
    assert lines, stdout
    return lines[0].split("pythagoras-node join ", 1)[1].strip()


# --------------------------------------------------------------------------- init / invite / join


def test_init_makes_a_swarm_with_this_machine_as_its_admin(tmp_path):
    from pythagoras_p2p.trust import Members, NodeKeys, SwarmSigningKey

    home = tmp_path / "home"
    out = cli(home, "init", "--name", "team", "--owner", "ann", "--hostname", "alpha")
    assert out.returncode == 0, out.stderr
    assert "first admin" in out.stdout and "pythagoras-node invite" in out.stdout
    for path in (NodeKeys.path(home), SwarmSigningKey.path(home)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    members = Members.load(home)
    me = members.by_key_id(NodeKeys.load(home).key_id)
    assert members.swarm_name == "team" and me.owner == "ann" and me.hostname == "alpha"
    assert me.roles == ("admin", "node") and members.is_admitted(me.key_id)
    secret = NodeKeys.load(home).curve_secret.decode()
    assert secret not in out.stdout


def test_init_twice_needs_force(tmp_path):
    from pythagoras_p2p.trust import Members

    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    before = Members.load(home).swarm_public
    again = cli(home, "init")
    assert again.returncode != 0 and "--force" in again.stderr
    no_traceback(again)
    assert Members.load(home).swarm_public == before
    assert cli(home, "init", "--force").returncode == 0
    assert Members.load(home).swarm_public != before


def test_init_moves_a_one_key_home_and_start_refuses_the_old_key_with_the_way(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "swarm.key").write_text('{"version": 1, "name": "x", "public": "p", "secret": "s"}')
    out = cli(home, "start", "--bind", "127.0.0.1", "--port", str(free_port()), "--no-mdns",
              timeout=30)
    assert out.returncode != 0 and "init --force" in out.stderr and "invite" in out.stderr
    no_traceback(out)
    moved = cli(home, "init", "--force")
    assert moved.returncode == 0 and (home / "swarm.key.old").exists()


def test_the_old_shared_token_command_points_to_invite(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    out = cli(home, "token")
    assert out.returncode != 0 and "pythagoras-node invite" in out.stderr
    no_traceback(out)


def test_invite_needs_an_admin_and_its_running_node(tmp_path):
    home = tmp_path / "home"
    none = cli(home, "invite")
    assert none.returncode != 0 and "pythagoras-node init" in none.stderr
    assert cli(home, "init").returncode == 0
    idle = cli(home, "invite")
    assert idle.returncode != 0 and "pythagoras-node start" in idle.stderr
    bad = cli(home, "invite", "--expires", "soon")
    assert bad.returncode != 0 and "duration" in bad.stderr
    huge = cli(home, "invite", "--expires", "999999999999999999d")  # past what a clock can show
    assert huge.returncode != 0 and "365d" in huge.stderr
    for out in (none, idle, bad, huge):
        no_traceback(out)


@pytest.fixture
def admin_node(tmp_path):
    """An initialized home whose node serves on loopback."""
    home = tmp_path / "admin"
    assert cli(home, "init", "--name", "team", "--hostname", "admin-host").returncode == 0
    port = free_port()
    proc = spawn_node(home, port, workers=1, log_path=tmp_path / "admin.log")
    wait_for(lambda: (home / "node.json").exists(), timeout=60, message="the admin node to serve")
    yield home
    proc.terminate()
    proc.wait(30)


def test_invite_join_makes_a_member_and_the_token_works_once(tmp_path, admin_node):
    from pythagoras_p2p.trust import Members, NodeKeys

    out = cli(admin_node, "invite", "--expires", "10m")
    assert out.returncode == 0, out.stderr
    token = join_line(out.stdout)
    assert NodeKeys.load(admin_node).curve_secret.decode() not in token
    joined = cli(tmp_path / "b", "join", token, "--hostname", "bee", "--owner", "bo")
    assert joined.returncode == 0, joined.stderr
    assert "joined swarm 'team'" in joined.stdout and "bee" in joined.stdout
    keys = NodeKeys.load(tmp_path / "b")
    assert stat.S_IMODE(NodeKeys.path(tmp_path / "b").stat().st_mode) == 0o600
    members = Members.load(tmp_path / "b")
    assert members.is_admitted(keys.key_id) and members.by_key_id(keys.key_id).owner == "bo"
    assert not members.by_key_id(keys.key_id).is_admin
    wait_for(lambda: Members.load(admin_node).is_admitted(keys.key_id), timeout=10,
             message="the admin's home to keep the new list")
    used = cli(tmp_path / "c", "join", token, "--timeout", "20")
    assert used.returncode != 0 and "already used" in used.stderr
    assert "pythagoras-node invite" in used.stderr
    no_traceback(used)
    client = cli(tmp_path / "laptop", "join", join_line(cli(admin_node, "invite").stdout),
                 "--client", "--hostname", "lap")
    assert client.returncode == 0, client.stderr
    lap = Members.load(tmp_path / "laptop").by_key_id(NodeKeys.load(tmp_path / "laptop").key_id)
    assert lap.roles == ("client",) and lap.node_id == ""  # a client certificate
    listed = json.loads(cli(admin_node, "members", "--json").stdout)
    assert {m["hostname"] for m in listed["members"]} == {"admin-host", "bee", "lap"}


def test_join_refuses_forged_and_expired_tokens_naming_invite(tmp_path, admin_node):
    import base64

    token = join_line(cli(admin_node, "invite").stdout)
    body, _, signature = token.partition(".")
    data = json.loads(base64.urlsafe_b64decode(body[6:] + "=" * (-len(body[6:]) % 4)))
    data["admin"] = True  # promote oneself: the admin's signature no longer matches
    forged = "pyth3-" + base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    out = cli(tmp_path / "f", "join", forged + "." + signature)
    assert out.returncode != 0 and "forged" in out.stderr and "pythagoras-node invite" in out.stderr
    short = join_line(cli(admin_node, "invite", "--expires", "1").stdout)
    body = short.partition(".")[0][6:]
    expires = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["expires"]
    wait_for(lambda: time.time() > expires, timeout=10, message="the invitation to expire")
    expired = cli(tmp_path / "e", "join", short)
    assert expired.returncode != 0 and "expired" in expired.stderr
    assert "pythagoras-node invite" in expired.stderr
    for result in (out, expired):
        no_traceback(result)


@pytest.mark.parametrize("token", ["garbage", "pyth3-!!!not-base64!!!", "pyth3-aGVsbG8.c2ln"])
def test_join_with_a_bad_token_fails_clearly(tmp_path, token):
    home = tmp_path / "home"
    out = cli(home, "join", token)
    assert out.returncode != 0
    assert "token" in out.stderr.lower() and out.stderr.startswith("Error:"), out.stderr
    assert "pythagoras-node invite" in out.stderr
    no_traceback(out)
    assert not (home / "trust" / "members.json").exists()


# --------------------------------------------------------------------------- start failures


def test_start_without_a_key_says_how_to_get_one(tmp_path):
    home = tmp_path / "home"
    out = cli(home, "start", "--bind", "127.0.0.1", "--port", str(free_port()), "--no-mdns",
              timeout=30)
    assert out.returncode != 0
    assert "pythagoras-node init" in out.stderr and "join" in out.stderr, out.stderr
    no_traceback(out)
    assert not (home / "node.json").exists()


@pytest.mark.parametrize("detach", [False, True])
def test_start_on_a_port_in_use_fails_clearly(tmp_path, detach):
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli(home, "start", *(["--detach"] if detach else []), "--bind", "127.0.0.1",
                  "--port", str(port), "--no-mdns", "--workers", "1", timeout=60)
    assert out.returncode != 0
    assert str(port) in out.stderr and "--port" in out.stderr, out.stderr
    no_traceback(out)
    assert not (home / "node.json").exists()


@pytest.mark.parametrize("detach", [False, True])
def test_a_second_node_for_one_home_is_refused(start_node, detach):
    node = start_node()
    log = node.home / "node.log"
    before = log.read_bytes() if log.exists() else b""
    for _ in range(2):
        out = cli(node.home, "start", *(["--detach"] if detach else []), "--bind", "127.0.0.1",
                  "--port", str(free_port()), "--no-mdns", timeout=30)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr  # one line: no log of the running node, no repeats
        assert "already runs" in lines[0] and str(node.pid) in lines[0], out.stderr
        no_traceback(out)
    assert node.serves()
    if detach:  # nothing was written into the running node's log
        assert (log.read_bytes() if log.exists() else b"") == before


# --------------------------------------------------------------------------- no node running


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("stop",), ("peers",)])
def test_commands_that_need_a_node_say_none_runs(tmp_path, args):
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    out = cli(home, *args)
    assert out.returncode == 1
    assert "no node is running" in out.stderr, out.stderr
    assert out.stdout == ""
    no_traceback(out)


def test_status_ignores_the_node_file_of_a_dead_node(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    (home / "node.json").write_text(json.dumps({"pid": dead.pid, "port": 1, "id": "x",
                                                "endpoint": "tcp://127.0.0.1:1"}))
    out = cli(home, "status", "--json")
    assert out.returncode == 1 and "no node is running" in out.stderr, out.stderr


@pytest.mark.parametrize("args, says", [
    (("start", "--peer", "a:b", "--detach"), "--peer/PYTHAGORAS_PEERS 'a:b' is not host[:port]"),
    (("status", "--watch", "--interval", "-1"), "--interval"),
    (("stop", "--timeout", "-1"), "--timeout"),
    (("start", "--grace", "-5"), "--grace"),
])
def test_malformed_numbers_and_peers_are_named(tmp_path, args, says):
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    out = cli(home, *args)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    no_traceback(out)
    assert not (home / "node.json").exists()


def test_stop_leaves_alone_a_process_that_reuses_a_dead_nodes_pid(tmp_path):
    """A node killed with -9 leaves its node.json; its pid may now be another program's."""
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    other = subprocess.Popen(["sleep", "60"])
    try:
        (home / "node.json").write_text(json.dumps({
            "pid": other.pid, "port": 1, "id": "x", "endpoint": "tcp://127.0.0.1:1",
            "pid_started": 1.0}))  # the node's pid, started long before this program
        out = cli(home, "stop")
        assert out.returncode == 1 and "no node is running" in out.stderr, out.stderr
        assert other.poll() is None  # not killed
        (home / "node.json").write_text(json.dumps({"pid": other.pid}))  # damaged: no endpoint
        out = cli(home, "status")
        assert out.returncode == 1 and "no node is running" in out.stderr, out.stderr
        no_traceback(out)
    finally:
        other.kill()
        other.wait()


# --------------------------------------------------------------------------- a running node


def test_status_peers_and_stop_of_a_running_node(start_node):
    node = start_node()
    dashboard = cli(node.home, "status")
    assert dashboard.returncode == 0, dashboard.stderr
    node_id = json.loads((node.home / "node.json").read_text())["id"]
    assert node_id in dashboard.stdout
    peers = cli(node.home, "peers")
    assert peers.returncode == 0 and "(this node)" in peers.stdout and node_id in peers.stdout

    out = cli(node.home, "stop")
    assert out.returncode == 0, out.stderr
    assert "stopped" in out.stdout
    assert node.proc.wait(30) == 0, node.log()
    assert not (node.home / "node.json").exists()
    again = cli(node.home, "stop")
    assert again.returncode == 1 and "no node is running" in again.stderr


def test_start_detach_returns_once_serving_and_stop_stops_it(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    port = free_port()
    pid = None
    try:
        out = cli(home, "start", "--detach", "--bind", "127.0.0.1", "--port", str(port),
                  "--no-mdns", "--workers", "1", timeout=60)
        assert out.returncode == 0, out.stderr
        info = json.loads((home / "node.json").read_text())  # there as soon as start returns
        pid = info["pid"]
        assert pid_alive(pid) and info["port"] == port
        assert str(pid) in out.stdout
        status = cli(home, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["node"]["address"] == f"127.0.0.1:{port}"
        stop = cli(home, "stop")
        assert stop.returncode == 0, stop.stderr
        assert not pid_alive(pid)
        assert not (home / "node.json").exists()
        assert "serving" in (home / "node.log").read_text()
    finally:
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_node_started_in_the_foreground_stops_on_sigint(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    proc = spawn_node(home, free_port(), workers=1, log_path=tmp_path / "node.log")
    try:
        wait_for(lambda: (home / "node.json").exists() or proc.poll() is not None, timeout=30,
                 message="the node to serve")
        assert proc.poll() is None, (tmp_path / "node.log").read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not (home / "node.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_status_and_stop_of_a_node_that_does_not_answer(start_node):
    node = start_node()
    os.kill(node.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        out = cli(node.home, "status", "--json")
        assert time.monotonic() - started < 20
        assert out.returncode == 1 and "no answer" in out.stderr, out.stderr
        assert out.stdout == ""
        no_traceback(out)
        stop = cli(node.home, "stop", "--timeout", "1")
        assert stop.returncode == 1
        assert "did not stop" in stop.stderr and f"kill -9 {node.pid}" in stop.stderr, stop.stderr
        no_traceback(stop)
    finally:
        os.kill(node.pid, signal.SIGCONT)
    assert node.proc.wait(30) == 0  # the SIGTERM that `stop` sent is handled once it runs again
    assert not (node.home / "node.json").exists()


# --------------------------------------------------------------------------- cache


def _store_with_results(home):
    from pythagoras_p2p import LocalCloud

    cloud = LocalCloud(home=home, workers=1)

    def twice(*, x):
        return x * 2

    f = cloud.add_pure_function(twice)
    values = [f(x=i) for i in range(3)]
    big = f(x=np.ones(100_000))  # 800 kB: kept as a file of its own
    cloud.close()
    return values, big


def test_cache_stats_verify_and_gc(tmp_path):
    home = tmp_path / "home"
    _store_with_results(home)
    stats = cli(home, "cache", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["results"] == 4 and data["functions"] >= 0 and data["blob_files"] >= 1
    table = cli(home, "cache", "stats")
    assert table.returncode == 0 and "results" in table.stdout

    ok = cli(home, "cache", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "0 problem(s)" in ok.stdout

    dry = cli(home, "cache", "gc", "--dry-run")
    assert dry.returncode == 0 and "would remove" in dry.stdout, dry.stderr
    gc = cli(home, "cache", "gc")
    assert gc.returncode == 0 and "removed" in gc.stdout, gc.stderr
    assert json.loads(cli(home, "cache", "stats", "--json").stdout)["results"] == 4
    everything = cli(home, "cache", "gc", "--max-size", "1")
    assert everything.returncode == 0, everything.stderr
    assert json.loads(cli(home, "cache", "stats", "--json").stdout)["results"] < 4

    bad = cli(home, "cache", "gc", "--max-size", "lots")
    assert bad.returncode == 2 and "--max-size" in bad.stderr
    no_traceback(bad)


def test_cache_gc_keeps_what_may_be_the_swarms_last_copies_unless_forced(tmp_path):
    home = tmp_path / "home"
    _store_with_results(home)
    assert cli(home, "init").returncode == 0  # a member of a swarm, whose node is not running
    kept = cli(home, "cache", "gc", "--max-size", "1")
    assert kept.returncode == 0, kept.stderr
    assert "last copies" in kept.stderr and "--force" in kept.stderr
    assert json.loads(cli(home, "cache", "stats", "--json").stdout)["results"] == 4
    forced = cli(home, "cache", "gc", "--max-size", "1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(cli(home, "cache", "stats", "--json").stdout)["results"] < 4


def test_cache_verify_finds_and_repairs_a_damaged_value(tmp_path):
    home = tmp_path / "home"
    _store_with_results(home)
    blobs = [p for p in (home / "blobs").rglob("*") if p.is_file()]
    assert blobs
    target = max(blobs, key=lambda p: p.stat().st_size)
    os.chmod(target, 0o644)
    with open(target, "r+b") as f:
        f.seek(target.stat().st_size // 2)
        f.write(b"\x13\x37" * 64)
    found = cli(home, "cache", "verify")
    assert found.returncode == 1
    assert "problem:" in found.stderr and "--repair" in found.stderr
    repaired = cli(home, "cache", "verify", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert cli(home, "cache", "verify").returncode == 0


def test_cache_commands_without_a_store_say_so(tmp_path):
    home = tmp_path / "home"
    for args in (("cache", "stats"), ("cache", "verify"), ("cache", "gc")):
        out = cli(home, *args)
        assert out.returncode == 1 and "no store" in out.stderr, (args, out.stderr)
        no_traceback(out)


# --------------------------------------------------------------------------- systemd


def test_the_systemd_unit_verifies():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = REPO / "systemd" / "pythagoras-node.service"
    out = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and ("Failed to connect" in out.stderr or "No such file" in out.stderr
                                and "pythagoras-node.service" not in out.stderr):
        pytest.skip(f"systemd-analyze cannot run here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr
    assert "pythagoras-node.service:" not in out.stderr, out.stderr  # no warning about the unit
    text = unit.read_text()
    assert "Type=simple" in text and "pythagoras-node start" in text


def test_version_and_help_work_without_a_home(tmp_path):
    home = tmp_path / "nowhere"
    version = cli(home, "--version")
    assert version.returncode == 0 and "pythagoras-node" in version.stdout
    helptext = cli(home, "--help")
    assert helptext.returncode == 0
    for command in ("init", "join", "start", "stop", "status", "peers", "cache"):
        assert command in helptext.stdout
    assert not home.exists()


def test_pause_for_longer_than_the_clock_counts_fails_clearly_and_writes_nothing(tmp_path):
    home = tmp_path / "home"
    out = cli(home, "pause", "--for", "999999999999999d")
    assert out.returncode != 0 and "shorter" in out.stderr and "--for" in out.stderr
    no_traceback(out)
    assert not (home / "paused.json").exists()
