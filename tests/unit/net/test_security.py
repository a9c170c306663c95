"""The swarm key, join tokens and the ZAP decision, without a node.

Against a real node (``tests/integration/test_node_security.py``): strangers, plaintext and
garbage on the port, the admission check at start, the key's mode under a permissive umask and
what the mDNS record carries. Here: the key file and its errors, tokens, the tag, and the
authenticator's answers — directly, and through :func:`check_admission` on a loopback socket
served by this process.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import time

import pytest
import zmq
import zmq.utils.z85

from pythagoras_p2p.errors import ConfigurationError, PythagorasError
from pythagoras_p2p.net.security import (
    Authenticator,
    SecurityError,
    SwarmKey,
    check_admission,
    create_key,
    curve_server,
    join_token,
    key_from_token,
    key_path,
    load_key,
)
from pythagoras_p2p.net.wire import build, parse

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
FIXES = ("pythagoras-node join", "pythagoras-node init --force")


@pytest.fixture
def key_home(tmp_path):
    return tmp_path / "home"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _damaged_secret(key: SwarmKey) -> SwarmKey:
    """The same key with one character of its secret changed (still valid Z85, 32 bytes)."""
    text = key.secret.decode()
    replacement = "0" if text[5] != "0" else "1"
    secret = (text[:5] + replacement + text[6:]).encode()
    assert len(zmq.utils.z85.decode(secret)) == 32
    return SwarmKey(key.name, key.public, secret)


# --------------------------------------------------------------------------- the key file


def test_create_key_writes_one_private_file_that_loads_back(key_home):
    key = create_key(key_home, name="team")
    assert sorted(p.name for p in key_home.iterdir()) == ["swarm.key"]
    assert key_path(key_home) == key_home / "swarm.key"
    assert _mode(key_path(key_home)) == 0o600
    assert load_key(key_home) == key
    assert key.name == "team"
    assert zmq.curve_public(key.secret) == key.public  # a real CURVE pair
    assert len(key.public_raw) == 32


def test_each_new_swarm_has_its_own_key(tmp_path):
    one, two = create_key(tmp_path / "a"), create_key(tmp_path / "b")
    assert one.public != two.public and one.secret != two.secret and one.name != two.name


def test_a_home_without_a_key_has_none(key_home):
    assert load_key(key_home) is None
    assert not key_home.exists()  # looking does not create the home


def test_a_second_key_needs_force(key_home):
    first = create_key(key_home)
    with pytest.raises(SecurityError, match="--force") as info:
        create_key(key_home)
    assert str(key_path(key_home)) in str(info.value)
    assert load_key(key_home) == first  # untouched
    second = create_key(key_home, force=True)
    assert load_key(key_home) == second != first
    assert _mode(key_path(key_home)) == 0o600


@pytest.mark.skipif(AS_ROOT, reason="root writes anywhere")
def test_a_home_that_cannot_be_written_names_the_way_out(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(SecurityError, match="PYTHAGORAS_HOME"):
            create_key(locked / "home")
    finally:
        locked.chmod(0o700)


def _key_text(key: SwarmKey, **changes) -> str:
    data = json.loads(key.to_json()) | changes
    return json.dumps({k: v for k, v in data.items() if v is not None})


DAMAGE = {
    "empty": lambda key: "",
    "truncated": lambda key: key.to_json()[: len(key.to_json()) // 2],
    "one byte short": lambda key: key.to_json().rstrip()[:-1],
    "not JSON": lambda key: "swarm key, trust me",
    "a JSON list": lambda key: "[1, 2, 3]",
    "no secret": lambda key: _key_text(key, secret=None),
    "no public key": lambda key: _key_text(key, public=None),
    "a short secret": lambda key: _key_text(key, secret=key.secret.decode()[:35]),
    "a long public key": lambda key: _key_text(key, public=key.public.decode() + "abcde"),
    "a number for a key": lambda key: _key_text(key, public=12345),
    "binary garbage": lambda key: "\x00\x01\x02" * 20,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_key_file_is_named_with_the_fix(key_home, damage):
    key = create_key(key_home)
    path = key_path(key_home)
    path.write_text(DAMAGE[damage](key))
    with pytest.raises(SecurityError) as info:
        load_key(key_home)
    message = str(info.value)
    assert str(path) in message and "not a valid swarm key" in message
    assert all(fix in message for fix in FIXES), message
    assert key.secret.decode() not in message  # an error never shows the secret


def test_a_key_file_that_is_not_utf8(key_home):
    create_key(key_home)
    key_path(key_home).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SecurityError, match="not a valid swarm key"):
        load_key(key_home)


def test_a_key_given_by_path(tmp_path):
    key = create_key(tmp_path / "a")
    assert load_key(tmp_path / "elsewhere", path=key_path(tmp_path / "a")) == key


@pytest.mark.skipif(AS_ROOT, reason="root reads any file")
def test_an_unreadable_key_names_its_permissions(key_home):
    create_key(key_home)
    path = key_path(key_home)
    path.chmod(0o000)
    try:
        with pytest.raises(SecurityError, match="permissions") as info:
            load_key(key_home)
        assert str(path) in str(info.value)
    finally:
        path.chmod(0o600)


def test_a_key_path_that_is_a_folder(key_home):
    key_path(key_home).mkdir(parents=True)
    with pytest.raises(SecurityError, match="cannot read the swarm key"):
        load_key(key_home)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_readable_by_others_loads_with_a_warning_naming_chmod(key_home, mode, caplog):
    key = create_key(key_home)
    key_path(key_home).chmod(mode)
    with caplog.at_level(logging.WARNING, logger="pythagoras_p2p.net.security"):
        assert load_key(key_home) == key
    assert "chmod 600" in caplog.text and str(key_path(key_home)) in caplog.text


def test_a_private_key_loads_without_a_warning(key_home, caplog):
    create_key(key_home)
    with caplog.at_level(logging.WARNING):
        load_key(key_home)
    assert "chmod" not in caplog.text


def test_a_key_file_whose_secret_does_not_match_its_public_key(key_home):
    key = create_key(key_home)
    key_path(key_home).write_text(_damaged_secret(key).to_json())
    with pytest.raises(SecurityError, match="not a valid swarm key"):
        load_key(key_home)


# --------------------------------------------------------------------------- join tokens


def test_a_join_token_carries_the_key(key_home):
    key = create_key(key_home, name="lab")
    token = join_token(key)
    assert token.startswith("pyth2-") and "\n" not in token and " " not in token
    assert key_from_token(token) == key
    assert key_from_token(f"  {token}\n") == key  # as pasted from a terminal


@pytest.mark.parametrize("text", ["", "hello", "pyth9-abcd", "PYTH2-abcd", "join pyth3-abcd"])
def test_text_that_is_not_a_join_token(text):
    with pytest.raises(ConfigurationError, match="not a join token"):
        key_from_token(text)


def test_the_whole_line_init_printed_is_a_token(key_home):
    key = create_key(key_home, name="lab")
    assert key_from_token(f"  pythagoras-node join {join_token(key)}\n") == key
    with pytest.raises(ConfigurationError, match="join token is damaged"):
        key_from_token("pythagoras-node join pyth2-abcd")


def _damaged_tokens(token: str) -> dict[str, str]:
    body = token[len("pyth2-"):]
    return {
        "empty body": "pyth2-",
        "half": token[: len(token) // 2],
        "cut in the key": token[:-12],
        "not base64": "pyth2-" + body[:10] + "!*?" + body[13:],
        "one extra character": token + "A",
        "extra text": token + "AAAA",
        "case changed": "pyth2-" + body.upper(),
    }


@pytest.mark.parametrize("damage", sorted(_damaged_tokens("pyth2-x")))
def test_a_damaged_join_token_is_named_as_such(key_home, damage):
    token = _damaged_tokens(join_token(create_key(key_home)))[damage]
    with pytest.raises(PythagorasError) as info:
        key_from_token(token)
    assert isinstance(info.value, ConfigurationError | SecurityError)
    message = str(info.value)
    assert "join token" in message and "copy the whole line" in message, message


def test_a_join_token_whose_secret_was_damaged(key_home):
    token = join_token(_damaged_secret(create_key(key_home)))
    with pytest.raises(PythagorasError, match="join token"):
        key_from_token(token)


def test_any_one_character_changed_in_a_token_is_refused(key_home):
    token = join_token(create_key(key_home))
    alphabet = "AZaz09-_.f"
    for i in range(len("pyth2-"), len(token)):
        for c in alphabet:
            if c != token[i]:
                with pytest.raises((ConfigurationError, SecurityError)):
                    key_from_token(token[:i] + c + token[i + 1:])


def test_a_token_of_the_first_release_still_joins(key_home):
    key = create_key(key_home)
    old = "pyth1-" + base64.urlsafe_b64encode(key.to_json().encode()).decode().rstrip("=")
    assert key_from_token(old) == key


def test_a_token_is_the_key_file_in_base64(key_home):
    key = create_key(key_home)
    body = join_token(key)[len("pyth2-"):].rpartition(".")[0]
    text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    assert json.loads(text) == json.loads(key_path(key_home).read_text())


# --------------------------------------------------------------------------- the tag


def test_the_tag_is_derived_from_the_key_but_is_not_the_key(tmp_path):
    key = create_key(tmp_path / "a")
    tag = key.tag
    assert len(tag) == 16 and int(tag, 16) >= 0
    material = [key.public.decode(), key.secret.decode(), key.public_raw.hex(),
                zmq.utils.z85.decode(key.secret).hex()]
    for text in material:
        assert tag not in text and text not in tag
        # no 8-character piece of the key shows in the tag
        assert not any(text[i:i + 8] in tag for i in range(len(text) - 7))
    assert load_key(tmp_path / "a").tag == tag  # stable
    assert create_key(tmp_path / "b").tag != tag  # tells swarms apart
    assert SwarmKey("other name", key.public, key.secret).tag == tag  # the name does not count


# --------------------------------------------------------------------------- the ZAP decision


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _zap_request(mechanism: bytes, *credentials: bytes, version: bytes = b"1.0",
                 request_id: bytes = b"req-1") -> list[bytes]:
    return [version, request_id, b"", b"127.0.0.1", b"", mechanism, *credentials]


def test_the_authenticator_admits_the_swarms_public_key_only(context, tmp_path):
    key = create_key(tmp_path / "h")
    auth = Authenticator(context, key)
    try:
        member = auth._answer(_zap_request(b"CURVE", key.public_raw, request_id=b"r7"))
        assert member[:4] == [b"1.0", b"r7", b"200", b"OK"]
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
