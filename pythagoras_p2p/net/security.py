"""Swarm membership on the wire: a machine's credentials, CURVE socket set-up, the ZAP authenticator.

**Key model.** Every machine has its own keys (:class:`~pythagoras_p2p.trust.NodeKeys`, made on
the machine, never copied) and a certificate in the swarm's signed member list (see
:mod:`pythagoras_p2p.trust`). A node serves with its own CURVE key; a client connects with its
own and must know the server's public key, which it takes from the member list (by the node's
id, learned from mDNS or a peer list) or, for an address named by hand, from what this process
learned of that address, else by trying the member nodes' keys on it at once
(:meth:`Credentials.server_key`). A node's ZAP handler admits a CURVE client only if its key is
in the list: certified members get their key id as ZeroMQ's ``User-Id``, removed members are let
through only to be told so (every request gets ``removed``), the one-time key of an open
invitation only to ask to join; any other key fails the handshake. The node checks the
``User-Id`` of every message against the current list, so a removal also shuts connections that
are already open.

The one-key swarms of earlier releases (``PYTHAGORAS_HOME/swarm.key``, join tokens ``pyth1-`` and
``pyth2-``) are refused with a message saying how to move (:data:`MOVE_TO_MEMBER_KEYS`).

**Authenticator.** libzmq lets any CURVE client in when nothing answers ZAP requests, so the
authenticator is not optional: :class:`Authenticator` binds the ZAP endpoint of the node's own
context and is polled by the node's own loop. :func:`check_admission` proves it works before
the node serves, by trying a stranger's key (which must fail) and a member's (which must pass).
A message that reaches the node without a ``User-Id`` (no ZAP handler ran) is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..defaults import REFUSAL_LOG_EVERY
from ..errors import SecurityError
from ..trust import Members, NodeKeys, Trust, members_path
from ..trust.invites import MOVE_TO_MEMBER_KEYS, refuse_old_token

__all__ = ["Credentials", "SwarmKey", "SecurityError", "Authenticator", "load_key",
           "load_credentials", "key_path", "create_key", "check_admission", "curve_client", "curve_server",
           "MOVE_TO_MEMBER_KEYS", "refuse_old_token", "USER_REMOVED", "USER_INVITED"]

log = logging.getLogger(__name__)

KEY_FILE = "swarm.key"  # the one shared key of earlier releases: refused, with the way to move
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_SELF_CHECK_KEYS: set[bytes] = set()  # the random keys of this process's own admission checks
QUICK_PROBE = 0.25  # seconds an I/O loop's connect tries the member keys on a new address
FAILED_FOR = 10.0  # seconds an address no key answered is tried only in the background
USER_REMOVED = "removed:"  # the User-Id prefix of a removed member's connection
USER_INVITED = "invited:"  # the User-Id prefix of a connection holding an invitation's key

def key_path(home: Path) -> Path:
    """Where the member list of ``home`` is (what makes the home a member of a swarm)."""
    return members_path(home)


class Credentials:
    """What a machine connects and serves with: its own CURVE keys, the swarm's member list, and
    the server keys it learned for addresses. ``public``/``secret`` are its own CURVE keys (Z85)."""

    def __init__(self, trust: Trust):
        if trust.members is None:
            raise SecurityError(f"{trust.home} is not a member of a swarm")
        self.trust = trust
        self.public = trust.keys.curve_public
        self.secret = trust.keys.curve_secret
        self._book: dict[tuple[str, int], bytes] = {}  # address → the server key that answered
        self._probing: set[tuple[str, int]] = set()  # addresses tried in a thread now
        self._failed: dict[tuple[str, int], float] = {}  # address → when no key answered there

    @property
    def members(self) -> Members:
        assert self.trust.members is not None
        return self.trust.members

    @property
    def name(self) -> str:
        return self.members.swarm_name

    @property
    def tag(self) -> str:
        return self.members.tag

    @property
    def key_id(self) -> str:
        return self.trust.keys.key_id

    @property
    def public_raw(self) -> bytes:
        import zmq.utils.z85

        return zmq.utils.z85.decode(self.public)

    def learn(self, host: str, port: int, node_id: str | None) -> None:
        """Remember which member node listens at ``host:port`` (from mDNS, a peer list, a reply)."""
        member = self.members.by_node_id(node_id) if node_id else None
        if member is not None:
            self._book[(host, int(port))] = member.curve_public

    def forget(self, host: str, port: int) -> None:
        self._book.pop((host, int(port)), None)

    def knows(self, host: str, port: int) -> bool:
        """Whether the server key of ``host:port`` was learned (by a probe in the background)."""
        return (host, int(port)) in self._book

    def server_key(self, host: str, port: int, node_id: str | None = None,
                   context: Any = None, timeout: float = 1.5, wait: bool = True) -> bytes | None:
        """The CURVE public key of the member node at ``host:port`` (None: no member answers there).

        Known from the node id, or learned for the address; else, with one member node, its key;
        else every member node's key is tried on the address at once and the one that answers
        kept. ``wait=False`` (an I/O loop's connect): the keys are tried for a moment only
        (:data:`QUICK_PROBE`); an address that does not answer that fast (a frozen or stopped
        node) goes on being tried in a thread of its own while this returns None; the caller
        connects again as soon as :meth:`knows` says it was learned (a client's loop does not
        wait for its next retry: a slow first probe must not eat its connect timeout).
        """
        if node_id:
            member = self.members.by_node_id(node_id)
            if member is not None:
                return member.curve_public
        if self._own_node_at(host, int(port)):
            return self.public  # this home's own node serves with this machine's keys
        known = self._book.get((host, int(port)))
        if known is not None and self._admitted_server(known):
            return known
        nodes = [m.curve_public for m in self.members.current() if m.is_node]
        if len(nodes) == 1:
            return nodes[0]
        if not nodes:
            return None
        address = (host, int(port))
        if wait:
            found = _try_keys(context, host, int(port), self, nodes, timeout)
        elif address in self._probing or \
                time.monotonic() - self._failed.get(address, -FAILED_FOR) < FAILED_FOR:
            found = None  # being tried, or silent a moment ago: not again in the caller's loop
        else:
            found = _try_keys(context, host, int(port), self, nodes, QUICK_PROBE)
        if found is not None:
            self._book[address] = found
            self._failed.pop(address, None)
        elif not wait and address not in self._probing:
            self._probing.add(address)
            threading.Thread(target=self._probe_in_background, args=(address, nodes, timeout),
                             name=f"pythagoras-key-probe-{host}:{port}", daemon=True).start()
        return found

    def _probe_in_background(self, address: tuple[str, int], nodes: list, timeout: float) -> None:
        try:
            found = _try_keys(None, address[0], address[1], self, nodes, max(timeout, 5.0))
            if found is not None:
                self._book[address] = found
                self._failed.pop(address, None)
            else:
                self._failed[address] = time.monotonic()
        except Exception as exc:  # e.g. the process is shutting down: the next connect tries again
            log.debug("probing %s:%d for its key failed: %r", *address, exc)
        finally:
            self._probing.discard(address)

    def _own_node_at(self, host: str, port: int) -> bool:
        """Whether this home's own node listens at ``host:port`` (its ``node.json`` says where)."""
        import json

        try:
            info = json.loads((self.trust.home / "node.json").read_text())
            if int(info["port"]) != port:
                return False
            bind = str(info.get("bind", ""))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if host in ("127.0.0.1", "::1", "localhost", bind):
            return True
        if bind in ("0.0.0.0", "*", "::"):
            from .mdns import local_addresses

            return host in local_addresses()
        return False

    def _admitted_server(self, curve_public: bytes) -> bool:
        member = self.members.by_curve_public(curve_public)
        return member is not None and self.members.is_admitted(member.key_id)

    def admitted_server(self, curve_public: bytes | None) -> bool:
        """Whether the node serving with ``curve_public`` is still a member."""
        return curve_public is not None and self._admitted_server(curve_public)


SwarmKey = Credentials  # the name the rest of the code knew the credentials by


def _try_keys(context: Any, host: str, port: int, credentials: Credentials,
              keys: Iterable[bytes], timeout: float) -> bytes | None:
    """Which of ``keys`` the node at ``host:port`` serves with: a probe under each, at once."""
    import zmq

    from .sockets import endpoint
    from .wire import probe_request

    context = context or zmq.Context.instance()
    sockets = {}
    try:
        for key in keys:
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            sock.ipv6 = True
            curve_client(sock, credentials, key)
            sock.connect(endpoint(host, port))
            sock.send_multipart(probe_request())
            sockets[sock] = key
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        ready = dict(poller.poll(int(timeout * 1000)))
        return next((sockets[s] for s in sockets if s in ready), None)
    finally:
        for sock in sockets:
            sock.close(0)


def load_credentials(home: Path) -> Credentials | None:
    """The credentials of ``home``, or None when it is no member of a swarm (nor of an old one)."""
    home = Path(home)
    members = Members.load(home)
    if members is None:
        if (home / KEY_FILE).exists():
            raise SecurityError(f"{home / KEY_FILE}: {MOVE_TO_MEMBER_KEYS}")
        return None
    trust = Trust(home, NodeKeys.load_or_create(home), members)
    if not trust.is_member:
        revoked = members.is_revoked(trust.keys.key_id)
        why = ("was removed from the swarm by an admin" if revoked else
               "is not (or no longer) a member of its swarm")
        raise SecurityError(f"this machine (key {trust.keys.key_id}, home {home}) {why}; an admin "
                            f"can let it in again with `pythagoras-node invite`, then "
                            f"`pythagoras-node join TOKEN` here")
    return Credentials(trust)


def load_key(home: Path, path: Path | None = None) -> Credentials | None:
    """The credentials of ``home`` (or of the home ``path``), or None when it has none."""
    if path is not None:
        path = Path(path)
        if path.is_dir():
            return load_credentials(path)
        if path.name == KEY_FILE or path.exists():
            raise SecurityError(f"{path}: {MOVE_TO_MEMBER_KEYS}")
        raise SecurityError(f"{path} does not exist; connection='s key is the home of a member "
                            f"(a folder holding trust/members.json)")
    return load_credentials(home)


def create_key(home: Path, *, name: str | None = None, hostname: str | None = None,
               force: bool = True) -> Credentials:
    """Make a new swarm with ``home`` as its first admin (what ``pythagoras-node init --force``
    does: a home of another swarm leaves it; ``force=False`` refuses that)."""
    if not force and members_path(home).exists():
        raise SecurityError(f"{home} already belongs to a swarm; use --force to make a new one")
    from ..trust.enroll import create_swarm

    create_swarm(home, name=name, hostname=hostname or Path(home).name)
    credentials = load_credentials(home)
    assert credentials is not None
    return credentials


def curve_server(sock, key: Credentials) -> None:
    sock.curve_secretkey = key.secret
    sock.curve_publickey = key.public
    sock.curve_server = True


def curve_client(sock, key: Credentials, server_public: bytes | None = None) -> None:
    """A client socket with this machine's keys, to the server ``server_public`` (default: this
    machine's own node, which serves with the same keys)."""
    sock.curve_secretkey = key.secret
    sock.curve_publickey = key.public
    sock.curve_serverkey = server_public or key.public


class Authenticator:
    """The ZAP handler of one context: admits the CURVE keys of the member list, nobody else.

    A member's connection gets its key id as ``User-Id``; a removed member's ``removed:KEYID``
    (the node tells it so and serves it nothing); the key of an open invitation (``invited``,
    a function of the key's Z85 text) ``invited:ID`` (it may only ask to join). For a key it
    does not know it first takes a newer list this home holds (``refresh``), so a machine
    admitted by a command here is let in at once.

    It is a socket, not a thread: the node polls :attr:`socket` in its own loop and calls
    :meth:`handle`, so the node cannot be serving while its authenticator is not.
    """

    def __init__(self, context, key: Credentials, invited=None, refresh=None):
        import zmq

        self.credentials = key
        self.invited = invited or (lambda public: None)
        self.refresh = refresh  # takes a list a command of this home wrote; True if it did
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
        user = self._user(credentials[0]) if version == b"1.0" and mechanism == b"CURVE" \
            and credentials and len(credentials[0]) == 32 else None
        if user is not None:
            self.admitted += 1
            return [b"1.0", request_id, b"200", b"OK", user.encode(), b""]
        self.refused += 1
        if not (credentials and credentials[0] in _SELF_CHECK_KEYS):  # not an outsider: our own test
            self._log_refusal(mechanism, address)
        return [b"1.0", request_id, b"400", b"not a member", b"", b""]

    def _user(self, raw_public: bytes) -> str | None:
        import zmq.utils.z85

        public = zmq.utils.z85.encode(raw_public)
        members = self.credentials.members
        member = members.by_curve_public(public)
        if member is None and self.refresh is not None and self.refresh():
            members = self.credentials.members  # a member admitted a moment ago here
            member = members.by_curve_public(public)
        if member is not None:
            if members.is_admitted(member.key_id):
                return member.key_id
            if members.is_revoked(member.key_id):
                return USER_REMOVED + member.key_id
            return None
        invitation = self.invited(public)
        return None if invitation is None else USER_INVITED + invitation

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
