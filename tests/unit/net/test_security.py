"""A machine's credentials, the one-key swarms of earlier releases, and the ZAP decision, without a node.

Against a real node (``tests/integration/test_node_security.py``): strangers, plaintext and
garbage on the port, the admission check at start, the keys' mode under a permissive umask and
what the mDNS record carries. Here: loading a home's credentials and its errors, the refusal of
old keys and tokens, the tag, and the authenticator's answers — directly, and through
:func:`check_admission` on a loopback socket served by this process.
"""

from __future__ import annotations

import json
import time

import pytest
import zmq
import zmq.utils.z85

from pythagoras_p2p.errors import ConfigurationError, PythagorasError
from pythagoras_p2p.net.security import (
    MOVE_TO_MEMBER_KEYS,
    USER_INVITED,
    USER_REMOVED,
    Authenticator,
    SecurityError,
    SwarmKey,
    check_admission,
    create_key,
    curve_server,
    load_key,
    refuse_old_token,
)
from pythagoras_p2p.net.wire import build, parse
from pythagoras_p2p.trust import Members, NodeKeys
from pythagoras_p2p.trust.enroll import admit
from pythagoras_p2p.trust.invites import Invitations, read_token

# --------------------------------------------------------------------------- credentials


def test_a_home_without_a_swarm_has_no_credentials(tmp_path):
    assert load_key(tmp_path / "empty") is None


def test_a_new_swarm_gives_its_first_admin_credentials(tmp_path):
    key = create_key(tmp_path / "h", name="lab")
    again = load_key(tmp_path / "h")
    assert again.name == "lab" and again.public == key.public and again.secret == key.secret
    assert again.trust.is_admin and again.members.is_admitted(again.key_id)
    assert create_key(tmp_path / "other").public != key.public  # each machine its own keys


def test_a_one_key_swarm_is_refused_with_the_way_to_move(tmp_path):
    home = tmp_path / "old"
    home.mkdir()
    (home / "swarm.key").write_text(json.dumps({"version": 1, "name": "x", "public": "p",
                                                "secret": "s"}))
    with pytest.raises(SecurityError) as caught:
        load_key(home)
    assert MOVE_TO_MEMBER_KEYS in str(caught.value) and "init --force" in str(caught.value)
    with pytest.raises(SecurityError, match="earlier one-key kind"):
        load_key(tmp_path, home / "swarm.key")  # named as connection='s key


@pytest.mark.parametrize("token", ["pyth2-eyJ2ZXJzaW9uIjoxfQ.abcdef012345", "pyth1-aGVsbG8",
                                   "pythagoras-node join pyth2-abc.def"])
def test_a_token_of_a_one_key_swarm_is_refused_with_the_way_to_move(token):
    with pytest.raises(ConfigurationError, match="init --force") as caught:
        refuse_old_token(token)
    assert "pythagoras-node invite" in str(caught.value)
    with pytest.raises(ConfigurationError, match="earlier kind"):
        read_token(token)


def test_a_removed_machine_cannot_load_its_credentials(tmp_path):
    admin = create_key(tmp_path / "a")
    admit(tmp_path / "a", tmp_path / "b", hostname="b")
    gone = NodeKeys.load(tmp_path / "b").key_id
    removed = Members.load(tmp_path / "a").without([gone], admin.key_id, admin.trust.keys.sign)
    removed.save(tmp_path / "b")
    with pytest.raises(SecurityError, match="removed from the swarm.*pythagoras-node invite"):
        load_key(tmp_path / "b")


def test_the_tag_is_derived_from_the_swarm_not_from_any_key(tmp_path):
    key = create_key(tmp_path / "a")
    tag = key.tag
    assert len(tag) == 16 and int(tag, 16) >= 0
    material = [key.public.decode(), key.secret.decode(), key.public_raw.hex(),
                zmq.utils.z85.decode(key.secret).hex()]
    for text in material:
        assert tag not in text and text not in tag
        assert not any(text[i:i + 8] in tag for i in range(len(text) - 7))
    assert load_key(tmp_path / "a").tag == tag  # stable
    admit(tmp_path / "a", tmp_path / "b")
    assert load_key(tmp_path / "b").tag == tag  # the same for every member
    assert create_key(tmp_path / "c").tag != tag  # tells swarms apart


def test_an_unknown_error_type_is_a_pythagoras_error():
    assert issubclass(SecurityError, PythagorasError)


# --------------------------------------------------------------------------- the ZAP decision


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _zap_request(mechanism: bytes, *credentials: bytes, version: bytes = b"1.0",
                 request_id: bytes = b"req-1") -> list[bytes]:
    return [version, request_id, b"", b"127.0.0.1", b"", mechanism, *credentials]


def test_the_authenticator_admits_the_members_keys_only(context, tmp_path):
    key = create_key(tmp_path / "h")
    auth = Authenticator(context, key)
    try:
        member = auth._answer(_zap_request(b"CURVE", key.public_raw, request_id=b"r7"))
        assert member == [b"1.0", b"r7", b"200", b"OK", key.key_id.encode(), b""]
        stranger_public = zmq.utils.z85.decode(zmq.curve_keypair()[0])
        refusals = {
            "a stranger's key": _zap_request(b"CURVE", stranger_public),
            "another swarm's key": _zap_request(b"CURVE", create_key(tmp_path / "o").public_raw),
            "the key as Z85 text": _zap_request(b"CURVE", key.public),
            "the secret key": _zap_request(b"CURVE", zmq.utils.z85.decode(key.secret)),
            "no credentials": _zap_request(b"CURVE"),
            "NULL": _zap_request(b"NULL"),
            "PLAIN with the key": _zap_request(b"PLAIN", key.public_raw, b""),
            "another ZAP version": _zap_request(b"CURVE", key.public_raw, version=b"2.0"),
        }
        for name, request in refusals.items():
            answer = auth._answer(request)
            assert answer[1] == b"req-1" and answer[2] == b"400", name
        for request in ([], [b"1.0"], [b"1.0", b"rid", b"", b"addr"]):
            answer = auth._answer(request)
            assert answer[2] == b"400" and answer[3] == b"malformed", request
        assert auth.admitted == 1 and auth.refused == len(refusals)
    finally:
        auth.close()


def test_one_context_has_one_authenticator(context, tmp_path):
    key = create_key(tmp_path / "h")
    auth = Authenticator(context, key)
    try:
        with pytest.raises(SecurityError, match="refusing to serve"):
            Authenticator(context, key)
    finally:
        auth.close()


class Server:
    """A CURVE ROUTER on 127.0.0.1 that answers probes, served when :meth:`pump` runs."""

    def __init__(self, context, key: SwarmKey, *, authenticator: bool = True, deaf: bool = False):
        self.auth = Authenticator(context, key) if authenticator else None
        self.deaf = deaf  # an authenticator that never answers
        self.router = context.socket(zmq.ROUTER)
        self.router.linger = 0
        curve_server(self.router, key)
        self.router.bind("tcp://127.0.0.1:*")
        self.endpoint = self.router.last_endpoint.decode()
        self.answered = 0

    def pump(self, seconds: float) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.auth is not None and not self.deaf:
            poller.register(self.auth.socket, zmq.POLLIN)
        deadline = time.monotonic() + seconds
        while True:
            events = dict(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
            if self.auth is not None and self.auth.socket in events:
                self.auth.handle()
            if self.router in events:
                ident, *frames = self.router.recv_multipart()
                request = parse(frames)
                self.router.send_multipart([ident, *build("ok", request.id)])
                self.answered += 1
            if time.monotonic() >= deadline:
                return

    def close(self) -> None:
        self.router.close(0)
        if self.auth is not None:
            self.auth.close()


def test_the_admission_check_passes_with_the_authenticator(context, tmp_path):
    key = create_key(tmp_path / "h")
    server = Server(context, key)
    try:
        check_admission(context, server.endpoint, key, server.pump, timeout=20)
        assert server.auth.admitted >= 1 and server.auth.refused >= 1
        assert server.answered == 1  # the member's probe only
    finally:
        server.close()


def test_the_admission_check_fails_without_an_authenticator(context, tmp_path):
    key = create_key(tmp_path / "h")
    server = Server(context, key, authenticator=False)
    try:
        with pytest.raises(SecurityError, match="random key was answered"):
            check_admission(context, server.endpoint, key, server.pump, timeout=20)
    finally:
        server.close()


def test_the_admission_check_fails_when_the_authenticator_never_answers(context, tmp_path):
    key = create_key(tmp_path / "h")
    server = Server(context, key, deaf=True)
    try:
        with pytest.raises(SecurityError, match="could not reach"):
            check_admission(context, server.endpoint, key, server.pump, timeout=1)
        assert server.answered == 0
    finally:
        server.close()


def _refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused a" in r.getMessage()]


def test_the_nodes_own_admission_check_is_not_logged_as_an_intrusion(context, tmp_path, caplog):
    import logging

    key = create_key(tmp_path / "h")
    server = Server(context, key)
    try:
        with caplog.at_level(logging.WARNING):
            check_admission(context, server.endpoint, key, server.pump, timeout=20)
            assert server.auth.refused >= 1 and _refusal_lines(caplog) == []
            # a real outsider right after start is still seen
            stranger = _zap_request(b"CURVE", zmq.utils.z85.decode(zmq.curve_keypair()[0]))
            server.auth._answer(stranger)
        assert len(_refusal_lines(caplog)) == 1
    finally:
        server.close()


def test_refusals_are_logged_once_per_source_not_once_for_all(context, tmp_path, caplog):
    import logging

    auth = Authenticator(context, create_key(tmp_path / "h"))
    stranger = zmq.utils.z85.decode(zmq.curve_keypair()[0])
    try:
        with caplog.at_level(logging.WARNING):
            for source in (b"10.0.0.1", b"10.0.0.1", b"10.0.0.2", b"10.0.0.1"):
                request = _zap_request(b"CURVE", stranger)
                request[3] = source
                auth._answer(request)
        lines = _refusal_lines(caplog)
        assert len(lines) == 2 and "10.0.0.1" in lines[0] and "10.0.0.2" in lines[1]
        assert auth.refused == 4
    finally:
        auth.close()


def test_a_removed_member_and_an_invitation_get_user_ids_that_say_so(context, tmp_path):
    key = create_key(tmp_path / "h")
    admit(tmp_path / "h", tmp_path / "b")
    key.trust.reload()
    other = NodeKeys.load(tmp_path / "b")
    invitations = Invitations(tmp_path / "h")
    invitation, _ = invitations.create(expires_in=60, admin=False, by=key.key_id)
    auth = Authenticator(context, key, invited=invitations.lookup)
    raw = zmq.utils.z85.decode
    try:
        assert auth._answer(_zap_request(b"CURVE", raw(other.curve_public)))[4] == other.key_id.encode()
        key.trust.accept(key.members.without([other.key_id], key.key_id, key.trust.keys.sign))
        answer = auth._answer(_zap_request(b"CURVE", raw(other.curve_public)))
        assert answer[2] == b"200" and answer[4] == (USER_REMOVED + other.key_id).encode()
        answer = auth._answer(_zap_request(b"CURVE", raw(invitation.curve_public.encode())))
        assert answer[2] == b"200" and answer[4] == (USER_INVITED + invitation.id).encode()
    finally:
        auth.close()
