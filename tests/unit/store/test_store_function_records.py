"""Function records in the store: keyed by the hash of their bytes, checked when read and by
``cache verify``."""

from __future__ import annotations

import os

import pytest

from pythagoras_p2p.store.core import open_store
from pythagoras_p2p.store.functions import DamagedRecordError, record_key
from pythagoras_p2p.store.maintenance import verify


def test_a_record_key_is_the_hash_of_the_record():
    assert record_key(b"a") == record_key(memoryview(b"a"))
    assert record_key(b"a") != record_key(b"b")
    assert len(record_key(b"a")) == 32


def test_the_store_checks_a_record_when_it_is_read(home):
    store = open_store(home)
    record = b"a function record"
    key = record_key(record)
    store.put_function(key, record)
    assert store.get_function(key) == record
    store.env.write(lambda txn: txn.put(key, b"a function recorc", db=store.env.functions))
    with pytest.raises(DamagedRecordError, match="does not hash to its key|damaged"):
        store.get_function(key)
    assert store.get_function(key) is None  # removed when found


def test_cache_verify_reports_and_removes_damaged_records(home):
    store = open_store(home)
    good, bad = b"a good record", b"a record damaged later"
    store.put_function(record_key(good), good)
    store.put_function(record_key(bad), bad)
    store.env.write(lambda txn: txn.put(record_key(bad), b"a record damaged lateR", db=store.env.functions))
    report = verify(store)
    assert report.functions_checked == 2
    assert [p for p in report.problems if "function record" in p] == [
        f"function record {record_key(bad).hex()[:16]}: its bytes do not hash to its key "
        f"(damaged, or stored by an earlier version)"]
    report = verify(store, repair=True)
    assert report.repaired == 1
    assert store.get_function(record_key(good)) == good
    assert not store.has_function(record_key(bad))
    assert verify(store).ok


def test_records_of_an_earlier_version_are_named_by_verify(home):
    """A store written by an earlier version keeps records under fingerprints: they are never
    loaded as a record key (they do not hash to it), and verify names them."""
    store = open_store(home)
    store.put_function(os.urandom(32), b"an old record under a fingerprint")
    assert not verify(store).ok
