"""Copies of results sent to a node by another member (``replicate``): what it keeps, and
what it refuses (the swarm tests cover copies between real members)."""

from __future__ import annotations

import json
import os

import pytest
from node_harness import wait_for

from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.net.wire import WireError
from pythagoras_p2p.store.packing import pack
from pythagoras_p2p.trust import NodeKeys
from pythagoras_p2p.trust.provenance import stamp


def _replicate(node, values: list, *, addresses: list | None = None):
    """Send copies of results of ``values`` to ``node``, signed by a member (its home's keys), as
    another member's node sends them."""
    keys = NodeKeys.load_or_create(node.home)
    calls = [os.urandom(32) for _ in values]
    addresses = [a or value_address(v)
                 for v, a in zip(values, addresses or [None] * len(values), strict=True)]
    head = [{"call": c.hex(), "address": a.hex(), "large": False,
             "meta": stamp({"function": "f"}, c, a, keys)}
            for c, a in zip(calls, addresses, strict=True)]
    reply = node.request("replicate", bodies=[json.dumps(head).encode(), *map(pack, values)])
    return calls, reply


def _lacking(node, calls: list) -> list:
    raw = bytes(node.request("offer", bodies=[b"".join(calls)]).bodies[0])
    return [raw[i: i + 32] for i in range(0, len(raw), 32)]


def test_copies_past_the_stores_cap_are_refused_and_nothing_is_written(start_node):
    node = start_node(env={"PYTHAGORAS_STORE_MAX_SIZE": "10M"})  # 6 MiB above the headroom
    kept, reply = _replicate(node, [os.urandom(1000) for _ in range(3)])
    assert reply.fields["stored"] == 3
    with pytest.raises(WireError) as refused:
        _replicate(node, [os.urandom(200_000) for _ in range(40)])  # 8 MB
    assert refused.value.code == "store" and "no room" in str(refused.value)
    assert "refusing copies" in node.log()
    assert node.status()["replication"]["refused"] == 40
    wait_for(lambda: _lacking(node, kept) == [], 30, message="the small copies to be checked and stored")


def test_a_malformed_replicate_is_refused_with_the_reason(start_node):
    node = start_node()
    calls = [os.urandom(32)]
    head = [{"call": calls[0].hex(), "address": value_address(1).hex(), "large": False, "meta": {}}]
    for bodies, reason in (([b"[1, 2]"], "needs call, address"),
                           ([json.dumps(head).encode()], "fewer value bodies"),
                           ([json.dumps(head).encode(), pack(1), pack(2)], "more value bodies")):
        with pytest.raises(WireError) as refused:
            node.request("replicate", bodies=bodies)
        assert refused.value.code == "malformed" and reason in str(refused.value)
    assert _lacking(node, calls) == calls
