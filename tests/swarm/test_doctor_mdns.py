"""``pythagoras-node doctor`` on namespace hosts: it hears its own mDNS announcement and the
swarm's other node, and checks that node as a peer (found through this machine's node)."""

from __future__ import annotations

import json

from helpers import wait_for


def test_doctor_hears_itself_and_the_swarm_on_mdns(lan_factory):
    lan = lan_factory(2, workers=1)
    first, second = lan.hosts
    other = second.node_info()["id"]
    wait_for(lambda: other in {p["id"] for p in first.status()["peers"]}, 30,
             message="the nodes to find each other")
    # A generous wait for a loaded machine: listening stops soon after the answers stop.
    done = first.cli("doctor", "--json", "--mdns-wait", "20", timeout=90)
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], report
    mdns = " ".join(f["message"] for f in report["findings"] if f["check"] == "mdns")
    assert "hears its own mDNS announcement" in mdns and other in mdns, report
    peers = [f for f in report["findings"] if f["check"] == "peer"]
    assert any(f["details"]["node"] == other and f["level"] == "ok" for f in peers), peers
