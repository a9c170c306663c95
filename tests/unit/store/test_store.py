"""The LMDB store: round trips, many writers, kill -9, a full store, a growing map, dead readers, fork."""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import run_python, wait_for

from pythagoras_p2p.defaults import INLINE_VALUE_LIMIT
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store import env as store_env
from pythagoras_p2p.store.core import MISSING, open_store
from pythagoras_p2p.store.packing import pack

# The same helpers run here and in the subprocesses that write to a store: call ``n`` has a known
# address and a known value, so a reader can check every entry a writer acknowledged.
HELPERS = r'''
import os
from blake3 import blake3

def call_for(n):
    return blake3(b"test-call-%d" % n).digest()

def value_for(n):
    if n % 7 == 3:  # large: kept in its own file under home/blobs
        return (n, b"%d." % n * (300_000 // len(b"%d." % n)))
    return {"n": n, "text": "v" * (n % 50), "items": list(range(n % 5))}

def record_for(n, store_pack, address):
    value = value_for(n)
    return (call_for(n), address(value), store_pack(value), {"n": n, "pid": os.getpid()})
'''

_helpers: dict = {}
exec(HELPERS, _helpers)
call_for = _helpers["call_for"]
value_for = _helpers["value_for"]


def record_for(n: int) -> tuple:
    return _helpers["record_for"](n, pack, value_address)


@pytest.fixture
def store(home):
    s = open_store(home)
    yield s
    s.close()


def reader_pids(store) -> set[int]:
    """Pids that hold a slot in the store's reader table."""
    pids = set()
    for line in store.env._env.readers().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0].isdigit():
            pids.add(int(fields[0]))
    return pids


def python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], **kwargs)


# --------------------------------------------------------------------------- round trips


def test_results_values_and_meta_round_trip(store):
    records = [record_for(n) for n in range(20)]
    store.put_results(records)
    for n in range(20):
        assert store.get_result(call_for(n)) == value_for(n)
        meta = store.get_meta(call_for(n))
        assert meta["n"] == n and meta["pid"] == os.getpid()
    unknown = call_for(10_000)
    found = store.get_results([call_for(1), unknown, call_for(2)])
    assert found == {call_for(1): value_for(1), call_for(2): value_for(2)}
    assert store.get_result(unknown) is MISSING
    assert store.get_meta(unknown) is None
    assert store.get_value(value_address("never stored")) is MISSING


def test_many_results_of_one_value_in_one_commit_and_in_order_lookups(store):
    shared = "the same value"
    records = [(call_for(n), value_address(shared), pack(shared), {"n": n}) for n in range(50)]
    store.put_results(records)
    store.put_results(records[:10])  # again: nothing changes
    calls = [call_for(n) for n in (49, 3, 10_000, 3)]
    assert store.results_of(calls) == [shared, shared, MISSING, shared]
    assert [store.get_meta(call_for(n))["n"] for n in range(50)] == list(range(50))
    assert store.usage().results == 50  # stored again: one record per result all the same


def test_none_is_a_value_distinct_from_missing(store):
    call = call_for(-1)
    assert store.get_result(call) is MISSING
    store.put_results([(call, value_address(None), pack(None), {})])
    assert store.get_result(call) is None
    assert store.get_results([call]) == {call: None}
    store.put_value(value_address(None), pack(None))
    assert store.get_value(value_address(None)) is None
    assert not MISSING and repr(MISSING) == "MISSING"


def test_put_value_keeps_the_first_copy(store):
    address = value_address("a")
    store.put_value(address, pack("a"))
    store.put_value(address, pack("not a"))  # an address names one value: the first stays
    assert store.get_value(address) == "a"
    assert store.has_value(address)


def test_large_value_is_a_file_read_in_place(store, home):
    np = pytest.importorskip("numpy")
    array = np.arange(200_000, dtype=np.float64)  # 1.6 MB
    address = value_address(array)
    blob = pack(array)
    assert len(blob) > INLINE_VALUE_LIMIT
    call = call_for(-2)
    store.put_results([(call, address, blob, {})])
    path = home / "blobs" / address.hex()[:2] / address.hex()
    assert path.is_file() and path.stat().st_size == len(blob)
    assert not list(path.parent.glob(".*.tmp"))

    back = store.get_result(call)
    assert isinstance(back, np.ndarray) and np.array_equal(back, array)
    assert not back.flags.owndata  # a view of the mapped file, not a copy
    assert back.flags.writeable  # like the value that was stored: a private, copy-on-write map
    back[0] = -1.0
    back += 1
    again = store.get_value(address)
    assert np.array_equal(again, array)  # the write reached neither the file nor other readers
    assert path.read_bytes() == blob
    assert back[0] == 0.0 and back[1] == 2.0

    # A large value stored by put_value alone is found by its address, and a result that names
    # it without carrying it (what a worker on this machine sends) reads the same file.
    other = np.ones(100_000)
    store.put_value(value_address(other), pack(other))
    store.put_results([(call_for(-3), value_address(other), None, {})])
    assert np.array_equal(store.get_result(call_for(-3)), other)


def test_large_bytes_round_trip(store, home):
    value = os.urandom(INLINE_VALUE_LIMIT + 1)
    store.put_results([(call_for(-4), value_address(value), pack(value), {})])
    assert store.get_result(call_for(-4)) == value
    assert len(list((home / "blobs").rglob("*"))) == 2  # one directory, one file


def test_store_is_shared_by_processes(store, home):
    store.put_results([record_for(n) for n in range(5)])
    code = HELPERS + (
        "import sys\nfrom pythagoras_p2p.store.core import open_store\n"
        "s = open_store(sys.argv[1])\n"
        "assert all(s.get_result(call_for(n)) == value_for(n) for n in range(5))\n"
        "from pythagoras_p2p.identity.encoding import value_address\n"
        "from pythagoras_p2p.store.packing import pack\n"
        "s.put_results([record_for(n, pack, value_address) for n in range(5, 10)])\n"
    )
    proc = python(code, str(home))
    assert proc.wait(60) == 0
    assert all(store.get_result(call_for(n)) == value_for(n) for n in range(10))


# --------------------------------------------------------------------------- many writers

CONCURRENT_WRITER = HELPERS + r'''
import sys
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.packing import pack
from pythagoras_p2p.store.core import open_store

store = open_store(sys.argv[1])
first, count = int(sys.argv[2]), int(sys.argv[3])
for n in range(first, first + count):
    store.put_results([record_for(n, pack, value_address)])
    store.put_results([record_for(999_999, pack, value_address)])  # the same entry from everyone
'''


def test_concurrent_writers_lose_nothing(store, home):
    writers = [python(CONCURRENT_WRITER, str(home), str(k * 1000), "200") for k in range(4)]
    for proc in writers:
        assert proc.wait(120) == 0
    expected = [n for k in range(4) for n in range(k * 1000, k * 1000 + 200)] + [999_999]
    found = store.get_results([call_for(n) for n in expected])
    assert len(found) == len(expected)
    for n in expected:
        assert found[call_for(n)] == value_for(n)


# --------------------------------------------------------------------------- kill -9

KILLED_WRITER = HELPERS + r'''
import sys
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.packing import pack
from pythagoras_p2p.store.core import open_store

store = open_store(sys.argv[1])
n = int(sys.argv[2])
out = sys.stdout
while True:
    batch = [record_for(m, pack, value_address) for m in range(n, n + 1 + n % 3)]
    store.put_results(batch)
    out.write("".join("%d\n" % m for m in range(n, n + len(batch))))  # acknowledged
    out.flush()
    n += len(batch)
'''


def _read_available(fd: int, sel: selectors.BaseSelector, timeout: float) -> bytes:
    if not sel.select(timeout):
        return b""
    return os.read(fd, 1 << 16)


def test_acknowledged_results_survive_kill_9(home):
    rng = random.Random(1234)
    acknowledged: list[int] = []
    killed: list[int] = []
    kills = 15
    for round_ in range(kills):
        proc = python(KILLED_WRITER, str(home), str(round_ * 100_000), stdout=subprocess.PIPE)
        killed.append(proc.pid)
        fd = proc.stdout.fileno()
        out = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            # Most rounds are killed while writing; some while the store is still being opened.
            if round_ == 0 or rng.random() < 0.8:
                deadline = time.monotonic() + 60
                while b"\n" not in out:
                    assert time.monotonic() < deadline, "the writer acknowledged nothing"
                    chunk = _read_available(fd, sel, 1.0)
                    assert chunk or proc.poll() is None, f"the writer exited ({proc.returncode})"
                    out += chunk
                time.sleep(rng.uniform(0, 0.05))  # a random moment to kill it, not a wait
        os.kill(proc.pid, signal.SIGKILL)
        out += proc.stdout.read()
        proc.stdout.close()
        assert proc.wait(30) == -signal.SIGKILL
        lines = out.split(b"\n")[:-1]  # a line cut by the kill is not an acknowledgement
        acknowledged += [int(line) for line in lines]

    assert len(acknowledged) >= 12  # the rounds that waited for an acknowledgement got one
    # A fresh process opens the store cleanly and finds every acknowledged result intact.
    code = HELPERS + r'''
import sys, json
from pythagoras_p2p.store.core import open_store, MISSING
s = open_store(sys.argv[1])
wanted = json.loads(sys.stdin.read())
found = s.get_results([call_for(n) for n in wanted])
bad = [n for n in wanted if found.get(call_for(n), MISSING) != value_for(n)]
assert not bad, f"lost or damaged: {bad[:10]} of {len(bad)}"
from pythagoras_p2p.store import log
with s.env._env.begin() as txn:  # every record of the log is whole and decodes, acknowledged or not
    for key, record in s.env.log.records(txn):
        assert log.check(record), key
        call = log.call_of(record)
        meta = s.get_meta(call)
        assert s.get_result(call) == value_for(meta["n"])
print(len(wanted))
print(s.env._env.readers())
'''
    proc = subprocess.run([sys.executable, "-c", code, str(home)], input=json.dumps(acknowledged),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, readers = proc.stdout.split("\n", 1)
    assert int(count) == len(acknowledged)
    assert not {int(f.split()[0]) for f in readers.splitlines()[1:] if f.strip()} & set(killed)


# --------------------------------------------------------------------------- a full store

FILL = HELPERS + r'''
import sys
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.packing import pack
from pythagoras_p2p.errors import StoreFullError
from pythagoras_p2p.store.core import open_store

store = open_store(sys.argv[1])
n = 0
try:
    while n < 10_000:
        value = b"%d:" % n + bytes(100_000)  # inline (< 256 KiB), so it counts against the map
        store.put_results([(call_for(n), value_address(value), pack(value), {"n": n})])
        n += 1
except StoreFullError as exc:
    print(n)
    print(exc)
    sys.exit(0)
sys.exit("the store never became full")
'''

CHECK_FULL = HELPERS + r'''
import sys
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.packing import pack
from pythagoras_p2p.errors import StoreFullError
from pythagoras_p2p.store.core import open_store

store = open_store(sys.argv[1])
count = int(sys.argv[2])
for n in range(count):
    assert store.get_result(call_for(n)) == b"%d:" % n + bytes(100_000), n
value = b"more" + bytes(100_000)
try:  # still full for another large value, and still no harm done
    store.put_results([(call_for(count), value_address(value), pack(value), {})])
    print("stored")
except StoreFullError:
    print("full")
# the headroom below the cap is kept for maintenance (cache gc), which may still write
store.env.write(lambda txn: txn.put(b"gc-was-here", value, db=store.env.info), admin=True)
assert store.env.read(lambda txn: txn.get(b"gc-was-here", db=store.env.info)) == value
assert store.env._env.info()["map_size"] <= 16 * 2**20
'''


def test_full_store_is_a_clear_error_and_loses_nothing(home):
    env = {"PYTHAGORAS_STORE_MAX_SIZE": "16M"}
    proc = run_python(FILL.replace("sys.argv[1]", repr(str(home))), env=env)
    count_text, message = proc.stdout.split("\n", 1)
    count = int(count_text)
    assert 50 < count < 160  # about 12 MiB of 100 KB values: the cap less the headroom
    # the map never went past the cap less the headroom kept for gc
    assert (home / "store" / "data.mdb").stat().st_size <= 16 * 2**20 - 4 * 2**20
    assert "pythagoras-node cache gc" in message
    assert "PYTHAGORAS_STORE_MAX_SIZE" in message
    check = run_python(
        CHECK_FULL.replace("sys.argv[1]", repr(str(home))).replace("sys.argv[2]", str(count)),
        env=env,
    )
    assert check.stdout.strip() == "full"


# --------------------------------------------------------------------------- a growing map

GROW = HELPERS + r'''
import os, sys
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.packing import pack
from pythagoras_p2p.store.core import open_store

store = open_store(sys.argv[1])
for first in range(0, 400, 20):  # 400 values of 200 KB: 80 MB, past the first 64 MiB map
    batch = []
    for n in range(first, first + 20):
        value = n.to_bytes(4, "little") * 50_000
        batch.append((call_for(n), value_address(value), pack(value), {"n": n}))
    store.put_results(batch)
print(store.env._env.info()["map_size"])
'''


def test_map_grows_and_other_processes_follow(store, home):
    from pythagoras_p2p.defaults import MAP_SIZE_INITIAL

    store.put_results([record_for(-10)])
    before = store.env._env.info()["map_size"]
    assert before == MAP_SIZE_INITIAL
    proc = run_python(GROW.replace("sys.argv[1]", repr(str(home))))
    assert int(proc.stdout) > MAP_SIZE_INITIAL
    # This process still has the small map: it reads what the other wrote past its end ...
    found = store.get_results([call_for(n) for n in range(400)])
    assert len(found) == 400
    assert all(found[call_for(n)] == n.to_bytes(4, "little") * 50_000 for n in (0, 199, 399))
    assert store.env._env.info()["map_size"] > MAP_SIZE_INITIAL
    # ... and writes and reads its own entries as before.
    store.put_results([record_for(n) for n in range(5)])
    assert store.get_result(call_for(4)) == value_for(4)
    assert store.get_result(call_for(-10)) == value_for(-10)


def test_map_grows_in_one_process_with_threads(store):
    """Readers in other threads keep working while a writer grows the map under them."""
    stop = threading.Event()
    errors: list[BaseException] = []
    store.put_results([record_for(1)])

    def read():
        try:
            while not stop.is_set():
                assert store.get_result(call_for(1)) == value_for(1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for first in range(0, 400, 40):
            batch = []
            for n in range(first, first + 40):
                value = n.to_bytes(4, "little") * 50_000
                batch.append((call_for(n + 10), value_address(value), pack(value), {}))
            store.put_results(batch)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors
    assert store.get_result(call_for(399 + 10)) == (399).to_bytes(4, "little") * 50_000


# --------------------------------------------------------------------------- dead readers

HOLD_READERS = r'''
import os, signal, sys
from pythagoras_p2p.store.core import open_store

home, count = sys.argv[1], int(sys.argv[2])
children = []
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        store = open_store(home)
        txn = store.env._env.begin()  # a read transaction held until the process is killed
        txn.get(b"anything", db=store.env.index)
        os.write(1, b"%d\n" % os.getpid())
        while True:
            signal.pause()
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
'''


def _hold_readers_and_kill(home, count: int) -> list[int]:
    proc = python(HOLD_READERS, str(home), str(count), stdout=subprocess.PIPE)
    pids: list[int] = []
    try:
        while len(pids) < count:
            line = proc.stdout.readline()
            assert line, "the reader holders died before holding their transactions"
            pids.append(int(line))
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        if len(pids) < count:
            proc.kill()
        proc.wait(60)
    return pids


def test_killed_readers_do_not_exhaust_reader_slots(home, monkeypatch):
    # A small reader table, so that dead readers can fill it: 60 slots (LMDB rounds up a little).
    monkeypatch.setattr(store_env, "MAX_READERS", 60)
    store = open_store(home)
    try:
        store.put_results([record_for(1)])
        slots = store.env._env.info()["max_readers"]
        assert slots < 100
        dead = _hold_readers_and_kill(home, slots - 1)
        assert set(dead) <= reader_pids(store)  # they did hold slots, and died with them

        # This process opened the store before they died, so nothing cleared their slots yet;
        # many concurrent readers here still get in.
        barrier = threading.Barrier(8)
        results: list = []

        def hold(txn):
            barrier.wait(30)  # all eight hold a read transaction at once
            return txn.get(call_for(1), db=store.env.index)

        def read():
            results.append(store.env.read(hold))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 8 and all(r is not None for r in results)
        store.put_results([record_for(2)])
        assert store.get_result(call_for(2)) == value_for(2)
    finally:
        store.close()

    # A process opening the store clears the slots of the dead.
    proc = run_python(
        "import sys\nfrom pythagoras_p2p.store.core import open_store\n"
        "s = open_store(sys.argv[1])\nprint(s.env._env.readers())".replace("sys.argv[1]", repr(str(home)))
    )
    listed = {int(f.split()[0]) for f in proc.stdout.splitlines()[1:] if f.split() and f.split()[0].isdigit()}
    assert not listed & set(dead)


def test_fifty_killed_readers_leave_a_clean_store(store, home):
    store.put_results([record_for(1)])
    dead = _hold_readers_and_kill(home, 50)
    assert set(dead) <= reader_pids(store)
    assert store.get_result(call_for(1)) == value_for(1)
    store.put_results([record_for(2)])
    assert store.env._env.reader_check() == 50  # the only stale slots are those of the dead
    assert not reader_pids(store) & set(dead)
    assert store.get_result(call_for(2)) == value_for(2)


# --------------------------------------------------------------------------- fork


def test_store_works_in_a_forked_child_and_in_the_parent(store, home):
    store.put_results([record_for(1)])
    assert store.get_result(call_for(1)) == value_for(1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            os.close(r)
            # The store object inherited from the parent, and the one open_store gives here.
            assert store.get_result(call_for(1)) == value_for(1)
            store.put_results([record_for(2)])
            again = open_store(home)
            assert again.get_result(call_for(2)) == value_for(2)
            again.put_results([record_for(3)])
            os.write(w, b"ok")
            status = 0
        except BaseException as exc:
            os.write(w, repr(exc).encode()[:500])
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    assert report == b"ok" and status == 0, report
    # The parent's environment is untouched: it reads the child's writes and writes on ...
    assert store.get_result(call_for(2)) == value_for(2)
    assert store.get_result(call_for(3)) == value_for(3)
    store.put_results([record_for(4)])
    assert store.get_result(call_for(4)) == value_for(4)
    assert pid not in reader_pids(store)
    # ... and its reader slots are its own: reading here does not take over (and so release)
    # the slot of a reader in another process, as a slot freed by the child would.
    holder = python(
        "import sys\nfrom pythagoras_p2p.store.core import open_store\n"
        "s = open_store(sys.argv[1])\ntxn = s.env._env.begin()\ntxn.get(b'k', db=s.env.index)\n"
        "print('holding', flush=True)\nsys.stdin.read()\n",
        str(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"holding\n"
        for n in range(1, 5):
            assert store.get_result(call_for(n)) == value_for(n)
        assert holder.pid in reader_pids(store)
    finally:
        holder.stdin.close()
        holder.wait(30)


def test_fork_while_other_threads_read_and_write(store):
    """Forking waits for running transactions; the parent's threads go on through it."""
    store.put_results([record_for(1)])
    stop = threading.Event()
    errors: list[BaseException] = []

    def busy(write: bool):
        n = 1000 if write else 0
        try:
            while not stop.is_set():
                assert store.get_result(call_for(1)) == value_for(1)
                if write:
                    n += 1
                    store.put_results([record_for(n)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=busy, args=(w,)) for w in (False, False, True)]
    for t in threads:
        t.start()
    try:
        for round_ in range(5):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                ok = False
                try:
                    store.put_results([record_for(500 + round_)])
                    ok = store.get_result(call_for(500 + round_)) == value_for(500 + round_)
                finally:
                    os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert status == 0
            assert store.get_result(call_for(500 + round_)) == value_for(500 + round_)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors


def test_transient_values_last_for_this_boot_and_durable_writes_upgrade_them(store, monkeypatch):
    import numpy as np

    import pythagoras_p2p.store.records as store_module
    from pythagoras_p2p.identity.encoding import value_address
    from pythagoras_p2p.store.packing import pack_parts

    array = np.arange(200_000, dtype=np.float64)  # large: kept in its own file
    address = value_address(array)
    store.put_value(address, pack_parts(array), durable=False)
    assert store.value_record(address)[:1] == b"N"
    assert np.array_equal(store.get_value(address), array)

    this_boot = store_module._BOOT
    monkeypatch.setattr(store_module, "_BOOT", b"\0" * 16)  # as after a reboot
    assert not store.has_value(address)
    assert store.get_value(address) is MISSING

    monkeypatch.setattr(store_module, "_BOOT", this_boot)
    store.put_value(address, pack_parts(array))  # a durable write of the same value
    assert store.value_record(address)[:1] == b"F"
    monkeypatch.setattr(store_module, "_BOOT", b"\0" * 16)
    assert np.array_equal(store.get_value(address), array)  # now it outlives a reboot


def test_dropping_transient_copies_never_touches_durable_values(store):
    import numpy as np

    from pythagoras_p2p.store.packing import pack_parts

    kept, dropped, upgraded = (np.full(100_000, float(i)) for i in range(3))  # large values
    a_kept, a_dropped, a_upgraded = (value_address(v) for v in (kept, dropped, upgraded))
    store.put_value(a_kept, pack_parts(kept))
    for value in (dropped, upgraded):
        store.put_value(value_address(value), pack_parts(value), durable=False)
    transient = store.blob_path(a_dropped, transient=True)
    assert transient.is_file() and not store.blob_path(a_dropped).exists()
    store.put_value(a_upgraded, pack_parts(upgraded))  # durable over a transient copy: a link
    assert store.blob_path(a_upgraded).is_file()
    assert store.blob_path(a_upgraded).stat().st_ino == store.blob_path(a_upgraded, transient=True).stat().st_ino

    assert store.drop_transient([a_kept, a_dropped, a_upgraded]) == 1
    assert not transient.exists() and store.get_value(a_dropped) is MISSING
    assert not store.has_value(a_dropped)
    for address, value in ((a_kept, kept), (a_upgraded, upgraded)):
        assert np.array_equal(store.get_value(address), value)
    assert store.drop_transient([a_dropped]) == 0  # twice is harmless


def test_a_transient_record_whose_file_was_dropped_counts_as_absent(store):
    import numpy as np

    from pythagoras_p2p.store.packing import pack_parts

    value = np.full(100_000, 7.0)
    address = value_address(value)
    store.put_value(address, pack_parts(value), durable=False)
    store.blob_path(address, transient=True).unlink()  # dropped by another process meanwhile
    assert not store.has_value(address) and store.get_value(address) is MISSING
    store.put_value(address, pack_parts(value), durable=False)  # written again on demand
    assert np.array_equal(store.get_value(address), value)


def test_gc_leaves_the_argument_copies_of_running_calls_alone(store):
    import os
    import time

    import numpy as np

    from pythagoras_p2p.store.maintenance import gc
    from pythagoras_p2p.store.packing import pack_parts

    running, forgotten = np.full(100_000, 1.0), np.full(100_000, 2.0)  # large: in their own files
    for value in (running, forgotten):
        store.put_value(value_address(value), pack_parts(value), durable=False)
    old = time.time() - 2 * 3600  # left by a caller that died two hours ago
    os.utime(store.blob_path(value_address(forgotten), transient=True), (old, old))
    report = gc(store)
    assert report.values_removed == 1
    assert store.has_value(value_address(running))
    assert not store.has_value(value_address(forgotten))


def test_copies_left_by_an_earlier_boot_are_replaced_never_trusted(store, monkeypatch):
    """After a reboot a transient record counts as absent and its ``.n`` file may be torn: a new
    transient write replaces both, and a durable write never links the old file."""
    import numpy as np

    import pythagoras_p2p.store.records as store_module
    from pythagoras_p2p.store.packing import pack_parts

    this_boot = store_module._BOOT
    first, second = np.arange(100_000, dtype=np.int64), np.arange(100_000, 200_000, dtype=np.int64)
    for value in (first, second):
        monkeypatch.setattr(store_module, "_BOOT", b"\0" * 16)  # written in an earlier boot ...
        address = value_address(value)
        store.put_value(address, pack_parts(value), durable=False)
        path = store.blob_path(address, transient=True)
        with open(path, "r+b") as f:  # ... and torn by the power cut that ended it
            f.truncate(path.stat().st_size // 2)
        monkeypatch.setattr(store_module, "_BOOT", this_boot)
        assert not store.has_value(address)
    store.put_value(value_address(first), pack_parts(first), durable=False)  # an argument again
    assert store.has_value(value_address(first))
    assert np.array_equal(store.get_value(value_address(first)), first)
    store.put_value(value_address(second), pack_parts(second))  # a result: durable
    monkeypatch.setattr(store_module, "_BOOT", b"\1" * 16)
    assert np.array_equal(store.get_value(value_address(second)), second)


def test_a_result_equal_to_a_transient_argument_is_kept_for_good(store, monkeypatch):
    """A result stored without its value (a peer sent it as a file, and a copy was already
    here as an argument) makes that copy durable: dropping the arguments keeps it."""
    import numpy as np

    import pythagoras_p2p.store.records as store_module
    from pythagoras_p2p.store.packing import pack_parts

    value = np.full(100_000, 3.0)
    address = value_address(value)
    store.put_value(address, pack_parts(value), durable=False)  # the caller's argument
    call = b"c" * 32
    store.put_results([(call, address, None, {"function": "identity"})])
    assert store.drop_transient([address]) == 0
    monkeypatch.setattr(store_module, "_BOOT", b"\1" * 16)  # and after a reboot
    assert np.array_equal(store.get_result(call), value)


class Labelled:
    """A value addressed by its pickle (no canonical encoding for it)."""

    def __init__(self, tags):
        self.tags = tags

    def __eq__(self, other):
        return isinstance(other, Labelled) and self.tags == other.tags


def _after_the_snapshot(store, monkeypatch, action):
    """Run ``action`` right after the next read transaction of ``store``: another process
    writing while a maintenance command decides from what it read."""
    read = store.env.read
    pending = [action]

    def read_then_act(fn):
        result = read(fn)
        while pending:
            pending.pop()()
        return result

    monkeypatch.setattr(store.env, "read", read_then_act)


def test_verify_repair_keeps_values_whose_address_came_from_their_pickle(store):
    """An object addressed by its pickle may have been pickled otherwise where it was stored
    (its own ``__reduce__``, an earlier release): another address here is no proof of damage."""
    from pythagoras_p2p.store.maintenance import verify

    pickled, plain = Labelled({"a", "b", "c"}), [1, 2, 3]
    elsewhere = b"\x01" * 32  # as if addressed in another process
    store.put_results([(b"p" * 32, elsewhere, pack(pickled), {}),
                       (b"q" * 32, b"\x02" * 32, pack(plain), {})])  # plain data: damaged
    report = verify(store, repair=True)
    assert report.unverifiable == 1
    assert len(report.problems) == 1 and "does not match" in report.problems[0]
    assert store.get_result(b"p" * 32) == pickled
    assert store.get_result(b"q" * 32) is MISSING


def test_verify_repair_keeps_what_is_stored_while_it_runs(store, monkeypatch):
    from pythagoras_p2p.store.maintenance import verify

    value = [4, 5, 6]
    address = value_address(value)
    store.put_results([(b"r" * 32, address, None, {})])  # its value is on its way
    _after_the_snapshot(store, monkeypatch, lambda: store.put_value(address, pack(value)))
    report = verify(store, repair=True)
    assert report.problems  # it was missing when looked at ...
    assert store.get_result(b"r" * 32) == value  # ... and is not deleted now that it is there


def test_gc_keeps_a_value_named_by_a_result_stored_while_it_runs(store, monkeypatch):
    import numpy as np

    from pythagoras_p2p.store.maintenance import gc
    from pythagoras_p2p.store.packing import pack_parts

    value = np.full(100_000, 5.0)  # large: in its own file
    address = value_address(value)
    store.put_value(address, pack_parts(value))  # no result names it yet: garbage at first
    _after_the_snapshot(store, monkeypatch,
                        lambda: store.put_results([(b"s" * 32, address, None, {"stored": 1.0})]))
    gc(store)
    assert np.array_equal(store.get_result(b"s" * 32), value)
    assert store.blob_path(address).exists()


def test_a_copy_two_callers_share_is_dropped_by_the_last_of_them(store, tmp_path):
    """Two processes (or threads) passing one large argument share its transient copy: the
    first to finish lets go of it, the last drops it."""
    import numpy as np

    from pythagoras_p2p.store.packing import pack_parts

    value = np.full(100_000, 9.0)
    address = value_address(value)
    ready, go = tmp_path / "ready", tmp_path / "go"
    other = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, time
import numpy as np
from pythagoras_p2p.store.packing import pack_parts
from pythagoras_p2p.store.core import open_store
store = open_store({str(store.home)!r})
value = np.full(100_000, 9.0)
address = bytes.fromhex({address.hex()!r})
assert store.keep_transient(address, lambda: pack_parts(value))
open({str(ready)!r}, "w").close()
while not os.path.exists({str(go)!r}):
    time.sleep(0.01)
assert np.array_equal(store.get_value(address), value), "dropped under a caller still using it"
assert store.drop_transient([address]) == 1  # the last one drops it
"""])
    try:
        wait_for(lambda: ready.exists() or other.poll() is not None, 30, message="the other caller")
        assert store.keep_transient(address, lambda: pack_parts(value))  # shared, not rewritten
        assert store.keep_transient(address, lambda: pack_parts(value))  # a second thread here
        assert store.drop_transient([address]) == 0  # our other thread still reads it
        assert store.drop_transient([address]) == 0  # the other process still reads it
        assert store.has_value(address)
        go.touch()
        assert other.wait(30) == 0
    finally:
        if other.poll() is None:
            other.kill()
    assert not store.has_value(address)


def test_gc_leaves_a_held_copy_alone_however_old(store):
    import numpy as np

    from pythagoras_p2p.store.maintenance import gc
    from pythagoras_p2p.store.packing import pack_parts

    value = np.full(100_000, 4.0)
    address = value_address(value)
    assert store.keep_transient(address, lambda: pack_parts(value))  # a batch running for hours
    old = time.time() - 5 * 3600
    os.utime(store.blob_path(address, transient=True), (old, old))
    assert gc(store).values_removed == 0 and store.has_value(address)
    store.release_transient([address])  # its caller died without dropping it
    assert gc(store).values_removed == 1 and not store.has_value(address)


_SHARING = """
import os, random, sys, threading, time
import numpy as np
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.packing import pack_parts
from pythagoras_p2p.store.core import MISSING, open_store
store = open_store(sys.argv[1])
values = [np.full(80_000, i, dtype=np.float64) for i in range(3)]
addresses = [value_address(v) for v in values]
problems, rounds = [], [0]
stop = time.monotonic() + float(sys.argv[2])

def caller(seed):
    rnd = random.Random(seed)
    while time.monotonic() < stop:
        i = rnd.randrange(3)
        held = store.keep_transient(addresses[i], lambda: pack_parts(values[i]))
        found = store.get_value(addresses[i])
        if found is MISSING or not np.array_equal(found, values[i]):
            problems.append(i)
        del found
        if held:
            store.drop_transient([addresses[i]])
        rounds[0] += 1

threads = [threading.Thread(target=caller, args=(os.getpid() * 10 + k,)) for k in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
print(rounds[0], len(problems))
sys.exit(1 if problems else 0)
"""


def test_processes_sharing_copies_from_many_threads_never_wait_for_each_other(store):
    """Two processes, three threads each, holding and dropping three shared copies: a process
    that drops one copy while it waits to hold another must not wait for the other process
    doing the opposite (they did, for good), and no held copy is ever missing."""
    procs = [subprocess.Popen([sys.executable, "-c", _SHARING, str(store.home), "3"],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"a held copy went missing: {out}"
            assert int(out.split()[0]) > 10, out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def test_gc_of_a_forgotten_transient_copy_leaves_its_durable_name_alone(store):
    """A writer may have linked the copy under its durable name, about to record it: gc removes
    the transient record and the ``.n`` file, never the durable name."""
    import numpy as np

    from pythagoras_p2p.store.maintenance import gc
    from pythagoras_p2p.store.packing import pack_parts

    value = np.full(100_000, 6.0)
    address = value_address(value)
    store.put_value(address, pack_parts(value), durable=False)
    copy, durable = store.blob_path(address, transient=True), store.blob_path(address)
    os.link(copy, durable)  # a durable write in progress
    old = time.time() - 2 * 3600
    os.utime(copy, (old, old))
    assert gc(store).values_removed == 1
    assert not copy.exists() and durable.exists()


def test_a_transient_copy_of_a_durable_value_is_not_kept_beside_it(store, tmp_path):
    import numpy as np

    from pythagoras_p2p.store.packing import pack_parts

    value = np.full(100_000, 8.0)
    address = value_address(value)
    store.put_value(address, pack_parts(value))  # durable
    received = tmp_path / "received"
    received.write_bytes(b"".join(bytes(p) for p in pack_parts(value)))
    store.adopt_file(address, received, durable=False)  # an upload of the same value
    assert not received.exists() and not store.blob_path(address, transient=True).exists()
    assert np.array_equal(store.get_value(address), value)


def test_a_lock_file_that_cannot_be_opened_is_a_clear_error(tmp_path):
    from pythagoras_p2p.errors import StoreError
    from pythagoras_p2p.store.holds import Holds

    holds = Holds(tmp_path / "no such folder" / "transient.lock")
    with pytest.raises(StoreError, match="writable"):
        holds.hold(b"a" * 32)


def test_a_read_with_every_reader_slot_held_by_live_readers_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(store_env, "MAX_READERS", 4)
    store = open_store(tmp_path / "home")
    call = b"c" * 32
    held = [store.env._env.begin() for _ in range(4)]  # live readers: nothing to free
    try:
        with pytest.raises(store_env.ReadersBusyError, match="reader slot.*running process"):
            store.results_of([call])
    finally:
        for txn in held:
            txn.abort()
        held.clear()  # (py-lmdb keeps a transaction's slot until the object goes)
    assert store.results_of([call]) == [MISSING]  # a slot is free again: reads go on
    store.close()


def test_a_file_the_kernel_will_not_map_privately_is_read_in_place_read_only(store, monkeypatch):
    np = pytest.importorskip("numpy")
    import errno
    import mmap

    from pythagoras_p2p.store import blobs

    array = np.arange(100_000, dtype=np.float64)
    store.put_results([(call_for(-9), value_address(array), pack(array), {})])
    real = mmap.mmap

    def strict_overcommit(fd, length, *, access):  # a private map larger than memory and swap
        if access == mmap.ACCESS_COPY:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return real(fd, length, access=access)

    monkeypatch.setattr(blobs.mmap, "mmap", strict_overcommit)
    back = store.get_result(call_for(-9))
    assert np.array_equal(back, array)
    assert not back.flags.writeable and not back.flags.owndata  # in place, not copied
