"""The node's write-ahead journal: results acknowledged once written, applied to LMDB behind."""

from __future__ import annotations

import pytest
from helpers import wait_for

from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.core import MISSING, open_store
from pythagoras_p2p.store.journal import Journal
from pythagoras_p2p.store.packing import pack


def record(i: int) -> tuple:
    value = [i, "result"]
    return (bytes([i]) * 32, value_address(value), pack(value), {"function": "f", "duration": 0.0})


def test_results_the_store_refused_stay_in_the_journal_for_the_next_start(tmp_path, monkeypatch):
    store = open_store(tmp_path / "home")
    journal = Journal(store)
    refused = []

    def refuse(records):
        refused.append(len(records))
        raise OSError("no space left on device")

    monkeypatch.setattr(store, "put_results", refuse)
    journal.append([record(1), record(2)])
    wait_for(lambda: journal.stopped, message="the journal to stop after the store refused a write")
    assert refused
    with pytest.raises(RuntimeError, match="closed"):
        journal.append([record(3)])  # it stopped: a node answers such calls with an error
    journal.close()
    monkeypatch.undo()
    assert store.get_result(record(1)[0]) is MISSING
    assert len(list((tmp_path / "home" / "journal").glob("*.log"))) >= 1
    Journal(store).close()  # the next start replays them
    assert store.get_result(record(1)[0]) == [1, "result"]
    assert store.get_result(record(2)[0]) == [2, "result"]


def test_a_full_disk_fails_the_append_and_leaves_no_part_of_it(tmp_path, monkeypatch):
    import errno
    import os

    import pythagoras_p2p.store.journal as journal_module

    store = open_store(tmp_path / "home")
    journal = Journal(store)
    journal.append([record(1)])
    segment = next((tmp_path / "home" / "journal").glob("*.log"))
    size = segment.stat().st_size
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", half_then_full)
    with pytest.raises(RuntimeError, match="No space left"):
        journal.append([record(2)])
    assert segment.stat().st_size == size  # no torn record hides later ones at replay
    monkeypatch.setattr(journal_module.os, "write", real_write)
    journal.append([record(3)])  # room again: it goes on
    journal.close()
    assert store.get_result(record(3)[0]) == [3, "result"]
    assert store.get_result(record(2)[0]) is MISSING


def test_a_full_disk_when_a_segment_is_due_keeps_the_journal_appending(tmp_path, monkeypatch):
    import errno
    import os

    import pythagoras_p2p.store.journal as journal_module

    store = open_store(tmp_path / "home")
    journal = Journal(store)
    monkeypatch.setattr(journal_module, "_SEGMENT_BYTES", 1)  # every append is due a new one
    real_open = os.open

    def no_new_files(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(journal_module.os, "open", no_new_files)
    journal.append([record(1)])  # written; the next segment could not be started
    journal.append([record(2)])
    monkeypatch.setattr(journal_module.os, "open", real_open)
    journal.append([record(3)])
    journal.close()
    for i in (1, 2, 3):
        assert store.get_result(record(i)[0]) == [i, "result"]
