"""Nodes on separate hosts find each other over mDNS, and forget a peer that goes silent."""

from __future__ import annotations

import signal

from helpers import wait_for as wait_until


def _ids(status: dict) -> set[str]:
    return {p["id"] for p in status["peers"]}


def test_every_node_lists_the_whole_swarm(lan_factory):
    lan = lan_factory(3)
    ids = {h.node_info()["id"] for h in lan.hosts}
    for host in lan.hosts:

        def complete(h=host):
            status = h.status()
            return status if _ids(status) == ids else None

        status = wait_until(complete, 30, message=f"{host.ns} to list every node")
        assert sum(p["self"] for p in status["peers"]) == 1
        others = [p for p in status["peers"] if not p["self"]]
        assert {p["address"].split(":")[0] for p in others} <= {h.ip for h in lan.hosts}
        assert all(p["workers_total"] == 2 and p["last_seen_s"] < 5 for p in others)


def test_a_silent_peer_is_dropped_within_five_seconds(lan_factory):
    lan = lan_factory(2)
    first, second = lan.hosts
    second_id = second.node_info()["id"]
    wait_until(lambda: second_id in _ids(first.status()), 30, message="the peer to be listed")
    second.signal_node(signal.SIGSTOP)
    try:
        import time

        stopped = time.monotonic()
        wait_until(lambda: second_id not in _ids(first.status()), 15, message="the frozen peer to go")
        assert time.monotonic() - stopped < 8  # 5 s of silence, plus a status round trip
    finally:
        second.signal_node(signal.SIGCONT)
