"""Membership and hostile input: only holders of the swarm key get an answer, nothing breaks the node.

Strangers (another swarm's key, a random CURVE key, a plaintext ZeroMQ client, raw bytes on the
port) send exactly what a member would send to run a function that writes a marker file; they
must get no reply, nothing may run, and the node must go on serving members. Members that send
malformed or oversized messages get error replies (or are disconnected) and change nothing.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import stat
import time

import pytest
import zmq
from helpers import report_figures
from node_harness import Call, ask, dealer, free_port, make_key, wait_for

from pythagoras_p2p.net import wire
from pythagoras_p2p.net.security import SecurityError

NO_REPLY_WAIT = 2.0  # seconds a stranger waits for an answer that must never come


def send_as_stranger(sock, frames: list) -> None:
    """Send if the socket lets us (after a failed handshake it has nowhere to queue)."""
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK)
    except zmq.Again:
        pass


def assert_no_reply(sock, timeout: float = NO_REPLY_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert not sock.poll(50), f"a stranger got a reply: {sock.recv_multipart()!r}"


def assert_member_still_served(ctx, node, tmp_path, tag: str) -> None:
    """The node is up and runs a member's call (its marker appears, its counter moves)."""
    assert node.alive(), node.log()
    before = node.status()["tasks_done"]
    call = Call(tmp_path / f"member-{tag}.txt")
    member = dealer(ctx, node, key=node.key)
    try:
        call.store(member)
        reply = ask(member, call.run(11))
        assert reply.op == "result" and reply.fields["status"] == "ok", reply
        assert call.ran()
    finally:
        member.close(0)
    assert node.status()["tasks_done"] == before + 1


# --------------------------------------------------------------------------- strangers


def test_a_member_runs_the_marker_call(zctx, node, tmp_path):
    """The control for the stranger tests: the same messages from a member do run."""
    call = Call(tmp_path / "marker.txt")
    member = dealer(zctx, node, key=node.key)
    call.store(member)
    reply = ask(member, call.run(3))
    assert reply.op == "result" and reply.id == 3 and reply.fields["status"] == "ok"
    assert call.ran()
    assert node.status()["tasks_done"] == 1


@pytest.mark.parametrize("who", ["another_swarm", "another_swarm_own_server_key", "random_curve",
                                 "plaintext"])
def test_a_stranger_gets_no_reply_and_runs_nothing(who, zctx, node, tmp_path):
    call = Call(tmp_path / "marker.txt")
    if who.startswith("another_swarm"):
        other = make_key(tmp_path / "other-swarm")
        assert other.public != node.key.public
        server = other.public if who.endswith("own_server_key") else node.key.public
        sock = dealer(zctx, node, key=other, server=server)
    elif who == "random_curve":
        public, secret = zmq.curve_keypair()
        sock = dealer(zctx, node, public=public, secret=secret)
    else:
        sock = dealer(zctx, node, curve=False)
    sent = (wire.build("probe", 1), wire.build("status", 2), call.function(), call.run(3))
    for frames in sent:
        send_as_stranger(sock, frames)
    assert_no_reply(sock)
    assert not call.ran()
    assert node.status()["tasks_done"] == 0
    assert_member_still_served(zctx, node, tmp_path, who)
    report_figures("hostile input", kind=f"stranger: {who}", messages=len(sent), replies=0,
                   executions=0, node_serves_members=True)


def double(*, x: int) -> int:
    return 2 * x


def test_a_client_of_another_swarm_is_told_to_become_a_member_within_its_connect_timeout(
        node, tmp_path):
    """A client whose home is not on the node's member list does not wait for good: its calls
    fail once its connect_timeout has passed, saying the node does not know this machine and
    how to check it, and nothing runs."""
    from pythagoras_p2p import NodeUnreachable, SwarmCloud

    other = tmp_path / "other-swarm"
    make_key(other)
    cloud = SwarmCloud(connection=node.connection, home=other, connect_timeout=2.0)
    try:
        fn = cloud.add_pure_function(double)
        started = time.monotonic()
        with pytest.raises(NodeUnreachable) as info:
            fn.sync_parallel([{"x": 1}, {"x": 2}])
        took = time.monotonic() - started
    finally:
        cloud.close()
    message = str(info.value)
    assert "does not know this machine as a member" in message, message
    assert "`pythagoras-node members`" in message, message
    assert took < 2.0 + 20, took  # the connect_timeout, and a generous margin for a loaded machine
    assert node.status()["tasks_done"] == 0


def test_raw_garbage_on_the_port_gets_no_reply(zctx, node, tmp_path):
    received = b""
    for attempt in range(3):
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
            junk = os.urandom(4096) if attempt else b"GET / HTTP/1.0\r\n\r\n" + os.urandom(64)
            try:
                s.sendall(junk)
                deadline = time.monotonic() + NO_REPLY_WAIT / 2
                s.settimeout(0.1)
                while time.monotonic() < deadline:
                    try:
                        data = s.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    received += data
            except (ConnectionResetError, BrokenPipeError):
                pass  # the node hung up on it: the right answer
    # At most a ZeroMQ greeting (the peer speaks first in ZMTP, before reading): no message.
    if received:
        assert received.startswith(b"\xff") and len(received) <= 3 * 64, received[:100]
    assert node.status()["tasks_done"] == 0
    assert_member_still_served(zctx, node, tmp_path, "garbage")
    report_figures("hostile input", kind="raw bytes on the port (HTTP, random)", messages=3,
                   replies=0, executions=0, node_serves_members=True)


# --------------------------------------------------------------------------- members misbehaving


def test_an_oversized_message_drops_the_sender_not_the_node(zctx, node, tmp_path):
    member = dealer(zctx, node, key=node.key)
    assert ask(member, wire.build("probe", 1)).op == "ok"
    huge = os.urandom(1024) * ((wire.MAX_MESSAGE + 1024 * 1024) // 1024)
    member.send_multipart(wire.build("probe", 2, [huge]))
    deadline = time.monotonic() + NO_REPLY_WAIT
    while time.monotonic() < deadline:
        if member.poll(50):
            reply = wire.parse(member.recv_multipart())
            assert reply.id != 2, "a message larger than MAX_MESSAGE was served"
    assert_member_still_served(zctx, node, tmp_path, "after-oversized")
    report_figures("hostile input", kind="oversized message from a member", messages=1,
                   replies=0, executions=0, node_serves_members=True)


def _header(obj) -> bytes:
    return json.dumps(obj).encode()


def malformed_messages(call: Call) -> dict:
    """Messages a member may send by mistake or malice, each with the error code it deserves."""
    v = wire.PROTOCOL_VERSION
    run = {"v": v, "op": "run", "id": 5, "fp": call.fp.hex(), "call": call.call.hex(),
           "label": "write_marker(...)"}
    return {
        "not json": ([b"this is not json"], "malformed"),
        "empty header": ([b""], "malformed"),
        "not utf-8": ([b"\xff\xfe\x00{"], "malformed"),
        "json array": ([b"[1, 2, 3]"], "malformed"),
        "json string": ([b'"run"'], "malformed"),
        "deeply nested": ([b"[" * 100_000], "malformed"),
        "header too large": ([_header({"v": v, "op": "probe", "pad": "x" * 300_000})], "malformed"),
        "too many frames": ([_header({"v": v, "op": "probe"})] + [b""] * 1100, "malformed"),
        "no version": ([_header({"op": "probe", "id": 1})], "protocol"),
        "wrong version": ([_header({"v": v + 99, "op": "probe", "id": 1})], "protocol"),
        "unknown op": ([_header({"v": v, "op": "format_disk", "id": 1})], "malformed"),
        "op not a string": ([_header({"v": v, "op": 7, "id": 1})], "malformed"),
        "a reply as a request": ([_header({"v": v, "op": "ok", "id": 1})], "malformed"),
        "id not an int": ([_header({"v": v, "op": "probe", "id": "one"})], "malformed"),
        "run without call": ([_header({k: x for k, x in run.items() if k != "call"}),
                              call.payload], "malformed"),
        "run without label": ([_header({k: x for k, x in run.items() if k != "label"}),
                               call.payload], "malformed"),
        "run with a short fp": ([_header({**run, "fp": "abcd"}), call.payload], "malformed"),
        "run with a non-hex call": ([_header({**run, "call": "z" * 64}), call.payload], "malformed"),
        "run with an int label": ([_header({**run, "label": 5}), call.payload], "malformed"),
        "run with bad refs": ([_header({**run, "refs": "zz"}), call.payload], "malformed"),
        "run with refs not stored": ([_header({**run, "refs": ["ab" * 32]}), call.payload],
                                     "need_values"),
        "run without a body": ([_header(run)], "malformed"),
        "run with two bodies": ([_header(run), call.payload, call.payload], "malformed"),
        "run of an unknown function": ([_header({**run, "fp": "cd" * 32}), call.payload],
                                       "need_function"),
        "hello from another Python": ([_header({"v": v, "op": "hello", "id": 1, "protocol": v,
                                                "python": "2.7"})], "python"),
        "lookup of a non-list": ([_header({"v": v, "op": "lookup", "id": 1, "calls": "ab"})],
                                 "malformed"),
        "get of a missing value": ([_header({"v": v, "op": "get", "id": 1, "address": "ef" * 32,
                                             "offset": 0})], "missing"),
        "get at a negative offset": ([_header({"v": v, "op": "get", "id": 1, "address": "ef" * 32,
                                               "offset": -1})], "malformed"),
        "put outside its size": ([_header({"v": v, "op": "put", "id": 1, "address": "ef" * 32,
                                           "offset": 10, "total": 12}), b"12345"], "malformed"),
        "put without a body": ([_header({"v": v, "op": "put", "id": 1, "address": "ef" * 32,
                                         "offset": 0, "total": 4})], "malformed"),
        "function without a body": ([_header({"v": v, "op": "function", "id": 1,
                                              "fp": "ab" * 32})], "malformed"),
        # A record is sent under the key of its bytes: another key is refused, never stored.
        "function under another key": ([_header({"v": v, "op": "function", "id": 1,
                                                 "fp": "ab" * 32}), call.record], "tampered"),
    }


def test_malformed_messages_from_a_member_get_error_replies(zctx, node, tmp_path):
    call = Call(tmp_path / "marker.txt")
    member = dealer(zctx, node, key=node.key)
    call.store(member)  # so that runs fail on their own faults
    assert ask(member, wire.build("probe", 1)).op == "ok"
    messages = malformed_messages(call)
    for name, (frames, code) in messages.items():
        reply = ask(member, frames)
        assert reply.op == "error", (name, reply)
        assert reply.fields["code"] == code, (name, reply.fields)
        assert reply.fields["message"], name
    assert not call.ran()
    status = node.status()
    assert status["tasks_done"] == 0
    assert_member_still_served(zctx, node, tmp_path, "after-malformed")
    report_figures("hostile input", kind="malformed or hostile messages from a member",
                   messages=len(messages), replies=f"{len(messages)} error replies",
                   executions=0, node_serves_members=True)


def test_a_run_whose_arguments_are_garbage_fails_without_running(zctx, node, tmp_path):
    call = Call(tmp_path / "marker.txt")
    member = dealer(zctx, node, key=node.key)
    call.store(member)
    for payload in (b"this is not a pickle", b"\x80\x05", pickle.dumps(["not", "a", "dict"])):
        reply = ask(member, call.run(9, payload=payload))
        assert reply.op in ("error", "result"), reply
        if reply.op == "error":
            assert reply.fields["code"]
        else:
            assert reply.fields["status"] in ("err", "crash"), reply.fields
    assert not call.ran()
    lookup = ask(member, wire.build("lookup", 10, calls=[call.call]))
    assert lookup.fields["found"] == []  # a failure is never stored
    assert_member_still_served(zctx, node, tmp_path, "after-garbage-args")
    report_figures("hostile input", kind="run with garbage arguments from a member", messages=3,
                   replies="3 failures", executions=0, node_serves_members=True)


def test_abandoned_partial_uploads_do_not_block_uploads_for_good(tmp_path, monkeypatch):
    """Senders that vanish mid-upload (Ctrl-C, a crash) leave partial uploads behind; once they
    have been quiet long enough they must not keep the node refusing every later upload."""
    import pythagoras_p2p.daemon.uploads as handlers_module  # where uploads are served
    from pythagoras_p2p.daemon.node import Node

    config, key = _node_config(tmp_path)
    node = Node(config, key)
    try:
        replies = []
        monkeypatch.setattr(node.outbox, "send",
                            lambda ident, frames: replies.append(wire.parse(frames)))

        def put(ident: bytes, request_id: int) -> None:
            frames = wire.build("put", request_id, [b"abcd"], address=os.urandom(32), offset=0,
                                total=8)
            node.handlers.handle([zmq.Frame(ident), *[zmq.Frame(f) for f in frames]])

        for i in range(handlers_module._MAX_UPLOADS):  # first halves, never finished
            put(b"gone-%d" % i, 0)
        assert replies == []
        put(b"now", 1)
        assert replies[-1].op == "error" and replies[-1].fields["code"] == "busy"

        class AMinuteLater:
            @staticmethod
            def monotonic() -> float:
                return time.monotonic() + 10 * handlers_module._UPLOAD_IDLE

        monkeypatch.setattr(handlers_module, "time", AMinuteLater)
        replies.clear()
        put(b"later", 2)
        assert replies == [], replies  # accepted (a first chunk gets no reply)
        assert len(node.handlers.values.uploads) == 1
        assert len(list((node.home / "incoming").iterdir())) == 1
    finally:
        node.close()


# --------------------------------------------------------------------------- start-up guard


def _node_config(tmp_path):
    from pythagoras_p2p.daemon.node import NodeConfig

    home = tmp_path / "inproc"
    key = make_key(home)
    return NodeConfig(home=home, bind="127.0.0.1", port=free_port(), workers=1, mdns=False), key


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class DeafAuthenticator:
    """Looks like the authenticator but never binds the ZAP endpoint: libzmq then admits anyone."""

    def __init__(self, context, key, **_):
        self.socket = context.socket(zmq.PULL)
        self.socket.linger = 0

    def handle(self) -> None:
        pass

    def close(self) -> None:
        self.socket.close(0)


def _admit_everyone(real):
    class Permissive(real):
        """Binds ZAP but lets every CURVE client in (a broken membership check)."""

        def _answer(self, frames):
            return [b"1.0", frames[1], b"200", b"OK", b"anyone", b""]

    return Permissive


@pytest.mark.parametrize("broken", ["deaf", "permissive"])
def test_a_node_refuses_to_serve_when_membership_is_not_enforced(broken, tmp_path, monkeypatch):
    import pythagoras_p2p.daemon.node as node_module

    import pythagoras_p2p.net.security as security

    replacement = DeafAuthenticator if broken == "deaf" else _admit_everyone(security.Authenticator)
    monkeypatch.setattr(security, "Authenticator", replacement)
    monkeypatch.setattr(node_module, "Authenticator", replacement)
    config, key = _node_config(tmp_path)
    # Deaf: no connection gets a User-Id, so the node answers nobody, its own check included.
    with pytest.raises(SecurityError, match="membership is not enforced|random key was answered"
                                            "|could not reach this node"):
        node_module.Node(config, key)
    assert _port_is_free(config.port), "the refused node still listens"
    report_figures("the authenticator not running", authenticator=broken,
                   node_refused_to_serve=True, port_left_free=True)


def test_a_node_with_its_authenticator_passes_the_admission_check(tmp_path):
    """The control for the test above: the real authenticator passes the same check."""
    from pythagoras_p2p.daemon.node import Node

    config, key = _node_config(tmp_path)
    node = Node(config, key)
    try:
        assert node.authenticator.refused >= 1 and node.authenticator.admitted >= 1
    finally:
        node.close()
    assert _port_is_free(config.port)


# --------------------------------------------------------------------------- secrets at rest


def test_the_keys_are_private_even_under_a_permissive_umask(tmp_path):
    from pythagoras_p2p.trust import NodeKeys, SwarmSigningKey, members_path

    old = os.umask(0)
    try:
        make_key(tmp_path / "h")
    finally:
        os.umask(old)
    for path in (NodeKeys.path(tmp_path / "h"), SwarmSigningKey.path(tmp_path / "h"),
                 members_path(tmp_path / "h")):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, (path, oct(mode))


def test_the_mdns_record_carries_no_secret(tmp_path):
    from pythagoras_p2p.net.mdns import Advert

    key = make_key(tmp_path / "h")
    advert = Advert("a1b2c3d4e5f6", ("10.0.0.5",), 7575, key.tag, wire.PROTOCOL_VERSION,
                    wire.PYTHON_VERSION, 4)
    props = advert.properties()
    assert set(props) == {"id", "tag", "proto", "py", "slots"}
    text = " ".join(props.values())
    secrets = [key.secret.decode(), __import__("zmq").utils.z85.decode(key.secret).hex(),
               key.trust.keys.signing_secret.hex()]
    for secret in secrets:
        assert secret not in text
        for value in props.values():
            assert value not in secret or len(value) < 8
    assert props["tag"] == key.tag and props["slots"] == "4"


def test_a_node_serves_members_after_all_of_the_above(zctx, node, tmp_path):
    """Strangers, junk and malformed messages in one burst; the node answers members throughout."""
    call = Call(tmp_path / "stranger.txt")
    public, secret = zmq.curve_keypair()
    strangers = [dealer(zctx, node, public=public, secret=secret), dealer(zctx, node, curve=False)]
    member = dealer(zctx, node, key=node.key)
    call.store(member)
    for _ in range(20):
        for s in strangers:
            send_as_stranger(s, call.function())
            send_as_stranger(s, call.run())
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:
            try:
                raw.sendall(os.urandom(512))
            except OSError:
                pass
        reply = ask(member, [b"{not json"])
        assert reply.op == "error"
    wait_for(lambda: ask(member, wire.build("probe", 1)).op == "ok", timeout=10,
             message="a member's probe")
    for s in strangers:
        assert_no_reply(s, 0.5)
    assert not call.ran()
    assert node.status()["tasks_done"] == 0
    report_figures("hostile input", kind="a burst: strangers, raw bytes and malformed messages "
                   "while a member is served", messages=20 * 6, replies="20 to the member",
                   executions=0, node_serves_members=True)


def test_a_client_of_another_python_gets_no_call_run(node, zctx):
    """The node refuses the calls of a client whose hello it refused, not only the hello."""
    sock = dealer(zctx, node, key=node.key)
    hello = ask(sock, wire.build("hello", 1, protocol=wire.PROTOCOL_VERSION, python="3.99"))
    assert hello.op == "error" and hello.fields["code"] == "python"
    call = Call(node.home.parent / "python-marker")
    call.store(sock)
    reply = ask(sock, call.run(2))
    assert reply.op == "error" and reply.fields["code"] == "python"
    assert "3.99" in reply.fields["message"]
    assert not call.ran()
