"""A node keeps serving through what members, calls and full disks throw at it.

Some tests drive a node in this process (its loop pumped by the test, its replies captured), so
an interleaving can be made exactly; the others run a real ``pythagoras-node`` and a client.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import zmq
from node_harness import free_port, make_key, wait_for

from pythagoras_p2p import PythagorasError, RemoteError
from pythagoras_p2p.errors import StoreFullError
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.net import wire
from pythagoras_p2p.store.packing import pack_parts


@pytest.fixture
def inproc(tmp_path, monkeypatch):
    """A node in this process whose replies land in ``node.replies`` (parsed) and, as sent
    (not yet written to a socket: their buffers still referenced), in ``node.unsent``."""
    from pythagoras_p2p.daemon.node import Node, NodeConfig

    home = tmp_path / "inproc"
    key = make_key(home)
    node = Node(NodeConfig(home=home, bind="127.0.0.1", port=free_port(), workers=1, mdns=False), key)
    node.replies, node.unsent = [], []

    def send(ident, frames):
        node.unsent.append(frames)
        node.replies.append((ident, wire.parse([bytes(f) for f in frames])))

    monkeypatch.setattr(node.outbox, "send", send)
    yield node
    node.close()


def _deliver(node, ident: bytes, frames: list) -> None:
    node.handlers.handle([zmq.Frame(ident), *[zmq.Frame(f) for f in frames]])


def _reply(node, request_id: int):
    for _, msg in node.replies:
        if msg.id == request_id:
            return msg
    return None


def _packed(value) -> bytes:
    return b"".join(bytes(p) for p in pack_parts(value))


def test_an_upload_being_checked_can_be_neither_changed_nor_swapped(inproc):
    value = np.arange(700_000, dtype=np.float64)  # 5.6 MB: two chunks
    address, data = value_address(value), _packed(value)
    total, first = len(data), wire.CHUNK
    _deliver(inproc, b"member", wire.build("put", 0, [data[:first]], address=address, offset=0,
                                           total=total))
    _deliver(inproc, b"member", wire.build("put", 5, [data[first:]], address=address, offset=first,
                                           total=total))  # complete: a worker checks it now
    other = _packed("not the array")
    _deliver(inproc, b"member", wire.build("put", 6, [data[:10]], address=address, offset=0,
                                           total=total + 1))  # a changed size ...
    _deliver(inproc, b"member", wire.build("put", 7, [other], address=address, offset=0,
                                           total=len(other)))  # ... and other bytes
    assert _reply(inproc, 6).fields["code"] == "busy"
    assert _reply(inproc, 7).fields["code"] == "busy"
    wait_for(lambda: inproc.pump(0.05) or _reply(inproc, 5) is not None, 60,
             message="the check of the upload")
    assert _reply(inproc, 5).op == "ok"
    assert np.array_equal(inproc.store.get_value(address), value)
    assert not list((inproc.home / "incoming").iterdir())


def test_a_value_the_store_cannot_keep_is_refused_and_the_node_goes_on(inproc, monkeypatch):
    value = np.arange(100_000, dtype=np.float64)
    address, data = value_address(value), _packed(value)

    def full(*args, **kwargs):
        raise StoreFullError("the store is full; `pythagoras-node cache gc` makes room")

    monkeypatch.setattr(inproc.store, "adopt_file", full)
    _deliver(inproc, b"member", wire.build("put", 3, [data], address=address, offset=0,
                                           total=len(data)))
    wait_for(lambda: inproc.pump(0.05) or _reply(inproc, 3) is not None, 60,
             message="the answer to the upload")
    assert _reply(inproc, 3).op == "error" and _reply(inproc, 3).fields["code"] == "store"
    assert not list((inproc.home / "incoming").iterdir())
    _deliver(inproc, b"member", wire.build("probe", 4))
    assert _reply(inproc, 4).op == "ok"


def test_requests_carried_by_one_many_are_each_served_and_a_bad_bundle_is_refused(inproc):
    _deliver(inproc, b"c1", wire.bundle([wire.build("probe", 1), wire.build("probe", 2)])[0])
    assert [_reply(inproc, i).op for i in (1, 2)] == ["ok", "ok"]
    nested = wire.bundle([wire.build("probe", 3), wire.build("probe", 4)])[0]
    _deliver(inproc, b"c1", wire.bundle([nested, wire.build("probe", 5)])[0])
    refused = _reply(inproc, 0)
    assert refused.op == "error" and "cannot carry another" in refused.fields["message"]
    assert _reply(inproc, 5).op == "ok"
    inproc.replies.clear()
    _deliver(inproc, b"c1", wire.build("many", 0, [b"{}"], counts=[2]))
    refused = _reply(inproc, 0)
    assert refused.fields["code"] == wire.ERR_MALFORMED and "counts" in refused.fields["message"]


def test_a_request_that_finds_every_reader_slot_held_is_refused_for_now(inproc, monkeypatch):
    from pythagoras_p2p.store.env import ReadersBusyError

    def busy(*args, **kwargs):
        raise ReadersBusyError("every reader slot of the store is held by a running process")

    call = b"\x07" * 32
    with monkeypatch.context() as patch:
        patch.setattr(inproc.store.env, "read", busy)
        patch.setattr(inproc.store.env, "lookup", busy)
        _deliver(inproc, b"member", wire.build("lookup", 8, calls=[call]))
    refused = _reply(inproc, 8)
    assert refused.op == "error" and refused.fields["code"] == wire.ERR_BUSY
    assert "reader slot" in refused.fields["message"]
    _deliver(inproc, b"member", wire.build("lookup", 9, calls=[call]))  # the slots came free
    assert _reply(inproc, 9).op == "ok" and _reply(inproc, 9).fields["found"] == []


def test_chunks_asked_for_and_never_read_hold_no_descriptors(inproc):
    value = np.arange(100_000, dtype=np.float64)  # in its own file
    address = value_address(value)
    inproc.store.put_value(address, pack_parts(value))
    before = len(os.listdir("/proc/self/fd"))
    for i in range(300):
        _deliver(inproc, b"member", wire.build("get", 100 + i, address=address, offset=0))
    assert len(inproc.replies) == 300  # every chunk is still referenced (unsent) here
    assert len(os.listdir("/proc/self/fd")) - before < 20


def _raises(kind: str):
    def fail(*, size):
        if kind == "surrogate":
            raise ValueError("cannot read " + b"caf\xe9.txt".decode("utf-8", "surrogateescape"))
        raise ValueError("y" * size)

    return fail


def test_a_failure_with_text_utf8_cannot_carry_reaches_the_caller(node, make_client):
    cloud = make_client(node)
    f = cloud.add_pure_function(_raises("surrogate"))
    with pytest.raises(ValueError, match="cannot read caf"):
        f.sync_remote(size=0)
    assert node.alive() and node.serves(), node.log()


def test_a_failure_too_large_for_one_message_reaches_the_caller_shortened(node, make_client):
    cloud = make_client(node)
    f = cloud.add_pure_function(_raises("huge"))
    with pytest.raises((ValueError, RemoteError, PythagorasError)) as caught:
        f.sync_remote(size=20_000_000)  # a 20 MB message, twice over: pickle and traceback
    assert "ValueError" in str(caught.value) or isinstance(caught.value, ValueError)
    assert node.alive() and node.serves(), node.log()
    assert node.status()["tasks_done"] == 1  # it ran once: not again and again


def test_a_chunk_that_cannot_be_read_is_answered_as_missing(inproc, monkeypatch):
    """A download must fail at once, not wait: the client only knows which download an
    answer to a chunk belongs to from a 'missing' answer naming the value."""
    import pythagoras_p2p.daemon.uploads as handlers_module  # where values are served

    def unreadable(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(handlers_module, "value_chunk", unreadable)
    address = b"\x07" * 32
    _deliver(inproc, b"member", wire.build("get", 0, address=address, offset=0))
    (_, reply), = inproc.replies
    assert reply.op == "error" and reply.fields["code"] == "missing"
    assert reply.fields["message"] == address.hex()
