"""A node on someone's machine yields to its owner, and serves teammates in turn.

Two nodes on loopback share the module: ``laptop`` yields to its owner (``--yield-to-owner``,
``--preempt``, ``--on-battery pause``) and ``server`` is ``--dedicated``. The laptop's owner is
whatever the test names in ``PYTHAGORAS_TEST_OWNER_PIDS`` (a CPU burner), its battery what the
test writes in ``PYTHAGORAS_TEST_BATTERY``: the other processes of this machine (the tests, the
other node, the client) are not its owner. Each test leaves the laptop taking calls again.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest
from helpers import wait_for
from node_harness import RunningNode, cli, copy_key, free_port, make_key, spawn_node, wait_serving

from pythagoras_p2p import PCloud, SwarmCloud
from pythagoras_p2p.net.security import load_key

# ``where`` leaves marks that depend on when it runs, on purpose: no warning about it.
pytestmark = pytest.mark.filterwarnings("ignore::pythagoras_p2p.identity.impure.ImpureCallWarning")

_numbers = itertools.count(int(time.time() * 1000) % 10**9)


def where(*, x, pause, marks):
    """``[x*x, the home of the node it ran on]`` after ``pause``; each start leaves a mark."""
    import json
    import os
    import time
    import uuid

    with open(os.path.join(marks, f"{x}.{uuid.uuid4().hex}"), "w") as f:
        json.dump({"x": x, "home": os.environ["PYTHAGORAS_HOME"], "t": time.time()}, f)
    time.sleep(pause)
    return [x * x, os.environ["PYTHAGORAS_HOME"]]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    root = tmp_path_factory.mktemp("owner")
    owner_pids, battery = root / "owner.pids", root / "battery"
    owner_pids.write_text("")
    battery.write_text("mains")
    nodes = {}
    env = {"PYTHAGORAS_YIELD_TO_OWNER": "1", "PYTHAGORAS_TEST_OWNER_PIDS": str(owner_pids),
           "PYTHAGORAS_TEST_BATTERY": str(battery)}
    # The laptop's owner is only the burner a test names: 10% of a core is passed at once by a
    # busy loop, however loaded the machine (it got less than the default 50% under load).
    flags = {"laptop": ("--preempt", "--on-battery", "pause", "--keep-free", "0", "--priority", "low",
                        "--owner-busy", "10%"),
             "server": ("--dedicated", "--priority", "low")}
    try:
        for name in ("laptop", "server"):
            home = root / name
            if name == "laptop":
                make_key(home)
            else:
                copy_key(root / "laptop", home)
            port = free_port()
            extra = flags[name]
            if name == "server":  # it knows the laptop, and shows it in its status
                extra += ("--peer", nodes["laptop"].connection)
            proc = spawn_node(home, port, extra=extra, log_path=root / f"{name}.log",
                              env=env if name == "laptop" else None)
            nodes[name] = RunningNode(home, port, proc, root / f"{name}.log", load_key(home))
            wait_serving(nodes[name])
        client_home = root / "client"
        copy_key(root / "laptop", client_home, node=False)
        cloud = PCloud(connection=f"{nodes['laptop'].connection},{nodes['server'].connection}",
                       home=client_home)
        marks = root / "marks"
        marks.mkdir()
        yield {"cloud": cloud, "fn": cloud.add_pure_function(where), "marks": marks,
               "owner_pids": owner_pids, "battery": battery, "root": root, **nodes}
        cloud.close()
    finally:
        for node in nodes.values():
            node.terminate()


def _paused(node: RunningNode) -> str | None:
    return node.status()["paused"]


def _calls(swarm, count: int, pause: float) -> tuple[list[dict], list]:
    kw = [{"x": next(_numbers), "pause": pause, "marks": str(swarm["marks"])} for _ in range(count)]
    return kw, swarm["fn"].sync_parallel(kw)


def _marks(swarm, xs) -> list[dict]:
    found = []
    for name in os.listdir(swarm["marks"]):
        mark = json.loads((swarm["marks"] / name).read_text())
        if mark["x"] in xs:
            found.append(mark)
    return sorted(found, key=lambda m: m["t"])


def _check(kw: list[dict], results: list) -> list[str]:
    """Every result right; the homes they ran in."""
    assert [r[0] for r in results] == [k["x"] ** 2 for k in kw]
    return [r[1] for r in results]


def test_workers_run_at_low_priority_and_status_lists_the_settings(swarm):
    for name in ("laptop", "server"):
        workers = psutil.Process(swarm[name].pid).children()
        assert workers, name
        for worker in workers:
            assert worker.nice() >= 10, (name, worker.nice())
            assert worker.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE, name
    laptop, server = swarm["laptop"].status(), swarm["server"].status()
    assert laptop["owner"]["yield_to_owner"] and laptop["owner"]["preempt"]
    assert laptop["owner"]["state"] == "taking calls" and laptop["paused"] is None
    assert not server["owner"]["yield_to_owner"] and server["owner"]["on_battery"] == "pause"
    assert server["owner"]["keep_free"] == 2 << 30


def test_pause_and_resume_from_the_cli(swarm):
    laptop = swarm["laptop"]
    done = cli(laptop.home, "pause", "--for", "1h")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: _paused(laptop), 5, message="the laptop to pause")
    status = laptop.status()
    assert status["paused"].startswith("paused by its owner until")
    assert status["owner"]["state"] == "paused" and status["paused_since"] <= time.time() + 0.1
    # the other node shows it too (the heartbeat carries it)
    wait_for(lambda: any(p["paused"] for p in swarm["server"].request("status").fields["peers"]
                         if not p["self"]), 10, message="the server to see the laptop paused")
    seen = [p for p in swarm["server"].request("status").fields["peers"] if not p["self"]][0]
    assert {"callers", "speculative", "speculative_won", "paused_since"} <= set(seen)
    kw, results = _calls(swarm, 6, 0.05)
    assert set(_check(kw, results)) == {str(swarm["server"].home)}
    assert cli(laptop.home, "resume").returncode == 0
    wait_for(lambda: _paused(laptop) is None, 5, message="the laptop to resume")
    on_laptop = []
    for _ in range(10):  # the client learns it from its next ping
        kw, results = _calls(swarm, 8, 0.2)
        homes = _check(kw, results)
        on_laptop = [k for k, home in zip(kw, homes, strict=True) if home == str(laptop.home)]
        if on_laptop:
            break
    assert on_laptop
    # paused, it still answers lookups: the team's cache stays whole
    assert cli(laptop.home, "pause").returncode == 0
    wait_for(lambda: _paused(laptop), 5, message="the laptop to pause")
    address = swarm["fn"].address(**on_laptop[0]).hex()
    wait_for(lambda: laptop.request("lookup", calls=[address]).fields["found"], 10,
             message="the paused laptop to answer a lookup")
    assert cli(laptop.home, "resume").returncode == 0
    wait_for(lambda: _paused(laptop) is None, 5, message="the laptop to resume")


def test_the_owner_busy_pauses_the_node_within_5s_and_then_it_takes_calls_again(swarm):
    laptop = swarm["laptop"]
    kw = [{"x": next(_numbers), "pause": 0.25, "marks": str(swarm["marks"])} for _ in range(60)]
    out: dict = {}
    runner = threading.Thread(target=lambda: out.setdefault("r", swarm["fn"].sync_parallel(kw)))
    runner.start()
    wait_for(lambda: any(m["home"] == str(laptop.home) for m in _marks(swarm, {k["x"] for k in kw})),
             20, message="the laptop to run calls")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        swarm["owner_pids"].write_text(f"{burner.pid}\n")
        busy_at = time.time()
        wait_for(lambda: _paused(laptop), 10, interval=0.1, message="the laptop to yield")
        status = laptop.status()
        assert status["paused"].startswith("owner busy")
        assert status["paused_since"] - busy_at < 5.0
        runner.join(60)
        homes = _check(kw, out["r"])
        assert str(swarm["server"].home) in homes
        late = [m for m in _marks(swarm, {k["x"] for k in kw})
                if m["home"] == str(laptop.home) and m["t"] > busy_at + 5.0]
        assert not late, "the laptop started calls more than 5 s after its owner got busy"
    finally:
        burner.kill()
        burner.wait()
        swarm["owner_pids"].write_text("")
    wait_for(lambda: _paused(laptop) is None, 20, interval=0.2, message="the laptop to resume")


def test_preempt_hands_running_calls_back_and_they_finish_elsewhere(swarm):
    laptop = swarm["laptop"]
    kw = [{"x": next(_numbers), "pause": 2.0, "marks": str(swarm["marks"])} for _ in range(4)]
    xs = {k["x"] for k in kw}
    before = laptop.status()["tasks_done"]
    out: dict = {}
    runner = threading.Thread(target=lambda: out.setdefault("r", swarm["fn"].sync_parallel(kw)))
    runner.start()
    try:
        wait_for(lambda: any(m["home"] == str(laptop.home) for m in _marks(swarm, xs)), 20,
                 message="the laptop to start calls")
        assert cli(laptop.home, "pause").returncode == 0
        runner.join(60)
        homes = _check(kw, out["r"])
        assert set(homes) == {str(swarm["server"].home)}  # every call finished on the server
        started_on_laptop = {m["x"] for m in _marks(swarm, xs) if m["home"] == str(laptop.home)}
        assert started_on_laptop
        status = laptop.status()
        assert status["tasks_done"] == before and status["handed_back"] >= len(started_on_laptop)
    finally:
        cli(laptop.home, "resume")
    wait_for(lambda: _paused(laptop) is None, 5, message="the laptop to resume")


def test_on_battery_the_node_pauses(swarm):
    laptop = swarm["laptop"]
    swarm["battery"].write_text("battery")
    try:
        wait_for(lambda: _paused(laptop) == "on battery", 5, message="the laptop to pause")
    finally:
        swarm["battery"].write_text("mains")
    wait_for(lambda: _paused(laptop) is None, 5, message="the laptop to resume on mains")


def test_calls_wait_while_every_node_is_paused_and_run_once_one_resumes(swarm, caplog):
    laptop, server = swarm["laptop"], swarm["server"]
    caplog.set_level(logging.INFO, logger="pythagoras_p2p.swarm.placement")
    for node in (laptop, server):
        assert cli(node.home, "pause").returncode == 0
    try:
        wait_for(lambda: _paused(laptop) and _paused(server), 5, message="both nodes to pause")
        kw = [{"x": next(_numbers), "pause": 0.0, "marks": str(swarm["marks"])} for _ in range(3)]
        out: dict = {}
        # A client of its own with a short connect_timeout (the default is 5 s), waited past.
        client = SwarmCloud(connection=f"{laptop.connection},{server.connection}",
                            home=swarm["root"] / "client", connect_timeout=2.0)
        fn = client.add_pure_function(where)
        runner = threading.Thread(target=lambda: out.setdefault("r", fn.sync_parallel(kw)))
        runner.start()
        runner.join(3.5)  # past the client's connect_timeout: paused is not unreachable
        assert runner.is_alive() and not _marks(swarm, {k["x"] for k in kw})
        # The wait is not silent: the caller is told once which nodes are paused, and why.
        told = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calls wait")]
        assert len(told) == 1, told
        assert all(f":{node.port}: " in told[0] for node in (laptop, server))
        assert told[0].count("paused by its owner") == 2, told
        assert cli(server.home, "resume").returncode == 0
        runner.join(30)
        client.close()
        assert set(_check(kw, out["r"])) == {str(server.home)}
        assert any("takes calls again" in r.getMessage() for r in caplog.records)
    finally:
        for node in (laptop, server):
            cli(node.home, "resume")
    wait_for(lambda: _paused(laptop) is None, 5, message="the laptop to resume")
