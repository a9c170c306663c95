"""The parts of a node that yield to its owner, one by one: the fair share, the watcher, the
policy's states, the manual pause, the options, the stragglers that may be copied."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest
from click.testing import CliRunner
from pythagoras_p2p.daemon.owner import policy as policy_module
from pythagoras_p2p.daemon.owner.fairshare import FairShare
from pythagoras_p2p.daemon.owner.manual import parse_duration, pause, read_pause, resume
from pythagoras_p2p.daemon.owner.policy import OwnerConfig, Policy
from pythagoras_p2p.daemon.owner.watcher import OwnerWatch


def _order(fair: FairShare, n: int) -> list[bytes]:
    return [fair.pop()[0] for _ in range(n)]


def test_callers_take_turns_whatever_their_queues():
    fair = FairShare()
    for i in range(50):
        fair.push(b"a", b"a%d" % i, None)
    for i in range(3):
        fair.push(b"b", b"b%d" % i, None)
    assert _order(fair, 6) == [b"a", b"b", b"a", b"b", b"a", b"b"]
    assert fair.rows() == [{"caller": b"a".hex(), "running": 3, "queued": 47, "done": 0},
                           {"caller": b"b".hex(), "running": 3, "queued": 0, "done": 0}]


def test_turns_are_weighted_by_how_long_each_callers_calls_take():
    fair = FairShare()
    for i in range(40):
        fair.push(b"long", b"l%d" % i, None)
        fair.push(b"short", b"s%d" % i, None)
    for _ in range(3):
        fair.ended(b"long", 1.0)
        fair.ended(b"short", 0.2)
    fair._callers[b"long"].mean, fair._callers[b"short"].mean = 1.0, 0.2
    order = _order(fair, 24)
    assert 3 <= order.count(b"long") <= 5  # five short calls for each long one


def test_a_cancelled_queued_call_leaves_the_queue_and_take_all_empties_it():
    fair = FairShare()
    fair.push(b"a", b"1", None)
    fair.push(b"a", b"2", None)
    fair.push(b"b", b"3", None)
    assert fair.remove(b"1") and not fair.remove(b"1")
    assert sorted(fair.take_all()) == [b"2", b"3"]
    assert fair.pop() is None and len(fair) == 0


def test_the_watcher_sees_the_named_owner_processes_load(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        pids.write_text(f"{burner.pid}\n")
        monkeypatch.setenv("PYTHAGORAS_TEST_OWNER_PIDS", str(pids))
        watch = OwnerWatch(lambda: [])
        burning = psutil.Process(burner.pid)
        watch.sample()  # the first look at the burner: its baseline
        used, at = sum(burning.cpu_times()[:2]), time.monotonic()

        def seen_right() -> bool:
            # What the burner used in the sample's window, measured here too: on a loaded
            # machine it gets less than a core, and the watcher must see what it got.
            nonlocal used, at
            time.sleep(0.3)
            last = (watch.sample(), watch.last)[1]
            now_used, now = sum(burning.cpu_times()[:2]), time.monotonic()
            got = (now_used - used) / (now - at)
            used, at = now_used, now
            return got > 0.05 and abs(last - got) < 0.1 + 0.25 * got

        assert any(seen_right() for _ in range(30)), (watch.last, watch.load)
    finally:
        burner.kill()
        burner.wait()


def test_the_watcher_leaves_the_nodes_own_processes_out(monkeypatch):
    busy = iter([100.0, 103.0])  # three seconds of processor time went by on the machine
    monkeypatch.setattr("pythagoras_p2p.daemon.owner.watcher._machine_busy", lambda: next(busy))
    monkeypatch.delenv("PYTHAGORAS_TEST_OWNER_PIDS", raising=False)
    watch = OwnerWatch(lambda: [])
    watch._own.delta = lambda pids: 2.9  # ... nearly all of it the node's and its workers'
    watch._at -= 1.0
    assert watch.sample() < 0.1


def test_the_policy_says_why_and_since_when(tmp_path, monkeypatch):
    battery = tmp_path / "battery"
    battery.write_text("mains")
    monkeypatch.setenv("PYTHAGORAS_TEST_BATTERY", str(battery))
    monkeypatch.setattr(policy_module, "_available_memory", lambda: 3 << 30)
    config = OwnerConfig(on_battery="pause", keep_free=2 << 30)
    policy = Policy(tmp_path, config, own_pids=lambda: [])
    assert not policy.paused and policy.room_for(0) is None
    assert "asks for 2.0 GB" in policy.room_for(2 << 30)
    battery.write_text("battery")
    assert policy.look() and policy.reason == "on battery"
    since = policy.since
    pause(tmp_path, 3600)
    assert not policy.look() and policy.reason.startswith("paused by its owner until")
    assert policy.since == since  # still paused: the same pause
    resume(tmp_path)
    battery.write_text("mains")
    monkeypatch.setattr(policy_module, "_available_memory", lambda: 1 << 30)
    assert not policy.look() and policy.reason.startswith("memory low (1.0 GB available")
    monkeypatch.setattr(policy_module, "_available_memory", lambda: 3 << 30)
    assert policy.look() and policy.reason is None
    assert policy.as_dict()["state"] == "taking calls"


def test_an_expired_pause_is_none(tmp_path):
    pause(tmp_path, 60)
    assert read_pause(tmp_path) is not None
    assert read_pause(tmp_path, now=time.time() + 61) is None
    (tmp_path / "paused.json").write_text("{not json")
    assert read_pause(tmp_path) is None


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                           ("1d", 86400), ("0.5h", 1800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "-1h", "0", "h"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_pause_and_resume_commands(tmp_path):
    from pythagoras_p2p.cli.main import cli

    runner = CliRunner()
    done = runner.invoke(cli, ["--home", str(tmp_path), "pause", "--for", "2h"])
    assert done.exit_code == 0 and "paused until" in done.output
    assert read_pause(tmp_path)["until"] == pytest.approx(time.time() + 7200, abs=5)
    done = runner.invoke(cli, ["--home", str(tmp_path), "pause", "--for", "soon"])
    assert done.exit_code == 2 and "90s, 30m, 2h or 1d" in done.output
    done = runner.invoke(cli, ["--home", str(tmp_path), "resume"])
    assert done.exit_code == 0 and "resumed" in done.output and read_pause(tmp_path) is None


def test_start_options_make_the_owner_config():
    from pythagoras_p2p.cli.owner import owner_argv, owner_config

    config = owner_config(priority="normal", yield_to_owner=True, owner_busy="150%",
                          preempt=True, on_battery="run", keep_free="512M", speculate=False)
    assert config == OwnerConfig(low_priority=False, yield_to_owner=True, owner_busy=1.5,
                                 preempt=True, on_battery="run", keep_free=512 << 20,
                                 speculate=False)
    assert "--preempt" in owner_argv(config) and "--no-speculate" in owner_argv(config)
    import click

    with pytest.raises(click.BadParameter, match="50%"):
        owner_config(priority="low", yield_to_owner=True, owner_busy="lots", preempt=False,
                     on_battery="run", keep_free="0", speculate=True)


def test_stragglers_asking_for_resources_are_never_copied_and_others_once():
    from pythagoras_p2p.swarm.stragglers import Stragglers

    class Batch:
        def wanted(self, task):
            return True

    stragglers = Stragglers()
    batch = Batch()
    plain = SimpleNamespace(tid=1, refs=(), needs=(), requires=())
    gpu = SimpleNamespace(tid=2, refs=(), needs=(("gpus", 1.0),), requires=())
    for _ in range(3):
        stragglers.observe(batch, 0.01)
    class Peer:
        def __init__(self, inflight):
            self.inflight, self.values = inflight, set()

        def can_ever_run(self, task):
            return True

        fits_now = can_ever_run

    slow, idle = Peer({7: (batch, gpu), 8: (batch, plain)}), Peer({})
    stragglers.placed_at = {7: time.monotonic() - 60, 8: time.monotonic() - 60}
    found = stragglers.candidate([slow, idle], [idle], lambda p: 1)
    assert found is not None and found[1] is plain
    stragglers.running_elsewhere(idle, batch, plain)  # the copy was refused there
    assert stragglers.candidate([slow, idle], [idle], lambda p: 1) is None


def test_the_dashboard_has_a_line_on_the_owners_settings():
    from pythagoras_p2p.cli.dashboard import _copies, _owner

    node = {"id": "n1", "paused": "owner busy (1.0 cores of other programs)",
            "owner": {**OwnerConfig(yield_to_owner=True, on_battery="pause",
                                    keep_free=2 << 30).as_dict()},
            "callers": [{"caller": "ab", "running": 1, "queued": 2, "done": 0}]}
    line = _owner(node)
    assert "yields above 0.5 cores" in line and "pauses on battery" in line
    assert "serving 1 caller(s)" in line and "paused: owner busy" in line
    assert "paused" in _copies({**node, "paused_since": time.time()})
