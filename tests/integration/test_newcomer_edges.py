"""Edges a newcomer meets: a malformed ``connection=``, peers that cannot be reached, what
``f.lookup()`` returns, ``join`` given the whole line ``init`` printed.

Each failure is said plainly where the user is (an error at construction, the call's error),
never as a traceback printed by a background thread.
"""

from __future__ import annotations

import re
import socket
import textwrap

import pytest
from helpers import run_python
from node_harness import cli, free_port, make_key

from pythagoras_p2p import ConfigurationError, PCloud, ResourcesError, SwarmCloud
from pythagoras_p2p.clouds.connection import parse_connection
from pythagoras_p2p.net.security import create_key


@pytest.mark.parametrize("connection", ["tcp://1.2.3.4:7575", "http://node1", "a b",
                                        "node1:http", "[::1", "node1:99999"])
def test_malformed_connection_is_refused_when_the_cloud_is_made(home, connection):
    with pytest.raises(ConfigurationError) as err:
        PCloud(connection=connection)
    assert "host:port" in str(err.value) and "'local'" in str(err.value)
    with pytest.raises(ConfigurationError):
        SwarmCloud(connection=connection)


def test_well_formed_peers_still_parse():
    peers = parse_connection("node1, 10.0.0.7:7000, [::1]:7575, fe80::1, my_box.local")["peers"]
    assert peers == [("node1", 7575), ("10.0.0.7", 7000), ("::1", 7575), ("fe80::1", 7575),
                     ("my_box.local", 7575)]


def _call_through(home, connection: str) -> str:
    """Run one call through ``connection`` in a fresh process; return what it printed."""
    make_key(home)
    code = textwrap.dedent(f"""
        from pythagoras_p2p import SwarmCloud, NodeUnreachable
        cloud = SwarmCloud(connection={connection!r}, connect_timeout=3.0)
        @cloud.add_pure_function
        def double(*, x):
            return 2 * x
        try:
            double.sync_remote(x=1)
        except NodeUnreachable as exc:
            print("ERROR:", exc)
        cloud.close()
    """)
    # Short waits (the defaults are 5 s each): what is said does not depend on them.
    proc = run_python(code, env={"PYTHAGORAS_HOME": str(home), "PYTHAGORAS_SILENT_AFTER": "1.5"},
                      timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "ERROR:" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


def test_a_host_name_that_does_not_resolve_is_said_so(home):
    out = _call_through(home, "no-such-host.invalid:7575")
    assert "no such host" in out and "refused" not in out, out


def test_a_port_where_nothing_listens_is_refused(home):
    out = _call_through(home, f"127.0.0.1:{free_port()}")
    assert "refused" in out and "no node listens" in out, out


def test_a_peer_that_never_answers_is_said_so(home):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        out = _call_through(home, f"127.0.0.1:{silent.getsockname()[1]}")
    assert "no answer" in out and "refused" not in out, out


def _invite_line(home) -> str:
    """The line ``invite`` prints, made in this process (no admin node needed to read it)."""
    from pythagoras_p2p.trust import Trust
    from pythagoras_p2p.trust.invites import Invitations, make_token

    create_key(home, name="team")
    trust = Trust.load(home)
    invitation, secret = Invitations(home).create(expires_in=600, admin=False, by=trust.keys.key_id)
    token = make_token(invitation=invitation, secret=secret, swarm_name="team",
                       swarm_public=trust.members.swarm_public,
                       admin_curve_public=trust.keys.curve_public,
                       admin_signing_public=trust.keys.signing_public,
                       addresses=["127.0.0.1:9"], sign=trust.keys.sign)
    return f"pythagoras-node join {token}"


@pytest.mark.parametrize("as_words", [False, True])
def test_join_takes_the_whole_line_invite_printed(tmp_path, as_words):
    from pythagoras_p2p.trust.invites import read_token

    line = _invite_line(tmp_path / "first")
    given = " ".join(line.split()) if as_words else line
    assert read_token(given) == read_token(line.split()[-1])
    assert read_token(given)["swarm"] == "team"


def test_a_damaged_member_list_says_join_force(tmp_path):
    home = tmp_path / "second"
    create_key(home)
    (home / "trust" / "members.json").write_text("{ damaged")
    out = cli(home, "members")
    assert out.returncode != 0 and "join --force TOKEN" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_call_no_node_could_run_prints_memory_alike_and_names_this_machine(start_node,
                                                                              make_client):
    node = start_node("resources")
    client = make_client(node, "asker")
    huge = client.add_pure_function(resources={"memory": "100T"})(_square)
    with pytest.raises(ResourcesError) as err:
        huge.sync_remote(x=2)
    message = str(err.value)
    assert "memory=100T" in message, message  # what it asks, in the units of what nodes have
    assert re.search(r"memory=[\d.]+[KMGT]\b", message.split("the nodes have")[1]), message
    assert "e+" not in message and socket.gethostname() in message, message
    assert f"127.0.0.1:{node.port}:" not in message, message


def _square(*, x):
    return x * x
