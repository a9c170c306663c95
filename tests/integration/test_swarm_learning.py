"""A client trusts a miss only once it knows the swarm, and waits for that a bounded time.

A node named a ``--peer`` that never answers is not settled until that peer has failed once
(5 s of silence): it answers lookups with ``settled: false``. A client that may wait less than
that (``SWARM_LEARN_WAIT``) computes its calls, saying once that the swarm is not fully known.
The namespace tests (tests/swarm/test_churn.py) show the other side: clients that do learn the
swarm in time find every stored result.
"""

from __future__ import annotations

import logging
import time

from helpers import wait_for
from node_harness import copy_key, free_port, marker_function

from pythagoras_p2p import PCloud
from pythagoras_p2p.net.rpc import request
from pythagoras_p2p.swarm import connections


def _settled(node) -> bool:
    return request(node.endpoint, node.key, "lookup", calls=["00" * 32]).fields["settled"]


def test_a_client_that_cannot_learn_the_swarm_in_time_computes_saying_so_once(
        start_node, tmp_path, monkeypatch, caplog):
    node = start_node("unsettled", extra=("--peer", f"127.0.0.1:{free_port()}"))
    assert _settled(node) is False  # its named peer has neither answered nor failed yet
    monkeypatch.setattr(connections, "SWARM_LEARN_WAIT", 0.5)
    home = tmp_path / "client"
    copy_key(node.home, home)
    cloud = PCloud(connection=node.connection, home=home)
    try:
        f = cloud.add_pure_function(marker_function())
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="pythagoras_p2p.swarm.exchange"):
            f.sync_remote(path=str(tmp_path / "a"))
            f.sync_remote(path=str(tmp_path / "b"))
        took = time.monotonic() - started
    finally:
        cloud.close()
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()  # computed
    said = [r for r in caplog.records if "not fully known" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert took < 4, f"the client waited {took:.1f} s, not the 0.5 s it was given"
    wait_for(lambda: _settled(node), 20, interval=0.2,
             message="the node to settle once its named peer failed")
