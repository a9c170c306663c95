"""Values are checked when read: a damaged value is logged once, removed, and computed again."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.net.transfer import upload_frames, value_view
from pythagoras_p2p.store.core import MISSING, open_store
from pythagoras_p2p.store.maintenance import gc, verify
from pythagoras_p2p.store.packing import pack, pack_parts

N = 131_072  # np.arange(N) is 1 MiB: a value kept in its own file under home/blobs


@pytest.fixture
def store(home):
    s = open_store(home)
    yield s
    s.close()


def blob_files(home: Path) -> list[Path]:
    return [p for p in (home / "blobs").glob("*/*") if not p.name.startswith(".")]


def damage_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "damaged" in r.getMessage()]


def flip_four_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(4):  # in the array's bytes, past the pickle header
        data[len(data) // 2 + 1000 * i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 4096)


@pytest.mark.parametrize("damage", [flip_four_bytes, truncate], ids=["flipped", "truncated"])
def test_a_damaged_blob_file_is_computed_again(cloud, home, caplog, damage):
    @cloud.add_pure_function
    def f(*, n):
        return np.arange(n)

    assert np.array_equal(f(n=N), np.arange(N))
    (path,) = blob_files(home)
    good = path.read_bytes()
    stored = cloud.store.get_meta(f.address(n=N))["stored"]
    damage(path)

    with caplog.at_level(logging.WARNING):
        again = f(n=N)
        assert np.array_equal(again, np.arange(N))
        assert np.array_equal(f(n=N), np.arange(N))  # a hit of the value stored again
    (warning,) = damage_warnings(caplog)  # once
    assert path.name in warning and "cache verify" in warning
    assert cloud.store.get_meta(f.address(n=N))["stored"] > stored  # computed again
    assert blob_files(home) == [path] and path.read_bytes() == good  # the bad file is gone


def damage_result(store, call: bytes, old: bytes, new: bytes) -> None:
    """Change bytes of the record a result keeps in the log, as a bad disk would."""
    def write(txn):
        key = txn.get(call, db=store.env.index)
        record = txn.get(key, db=store.env.log_db)
        assert old in record
        txn.put(key, record.replace(old, new), db=store.env.log_db)

    store.env.write(write)


def test_a_damaged_inline_value_is_computed_again(cloud, caplog):
    @cloud.add_pure_function
    def g(*, n):
        return b"a" * n

    assert g(n=100) == b"a" * 100
    store = cloud.store
    address, record = store.result_entry(g.address(n=100))
    damage_result(store, g.address(n=100), b"a" * 100, b"b" * 100)
    assert not verify(store).ok  # the record's checksum, and the value's

    with caplog.at_level(logging.WARNING):
        assert g(n=100) == b"a" * 100
        assert g(n=100) == b"a" * 100
    (warning,) = damage_warnings(caplog)
    assert address.hex() in warning
    assert store.result_entry(g.address(n=100)) == (address, record)  # stored again
    assert verify(store).ok


def test_get_value_of_a_damaged_value_is_missing_and_removes_it(store, caplog):
    array = np.arange(N)
    address = value_address(array)
    store.put_value(address, pack_parts(array))
    flip_four_bytes(store.blob_path(address))
    with caplog.at_level(logging.WARNING):
        assert store.get_value(address) is MISSING
        assert store.get_value(address) is MISSING
    assert len(damage_warnings(caplog)) == 1
    assert not store.has_value(address) and not store.blob_path(address).exists()


def test_a_damaged_value_is_not_sent_to_peers(store):
    small, large = b"x" * 1000, np.arange(N)
    for value in (small, large):
        store.put_value(value_address(value), pack_parts(value))
    assert value_view(store, value_address(large)) is not None
    flip_four_bytes(store.blob_path(value_address(large)))
    address = value_address(small)
    record = store.value_record(address)
    store.env.write(lambda txn: txn.put(address, record.replace(b"x" * 10, b"y" * 10), db=store.env.values))
    assert value_view(store, value_address(large)) is None
    assert upload_frames(store, address) is None


def test_get_results_leaves_damaged_values_out(store):
    calls = [bytes([n]) * 32 for n in range(3)]
    values = [b"v%d" % n * 50 for n in range(3)]
    store.put_results([(c, value_address(v), pack(v), {}) for c, v in zip(calls, values, strict=True)])
    damage_result(store, calls[1], values[1], b"!" + values[1][1:])
    assert store.get_results(calls) == {calls[0]: values[0], calls[2]: values[2]}
    assert store.get_result(calls[1]) is MISSING


def test_verify_reports_a_value_that_does_not_match_its_checksum(store):
    array = np.arange(N)
    address = value_address(array)
    store.put_results([(b"c" * 32, address, pack_parts(array), {})])
    flip_four_bytes(store.blob_path(address))
    report = verify(store)
    assert not report.ok and "checksum" in report.problems[0]
    assert verify(store, repair=True).repaired == 2  # the value and the result naming it
    assert verify(store).ok


def test_an_old_home_opens_and_its_records_count_as_absent_until_gc(home):
    """Records of store format 1 (no checksum) are never read; ``cache gc`` reclaims them."""
    from pythagoras_p2p.store.env import STORE_FORMAT

    store = open_store(home)
    small, large = b"s" * 100, b"L" * 400_000
    old = {value_address(small): b"i" + pack(small), value_address(large): b"f" + value_address(large)}
    store.blob_path(value_address(large)).parent.mkdir(parents=True, exist_ok=True)
    store.blob_path(value_address(large)).write_bytes(pack(large))

    def write_format_1(txn):
        txn.put(b"format", b"1", db=store.env.info)
        for n, (address, record) in enumerate(old.items()):
            txn.put(address, record, db=store.env.values)
            txn.put(bytes([n]) * 32, address, db=store.env.legacy_results)
            txn.put(bytes([n]) * 32, b"{}", db=store.env.legacy_meta)

    store.env.write(write_format_1)
    store.close()

    store = open_store(home)  # opens; its results moved to the log, marked format 3
    try:
        assert store.env.read(lambda txn: txn.get(b"format", db=store.env.info)) == STORE_FORMAT
        for n, address in enumerate(old):
            assert store.get_result(bytes([n]) * 32) is MISSING
            assert store.get_value(address) is MISSING
        report = gc(store)
        assert (report.results_removed, report.values_removed) == (2, 2)
        assert store.env.read(lambda txn: txn.stat(store.env.values)["entries"]) == 0
        assert blob_files(home) == []
        store.put_value(value_address(large), pack(large))  # stored again, in the new layout
        assert store.get_value(value_address(large)) == large
    finally:
        store.close()


def test_a_large_result_lost_before_the_caller_reads_it_fails_its_call(cloud, monkeypatch):
    def arange(*, n):
        return np.arange(n)

    f = cloud.add_pure_function(arange)
    monkeypatch.setattr(cloud.store, "get_value", lambda address: MISSING)  # gone, or damaged
    out = f.sync_parallel([{"n": N}, {"n": 3}], return_exceptions=True)
    assert isinstance(out[0], Exception) and "lost" in str(out[0])  # never the MISSING marker
    assert list(out[1]) == [0, 1, 2]
    monkeypatch.undo()
    assert cloud.store.get_result(f.address(n=N)) is MISSING  # nothing stored for it
    assert np.array_equal(f.sync_remote(n=N), np.arange(N))  # computed again


def test_a_file_is_hashed_once_per_process_until_it_changes_and_verify_always_hashes(
        store, monkeypatch, caplog):
    from pythagoras_p2p.store import values as values_module

    hashed = []
    real = values_module.sum_matches

    def counting(view, record):
        hashed.append(view.nbytes)
        return real(view, record)

    monkeypatch.setattr(values_module, "sum_matches", counting)
    array = np.arange(N)
    address = value_address(array)
    store.put_value(address, pack_parts(array))
    for _ in range(3):
        assert np.array_equal(store.get_value(address), array)
    assert len(hashed) == 1  # the first read of this file in this process
    assert verify(store).ok and len(hashed) == 2  # cache verify hashes every file again
    flip_four_bytes(store.blob_path(address))  # another file now (its times changed)
    with caplog.at_level(logging.WARNING):
        assert store.get_value(address) is MISSING
    assert len(hashed) == 3 and len(damage_warnings(caplog)) == 1
