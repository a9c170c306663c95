"""Per-call leases: who holds a call, within a process and across processes of a home."""

from __future__ import annotations

import os
import threading

from pythagoras_p2p.store.leases import Leases, leases_of

CALL = bytes(range(32))
OTHER = bytes(range(1, 33))


def test_one_owner_holds_a_call_and_takes_it_again(tmp_path):
    leases = Leases(tmp_path / "leases")
    a, b = object(), object()
    assert leases.take(CALL, a) and leases.take(CALL, a)  # again: still a's
    assert not leases.take(CALL, b)  # another owner of this process sees a's lease
    assert leases.take(OTHER, b)
    leases.release([CALL], b)  # not b's: left alone
    assert not leases.take(CALL, b)
    leases.release([CALL], a)
    assert leases.take(CALL, b)


def test_release_all_lets_go_of_one_owners_leases_only(tmp_path):
    leases = Leases(tmp_path / "leases")
    a, b = object(), object()
    assert leases.take_each([(CALL, a), (OTHER, b)]) == [True, True]
    leases.release_all(a)
    assert leases.take(CALL, b) and not leases.take(OTHER, a)


def test_another_process_sees_the_lease_until_its_holder_dies(tmp_path):
    leases = Leases(tmp_path / "leases")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child takes the lease, says so, and waits to be killed
        os.close(read)
        ok = Leases(tmp_path / "leases").take(CALL, object())
        os.write(write, b"1" if ok else b"0")
        threading.Event().wait(60)
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
        assert not leases.take(CALL, object())
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert leases.take(CALL, object())  # the kernel let go of the dead holder's lease


def test_claim_waits_for_a_result_stored_by_the_holder(tmp_path):
    leases = Leases(tmp_path / "leases")
    holder, stored = object(), []
    assert leases.take(CALL, holder)

    def finish():
        stored.append(42)  # committed before the lease is let go
        leases.release([CALL], holder)

    timer = threading.Timer(0.05, finish)
    timer.start()
    found = leases.claim(CALL, object(), lambda: stored[0] if stored else None, None, wait=True)
    timer.join()
    assert found == 42


def test_claim_without_waiting_leaves_a_held_call_to_compute(tmp_path):
    leases = Leases(tmp_path / "leases")
    assert leases.take(CALL, object())
    mine = object()
    assert leases.claim(CALL, mine, lambda: None, None, wait=False) is None
    assert not leases.take(CALL, mine)  # it did not take the lease


def test_one_leases_object_per_home_in_a_process(tmp_path):
    assert leases_of(tmp_path / "store") is leases_of(tmp_path / "store")
    assert leases_of(tmp_path / "store") is not leases_of(tmp_path / "other")


def _in_child(work) -> int:
    """Run ``work()`` in a forked child; return what it wrote (one byte) to the parent."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.write(write, bytes([work()]))
        finally:
            os._exit(0)
    os.close(write)
    try:
        return os.read(read, 1)[0]
    finally:
        os.waitpid(pid, 0)


def test_a_process_alone_keeps_its_leases_to_itself_and_shows_them_to_a_newcomer(tmp_path):
    import time

    from pythagoras_p2p.store import leases as module

    leases = Leases(tmp_path / "leases")
    batch = object()
    assert leases.take_each([(CALL, batch)]) == [True]
    assert leases.solo  # alone: no lock in the kernel for this lease
    stop = threading.Event()

    def pool():  # the worker pool's loop, looking for others while its calls run
        while not stop.is_set():
            leases.watch()
            time.sleep(module.WATCH_EVERY / 2)

    watcher = threading.Thread(target=pool)
    watcher.start()
    try:
        t0 = time.monotonic()
        taken = _in_child(lambda: Leases(tmp_path / "leases").take(CALL, object()))
        waited = time.monotonic() - t0
    finally:
        stop.set()
        watcher.join()
    assert taken == 0  # the newcomer saw the lease
    assert waited < module.JOIN_WAIT  # the solo process answered; the newcomer did not time out
    assert not leases.solo
    leases.release_all(batch)
    assert _in_child(lambda: Leases(tmp_path / "leases").take(CALL, object())) == 1


def test_no_process_keeps_its_leases_to_itself_while_another_uses_the_home(tmp_path):
    leases = Leases(tmp_path / "leases")
    assert leases.take(OTHER, object())  # joined: the company byte is held shared
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        child = Leases(tmp_path / "leases")
        child.take_each([(CALL, object())])
        os.write(write, b"1" if child.solo else b"0")
        threading.Event().wait(60)
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"0"
        assert not leases.take(CALL, object())  # the child's lease is in the kernel
        assert leases.take_each([(b"\x07" * 32, object())]) == [True]  # in the kernel
        assert not leases.solo  # the child is there: this one is not alone either
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_a_solo_process_that_holds_nothing_lets_others_in_at_once(tmp_path):
    import time

    leases = Leases(tmp_path / "leases")
    batch = object()
    leases.take_each([(CALL, batch)])
    assert leases.solo
    leases.release([CALL], batch)
    assert not leases.solo
    t0 = time.monotonic()
    assert _in_child(lambda: Leases(tmp_path / "leases").take(CALL, object())) == 1
    assert time.monotonic() - t0 < 1.0
