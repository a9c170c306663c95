"""Results carry provenance, on namespace hosts: each result names and is signed by the member
that computed it; a copy signed by a key the swarm does not know is refused; a member removed
with ``--drop-results`` has its results dropped on every node, and their copies refused after.

One LAN of three hosts serves the module (``--replicas 3``: every node holds every result),
each host with its own member keys on one signed member list; the last test removes host 1
with ``pythagoras-node remove --drop-results`` on host 0. The tests run in file order.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from clients import WHERE, Client, read_marks
from helpers import wait_for
from netns import start_lan

R = 3
N = 18


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    root = tmp_path_factory.mktemp("provenance")
    lan = start_lan(root / "lan", 3, start=False)  # each host a member (an admin) of one swarm
    try:
        for host in lan.hosts:
            host.start_node(workers=2, extra=["--replicas", str(R)])
        wait_for(lambda: all(h.node_info() for h in lan.hosts), 30, message="nodes to serve")
        ids = {h.node_info()["id"] for h in lan.hosts}
        for host in lan.hosts:
            wait_for(lambda host=host: {p["id"] for p in host.status()["peers"]} == ids, 30,
                     interval=0.1, message=f"host {host.index} to list every node")
        yield lan
    finally:
        lan.close()


def _key_id(host) -> str:
    from pythagoras_p2p.trust import NodeKeys

    return NodeKeys.load(host.home).key_id


def _by_member(host, name: str) -> dict:
    out = host.cli("cache", "ls", name, "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    return {w["key_id"]: w["results"] for w in listed[0]["computed_by"]} if listed else {}


def test_every_result_names_and_is_signed_by_the_member_that_computed_it(lan):
    marks = lan.root / "marks"
    marks.mkdir()
    out = Client(lan.hosts[0], WHERE + textwrap.dedent(f"""
        results = where.sync_parallel(kw_args(x=i, marks={str(marks)!r}) for i in range({N}))
        looked = [where.lookup(x=i, marks={str(marks)!r}) for i in range({N})]
        here = where(x=-1)  # computed in this process: claimed here, signed as copies leave
        emit(homes=[r[1] for r in results], by=[l.computed_by for l in looked],
             name=where.qualified_name, here=where.lookup(x=-1).computed_by)
    """)).result()
    assert out["here"]["key_id"] == _key_id(lan.hosts[0])
    key_of = {str(h.home): _key_id(h) for h in lan.hosts}
    host_of = {str(h.home): h.hostname for h in lan.hosts}
    assert [b["key_id"] for b in out["by"]] == [key_of[home] for home in out["homes"]]
    assert [b["host"] for b in out["by"]] == [host_of[home] for home in out["homes"]]
    lan.name_of_f = out["name"]
    counted = {key_of[home]: out["homes"].count(home) for home in set(out["homes"])}
    counted[key_of[str(lan.hosts[0].home)]] = counted.get(key_of[str(lan.hosts[0].home)], 0) + 1
    for host in lan.hosts:  # every node holds every result, each saying who computed it
        wait_for(lambda host=host: _by_member(host, out["name"]) == counted or None, 60,
                 interval=0.2, message=f"host {host.index} to hold every result")
    assert len(read_marks(marks)) == N


_COPY = """
    import json, os, sys
    from pythagoras_p2p.identity.encoding import value_address
    from pythagoras_p2p.net.rpc import request
    from pythagoras_p2p.net.security import load_key
    from pythagoras_p2p.store.packing import pack
    from pythagoras_p2p.trust import NodeKeys
    from pythagoras_p2p.trust.provenance import stamp
    signer = NodeKeys.generate() if {stranger} else NodeKeys.load({signer!r} or os.environ["PYTHAGORAS_HOME"])
    call = os.urandom(32)
    meta = stamp({{"function": "forged.f"}}, call, value_address(7), signer)
    head = [{{"call": call.hex(), "address": value_address(7).hex(), "large": False, "meta": meta}}]
    reply = request("tcp://{to}:7575", load_key(os.environ["PYTHAGORAS_HOME"]), "replicate",
                    bodies=[json.dumps(head).encode(), pack(7)])
    print(json.dumps({{"call": call.hex(), "refused": reply.fields["refused"]}}))
"""


def _send_copy(sender, to, *, stranger: bool, signed_by=None) -> dict:
    """A copy of a new result sent by ``sender``'s member keys to ``to``, signed by a key on no
    list (``stranger``), by ``signed_by``'s member key, or by the sender's."""
    signer = str(signed_by.home) if signed_by is not None else ""
    out = sender.run_python(textwrap.dedent(_COPY.format(stranger=stranger, to=to.ip,
                                                         signer=signer)))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _lacks(host, call_hex: str) -> bool:
    out = host.run_python(textwrap.dedent(f"""
        import os
        from pythagoras_p2p.net.rpc import request
        from pythagoras_p2p.net.security import load_key
        call = bytes.fromhex({call_hex!r})
        reply = request("tcp://{host.ip}:7575", load_key(os.environ["PYTHAGORAS_HOME"]), "offer",
                        bodies=[call])
        print(call in bytes(reply.bodies[0]))
    """))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


def test_a_copy_signed_by_a_key_the_swarm_does_not_know_is_refused(lan):
    h0, h1 = lan.hosts[:2]
    forged = _send_copy(h0, h1, stranger=True)
    assert forged["refused"] == [forged["call"]]
    assert _lacks(h1, forged["call"])  # never stored
    assert "a key that is no member of the swarm" in h1.log.read_text()
    signed = _send_copy(h0, h1, stranger=False)  # the control: signed by host 0's member key
    assert signed["refused"] == []
    wait_for(lambda: not _lacks(h1, signed["call"]) or None, 30, interval=0.1,
             message="host 1 to store the member's copy once checked")


def test_a_result_from_before_member_keys_stays_where_it_is(lan):
    """An unsigned result in a node's store is not sent (members would refuse it); a result a
    client of the home claimed is signed by the node as it leaves."""
    h0, h1 = lan.hosts[:2]
    out = h0.run_python(textwrap.dedent("""
        import json, os
        from pythagoras_p2p.identity.encoding import value_address
        from pythagoras_p2p.store.core import open_store
        from pythagoras_p2p.store.packing import pack
        from pythagoras_p2p.trust import NodeKeys
        from pythagoras_p2p.trust.provenance import claim
        home = os.environ["PYTHAGORAS_HOME"]
        old, new = os.urandom(32), os.urandom(32)
        mine = claim({"function": "before.f"}, NodeKeys.load(home))
        open_store(home).put_results([(old, value_address(5), pack(5), {"function": "before.f"}),
                                      (new, value_address(6), pack(6), mine)])
        print(json.dumps({"old": old.hex(), "new": new.hex()}))
    """))
    assert out.returncode == 0, out.stderr
    calls = json.loads(out.stdout.strip().splitlines()[-1])
    wait_for(lambda: not _lacks(h1, calls["new"]) or None, 60, interval=0.2,
             message="host 1 to receive the claimed result, signed by host 0's node")
    assert _lacks(h1, calls["old"])
    assert "carries no signature" not in h1.log.read_text()  # never sent, so never refused


def test_drop_results_drops_exactly_that_members_results_on_every_node(lan):
    h0, h1, h2 = lan.hosts
    name = lan.name_of_f
    gone = _key_id(h1)
    before = {h.index: _by_member(h, name) for h in lan.hosts}
    assert before[0].get(gone), "host 1 computed none of the results: nothing to drop"
    removed = h0.cli("remove", h1.hostname, "--drop-results")  # on an admin: the list travels
    assert removed.returncode == 0, removed.stderr
    expected = {k: n for k, n in before[0].items() if k != gone}
    for host in (h0, h2):  # every member; host 1 is none any more
        wait_for(lambda host=host: _by_member(host, name) == expected or None, 30, interval=0.2,
                 message=f"host {host.index} to drop host 1's results, and only those")
    said = f"dropped {before[0][gone]} result(s) computed by {h1.hostname}"
    for host in (h0, h2):
        wait_for(lambda host=host: said in host.log.read_text() or None, 10, interval=0.1,
                 message=f"host {host.index} to log what it dropped")
    marks = lan.root / "marks"
    ran = len(read_marks(marks))
    again = Client(h0, WHERE + textwrap.dedent(f"""
        results = where.sync_parallel(kw_args(x=i, marks={str(marks)!r}) for i in range({N}))
        emit(values=[r[0] for r in results], homes=results)
    """)).result()
    assert again["values"] == [i * i for i in range(N)]
    assert all(r[1] != str(h1.home) for r in again["homes"])  # not on the removed member
    assert len(read_marks(marks)) - ran == before[0][gone]  # exactly the dropped ones ran again
    later = _send_copy(h0, h2, stranger=False, signed_by=h1)  # one host 1 signed: refused
    assert later["refused"] == [later["call"]]
    assert "a removed member whose results were dropped" in h2.log.read_text()
