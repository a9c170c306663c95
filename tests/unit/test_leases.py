"""Per-call leases: who holds a call, within a process and across processes of a home."""

from __future__ import annotations

import os
import threading

from pythagoras_p2p.leases import Leases, leases_of

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
