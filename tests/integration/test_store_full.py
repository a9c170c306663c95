"""A store or disk that fills: a clear StoreFullError, computed results still returned (said once
not to be kept), and nothing stored before is lost."""

from __future__ import annotations

import logging
import os
import subprocess

import lmdb
import numpy as np
import pytest

from pythagoras_p2p import LocalCloud, kw_args
from pythagoras_p2p.errors import StoreFullError
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.core import MISSING
from pythagoras_p2p.store.packing import pack


def fill(store, tries: int = 20) -> None:
    """Store values until not even a small one fits. Whether a write fits depends on where its
    random keys land in LMDB's trees (a full leaf splits, and takes pages one with room does
    not), so one failed write is not "full": each size is tried until ``tries`` in a row fail."""
    n = 0
    for size in (100_000, 10_000, 1_000, 100, 8):
        failed = 0
        while failed < tries:
            value = n.to_bytes(8, "little") * (size // 8)
            n += 1
            try:
                store.put_results([(os.urandom(32), value_address(value), pack(value), {})])
            except StoreFullError:
                failed += 1
            else:
                failed = 0


def not_stored(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]


def make_cloud(home, monkeypatch) -> LocalCloud:
    monkeypatch.setenv("PYTHAGORAS_STORE_MAX_SIZE", "8M")  # the smallest cap: 4 MiB of map
    return LocalCloud(home=home, workers=2)


@pytest.fixture
def capped(home, monkeypatch):
    cloud = make_cloud(home, monkeypatch)
    yield cloud
    cloud.close()
    cloud.store.close()


def square(*, x):
    return x * x


def arange(*, n):
    return np.arange(n)


def test_a_call_on_a_full_store_returns_its_result_and_says_it_was_not_kept(capped, caplog):
    f = capped.add_pure_function(square)
    assert f(x=2) == 4
    f.sync_parallel([kw_args(x=i) for i in range(3, 6)])
    fill(capped.store)
    with caplog.at_level(logging.WARNING):
        assert f(x=7) == 49
    (message,) = not_stored(caplog)
    assert "result of square not stored" in message and "pythagoras-node cache gc" in message
    assert capped.store.get_result(f.address(x=7)) is MISSING
    for x in (2, 3, 4, 5):  # stored earlier: still there
        assert capped.store.get_result(f.address(x=x)) == x * x


def test_sync_parallel_and_sync_remote_on_a_full_store_return_every_result(capped, caplog):
    f = capped.add_pure_function(square)
    g = capped.add_pure_function(arange)
    f.sync_parallel([kw_args(x=1)])  # known to the store before it fills
    g.sync_parallel([kw_args(n=1)])
    fill(capped.store)
    with caplog.at_level(logging.WARNING):
        out = f.sync_parallel([kw_args(x=i) for i in range(10, 20)], return_exceptions=True)
        assert out == [i * i for i in range(10, 20)]
        fill(capped.store)  # a failed commit of many results may leave room for a few
        large = g.sync_parallel([kw_args(n=100_000 + i) for i in range(3)], return_exceptions=True)
        assert all(np.array_equal(a, np.arange(100_000 + i)) for i, a in enumerate(large))
        fill(capped.store)
        assert f.sync_remote(x=30) == 900
    messages = not_stored(caplog)  # one per call of sync_parallel / sync_remote, at most
    # Results reach the caller in batches, each committed at once: a commit that fails may leave
    # room for a later, smaller one (LMDB), so the message counts what was not kept, exactly
    unkept = sum(capped.store.get_result(f.address(x=i)) is MISSING for i in range(10, 20))
    assert unkept >= 1
    said = (f"results of {unkept} calls of square not stored" if unkept > 1
            else "result of square not stored")
    assert said in messages[0]
    assert "result of square not stored" in messages[-1] and len(messages) <= 3
    assert all("pythagoras-node cache gc" in m for m in messages)
    assert capped.store.get_result(f.address(x=1)) == 1


class _FailingCommits:
    """An LMDB environment whose write transactions fail to commit as on a disk that filled."""

    def __init__(self, env):
        self._env = env

    def begin(self, write=False, **kwargs):
        txn = self._env.begin(write=write, **kwargs)
        return _FailingCommit(txn) if write else txn

    def __getattr__(self, name):
        return getattr(self._env, name)


class _FailingCommit:
    def __init__(self, txn):
        self._txn = txn

    def commit(self):
        self._txn.abort()
        raise lmdb.Error("mdb_txn_commit: Input/output error")

    def __getattr__(self, name):
        return getattr(self._txn, name)


def test_a_commit_that_fails_for_a_full_disk_is_a_store_full_error(capped, monkeypatch, caplog):
    f = capped.add_pure_function(square)
    assert f(x=3) == 9
    monkeypatch.setattr(capped.store.env, "_env", _FailingCommits(capped.store.env._env))
    with pytest.raises(StoreFullError, match="pythagoras-node cache gc"):
        capped.store.put_value(value_address(b"v"), pack(b"v"))
    with caplog.at_level(logging.WARNING):
        assert f(x=4) == 16
    (message,) = not_stored(caplog)
    assert "Input/output error" in message
    monkeypatch.undo()
    assert capped.store.get_result(f.address(x=3)) == 9
    assert capped.store.get_result(f.address(x=4)) is MISSING


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (tests run as root); skipped where it cannot be mounted."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_disk_that_fills_keeps_what_was_stored_and_returns_new_results(small_disk, monkeypatch,
                                                                      caplog):
    home = small_disk / "home"
    monkeypatch.setenv("PYTHAGORAS_HOME", str(home))
    cloud = LocalCloud(home=home, workers=2)
    try:
        f = cloud.add_pure_function(arange)
        kept = []
        with caplog.at_level(logging.WARNING):
            for n in range(10_000, 10_050):  # 80 KB values: the disk fills on the way
                assert np.array_equal(f(n=n), np.arange(n))
                if not not_stored(caplog):
                    kept.append(n)
            assert 0 < len(kept) < 50
            out = f.sync_parallel([kw_args(n=n) for n in range(20_000, 20_004)],
                                  return_exceptions=True)
        assert all(np.array_equal(a, np.arange(20_000 + i)) for i, a in enumerate(out))
        for n in kept:
            assert np.array_equal(cloud.store.get_result(f.address(n=n)), np.arange(n))
    finally:
        cloud.close()
        cloud.store.close()


def total(*, a):
    return float(a.sum())


def test_a_new_function_on_a_full_store_fails_each_call_with_the_fix(capped, monkeypatch):
    f = capped.add_pure_function(square)

    def full(fp, record):  # no room for the record workers load the function from
        raise StoreFullError(full_message)

    full_message = "the store is full; make room with `pythagoras-node cache gc`"
    monkeypatch.setattr(capped.store, "put_function", full)
    out = f.sync_parallel([kw_args(x=i) for i in range(4)], return_exceptions=True)
    assert len(out) == 4 and all(isinstance(e, StoreFullError) for e in out)
    assert "pythagoras-node cache gc" in str(out[0])
    with pytest.raises(StoreFullError, match="cache gc"):
        f.sync_parallel([kw_args(x=i) for i in range(4)])


def test_a_large_argument_with_no_room_in_the_store_travels_with_its_calls(capped, monkeypatch):
    f = capped.add_pure_function(total)
    f.sync_parallel([kw_args(a=np.zeros(3))])  # the function is known before the store fills

    def full(address, make_parts):
        raise StoreFullError("the store is full; make room with `pythagoras-node cache gc`")

    monkeypatch.setattr(capped.store, "keep_transient", full)
    big = np.arange(1 << 16, dtype=np.float64)  # 512 KiB: normally a copy in the store
    out = f.sync_parallel([kw_args(a=big), kw_args(a=big * 2), kw_args(a=big)])
    assert out == [float(big.sum()), float((big * 2).sum()), float(big.sum())]


def filled(*, n, k):
    return np.full(n, k, dtype=np.uint8)


def test_results_whose_files_pass_the_cap_are_returned_and_said_not_kept(capped, caplog):
    f = capped.add_pure_function(filled)
    n = 3 << 20  # two of them do not fit below the cap of 8 MiB (4 MiB less the headroom)
    with caplog.at_level(logging.WARNING):
        assert f(n=n, k=1)[0] == 1
        assert not not_stored(caplog)
        second = f(n=n, k=2)  # computed here
        assert second[0] == 2 and len(second) == n
        assert len(not_stored(caplog)) == 1
        out = f.sync_parallel([kw_args(n=n, k=3), kw_args(n=n, k=4)])  # computed in workers
        assert [int(a[0]) for a in out] == [3, 4] and all(len(a) == n for a in out)
        assert f.sync_remote(n=n, k=5)[-1] == 5
    messages = not_stored(caplog)
    assert len(messages) == 3 and all("value files take" in m for m in messages)
    assert f.lookup(n=n, k=1) is not None
    assert all(f.lookup(n=n, k=k) is None for k in (2, 3, 4, 5))
    assert capped.store.file_bytes() < 4 << 20
    assert np.array_equal(f(n=n, k=1), np.full(n, 1, dtype=np.uint8))  # kept, intact
