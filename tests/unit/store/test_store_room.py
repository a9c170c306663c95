"""The store's cap covers the files of large values: they are counted exactly, whoever writes
or deletes them, and a value whose file would pass the cap is refused before anything is
written, losing nothing stored before."""

from __future__ import annotations

import os

import pytest
from blake3 import blake3

from pythagoras_p2p.errors import StoreFullError
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store import room
from pythagoras_p2p.store.core import MISSING, open_store
from pythagoras_p2p.store.maintenance import gc, verify
from pythagoras_p2p.store.packing import pack

MiB = 1 << 20


def call_for(n: int) -> bytes:
    return blake3(b"room-call-%d" % n).digest()


def big(n: int, size: int = 300_000) -> bytes:
    return n.to_bytes(4, "little") * (size // 4)


def on_disk(store) -> int:
    """The bytes of the value files under blobs/, each inode once (temporary files left out)."""
    seen, total = set(), 0
    for path in store.blobs.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            st = path.stat()
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


@pytest.fixture
def store(home):
    s = open_store(home)
    yield s
    s.close()


@pytest.fixture
def capped(home, monkeypatch):
    monkeypatch.setenv("PYTHAGORAS_STORE_MAX_SIZE", "8M")  # 4 MiB below the headroom
    s = open_store(home)
    yield s
    s.close()


def test_the_files_are_counted_through_every_write_and_delete(store, home):
    assert store.file_bytes() == 0
    values = [big(n) for n in range(6)]
    addresses = [value_address(v) for v in values]
    store.put_results([(call_for(n), addresses[n], pack(values[n]), {}) for n in (0, 1, 0)])
    store.put_value(addresses[1], pack(values[1]))  # there already: nothing more
    assert store.file_bytes() == on_disk(store) > 0

    assert store.keep_transient(addresses[2], lambda: [pack(values[2])])  # an argument
    assert store.file_bytes() == on_disk(store)
    store.put_results([(call_for(2), addresses[2], None, {})])  # it became a result: linked
    assert store.drop_transient([addresses[2]]) == 0
    assert store.file_bytes() == on_disk(store)
    assert store.keep_transient(addresses[3], lambda: [pack(values[3])])
    assert store.drop_transient([addresses[3]]) == 1
    assert store.file_bytes() == on_disk(store)

    download = home / "blobs" / ".incoming"
    download.write_bytes(pack(values[4]))
    store.adopt_file(addresses[4], download)  # a value fetched from a peer
    assert store.file_bytes() == on_disk(store)

    path = store.blob_path(addresses[0])  # damaged on disk: removed when read
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.get_result(call_for(0)) is MISSING
    assert store.file_bytes() == on_disk(store)

    assert gc(store).values_removed == 1  # the fetched value, named by no result
    assert store.file_bytes() == on_disk(store)
    path = store.blob_path(addresses[1])
    path.write_bytes(b"Z" + path.read_bytes()[1:])  # an unknown format: it does not decode
    assert not verify(store, repair=True).ok
    assert store.file_bytes() == on_disk(store)
    assert store.get_result(call_for(2)) == values[2]


def test_a_store_written_before_the_files_were_counted_counts_them_when_opened(home):
    store = open_store(home)
    store.put_results([(call_for(n), value_address(big(n)), pack(big(n)), {}) for n in range(3)])
    expected = store.file_bytes()
    assert expected == on_disk(store) > 0

    def forget_counter(txn):
        txn.delete(room.FILE_BYTES, db=store.env.info)

    store.env.write(forget_counter)
    assert store.file_bytes() == 0
    store.close()
    again = open_store(home)
    try:
        assert again.file_bytes() == expected
    finally:
        again.close()


def test_two_values_whose_files_pass_the_cap_are_not_both_stored(capped):
    first, second = big(1, 3 * MiB), big(2, 3 * MiB)
    capped.put_results([(call_for(1), value_address(first), pack(first), {})])
    with pytest.raises(StoreFullError) as caught:
        capped.put_results([(call_for(2), value_address(second), pack(second), {})])
    message = str(caught.value)
    assert "PYTHAGORAS_STORE_MAX_SIZE" in message and "cache gc" in message
    assert "value files take" in message
    assert not capped.blob_path(value_address(second)).exists()  # refused before writing
    with pytest.raises(StoreFullError):  # nor as an argument's transient copy
        capped.keep_transient(value_address(second), lambda: [pack(second)])
    with pytest.raises(StoreFullError):
        capped.put_value(value_address(second), pack(second))
    assert capped.get_result(call_for(2)) is MISSING
    assert capped.get_result(call_for(1)) == first  # what was stored is intact
    assert capped.file_bytes() == on_disk(capped) < 4 * MiB
    small = b"small"
    capped.put_results([(call_for(3), value_address(small), pack(small), {})])  # LMDB has room
    assert capped.get_result(call_for(3)) == small


def test_a_commit_of_values_that_do_not_fit_together_writes_none_of_them(capped):
    values = [big(n, 1536 * 1024) for n in range(3)]  # 4.5 MiB together
    with pytest.raises(StoreFullError):
        capped.put_results([(call_for(n), value_address(v), pack(v), {})
                            for n, v in enumerate(values)])
    assert on_disk(capped) == capped.file_bytes() == 0
    assert not [p for p in capped.blobs.rglob("*") if p.is_file()]
    capped.put_results([(call_for(n), value_address(v), pack(v), {})
                        for n, v in enumerate(values[:2])])
    assert [capped.get_result(call_for(n)) for n in range(2)] == values[:2]


def test_room_made_by_gc_is_room_again(capped):
    first, second = big(1, 3 * MiB), big(2, 3 * MiB)
    capped.put_results([(call_for(1), value_address(first), pack(first), {})])
    with pytest.raises(StoreFullError):
        capped.put_results([(call_for(2), value_address(second), pack(second), {})])
    from pythagoras_p2p.store.listing import forget

    assert forget(capped, [call_for(1)]) == 1
    assert gc(capped).values_removed == 1
    assert capped.file_bytes() == 0
    capped.put_results([(call_for(2), value_address(second), pack(second), {})])
    assert capped.get_result(call_for(2)) == second
    assert os.path.getsize(capped.blob_path(value_address(second))) == capped.file_bytes()
