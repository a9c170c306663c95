"""A swarm client's journal of the results it keeps the second copy of (store/journal.py)."""

from __future__ import annotations

import os

from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.core import MISSING, open_store
from pythagoras_p2p.store.journal import ClientLog, WriteBehind, read_records, replay_client_logs
from pythagoras_p2p.store.packing import pack


def _records(n: int) -> list:
    return [(os.urandom(32), value_address(i), pack(i), {"function": "f"}) for i in range(n)]


def test_a_live_clients_log_is_left_alone_and_a_dead_ones_is_stored(tmp_path):
    store = open_store(tmp_path / "home")
    log = ClientLog(store)
    records = _records(3)
    log.append(records)
    assert [r[0] for r in read_records(log.path)] == [r[0] for r in records]
    assert replay_client_logs(store) == 0  # its client holds the lock: it lives
    assert store.get_result(records[0][0]) is MISSING
    os.close(log._fd)  # the client dies: the kernel releases its lock, the file stays
    log._fd = -1
    assert replay_client_logs(store) == 3
    assert [store.get_result(r[0]) for r in records] == [0, 1, 2]
    assert not log.path.exists()


def test_write_behind_journals_before_put_returns_and_empties_the_log_once_stored(tmp_path):
    store = open_store(tmp_path / "home")
    writer = WriteBehind(store, durable=True)
    records = _records(5)
    with writer._cond:  # the background writer waits: nothing is stored meanwhile
        writer.put(records)
        path = writer._log.path
        assert [r[0] for r in read_records(path)] == [r[0] for r in records]
        assert store.get_result(records[0][0]) is MISSING
    writer.flush()
    assert [store.get_result(r[0]) for r in records] == list(range(5))
    assert path.stat().st_size == 0
    writer.close()
    assert not path.exists()
