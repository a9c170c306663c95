"""Values arriving in chunks: downloads and the check of what arrived."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.net.transfer import Download, verify_file
from pythagoras_p2p.store.core import open_store
from pythagoras_p2p.store.packing import pack_parts


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "home")


def _packed(value) -> bytes:
    return b"".join(bytes(p) for p in pack_parts(value))


def test_a_damaged_value_is_named_with_the_real_cause(tmp_path):
    value = np.arange(50_000, dtype=np.int64)
    data = _packed(value)
    path = tmp_path / "value"
    path.write_bytes(data[: len(data) // 2])
    problem = verify_file(str(path), value_address(value))
    assert problem is not None and "does not decode" in problem
    assert "exported pointers" not in problem  # not the map's complaint about its views
    path.write_bytes(data)
    assert verify_file(str(path), value_address(value)) is None


def test_two_downloads_of_one_value_do_not_share_a_file(store):
    """Two peers may send the same large result at once: each download has its own file."""
    value = np.arange(100_000, dtype=np.float64)
    address, data = value_address(value), _packed(value)
    first, second = Download(store, address), Download(store, address)
    assert first.path != second.path
    outcomes = []
    for download in (first, second):
        download.waiters.append(outcomes.append)
        download.write(0, len(data), data)
    first.finish()
    second.finish()
    assert outcomes == [True, True]
    assert np.array_equal(store.get_value(address), value)
    assert not [p for p in store.blobs.iterdir() if p.name.endswith(".download")]


def test_a_download_with_no_room_below_the_cap_tells_its_waiters(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHAGORAS_STORE_MAX_SIZE", "8M")  # 4 MiB below the headroom
    store = open_store(tmp_path / "capped")
    try:
        value = np.ones(5 << 17, dtype=np.float64)  # 5 MiB
        address, data = value_address(value), _packed(value)
        download = Download(store, address)
        outcomes = []
        download.waiters.append(outcomes.append)
        download.write(0, len(data), data)
        download.finish()  # raised past the waiters, who then waited for ever
        (outcome,) = outcomes
        assert "cannot be kept here" in outcome and "PYTHAGORAS_STORE_MAX_SIZE" in outcome
        assert not store.has_value(address)
        assert not [p for p in store.blobs.rglob("*") if p.is_file()]
    finally:
        store.close()


def test_gc_removes_downloads_a_killed_client_left_behind(store):
    from pythagoras_p2p.store.maintenance import gc

    store.blobs.mkdir(exist_ok=True)
    left = store.blobs / f".{'ab' * 32}.4242.0.download"
    fresh = store.blobs / f".{'cd' * 32}.4243.0.download"
    for path in (left, fresh):
        path.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(left, (old, old))
    report = gc(store)
    assert report.files_removed == 1 and not left.exists() and fresh.exists()
