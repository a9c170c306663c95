"""Faults in the middle of ``sync_parallel`` over a swarm: a host killed, frozen or cut off, a call
that kills its worker or raises, a dead node that mDNS still advertises. Each asserts the exact
outcome of its row of the reliability table; the measured times are printed (``pytest -s``) for the reliability
notes.

Calls leave a mark per started attempt (see ``clients.py``), so a test knows which host ran or
re-ran what, and when: a call rerouted after a fault is one that started on the faulty host
before the fault and again on another host after it.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from clients import Client, read_marks, whole_swarm_known
from helpers import report_figures, wait_for
from netns import start_lan

CALLS, PAUSE, SLOTS = 24, 0.5, 6  # 24 calls of 0.5 s on 3 hosts × 2 workers: 2 s undisturbed


def _run_in_background(lan, marks, *, then: str = "") -> Client:
    """A client on host 0 running where(x=0..23) over the swarm, then ``then``."""
    return Client(lan.hosts[0], f"""
        t = time.monotonic()
        results = where.sync_parallel(kw_args(x=i, pause={PAUSE}, marks={str(marks)!r})
                                      for i in range({CALLS}))
        emit(results=results, seconds=time.monotonic() - t)
    """ + then)


def _started_on(marks, host, count: int) -> bool:
    return sum(m["home"] == str(host.home) for m in read_marks(marks)) >= count


def _restarted(marks, victim, fault: float) -> bool:
    """Has a call that started on ``victim`` before ``fault`` started again elsewhere since?"""
    found = read_marks(marks)
    before = {m["x"] for m in found if m["home"] == str(victim.home) and m["t"] < fault}
    return any(m["x"] in before and m["home"] != str(victim.home) and m["t"] > fault for m in found)


def _check_results(results: list, homes: set[str]) -> None:
    assert [r[0] for r in results] == [i * i for i in range(len(results))]  # correct, in order
    assert {r[1] for r in results} <= homes


def _reroutes(marks, results, victim, fault: float) -> dict[int, float]:
    """Calls that were running on ``victim`` at ``fault`` and whose result came from elsewhere:
    seconds from the fault until each started again on another host."""
    out = {}
    for x, (_, home) in enumerate(results):
        tries = [m for m in read_marks(marks) if m["x"] == x]
        if home != str(victim.home) and any(m["home"] == str(victim.home) and m["t"] < fault
                                            for m in tries):
            again = [m["t"] for m in tries if m["home"] != str(victim.home) and m["t"] > fault]
            assert again, f"call {x} was lost with {victim.ns}"
            out[x] = round(min(again) - fault, 2)
    return out


def _restarts(marks, victim, fault: float) -> dict[int, float]:
    """Calls that were running on ``victim`` at ``fault``: seconds from the fault until each
    started on another host (whichever copy's result was used)."""
    found = read_marks(marks)
    out = {}
    for x in {m["x"] for m in found if m["home"] == str(victim.home) and m["t"] < fault}:
        again = [m["t"] for m in found if m["x"] == x and m["home"] != str(victim.home) and m["t"] > fault]
        if again:
            out[x] = round(min(again) - fault, 2)
    return out


def _verify_stores(lan) -> None:
    for host in lan.hosts:
        done = host.cli("cache", "verify")
        assert done.returncode == 0, (host.ns, done.stdout, done.stderr)


def _results_stored(host) -> int:
    done = host.cli("cache", "stats", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["results"]


def test_a_host_killed_mid_run_has_its_calls_rerouted(lan_factory, tmp_path):
    lan = lan_factory(3)
    whole_swarm_known(lan)
    marks = tmp_path / "marks"
    marks.mkdir()
    client = _run_in_background(lan, marks)
    victim = lan.hosts[1]
    wait_for(lambda: _started_on(marks, victim, 3), 30, message="the victim to start a third call")
    killed = victim.kill_node()
    out = client.result()
    _check_results(out["results"], {str(lan.hosts[0].home), str(lan.hosts[2].home)} | {str(victim.home)})
    rerouted = _reroutes(marks, out["results"], victim, killed)
    print(f"\nkill -9: rerouted {rerouted} s after the kill; run took {out['seconds']:.2f} s")
    assert rerouted, "nothing was running on the killed host"
    assert "the connection was closed" in client.stderr()  # noticed at once, not after silence
    assert max(rerouted.values()) <= 5.0
    assert out["seconds"] < CALLS * PAUSE / SLOTS + 5.0 + 1.5
    assert _results_stored(lan.hosts[0]) == CALLS
    report_figures("host kill -9 mid-sync_parallel", calls=CALLS, hosts=3,
                   calls_rerouted=len(rerouted), seconds_to_reroute=max(rerouted.values()),
                   run_seconds=round(out["seconds"], 2), results_correct_in_order=CALLS)


def test_a_frozen_host_has_its_calls_reassigned_and_its_late_results_change_nothing(lan_factory, tmp_path):
    lan = lan_factory(3)
    whole_swarm_known(lan)
    marks = tmp_path / "marks"
    marks.mkdir()
    go = tmp_path / "go"
    client = _run_in_background(lan, marks, then=f"""
        wait_file({str(go)!r})
        again = where.sync_parallel(kw_args(x=i, pause={PAUSE}, marks={str(marks)!r})
                                    for i in range({CALLS}))
        emit(results=results, again=again)
    """)
    victim = lan.hosts[1]
    wait_for(lambda: _started_on(marks, victim, 3), 30, message="the victim to start a third call")
    frozen = victim.signal_tree(signal.SIGSTOP)
    try:
        # resume it as soon as its calls started elsewhere, while the run still goes on
        wait_for(lambda: _restarted(marks, victim, frozen), 15, interval=0.05,
                 message="the frozen host's calls to start elsewhere")
    finally:
        victim.signal_tree(signal.SIGCONT)
    first = client.wait_emit("seconds")
    _check_results(first["results"], {str(h.home) for h in lan.hosts})
    # Which copy wins is a race once the host resumes (a straggler's copy, or the host's own
    # late result): what counts is that its calls started elsewhere in time, and ran once each.
    rerouted = _restarts(marks, victim, frozen)
    print(f"\nSIGSTOP: reassigned {rerouted} s after the freeze; run took {first['seconds']:.2f} s")
    assert rerouted, "nothing was running on the frozen host"
    assert max(rerouted.values()) <= 10.0
    # The resumed host finishes what it was running; the results stay as first returned.
    wait_for(lambda: victim.status()["node"]["workers_busy"] == 0, 15, interval=0.1,
             message="the resumed host to finish its calls")
    started = len(read_marks(marks))
    go.touch()
    out = client.result()
    assert out["again"] == out["results"] == first["results"]  # answered from the store
    assert len(read_marks(marks)) == started  # nothing ran again
    assert _results_stored(lan.hosts[0]) == CALLS
    _verify_stores(lan)
    report_figures("host frozen with SIGSTOP", calls=CALLS, hosts=3,
                   calls_reassigned=len(rerouted), seconds_to_reassign=max(rerouted.values()),
                   run_seconds=round(first["seconds"], 2), late_results_duplicated=0,
                   stores_verified=len(lan.hosts))


def test_a_host_frozen_longer_than_clients_wait_drops_the_calls_they_placed_elsewhere(
        lan_factory, tmp_path):
    lan = lan_factory(3)
    whole_swarm_known(lan)
    marks = tmp_path / "marks"
    marks.mkdir()
    client = _run_in_background(lan, marks)
    victim = lan.hosts[1]
    wait_for(lambda: _started_on(marks, victim, 3), 30, message="the victim to start a third call")
    frozen = victim.signal_tree(signal.SIGSTOP)
    try:
        out = client.result()  # the client gave the host up and ran everything elsewhere
        # frozen past the 5 s after which clients give a node up (the scenario, not a wait)
        wait_for(lambda: time.time() - frozen > 6.0, 10, interval=0.1, message="6 s frozen")
    finally:
        resumed = victim.signal_tree(signal.SIGCONT)
    _check_results(out["results"], {str(h.home) for h in lan.hosts})
    # What it was running when frozen is dropped as it wakes, not run to the end.
    wait_for(lambda: victim.status()["node"]["calls_forsaken"] >= 1, 15, interval=0.1,
             message="the resumed host to drop the calls placed elsewhere")
    assert victim.status()["node"]["workers_busy"] == 0
    assert not [m for m in read_marks(marks) if m["home"] == str(victim.home) and m["t"] > resumed]


def test_a_graceful_stop_during_a_batch_fails_no_call(lan_factory, tmp_path):
    lan = lan_factory(3)
    whole_swarm_known(lan)
    marks = tmp_path / "marks"
    marks.mkdir()
    client = Client(lan.hosts[0], f"""
        @cloud.add_pure_function
        def big(*, x, marks):
            import os, time, uuid
            import numpy as np
            with open(os.path.join(marks, f"{{x}}.{{uuid.uuid4().hex}}"), "w") as f:
                f.write(os.environ["PYTHAGORAS_HOME"])
            time.sleep(0.2)
            return np.full(100_000, x, dtype=np.float64)  # 800 kB: fetched in chunks
        out = big.sync_parallel(kw_args(x=i, marks={str(marks)!r}) for i in range(30))
        emit(ok=all(float(a[0]) == i and len(a) == 100_000 for i, a in enumerate(out)))
    """)
    victim = lan.hosts[1]
    wait_for(lambda: any(p.read_text() == str(victim.home) for p in marks.iterdir()), 30,
             interval=0.02, message="the victim to take a call")
    stopped = victim.cli("stop", "--timeout", "60", timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    assert client.result()["ok"] is True  # every call answered, none failed


def test_a_host_cut_off_has_its_calls_reassigned_and_rejoins(lan_factory, tmp_path):
    lan = lan_factory(3)
    whole_swarm_known(lan)
    marks = tmp_path / "marks"
    marks.mkdir()
    go = tmp_path / "go"
    client = _run_in_background(lan, marks, then=f"""
        wait_file({str(go)!r})
        t = time.monotonic()
        later = where.sync_parallel(kw_args(x=i, pause=0.3) for i in range(100, 112))
        emit(results=results, later=later, seconds=time.monotonic() - t)
    """)
    victim = lan.hosts[1]
    wait_for(lambda: _started_on(marks, victim, 3), 30, message="the victim to start a third call")
    victim.link(False)
    cut = time.time()
    try:
        first = client.wait_emit("results", timeout=60)
    finally:
        victim.link(True)
    restored = time.monotonic()
    _check_results(first["results"], {str(h.home) for h in lan.hosts})
    rerouted = _reroutes(marks, first["results"], victim, cut)
    assert rerouted, "nothing was running on the host cut off"
    assert max(rerouted.values()) <= 10.0
    victim_id = victim.node_info()["id"]
    wait_for(lambda: victim_id in {p["id"] for p in lan.hosts[0].status()["peers"]}, 15,
             interval=0.1, message="the host to rejoin")
    rejoined = time.monotonic() - restored
    print(f"\nlink cut: reassigned {rerouted} s after the cut; rejoined {rejoined:.1f} s after "
          f"the link came back")
    assert rejoined < 10.0
    go.touch()
    out = client.result()
    assert [r[0] for r in out["later"]] == [i * i for i in range(100, 112)]
    assert str(victim.home) in {r[1] for r in out["later"]}  # it gets work again
    _verify_stores(lan)
    report_figures("host link cut and restored", calls=CALLS, hosts=3,
                   calls_reassigned=len(rerouted), seconds_to_reassign=max(rerouted.values()),
                   seconds_to_rejoin=round(rejoined, 1), gets_work_again=True,
                   stores_verified=len(lan.hosts))


# ---------------------------------------------------------------------- one LAN for the rest


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    lan = start_lan(tmp_path_factory.mktemp("faults") / "lan", 3)
    try:
        whole_swarm_known(lan)
        yield lan
    finally:
        lan.close()


def test_a_call_that_kills_its_worker_fails_alone_naming_the_call(lan, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    client = Client(lan.hosts[0], f"""
        @cloud.add_pure_function
        def fragile(*, x, marks):
            import json, os, time, uuid
            with open(os.path.join(marks, uuid.uuid4().hex), "w") as f:
                json.dump({{"x": x, "home": os.environ["PYTHAGORAS_HOME"], "t": time.time()}}, f)
            time.sleep(0.2)
            if x == 5:
                os._exit(1)
            return x

        def show(values):
            return [[type(v).__name__, str(v)] if isinstance(v, BaseException) else v for v in values]

        calls = [kw_args(x=i, marks={str(marks)!r}) for i in range(12)]
        first = show(fragile.sync_parallel(calls, return_exceptions=True))
        again = show(fragile.sync_parallel(calls, return_exceptions=True))
        emit(first=first, again=again)
    """, env={"PYTHAGORAS_STRAGGLER_AT_LEAST": "120"})  # x=5's retries make it a straggler:
    # a speculative copy on an idle peer would add attempts of its own (counted apart)
    out = client.result()
    for results in (out["first"], out["again"]):
        assert [r for i, r in enumerate(results) if i != 5] == [i for i in range(12) if i != 5]
        kind, message = results[5]
        assert kind == "WorkerCrashedError"
        assert "fragile(" in message and "x=5" in message and "3 attempts" in message, message
    tries = [m for m in read_marks(marks) if m["x"] == 5]
    assert len(tries) == 6  # three attempts per run: the crash was not cached
    assert len({m["home"] for m in tries[:3]}) == 1  # the node retried it; the client did not
    assert sorted(m["x"] for m in read_marks(marks) if m["x"] != 5) == [i for i in range(12) if i != 5]
    for host in lan.hosts:  # every node survived with its workers
        assert host.status()["node"]["workers_total"] == 2
    report_figures("worker killed by the call", kind="os._exit(1)", calls=12,
                   attempts_per_failing_call=3, error="WorkerCrashedError naming the call",
                   nodes_survived=len(lan.hosts))


def test_a_function_that_raises_raises_once_in_the_caller_and_is_not_cached(lan, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    client = Client(lan.hosts[0], f"""
        @cloud.add_pure_function
        def picky(*, x, marks):
            import json, os, time, uuid
            with open(os.path.join(marks, uuid.uuid4().hex), "w") as f:
                json.dump({{"x": x, "home": os.environ["PYTHAGORAS_HOME"], "t": time.time()}}, f)
            time.sleep(0.1)
            if x == 7:
                raise LookupError(f"x={{x}} is unlucky")
            return x

        calls = [kw_args(x=i, marks={str(marks)!r}) for i in range(12)]
        caught = []
        for attempt in range(2):
            try:
                picky.sync_parallel(calls)
            except LookupError as exc:
                caught.append([type(exc).__name__, str(exc), type(exc.__cause__).__name__,
                               str(exc.__cause__), getattr(exc, "__notes__", [])])
        emit(caught=caught, rest=picky.sync_parallel(calls[:7] + calls[8:]))
    """)
    out = client.result()
    assert len(out["caught"]) == 2
    for kind, message, cause, text, notes in out["caught"]:
        assert (kind, message) == ("LookupError", "x=7 is unlucky")
        assert cause == "RemoteTraceback"
        assert "LookupError: x=7 is unlucky" in text and "in picky" in text
        assert any("picky(" in note for note in notes), notes
    assert out["rest"] == [i for i in range(12) if i != 7]
    tries = [m["x"] for m in read_marks(marks)]
    assert tries.count(7) == 2  # once per run: not retried, not cached
    assert sorted(x for x in tries if x != 7) == [i for i in range(12) if i != 7]  # others cached
    report_figures("the function raises", runs=2, raised_in_caller=len(out["caught"]),
                   executions_of_the_raising_call=tries.count(7), cached=False)


def test_a_vanished_node_that_mdns_still_advertises_gets_no_work(lan, tmp_path):
    # A client on a machine whose home has no node running finds the swarm on mDNS alone; it
    # starts before the kill, so its browser keeps listing the dead node (as zeroconf does).
    roaming = tmp_path / "roaming"
    lan.admit(roaming)
    marks = tmp_path / "marks"
    marks.mkdir()
    go = tmp_path / "go"
    victim = lan.hosts[2]
    body = f"""
        OFFSET = 100 if "mdns" in sys.argv[1:] else 0
        def known():
            return {{p.host: p.state for p in list(cloud._dispatcher.peers.values())}}
        if OFFSET:
            deadline = time.monotonic() + 20
            while list(known().values()) != ["ready"] * 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            emit(before=known())
            wait_file({str(go)!r})
        t = time.monotonic()
        results = where.sync_parallel(kw_args(x=i + OFFSET, pause=0.3, marks={str(marks)!r})
                                      for i in range(12))
        emit(results=results, seconds=time.monotonic() - t, known=known())
    """
    mdns = Client(lan.hosts[1], body, cloud="sys.argv.append('mdns')\ncloud = SwarmCloud()",
                  env={"PYTHAGORAS_HOME": str(roaming)})
    assert len(mdns.wait_emit("before", timeout=30)["before"]) == 3
    victim_id = victim.node_info()["id"]
    killed = victim.kill_node()
    wait_for(lambda: victim_id not in {p["id"] for p in lan.hosts[0].status()["peers"]}, 10,
             interval=0.1, message="the first node to drop the dead one")
    wait_for(lambda: time.time() - killed >= 6.0, 10, message="six seconds since the kill")
    go.touch()
    out_mdns = mdns.result()
    out = Client(lan.hosts[1], body).result()  # a new client, through its node
    print(f"\nvanished node: a client through its node took {out['seconds']:.2f} s, one on mDNS "
          f"{out_mdns['seconds']:.2f} s (12 calls of 0.3 s on 2 hosts x 2 workers: 0.9 s)")
    assert victim.ip in out_mdns["known"], out_mdns["known"]  # mDNS still lists it
    live = {str(lan.hosts[0].home), str(lan.hosts[1].home)}
    for result, offset in ((out, 0), (out_mdns, 100)):
        assert [r[0] for r in result["results"]] == [(i + offset) ** 2 for i in range(12)]
        assert {r[1] for r in result["results"]} == live
        assert result["seconds"] < 12 * 0.3 / 4 + 1.0
    assert all(m["home"] != str(victim.home) for m in read_marks(marks))
    report_figures("vanished node still advertised by mDNS", seconds_after_kill=6,
                   calls_sent_to_it=0, run_seconds_through_node=round(out["seconds"], 2),
                   run_seconds_mdns_only=round(out_mdns["seconds"], 2))
