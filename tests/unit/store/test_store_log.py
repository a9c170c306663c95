"""The results log: one record per result, an index by call, stores of format 2 moved forward."""

from __future__ import annotations

import json

import pytest

from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.identity.inputs import encode_trace
from pythagoras_p2p.store import log
from pythagoras_p2p.store.core import MISSING, ResultRecord, open_store
from pythagoras_p2p.store.env import STORE_FORMAT
from pythagoras_p2p.store.maintenance import gc, verify
from pythagoras_p2p.store.packing import pack
from pythagoras_p2p.store.records import checksum, inline_record


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def _log_entries(store) -> int:
    return store.env.read(lambda txn: txn.stat(store.env.log_db)["entries"])


def test_a_result_is_one_record_and_storing_it_again_replaces_it(home):
    store = open_store(home)
    try:
        call = b"c" * 32
        store.put_results([ResultRecord(call, value_address(1), pack(1), {"n": 1})])
        store.put_results([ResultRecord(call, value_address(2), pack(2), {"n": 2}),
                           ResultRecord(b"d" * 32, value_address(3), pack(3), {"n": 3})])
        assert store.get_result(call) == 2 and store.get_meta(call) == {"n": 2}
        assert _log_entries(store) == 2 == store.usage().results  # the first record is gone
        assert store.env.read(lambda txn: txn.stat(store.env.values)["entries"]) == 0
        # Within one group, the last record of a call wins.
        store.put_results([(call, value_address(4), pack(4), {}), (call, value_address(5), pack(5), {})])
        assert store.get_result(call) == 5 and _log_entries(store) == 2
        keys = store.env.read(lambda txn: [k for k, _ in store.env.log.records(txn)])
        assert keys == sorted(keys)  # arrival order
    finally:
        store.close()


def test_an_index_entry_never_answers_with_another_calls_record(home):
    store = open_store(home)
    try:
        store.put_results([(b"a" * 32, value_address("a"), pack("a"), {}),
                           (b"b" * 32, value_address("b"), pack("b"), {})])
        key_of_b = store.env.read(lambda txn: txn.get(b"b" * 32, db=store.env.index))
        store.env.write(lambda txn: txn.put(b"a" * 32, key_of_b, db=store.env.index))
        assert store.get_result(b"a" * 32) is MISSING
        assert store.results_of([b"a" * 32, b"b" * 32]) == [MISSING, "b"]
    finally:
        store.close()


def test_verify_finds_a_torn_record_and_repair_removes_it(home):
    store = open_store(home)
    try:
        calls = [bytes([n]) * 32 for n in range(3)]
        store.put_results([(c, value_address(n), pack(n), {"n": n}) for n, c in enumerate(calls)])

        def tear(txn):
            key = txn.get(calls[1], db=store.env.index)
            record = txn.get(key, db=store.env.log_db)
            txn.put(key, record[:-3], db=store.env.log_db)  # its metadata cut short

        store.env.write(tear)
        report = verify(store)
        assert not report.ok and "damaged" in report.problems[0]
        assert store.get_meta(calls[1]) is None  # checked with its record: never half of it
        assert verify(store, repair=True).repaired == 1
        assert verify(store).ok
        assert store.results_of(calls) == [0, MISSING, 2]
    finally:
        store.close()


def test_gc_removes_records_no_index_entry_names(home):
    store = open_store(home)
    try:
        store.put_results([(b"a" * 32, value_address("a"), pack("a"), {})])
        stray = log.encode(b"z" * 32, value_address("z"), b"", b"", b"{}")
        store.env.write(lambda txn: txn.put(b"\xff" * 8, stray, db=store.env.log_db))
        assert _log_entries(store) == 2
        gc(store)
        assert _log_entries(store) == 1 and store.get_result(b"a" * 32) == "a"
    finally:
        store.close()


def _format_2_store(home, results: int):
    """A store as release 2 of the format left it: tables values, results, meta, traced."""
    store = open_store(home)
    expected = {}

    def write(txn):
        env = store.env
        txn.put(b"format", b"2", db=env.info)
        for n in range(results):
            call = n.to_bytes(32, "big")
            value = f"value {n}"
            packed = pack(value)
            txn.put(value_address(value), inline_record(checksum([packed]), [packed]), db=env.values)
            txn.put(call, value_address(value), db=env.legacy_results)
            txn.put(call, json.dumps({"n": n}).encode(), db=env.legacy_meta)
            if n % 7 == 0:
                txn.put(call, encode_trace({"env": {}}), db=env.legacy_traced)
            expected[call] = value

    store.env.write(write)
    store.close()
    return expected


def test_a_store_of_format_2_is_moved_into_the_log_once_and_answers_the_same(home, monkeypatch):
    monkeypatch.setattr(log, "_CHUNK", 64)  # several transactions, as a large store takes
    expected = _format_2_store(home, 300)
    store = open_store(home)
    try:
        env = store.env
        assert env.read(lambda txn: txn.get(b"format", db=env.info)) == STORE_FORMAT
        assert env.read(lambda txn: [txn.stat(db)["entries"] for db in (
            env.legacy_results, env.legacy_meta, env.legacy_traced)]) == [0, 0, 0]
        calls = list(expected)
        assert store.results_of(calls) == [expected[c] for c in calls]
        assert store.get_meta(calls[5]) == {"n": 5}
        assert store.env.lookup(calls[7]).trace == encode_trace({"env": {}})
        assert store.env.lookup(calls[8]).trace is None
        assert store.usage().results == 300
        assert verify(store).ok
    finally:
        store.close()
    store = open_store(home)  # opened again: nothing more to do
    try:
        assert store.get_result(calls[299]) == expected[calls[299]]
    finally:
        store.close()
