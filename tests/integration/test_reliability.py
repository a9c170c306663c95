"""Reliability on loopback: a node killed while it writes results, readers killed in
hundreds, tampered values, peers of another version, 100,000 calls, SIGTERM beside a second node.

Every node is a real ``pythagoras-node start --bind 127.0.0.1 --no-mdns`` of its own home on a
free port (node_harness.py). Each test asserts the exact outcome of its row of the reliability table
(``SCENARIOS`` in benchmarks/reliability_report.py)
and hands its measured figures to ``report_figures`` (written to a JSON list when
``PYTHAGORAS_RELIABILITY_REPORT`` is set; ``benchmarks/reliability_report.py`` renders them).

``PYTHAGORAS_RELIABILITY_CALLS`` sets the number of trivial calls of the memory test (default
20,000, which keeps this module near a minute on 2 cores; the report script runs 100,000).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from helpers import report_figures
from node_harness import (
    Call,
    ask,
    cli,
    copy_key,
    dealer,
    marker_function,
    node_env,
    pid_alive,
    wait_for,
)

from pythagoras_p2p import PCloud, PythagorasError, kw_args
from pythagoras_p2p.function import PureFunction
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.net import wire
from pythagoras_p2p.store.core import MISSING, open_store
from pythagoras_p2p.store.journal import _decode_segment
from pythagoras_p2p.store.packing import pack

# --------------------------------------------------------------------------- helpers


def _stream_value():
    # Defined inside a function so that it travels by value (this module is not on the node).
    def stream_value(*, x):
        if x % 16 == 5:  # large: a file in the node's blobs/, written by the worker itself
            return (x, b"%d;" % x * (300_000 // len(b"%d;" % x)))
        return {"x": x, "square": x * x, "text": "r" * (x % 40)}

    return stream_value


stream_value = _stream_value()


def _tagged():
    def tagged(*, x, pause, marks):
        """[x*x, home of the node] after ``pause``; one mark file per started attempt."""
        import json
        import os
        import time
        import uuid

        home = os.environ["PYTHAGORAS_HOME"]
        path = os.path.join(marks, f"{x}.{uuid.uuid4().hex}")
        with open(path + ".tmp", "w") as f:
            json.dump({"x": x, "home": home, "t": time.time()}, f)
        os.rename(path + ".tmp", path)
        time.sleep(pause)
        return [x * x, home]

    return tagged


def read_marks(folder: Path) -> list[dict]:
    marks = [json.loads((folder / n).read_text()) for n in os.listdir(folder)
             if not n.endswith(".tmp")]
    return sorted(marks, key=lambda m: m["t"])


def worker_pids(node) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(node.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def peak_rss_kib(pid: int) -> int:
    """The peak resident set of a live process (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def client_process(code: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a client program (``python -c``) of ``home``; its last stdout line is JSON."""
    return subprocess.run([sys.executable, "-c", code, *args], env=node_env(home),
                          capture_output=True, text=True, timeout=120, cwd=home.parent)


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"the client failed ({proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- kill -9 while writing

# Each round kills the node at a random moment of a stream of small and large writes; 20 rounds
# hit both sides of a journal append (applied to LMDB or only in the journal) many times over. A
# longer soak: PYTHAGORAS_TEST_KILLS=200.
KILLS = int(os.environ.get("PYTHAGORAS_TEST_KILLS", "20"))


class Stream:
    """A client thread calling ``stream_value`` on one node, new calls only, until stopped.

    ``acked`` holds every x whose result sync_remote/sync_parallel returned (checked right)."""

    def __init__(self, cloud, counter, acked: list, wrong: list):
        self.f = cloud.add_pure_function(stream_value)
        self.counter, self.acked, self.wrong = counter, acked, wrong
        self.count = 0  # acknowledged in this round
        self.stop = threading.Event()
        self.ended_by: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def take(self, xs: list, values: list) -> None:
        for x, value in zip(xs, values, strict=True):
            if value != stream_value(x=x):
                self.wrong.append(x)
        self.acked.extend(xs)
        self.count += len(xs)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                x = next(self.counter)
                self.take([x], [self.f.sync_remote(x=x)])
                xs = [next(self.counter) for _ in range(12)]
                self.take(xs, self.f.sync_parallel(kw_args(x=x) for x in xs))
        except (PythagorasError, RuntimeError) as exc:  # the node died, or the cloud was closed
            self.ended_by = exc


def test_a_node_killed_while_it_writes_results_keeps_every_acknowledged_one(
        start_node, make_client, tmp_path):
    rng = random.Random(66)
    counter = itertools.count()
    acked: list[int] = []
    wrong: list[int] = []
    addresses: dict[int, bytes] = {}  # x → call address, computed once
    workers_seen: set[int] = set()
    journal_only = rounds_with_journal = checked_rounds = 0
    started = time.monotonic()
    stream_value_fn = PureFunction(stream_value, None)  # for call addresses

    def check_node_store(node, new: list[int]) -> None:
        """Every acknowledged result is in the node's store (its journal replayed at start)."""
        store = open_store(node.home)
        for x in new:
            addresses[x] = stream_value_fn.address(x=x)
        calls = [addresses[x] for x in acked]
        present = store.env.read(lambda txn: [store.env.log.has(txn, c) for c in calls])
        lost = [x for x, ok in zip(acked, present, strict=True) if not ok]
        assert not lost, f"acknowledged results lost after a kill: {lost[:20]} ({len(lost)})"
        found = store.get_results([addresses[x] for x in new])
        bad = [x for x in new if found.get(addresses[x], MISSING) != stream_value(x=x)]
        assert not bad, f"acknowledged results that do not decode right: {bad[:20]}"

    checked_up_to = 0
    for round_ in range(KILLS + 1):
        node = start_node("node")  # the same home every time: its journal is replayed at start
        home = node.home
        check_node_store(node, acked[checked_up_to:])
        checked_up_to = len(acked)
        checked_rounds += 1
        if round_ == KILLS:
            break
        stream = Stream(make_client(node), counter, acked, wrong)
        try:
            # A single call and a batch acknowledged (13 results, a large one most rounds)
            # before the kill, however loaded the machine: then the kill lands at a random
            # moment of the writes that follow.
            wait_for(lambda s=stream: s.count >= 13 or not s.thread.is_alive(), timeout=60,
                     message="the round's first acknowledged batch")
            assert stream.count >= 13, f"round {round_}: {stream.ended_by!r}\n{node.log()}"
            time.sleep(rng.uniform(0.02, 0.2))
            workers_seen |= worker_pids(node)
            node.proc.send_signal(signal.SIGKILL)
            assert node.proc.wait(10) == -signal.SIGKILL
        finally:
            stream.stop.set()
            stream.f.cloud.close()
            stream.thread.join(30)
        assert not stream.thread.is_alive(), "the client never returned after the kill"
        # What the dead node left only in its journal: acknowledged, not yet in LMDB.
        store = open_store(home)
        pending = [r for seg in sorted((home / "journal").glob("*.log"))
                   for r in _decode_segment(seg.read_bytes())[0]]
        only = store.env.read(lambda txn, p=pending, log=store.env.log:
                              sum(not log.has(txn, r[0]) for r in p))
        journal_only += only
        rounds_with_journal += only > 0

    assert not wrong, f"results returned with a wrong value: {wrong[:20]}"
    large = sum(1 for x in acked if x % 16 == 5)
    assert len(acked) >= 5 * KILLS and large >= KILLS // 4, (len(acked), large)
    # Every result stored, acknowledged or not, decodes to its address; the store closes clean.
    node.terminate()
    assert node.exit_code == 0, node.log()
    verified = cli(home, "cache", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    leftovers = [pid for pid in workers_seen if pid_alive(pid)]
    assert not leftovers, f"workers of killed nodes still run: {leftovers}"
    torn = node.log().count("ends with a torn record")
    elapsed = time.monotonic() - started
    print(f"\nkill -9 x{KILLS}: {len(acked)} acknowledged results ({large} large) all present; "
          f"{journal_only} were only in the journal at a kill ({rounds_with_journal} rounds); "
          f"{elapsed:.1f} s")
    report_figures("node kill -9 while writing results", kills_survived=KILLS,
                   acknowledged_results_checked=len(acked), large_results_checked=large,
                   results_only_in_the_journal_at_a_kill=journal_only,
                   kills_with_unapplied_journal_records=rounds_with_journal,
                   torn_journal_tails_dropped=torn, worker_processes_killed=len(workers_seen),
                   store_opened_clean=checked_rounds, cache_verify=verified.stdout.strip(),
                   seconds=round(elapsed, 1))


# --------------------------------------------------------------------------- dead readers

HOLD_READERS = r'''
import os, signal, sys
from pythagoras_p2p.store.core import open_store

home, count, per_process = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
children = []
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        held = []
        problem = b""
        try:
            store = open_store(home)  # a client's store: its open clears slots of the dead
            for _ in range(per_process):  # read transactions held until the process is killed
                txn = store.env._env.begin()
                txn.get(b"anything", db=store.env.index)
                held.append(txn)
        except Exception as exc:
            problem = repr(exc).encode()
        os.write(1, b"ready %d %d %s\n" % (os.getpid(), len(held), problem))
        while True:
            signal.pause()
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
'''


@contextmanager
def readers_held(home: Path, count: int, per_process: int = 1):
    """``count`` processes holding read transactions of ``home``'s store; yields (pid,
    transactions held, problem) of each, and SIGKILLs them all on leaving."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_READERS, str(home), str(count),
                             str(per_process)], stdout=subprocess.PIPE, cwd=home.parent)
    held: list[tuple] = []
    try:
        while len(held) < count:
            line = proc.stdout.readline()
            assert line.startswith(b"ready "), f"a reader holder failed: {line!r}"
            _, pid, n, *problem = line.decode().split(" ", 3)
            held.append((int(pid), int(n), " ".join(problem).strip()))
        yield held
    finally:
        for pid, _, _ in held:
            os.kill(pid, signal.SIGKILL)
        if len(held) < count:
            proc.kill()
        proc.wait(60)
        proc.stdout.close()


def reader_pids(home: Path) -> set[int]:
    store = open_store(home)
    return {int(f.split()[0]) for f in store.env._env.readers().splitlines()[1:]
            if f.split() and f.split()[0].isdigit()}


NEW_CLIENT = r'''
import json, sys
from pythagoras_p2p import PCloud

cloud = PCloud(home=sys.argv[1])  # this home's node answers: a SwarmCloud through it

def plus_one(*, x):
    return x + 1

f = cloud.add_pure_function(plus_one)
remote = f.sync_remote(x=41)
local = cloud.store.get_result(f.address(x=41))
readers = cloud.store.env._env.readers()
slots = cloud.store.env._env.info()["max_readers"]
print(json.dumps({"cloud": type(cloud).__name__, "remote": remote, "readers": readers,
                  "slots": slots}))
cloud.close()
'''


def test_hundreds_of_killed_readers_neither_fill_the_table_nor_stop_the_node(
        start_node, make_client, tmp_path):
    node = start_node("node")
    client = make_client(node)
    f = client.add_pure_function(_stream_value())
    assert f.sync_remote(x=1) == stream_value(x=1)
    slots = open_store(node.home).env._env.info()["max_readers"]
    started = time.monotonic()
    rounds, per_round = 7, 200  # more dead readers than the table has slots
    killed = 0
    for round_ in range(rounds):
        with readers_held(node.home, per_round) as held:
            refused = [h for h in held if h[1] != 1 or h[2]]
            assert not refused, f"round {round_}: readers refused: {refused[:5]}"
            assert {pid for pid, _, _ in held} <= reader_pids(node.home)
        killed += len(held)
        # the node serves throughout: a new call (its worker reads the function and writes)
        assert f.sync_remote(x=100 + round_) == stream_value(x=100 + round_)
    assert killed > slots

    # Then the whole table: 200 processes take up to 8 read transactions each, more than the
    # free slots, so the last ones are refused while the others live; then all are killed.
    # Nobody talks to the node meanwhile (a request that makes it read would free the slots).
    client.close()
    with readers_held(node.home, per_round, per_process=8) as held:
        refused = [h for h in held if h[2]]
        assert refused and all("READERS_FULL" in h[2] for h in refused), refused[:3]
        holding = {pid for pid, n, _ in held if n}
        taken = sum(n for _, n, _ in held)
        assert holding <= reader_pids(node.home)
    killed += len(held)
    died = time.monotonic()
    # The node frees the slots of the dead (no new process could open the store to do it).
    wait_for(lambda: not reader_pids(node.home) & holding, timeout=10, interval=0.05,
             message="the dead readers' slots to be freed")
    cleared_after = time.monotonic() - died

    assert node.serves() and node.status()["workers_total"] == 2
    f = make_client(node, "client2").add_pure_function(_stream_value())
    assert f.sync_remote(x=999) == stream_value(x=999)  # the node keeps serving a member
    out = last_json(client_process(NEW_CLIENT, node.home, str(node.home)))
    assert out["cloud"] == "SwarmCloud" and out["remote"] == 42  # a new client of that home
    listed = {int(f.split()[0]) for f in out["readers"].splitlines()[1:]
              if f.split() and f.split()[0].isdigit()}
    assert not listed & holding, "slots of dead readers were not freed"
    assert node.status()["tasks_done"] == rounds + 3
    # Nothing the node served was refused a reader; only a background repair round that began
    # while live processes held every slot may have been put off (it runs again later).
    refusals = [line for line in node.log().splitlines() if "READERS_FULL" in line]
    assert all("repair round postponed" in line for line in refusals), node.log()
    elapsed = time.monotonic() - started
    print(f"\ndead readers: {killed} processes killed holding read transactions ({slots} slots); "
          f"the table was full ({taken} held by processes then killed, {len(refused)} refused) "
          f"and was freed {cleared_after:.2f} s after they died")
    report_figures("client processes killed holding read transactions",
                   reader_processes_killed=killed, reader_slots=slots,
                   slots_held_by_the_dead_when_full=taken, seconds_until_freed=round(cleared_after, 2),
                   node_calls_served_meanwhile=rounds + 2, new_client_on_the_home="works",
                   seconds=round(elapsed, 1))


# --------------------------------------------------------------------------- tampered values


def _put_all(sock, address: bytes, data: bytes, request_id: int):
    """Upload ``data`` as the value at ``address`` in CHUNK pieces; the reply to the last."""
    total = len(data)
    offsets = list(range(0, total, wire.CHUNK))
    for i, offset in enumerate(offsets):
        last = i == len(offsets) - 1
        sock.send_multipart(wire.build("put", request_id if last else 0,
                                       [data[offset: offset + wire.CHUNK]], address=address,
                                       offset=offset, total=total))
    assert sock.poll(30_000), "the node did not answer the upload"
    return wire.parse(sock.recv_multipart())


def test_a_tampered_value_is_rejected_never_stored_never_used(zctx, node, tmp_path):
    good = {"weights": list(range(1000)), "name": "good"}
    address = value_address(good)
    big = b"0123456789abcdef" * (6 * 1024 * 1024 // 16)  # 6 MiB: two chunks
    big_address = value_address(big)
    flipped = bytearray(pack(big))
    flipped[5 * 1024 * 1024] ^= 0x01  # one bit of the second chunk
    tampered = {
        "the pack of another value": (address, pack({"weights": [], "name": "evil"})),
        "bytes that do not decode": (address, os.urandom(4096)),
        "one bit flipped in a 6 MiB value": (big_address, bytes(flipped)),
        "the right bytes under another address": (big_address, pack(good)),
    }
    member = dealer(zctx, node, key=node.key)
    call = Call(tmp_path / "marker.txt")
    call.store(member)
    store = open_store(node.home)
    for i, (name, (target, data)) in enumerate(tampered.items()):
        reply = _put_all(member, target, data, 100 + i)
        assert reply.op == "error" and reply.id == 100 + i, (name, reply)
        assert reply.fields["code"] == "tampered", (name, reply.fields)
        assert target.hex()[:16] in reply.fields["message"], (name, reply.fields)
        assert not store.has_value(target), name
        assert list((node.home / "incoming").iterdir()) == [], name
        assert not (node.home / "blobs" / target.hex()[:2] / target.hex()).exists(), name
        has = ask(member, wire.build("has", 200 + i, addresses=[target]))
        assert has.fields["addresses"] == [], name
        used = ask(member, call.run(300 + i, refs=[target.hex()]))
        assert used.op == "error" and used.fields["code"] == "need_values", (name, used)
        assert target.hex() in used.fields["message"]
    assert not call.ran()
    assert node.status()["tasks_done"] == 0 and node.status()["values_received"] == 0

    # The control: the right bytes are accepted, and then the same run does run.
    for target, value in ((address, good), (big_address, big)):
        reply = _put_all(member, target, pack(value), 400)
        assert reply.op == "ok", reply
        assert store.has_value(target) and store.get_value(target) == value
    reply = ask(member, call.run(401, refs=[address.hex(), big_address.hex()]))
    assert reply.op == "result" and reply.fields["status"] == "ok", reply
    assert call.ran()
    member.close(0)
    report_figures("tampered blob", tampered_uploads_tried=len(tampered),
                   rejected_as_tampered=len(tampered), stored=0, runs_that_used_them=0)


# --------------------------------------------------------------------------- other versions

OTHER_VERSION_CLIENT = r'''
import json, sys, time
from pythagoras_p2p.net import wire
setattr(wire, sys.argv[3], type(getattr(wire, sys.argv[3]))(sys.argv[4]))  # another release
from pythagoras_p2p import PCloud

cloud = PCloud(connection=sys.argv[1], home=sys.argv[2])

def write_marker(*, path):
    with open(path, "a") as fh:
        fh.write("ran\n")
    return 1

f = cloud.add_pure_function(write_marker)
out = {}
for how in ("sync_remote", "sync_parallel"):
    t = time.monotonic()
    try:
        if how == "sync_remote":
            f.sync_remote(path=sys.argv[5])
        else:
            f.sync_parallel([{"path": sys.argv[5] + str(i)} for i in range(4)])
        out[how] = ["returned", "", time.monotonic() - t]
    except Exception as exc:
        out[how] = [type(exc).__name__, str(exc), time.monotonic() - t]
cloud.close()
print(json.dumps(out))
'''


def test_a_peer_of_another_python_or_protocol_gets_a_clear_error_and_no_work(
        zctx, node, tmp_path):
    v = wire.PROTOCOL_VERSION
    member = dealer(zctx, node, key=node.key)
    tried = 0
    for python in ("2.7", "3.99"):
        reply = ask(member, wire.build("hello", 1, protocol=v, python=python))
        tried += 1
        assert reply.op == "error" and reply.fields["code"] == "python", reply
        assert python in reply.fields["message"], reply.fields
        assert wire.PYTHON_VERSION in reply.fields["message"], reply.fields
    call = Call(tmp_path / "marker.txt")
    call.store(member)
    for frames in ([json.dumps({"v": 999, "op": "hello", "id": 2, "protocol": 999,
                                "python": wire.PYTHON_VERSION}).encode()],
                   [json.dumps({**json.loads(call.run(3)[0]), "v": 999}).encode(), call.payload]):
        reply = ask(member, frames)
        tried += 1
        assert reply.op == "error" and reply.fields["code"] == "protocol", reply
        assert "999" in reply.fields["message"] and str(v) in reply.fields["message"], reply
    member.close(0)
    assert not call.ran()

    figures = {}
    for setting, value in (("PYTHON_VERSION", "3.99"), ("PROTOCOL_VERSION", "99")):
        home = tmp_path / f"client-{setting}"
        copy_key(node.home, home)
        marker = tmp_path / f"marker-{setting}"
        out = last_json(client_process(OTHER_VERSION_CLIENT, home, node.connection, str(home),
                                       setting, value, str(marker)))
        tried += 1
        for how, (kind, message, seconds) in out.items():
            assert kind != "returned", (setting, how, out)
            assert value in message, (setting, how, message)  # names both versions
            mine = wire.PYTHON_VERSION if setting == "PYTHON_VERSION" else str(v)
            assert mine in message, (setting, how, message)
            assert seconds < 3, (setting, how, seconds)  # refused at the hello, not after waiting
            who = f"client {'Python' if setting == 'PYTHON_VERSION' else 'protocol'} {value}"
            figures[f"{who}, {how}: ms to the error"] = round(seconds * 1000, 1)
            figures[f"{who}: the error"] = f"{kind}: {message}"
        assert not list(tmp_path.glob(f"marker-{setting}*"))
    assert node.status()["tasks_done"] == 0
    assert node.serves()
    report_figures("peer of another protocol or Python version", refusals_tried=tried,
                   tasks_run=0, **figures)


# --------------------------------------------------------------------------- 100,000 calls

MANY_CALLS = int(os.environ.get("PYTHAGORAS_RELIABILITY_CALLS", "20000"))
CLIENT_RSS_LIMIT_MIB = 400  # measured: 57 MiB for 20,000 calls, 163 MiB for 100,000
NODE_RSS_LIMIT_MIB = 300  # node + its workers; measured: 96 MiB for 20,000, 141 MiB for 100,000
NODE_HEAP_LIMIT_MIB = 100  # the node's anonymous memory; measured: 18 MiB for either

MANY_CLIENT = r'''
import json, sys, time
from pythagoras_p2p import PCloud, kw_args

cloud = PCloud(connection=sys.argv[1], home=sys.argv[2])

def plus(*, x):
    return x * 3 + 1

f = cloud.add_pure_function(plus)
n = int(sys.argv[3])
t = time.monotonic()
results = f.sync_parallel(kw_args(x=i) for i in range(n))
seconds = time.monotonic() - t
wrong = sum(1 for i, r in enumerate(results) if r != i * 3 + 1)
cloud.close()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kib = {k: int(status[k].split()[0]) for k in ("VmHWM", "RssAnon", "RssFile")}
print(json.dumps({"count": len(results), "wrong": wrong, "seconds": seconds, **kib}))
'''


def memory_kib(pid: int) -> dict:
    """VmHWM (peak resident), RssAnon (heap now) and RssFile (mapped files now) of ``pid``."""
    with open(f"/proc/{pid}/status") as fh:
        status = dict(line.split(":", 1) for line in fh)
    return {k: int(status[k].split()[0]) for k in ("VmHWM", "RssAnon", "RssFile")}


def test_many_trivial_calls_return_every_result_in_bounded_memory(node, tmp_path):
    home = tmp_path / "many"
    copy_key(node.home, home)
    assert len(worker_pids(node)) == 2
    anon_peak = {"node": 0, "workers": 0}
    stop = threading.Event()

    def sample() -> None:  # anonymous memory (heap) of the node and of its workers, now
        while not stop.wait(0.2):
            try:
                anon_peak["node"] = max(anon_peak["node"], memory_kib(node.pid)["RssAnon"])
                workers = sum(memory_kib(pid)["RssAnon"] for pid in worker_pids(node))
            except (FileNotFoundError, ProcessLookupError):
                continue
            anon_peak["workers"] = max(anon_peak["workers"], workers)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = last_json(client_process(MANY_CLIENT, home, node.connection, str(home),
                                       str(MANY_CALLS)))
        node_peak = peak_rss_kib(node.pid)
        worker_peak = sum(peak_rss_kib(pid) for pid in worker_pids(node))
    finally:
        stop.set()
        sampler.join(5)
    assert out["count"] == MANY_CALLS and out["wrong"] == 0
    assert node.status()["tasks_done"] == MANY_CALLS
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    client_mib, node_mib = mib(out["VmHWM"]), mib(node_peak + worker_peak)
    print(f"\n{MANY_CALLS} calls in {out['seconds']:.1f} s; peak RSS: client {client_mib} MiB "
          f"(heap {mib(out['RssAnon'])} MiB at the end), node {mib(node_peak)} MiB + workers "
          f"{mib(worker_peak)} MiB (heap at most {mib(anon_peak['node'])} + "
          f"{mib(anon_peak['workers'])} MiB)")
    report_figures("trivial calls through one node", calls=MANY_CALLS,
                   all_results_correct=True, seconds=round(out["seconds"], 1),
                   calls_per_second=round(MANY_CALLS / out["seconds"]),
                   client_peak_rss_mib=client_mib,
                   client_heap_mib_at_the_end=mib(out["RssAnon"]),
                   client_mapped_files_mib_at_the_end=mib(out["RssFile"]),
                   node_peak_rss_mib=mib(node_peak), workers_peak_rss_mib=mib(worker_peak),
                   node_peak_heap_mib=mib(anon_peak["node"]),
                   workers_peak_heap_mib=mib(anon_peak["workers"]),
                   bounds_mib=f"client {CLIENT_RSS_LIMIT_MIB}, node + workers {NODE_RSS_LIMIT_MIB}")
    assert client_mib < CLIENT_RSS_LIMIT_MIB, f"client peak RSS {client_mib} MiB"
    assert node_mib < NODE_RSS_LIMIT_MIB, f"node + workers peak RSS {node_mib} MiB"
    # What grows with the calls is the node's mapping of its store (page cache), not its heap.
    assert mib(anon_peak["node"]) < NODE_HEAP_LIMIT_MIB, f"node heap {mib(anon_peak['node'])} MiB"


# --------------------------------------------------------------------------- SIGTERM beside a peer


@pytest.mark.parametrize("grace", ["finish", "move"])
def test_sigterm_to_a_node_during_work_finishes_or_moves_its_calls(grace, start_node, tmp_path):
    """``finish``: the node's grace (30 s) outlasts its calls: they finish there and run nowhere
    else. ``move``: a grace of 0.2 s is shorter than its calls: those it abandons run again on the
    other node. Either way every result arrives once, right, in order."""
    finish = grace == "finish"
    victim = start_node("a", extra=() if finish else ("--grace", "0.2"))
    other = start_node("b", key_from=victim.home)
    home = tmp_path / "client"
    copy_key(victim.home, home)
    marks = tmp_path / "marks"
    marks.mkdir()
    calls = 24 if finish else 12

    def pause(x: int) -> float:  # uneven, so that a node's running calls end one by one
        return (0.3 if finish else 1.0) + 0.15 * (x % 4)

    cloud = PCloud(connection=f"{victim.connection},{other.connection}", home=home)
    box: list = []
    try:
        f = cloud.add_pure_function(_tagged())

        def run() -> None:
            t = time.monotonic()
            try:
                box.append(f.sync_parallel(kw_args(x=i, pause=pause(i), marks=str(marks))
                                           for i in range(calls)))
            except BaseException as exc:  # reported below
                box.append(exc)
            box.append(time.monotonic() - t)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        on_victim = lambda: [m for m in read_marks(marks) if m["home"] == str(victim.home)]  # noqa: E731
        wait_for(lambda: len(on_victim()) >= 3, timeout=30, message="three calls on the victim")
        terminated = time.time()
        victim.proc.send_signal(signal.SIGTERM)
        exit_code = victim.proc.wait(30)
        exited = time.time() - terminated
        thread.join(60)
        assert not thread.is_alive(), "sync_parallel never returned"
    finally:
        cloud.close()
    results, seconds = box
    assert not isinstance(results, BaseException), repr(results)
    assert [r[0] for r in results] == [i * i for i in range(calls)]  # every result, right, in order
    assert {r[1] for r in results} <= {str(victim.home), str(other.home)}
    assert exit_code == 0, victim.log()
    assert not (victim.home / "node.json").exists()  # it deregistered
    found = read_marks(marks)
    running = {m["x"] for m in found if m["home"] == str(victim.home)
               and terminated - pause(m["x"]) < m["t"] <= terminated}  # still running
    assert running, "nothing was running on the victim when it got SIGTERM"
    late = [m for m in found if m["home"] == str(victim.home) and m["t"] > terminated + 0.25]
    assert not late, f"the stopping node started calls after SIGTERM: {late}"
    finished_there = {x for x in running if results[x][1] == str(victim.home)}
    moved = running - finished_there
    executions = {x: sum(1 for m in found if m["x"] == x) for x in range(calls)}
    # A call runs twice only if the stopping node abandoned it; the results it finished are used.
    assert executions == {x: 2 if x in moved else 1 for x in range(calls)}, executions
    if finish:
        assert not moved, moved
    else:
        assert moved, "no call outlasted the 0.2 s grace"
    rerouted = [min(m["t"] for m in found if m["x"] == x and m["home"] == str(other.home))
                - terminated for x in moved]
    assert max(rerouted, default=0) < 5.0, rerouted
    stored = open_store(victim.home).get_results(
        [f.address(x=x, pause=pause(x), marks=str(marks)) for x in running])
    assert len(stored) == len(finished_there)  # what it finished is in its store, nothing else
    print(f"\nSIGTERM ({grace}): {len(finished_there)} running call(s) finished on the stopping "
          f"node, {len(moved)} moved ({[round(r, 2) for r in rerouted]} s after the signal); it "
          f"exited {exited:.2f} s after the signal; the run took {seconds:.2f} s")
    report_figures("SIGTERM to a node during work (a second node present)",
                   mode=f"grace {'30 s (calls finish)' if finish else '0.2 s (calls move)'}",
                   calls=calls, call_seconds=f"{pause(0):.2f} to {pause(3):.2f}",
                   running_at_sigterm=len(running), finished_on_stopping_node=len(finished_there),
                   moved_to_other_node=len(moved),
                   seconds_to_reroute=round(max(rerouted), 2) if rerouted else None,
                   node_exit_seconds_after_sigterm=round(exited, 2), node_exit_code=exit_code,
                   executions=sum(executions.values()), results_lost=0, results_duplicated=0,
                   run_seconds=round(seconds, 2))


def test_a_frozen_peer_neither_delays_nor_voids_a_hit_found_on_another(start_node, tmp_path):
    """A memo lookup answers as soon as every call is found, and at its timeout with what it has:
    a peer frozen with SIGSTOP (not yet silent long enough to be dropped) changes neither."""
    holder = start_node("holder")
    frozen = start_node("frozen", key_from=holder.home)
    home = tmp_path / "client"
    copy_key(holder.home, home)
    marks = tmp_path / "marks"
    write_marker = PureFunction(marker_function(), None)
    cloud = PCloud(connection=f"{holder.connection},{frozen.connection}", home=home)
    try:
        f = cloud.add_pure_function(write_marker)
        wait_for(lambda: len(cloud.ready_peers()) == 2, message="both peers ready")
        pid = f.sync_remote(path=str(marks))  # computed on one of them
        ran_on = psutil.Process(pid).ppid()  # the worker's node
        assert ran_on in (holder.pid, frozen.pid)
        other = frozen if ran_on == holder.pid else holder
        other.proc.send_signal(signal.SIGSTOP)
        try:
            copy_key(holder.home, tmp_path / "c2")
            fresh = PCloud(connection=f"{holder.connection},{frozen.connection}", home=tmp_path / "c2")
            try:
                g = fresh.add_pure_function(write_marker)
                t = time.monotonic()
                assert g(path=str(marks)) == pid  # found on the peer that holds it, not recomputed
                took = time.monotonic() - t
            finally:
                fresh.close()
        finally:
            other.proc.send_signal(signal.SIGCONT)
    finally:
        cloud.close()
    assert len(open(marks).read().splitlines()) == 1
    assert took < 1.5, f"the lookup waited {took:.2f} s for the frozen peer"
    report_figures("frozen peer during a memo lookup", hit_found_s=round(took, 3))


def test_a_straggler_at_the_tail_runs_again_on_an_idle_peer_and_the_first_result_wins(
        start_node, tmp_path):
    """One node is slow for one call (3 s there, 0.05 s elsewhere): once nothing else is left,
    that call is copied to the idle node, whose result arrives first and is stored once."""
    slow = start_node("slow", workers=1)
    fast = start_node("fast", workers=1, key_from=slow.home)
    home = tmp_path / "client"
    copy_key(slow.home, home)
    marks = tmp_path / "marks"
    marks.mkdir()

    def uneven(*, x, slow_home, marks):
        import json
        import os
        import time

        here = os.environ["PYTHAGORAS_HOME"]
        with open(os.path.join(marks, f"{x}-{os.getpid()}"), "w") as fh:
            json.dump({"x": x, "home": here}, fh)
        time.sleep(3.0 if here == slow_home and x == 0 else 0.05)
        return [x, here]

    cloud = PCloud(connection=f"{slow.connection},{fast.connection}", home=home)
    try:
        f = cloud.add_pure_function(uneven)
        wait_for(lambda: len(cloud.ready_peers()) == 2, message="both peers ready")
        calls = [kw_args(x=x, slow_home=str(slow.home), marks=str(marks)) for x in range(12)]
        t = time.monotonic()
        results = f.sync_parallel(calls)  # call 0 goes first to the first peer named: the slow one
        took = time.monotonic() - t
    finally:
        cloud.close()
    stored = open_store(home).get_results([f.address(**c) for c in calls])
    assert [r[0] for r in results] == list(range(12))
    assert len(stored) == 12 and all(stored[f.address(**c)] == results[i] for i, c in enumerate(calls))
    runs = [json.loads(p.read_text()) for p in marks.iterdir()]
    zero = [r["home"] for r in runs if r["x"] == 0]
    if zero == [str(fast.home)]:
        pytest.skip("the fast node took call 0 first: nothing straggled")
    assert sorted(zero) == sorted([str(slow.home), str(fast.home)]), zero  # it ran twice
    assert results[0][1] == str(fast.home)  # the copy's result won
    assert took < 2.5, f"the batch waited {took:.2f} s for the straggler"
    report_figures("straggler copied to an idle peer", batch_s=round(took, 2))
