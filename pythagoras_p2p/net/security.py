"""Swarm membership: the swarm key, join tokens, CURVE socket set-up, and the ZAP authenticator.

**Key model.** A swarm has one CURVE keypair, kept in the one file ``PYTHAGORAS_HOME/swarm.key``
(mode 0600). Every node serves with it and every member connects with it, so whoever holds the
file is a member and nobody else is: a node's ZAP handler admits a CURVE client only if its
public key is the swarm's, and CurveZMQ's handshake proves the client also holds the secret.
Copying the file (or ``pythagoras-node join TOKEN``, whose token is the file's content) makes a
machine a member; nothing per node needs distributing. A node's own identity (its node id) is
made by the node on first start and never copied. To revoke members, make a new key and hand it
to those who stay. Per-node keys would need every node to learn every other node's public key,
which copying one file cannot do.

**Authenticator.** libzmq lets any CURVE client in when nothing answers ZAP requests, so the
authenticator is not optional: :class:`Authenticator` binds the ZAP endpoint of the node's own
context and is polled by the node's own loop. :func:`check_admission` proves it works before
the node serves, by trying a stranger's key (which must fail) and a member's (which must pass).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3

from ..defaults import REFUSAL_LOG_EVERY
from ..errors import ConfigurationError, SecurityError

__all__ = ["SwarmKey", "SecurityError", "Authenticator", "load_key", "create_key", "key_path",
           "join_token", "key_from_token", "check_admission"]

log = logging.getLogger(__name__)

KEY_FILE = "swarm.key"
_TOKEN_PREFIX = "pyth2-"  # base64 of the key file, "." and a checksum of it
_OLD_TOKEN_PREFIX = "pyth1-"  # the same without a checksum (made by the first release)
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_SELF_CHECK_KEYS: set[bytes] = set()  # the random keys of this process's own admission checks


@dataclass(frozen=True)
class SwarmKey:
    """The swarm's CURVE keypair (Z85 text) and a name for people."""

    name: str
    public: bytes
    secret: bytes

    @property
    def tag(self) -> str:
        """A public tag derived from (not equal to) the key: tells swarms apart in mDNS."""
        return blake3(b"pythagoras-swarm-tag\0" + self.public).hexdigest()[:16]

    @property
    def public_raw(self) -> bytes:
        import zmq.utils.z85

        return zmq.utils.z85.decode(self.public)

    def to_json(self) -> str:
        return json.dumps({"version": 1, "name": self.name, "public": self.public.decode(),
                           "secret": self.secret.decode()}, indent=1) + "\n"


def key_path(home: Path) -> Path:
    return Path(home) / KEY_FILE


_KEY_FIX = ("copy it again from a member, run `pythagoras-node join --force TOKEN` (it replaces "
            "the damaged file), or make a new swarm "
            "with `pythagoras-node init --force`")


def _parse_key(text: str, where: str, fix: str = _KEY_FIX) -> SwarmKey:
    try:
        data = json.loads(text)
        key = SwarmKey(str(data["name"]), data["public"].encode(), data["secret"].encode())
        import zmq.utils.z85

        if len(zmq.utils.z85.decode(key.public)) != 32 or len(zmq.utils.z85.decode(key.secret)) != 32:
            raise ValueError("keys must be 32 bytes")
        import zmq

        if zmq.curve_public(key.secret) != key.public:  # a damaged half: no node would admit it
            raise ValueError("its public key does not belong to its secret key")
        return key
    except Exception as exc:
        raise SecurityError(
            f"{where} is not a valid swarm key ({type(exc).__name__}: {exc}); {fix}"
        ) from None


def load_key(home: Path, path: Path | None = None) -> SwarmKey | None:
    """The swarm key of ``home`` (or the file ``path``), or None when there is none."""
    path = Path(path) if path is not None else key_path(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecurityError(f"cannot read the swarm key {path} ({exc}); check its permissions") from None
    except UnicodeDecodeError:
        raise SecurityError(f"{path} is not a valid swarm key (it is not text); {_KEY_FIX}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("swarm key %s is readable by others (mode %o); run: chmod 600 %s", path, mode, path)
    return _parse_key(text, str(path))


def _write_private(path: Path, text: str, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SecurityError(
            f"{path} already exists: this home belongs to a swarm. Use --force to replace it "
            f"(machines holding the old key stop being members of this node's swarm)"
        ) from None
    except OSError as exc:
        raise SecurityError(
            f"cannot write the swarm key {path} ({exc.strerror}); choose a home you can write "
            f"to with --home or PYTHAGORAS_HOME"
        ) from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode is filtered by the umask; fchmod is not
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def create_key(home: Path, *, name: str | None = None, force: bool = False) -> SwarmKey:
    """Make a new swarm: a fresh CURVE keypair written to ``home/swarm.key`` with mode 0600."""
    import zmq

    public, secret = zmq.curve_keypair()
    key = SwarmKey(name or f"swarm-{secrets.token_hex(3)}", public, secret)
    _write_private(key_path(home), key.to_json(), force=force)
    return key


def join_token(key: SwarmKey) -> str:
    """A one-line token that carries the key file: keep it as secret as the file."""
    text = key.to_json().encode()
    body = base64.urlsafe_b64encode(text).decode().rstrip("=")
    return f"{_TOKEN_PREFIX}{body}.{_token_checksum(text)}"


def _token_checksum(text: bytes) -> str:
    return blake3(b"pythagoras-join-token\0" + text).hexdigest()[:12]


def key_from_token(token: str) -> SwarmKey:
    """The key a join token holds; ``token`` may be the whole line ``pythagoras-node init``
    printed (``pythagoras-node join pyth2-...``): the command words are left out."""
    words = token.split()
    tokens = [w for w in words if w.startswith((_TOKEN_PREFIX, _OLD_TOKEN_PREFIX))]
    token = tokens[-1] if len(tokens) == 1 else token.strip()
    if not token.startswith((_TOKEN_PREFIX, _OLD_TOKEN_PREFIX)):
        raise ConfigurationError(
            f"that is not a join token (it should start with {_TOKEN_PREFIX!r}); copy the whole "
            f"line that `pythagoras-node init` printed"
        )
    body, checksum = token[len(_TOKEN_PREFIX):], None
    if token.startswith(_TOKEN_PREFIX):
        body, _, checksum = body.rpartition(".")
    damaged = ("the join token is damaged; copy the whole line `pythagoras-node init` printed "
               "on the first machine again")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        text = raw.decode()
    except Exception:
        raise ConfigurationError(f"{damaged} (it is not base64)") from None
    if checksum is not None and checksum != _token_checksum(raw):
        raise ConfigurationError(f"{damaged} (its checksum does not match)")
    return _parse_key(text, "the join token", fix=damaged.partition("; ")[2])


def install_key(home: Path, key: SwarmKey, *, force: bool = False) -> Path:
    path = key_path(home)
    _write_private(path, key.to_json(), force=force)
    return path


def curve_server(sock, key: SwarmKey) -> None:
    sock.curve_secretkey = key.secret
    sock.curve_publickey = key.public
    sock.curve_server = True


def curve_client(sock, key: SwarmKey, server_public: bytes | None = None) -> None:
    sock.curve_secretkey = key.secret
    sock.curve_publickey = key.public
    sock.curve_serverkey = server_public or key.public


class Authenticator:
    """The ZAP handler of one context: admits CURVE clients holding the swarm key, nobody else.

    It is a socket, not a thread: the node polls :attr:`socket` in its own loop and calls
    :meth:`handle`, so the node cannot be serving while its authenticator is not.
    """

    def __init__(self, context, key: SwarmKey):
        import zmq

        self.allowed = key.public_raw
        self.socket = context.socket(zmq.REP)
        self.socket.linger = 0
        try:
            self.socket.bind(_ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self.socket.close()
            raise SecurityError(f"cannot start the authenticator ({exc}); refusing to serve") from None
        self.admitted = 0
        self.refused = 0
        self._logged: dict[bytes, float] = {}  # source address -> when its refusal was logged

    def handle(self) -> None:
        """Answer every pending ZAP request (never blocks)."""
        from .sockets import waiting_messages

        for frames in waiting_messages(self.socket, limit=1 << 30):
            self.socket.send_multipart(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 6:
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"400", b"malformed", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        if version == b"1.0" and mechanism == b"CURVE" and credentials and credentials[0] == self.allowed:
            self.admitted += 1
            return [b"1.0", request_id, b"200", b"OK", b"member", b""]
        self.refused += 1
        if not (credentials and credentials[0] in _SELF_CHECK_KEYS):  # not an outsider: our own test
            self._log_refusal(mechanism, address)
        return [b"1.0", request_id, b"400", b"not a member", b"", b""]

    def _log_refusal(self, mechanism: bytes, address: bytes) -> None:
        """Log a refused connection, at most once per source every :data:`REFUSAL_LOG_EVERY`."""
        now = time.monotonic()
        if now - self._logged.get(address, -REFUSAL_LOG_EVERY) < REFUSAL_LOG_EVERY:
            return
        if len(self._logged) >= 1024:  # many sources: forget those not heard of lately
            self._logged = {a: t for a, t in self._logged.items() if now - t < REFUSAL_LOG_EVERY}
        self._logged[address] = now
        log.warning("refused a %s connection from %s (not a member of this swarm)",
                    mechanism.decode(errors="replace"), address.decode(errors="replace"))

    def close(self) -> None:
        self.socket.close(0)


def check_admission(context, endpoint: str, key: SwarmKey, pump, timeout: float = 5.0) -> None:
    """Prove that ``endpoint`` refuses a stranger's key and admits a member's.

    ``pump(seconds)`` runs the node's loop (authenticator included) for a while. Raises
    :class:`SecurityError` when a stranger gets an answer: membership is not enforced.
    """
    import zmq
    import zmq.utils.z85

    from .wire import probe_reply, probe_request

    stranger_public, stranger_secret = zmq.curve_keypair()
    stranger_raw = zmq.utils.z85.decode(stranger_public)
    _SELF_CHECK_KEYS.add(stranger_raw)  # its refusal is expected: not logged as an intrusion
    stranger = context.socket(zmq.DEALER)
    member = context.socket(zmq.DEALER)
    try:
        for sock in (stranger, member):
            sock.linger = 0
            sock.ipv6 = True  # the node may listen on an IPv6 address
        stranger.curve_secretkey, stranger.curve_publickey = stranger_secret, stranger_public
        stranger.curve_serverkey = key.public
        curve_client(member, key)
        stranger.connect(endpoint)
        member.connect(endpoint)
        stranger.send_multipart(probe_request())
        member.send_multipart(probe_request())
        deadline = time.monotonic() + timeout
        admitted = False
        while time.monotonic() < deadline and not admitted:
            pump(0.01)
            if stranger.poll(0):
                raise SecurityError(
                    "a client with a random key was answered: membership is not enforced "
                    "(is the authenticator running?); refusing to serve"
                )
            if member.poll(0):
                admitted = probe_reply(member.recv_multipart())
        if not admitted:
            raise SecurityError(f"a member could not reach this node at {endpoint}; refusing to serve")
        pump(0.05)  # a late answer to the stranger would show here
        if stranger.poll(0):
            raise SecurityError("a client with a random key was answered; refusing to serve")
    finally:
        stranger.close(0)
        member.close(0)
        _SELF_CHECK_KEYS.discard(stranger_raw)
