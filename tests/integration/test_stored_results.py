"""Inspecting and forgetting stored results: ``f.lookup``, ``f.forget``, ``f.forget_all`` and
``pythagoras-node cache ls|forget``."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC

from node_harness import cli

from pythagoras_p2p import kw_args


def double(*, x):
    return [x] * 1000


def triple(*, x):
    return 3 * x


def test_lookup_describes_a_stored_call_without_computing_it(cloud):
    f = cloud.add_pure_function(double)
    assert f.lookup(x=1) is None  # nothing computed by looking
    assert f.lookup(x=1) is None
    before = time.time()
    f.sync_parallel([kw_args(x=1), kw_args(x=2)])
    f(x=3)
    for x in (1, 2, 3):
        info = f.lookup(x=x)
        assert info is not None and info.function == f.qualified_name
        assert info.function == f"{__name__}.double"  # module.qualname: other modules' `double`s differ
        assert info.address == f.address(x=x).hex()
        assert info.computed_on == socket.gethostname() and info.worker
        assert info.duration is not None and info.duration >= 0
        assert before - 1 <= info.stored.timestamp() <= time.time() + 1 and info.nbytes > 1000
    assert f.lookup(x=4) is None


def test_lookup_gives_utc_datetimes_a_readable_repr_and_json(cloud):
    import json
    from datetime import datetime

    f = cloud.add_pure_function(double)
    f(x=5)
    info = f.lookup(x=5)
    for when in (info.started, info.stored):
        assert isinstance(when, datetime) and when.utcoffset() is not None
        assert when.tzinfo == UTC
        assert abs(when.timestamp() - time.time()) < 600
    assert info.started <= info.stored
    text = repr(info)
    assert "double" in text and f"{info.started:%Y-%m-%d %H:%M:%S} UTC" in text
    assert socket.gethostname() in text and "e+" not in text and "e-" not in text and "17" not in text.split("UTC")[1]
    data = json.loads(json.dumps(info.as_dict()))
    assert datetime.fromisoformat(data["stored"]) == info.stored


def test_forget_one_call_and_every_call_of_a_function(cloud, tmp_path):
    runs = tmp_path / "runs"

    def counted(*, x, log=str(runs)):
        with open(log, "a") as fh:
            fh.write(f"{x}\n")
        return x

    f = cloud.add_pure_function(counted)
    g = cloud.add_pure_function(triple)
    assert [f(x=i) for i in range(3)] == [0, 1, 2] and g(x=1) == 3
    assert f.forget(x=1) is True and f.forget(x=1) is False
    assert f.lookup(x=1) is None and f.lookup(x=0) is not None
    assert f(x=1) == 1 and runs.read_text().split() == ["0", "1", "2", "1"]  # computed again
    assert f.forget_all() == 3
    assert all(f.lookup(x=i) is None for i in range(3))
    assert g.lookup(x=1) is not None  # another function's results stay


def test_cache_ls_and_forget(cloud, home):
    f = cloud.add_pure_function(double)
    g = cloud.add_pure_function(triple)
    f.sync_parallel([kw_args(x=i) for i in range(4)])
    g(x=1)
    double_, triple_ = f.qualified_name, g.qualified_name
    out = cli(home, "cache", "ls", "--json")
    assert out.returncode == 0, out.stderr
    entries = {e["function"]: e for e in json.loads(out.stdout)}
    assert entries[double_]["results"] == 4 and entries[triple_]["results"] == 1
    assert entries[double_]["nbytes"] > entries[triple_]["nbytes"]
    assert entries[double_]["last_stored"] is not None
    table = cli(home, "cache", "ls")
    assert table.returncode == 0 and "double" in table.stdout and "triple" in table.stdout
    only = json.loads(cli(home, "cache", "ls", triple_, "--json").stdout)
    assert [e["function"] for e in only] == [triple_]
    short = cli(home, "cache", "forget", "double")  # the short name matches no function
    assert short.returncode != 0 and repr(double_) in short.stderr, short.stderr
    assert f.lookup(x=0) is not None
    gone = cli(home, "cache", "forget", double_)
    assert gone.returncode == 0 and "forgot 4 results" in gone.stdout, gone.stderr
    assert f"deleting 4 result(s) of {double_!r}" in gone.stdout  # listed before it deletes
    assert f.fingerprint.hex()[:16] in gone.stdout  # the version it deletes
    assert f.lookup(x=0) is None and g.lookup(x=1) is not None
    again = cli(home, "cache", "forget", double_)
    assert again.returncode != 0 and "cache ls" in again.stderr and "Traceback" not in again.stderr


def test_cache_forget_matches_the_qualified_name_only(cloud, home):
    """Two functions called ``double`` in two modules: forgetting one leaves the other."""
    import types

    other = types.ModuleType("elsewhere")
    exec("def double(*, x):\n    return [x, x]\n", other.__dict__)
    other.double.__module__ = "elsewhere"
    f = cloud.add_pure_function(double)
    g = cloud.add_pure_function(other.double)
    assert f.qualified_name != g.qualified_name == "elsewhere.double"
    f(x=1), g(x=1)
    gone = cli(home, "cache", "forget", "elsewhere.double")
    assert gone.returncode == 0 and "forgot 1 results" in gone.stdout, gone.stderr
    assert g.lookup(x=1) is None and f.lookup(x=1) is not None


def test_cache_forget_with_a_node_running_forgets_on_its_peers_too(start_node, make_client):
    from node_harness import wait_for

    first = start_node("first")
    second = start_node("second", key_from=first.home, extra=("--peer", first.connection))
    wait_for(lambda: second.request("peers").fields["peers"] or None, timeout=30,
             message="the second node to know the first")
    client = make_client(second)  # stores results on the nodes' stores through their workers
    f = client.add_pure_function(triple)
    f.sync_parallel([kw_args(x=i) for i in range(6)])
    name = f.qualified_name
    held = {n.home.name: json.loads(cli(n.home, "cache", "ls", name, "--json").stdout)
            for n in (first, second)}
    total = sum(e[0]["results"] for e in held.values() if e)
    assert total >= 6, held
    asked = cli(second.home, "cache", "forget", name, "--swarm")  # no terminal to confirm on
    assert asked.returncode != 0 and "--yes" in asked.stderr, asked.stderr
    out = cli(second.home, "cache", "forget", name, "--swarm", "--yes")
    assert out.returncode == 0, out.stderr
    assert "this machine" in out.stdout and first.connection in out.stdout, out.stdout
    for n in (first, second):
        assert json.loads(cli(n.home, "cache", "ls", name, "--json").stdout) == []
    wait_for(lambda: "forgot" in first.log() and "asked by" in first.log() or None,
             timeout=10, message="the first node to log who asked it to forget")


def test_a_result_copied_from_another_machine_keeps_its_metadata(node, make_client):
    first, second = make_client(node, "first"), make_client(node, "second")
    f = first.add_pure_function(triple)
    f.sync_parallel([kw_args(x=i) for i in range(3)])
    g = second.add_pure_function(triple)
    assert g(x=1) == 3  # found on the node, copied into the second home's store
    info = g.lookup(x=1)
    assert info is not None and info.computed_on and info.worker and info.duration is not None
    from pythagoras_p2p.trust import NodeKeys

    # computed by the node's worker: signed with the node's member key, which the copy names
    assert info.computed_by == {"key_id": NodeKeys.load(node.home).key_id,
                                "host": socket.gethostname()}
    assert f"member {info.computed_by['key_id']}" in repr(info)


def test_cache_ls_json_says_who_computed_the_results(cloud, home):
    from pythagoras_p2p.trust import NodeKeys

    f = cloud.add_pure_function(triple)
    f(x=1)  # this home has no member keys yet: unsigned
    keys = NodeKeys.load_or_create(home)
    cloud._member_keys = False  # as a new process of this home would, it finds the keys
    f(x=2), f.sync_parallel([kw_args(x=3)])
    assert f.lookup(x=1).computed_by is None
    assert f.lookup(x=2).computed_by["key_id"] == keys.key_id
    assert f.lookup(x=3).computed_by["key_id"] == keys.key_id  # computed by a worker here
    out = cli(home, "cache", "ls", f.qualified_name, "--json")
    assert out.returncode == 0, out.stderr
    by = {w["key_id"]: w["results"] for w in json.loads(out.stdout)[0]["computed_by"]}
    assert by == {keys.key_id: 2, None: 1}


def test_a_peers_copy_not_signed_by_a_member_is_computed_again(node, make_client, tmp_path):
    from node_harness import copy_key

    from pythagoras_p2p.trust import Member, Members, NodeKeys, SwarmSigningKey

    f = make_client(node, "first").add_pure_function(triple)
    f.sync_parallel([kw_args(x=i) for i in range(2)])  # on the node, signed with its key
    home = tmp_path / "second"  # a home whose member list does not hold the node's key
    copy_key(node.home, home)
    swarm, mine = SwarmSigningKey.create(home), NodeKeys.load_or_create(home)
    Members.first("elsewhere", swarm, Member.certify(
        node_id="", hostname="here", owner="me", roles=("admin",), curve_public=mine.curve_public,
        signing_public=mine.signing_public, swarm_public=swarm.public, issuer="swarm",
        sign=swarm.sign)).save(home)
    from pythagoras_p2p import PCloud

    cloud = PCloud(connection=node.connection, home=home)  # (make_client would admit it again)
    try:
        g = cloud.add_pure_function(triple)
        assert g(x=1) == 3
        assert g.lookup(x=1).computed_by["key_id"] == mine.key_id  # computed here, not copied
    finally:
        cloud.close()
    assert f.lookup(x=1).computed_by["key_id"] == NodeKeys.load(node.home).key_id
