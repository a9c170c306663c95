"""A machine's own keys, and the swarm's signing key: made here, kept here (mode 0600).

Every machine of a swarm (a node, or a client without a node) has a :class:`NodeKeys` in its
home: a CURVE keypair for ZeroMQ's encryption and authentication, and an Ed25519 keypair that
signs what this machine vouches for (results, and, on an admin, certificates and member
lists). The secrets never leave the machine: a join sends only the public halves. The first
machine of a swarm also holds the swarm's signing key (:class:`SwarmSigningKey`, made by
``pythagoras-node init``), which certifies that machine as the first admin.

Signatures are Ed25519 from ``cryptography``; nothing here is hand-rolled.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import SecurityError

log = logging.getLogger(__name__)

__all__ = ["NodeKeys", "SwarmSigningKey", "verify_signature", "key_id_of", "trust_dir",
           "b64", "unb64", "write_private"]

TRUST_DIR = "trust"
NODE_KEY_FILE = "node.key"
SWARM_KEY_FILE = "swarm-signing.key"


def trust_dir(home: Path) -> Path:
    """Where a home keeps its keys and the swarm's member list."""
    return Path(home) / TRUST_DIR


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def key_id_of(curve_public: bytes, signing_public: bytes) -> str:
    """A short stable id of a member's public keys (16 hex digits): its name in lists and logs."""
    return blake3(b"pythagoras-member-key\0" + curve_public + b"\0" + signing_public).hexdigest()[:16]


def _public_raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _public_of(secret: bytes) -> bytes:
    """The raw Ed25519 public key of the raw 32-byte secret ``secret``."""
    return _public_raw(Ed25519PrivateKey.from_private_bytes(secret))


def _sign_with(secret: bytes, data: bytes) -> bytes:
    """``data`` signed with the raw 32-byte Ed25519 secret ``secret``."""
    return Ed25519PrivateKey.from_private_bytes(secret).sign(bytes(data))


def verify_signature(signing_public: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``data`` by ``signing_public`` (raw)."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes(signing_public)).verify(bytes(signature), data)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def write_private(path: Path, text: str, *, replace: bool = True) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600 whatever the umask), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.name == TRUST_DIR:
        os.chmod(path.parent, 0o700)
    if not replace and path.exists():
        raise SecurityError(f"{path} already exists; refusing to replace it")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise SecurityError(f"cannot write {path} ({exc.strerror}); choose a home you can write "
                            f"to with --home or PYTHAGORAS_HOME") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode is filtered by the umask; fchmod is not
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_private(path: Path, what: str, fix: str) -> dict | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"cannot read {what} {path} ({exc}); {fix}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); run: chmod 600 %s", path, mode, path)
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data
    except ValueError as exc:
        raise SecurityError(f"{path} is not a valid {what} ({exc}); {fix}") from None


@dataclass(frozen=True)
class NodeKeys:
    """This machine's keys: CURVE (Z85 text, for ZeroMQ) and Ed25519 (for signatures)."""

    curve_public: bytes
    curve_secret: bytes
    signing_secret: bytes  # raw 32 bytes

    @property
    def signing_public(self) -> bytes:
        return _public_of(self.signing_secret)

    @property
    def key_id(self) -> str:
        return key_id_of(self.curve_public, self.signing_public)

    def sign(self, data: bytes) -> bytes:
        return _sign_with(self.signing_secret, data)

    @staticmethod
    def path(home: Path) -> Path:
        return trust_dir(home) / NODE_KEY_FILE

    @classmethod
    def generate(cls) -> NodeKeys:
        import zmq

        public, secret = zmq.curve_keypair()
        signing = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(public, secret, signing)

    @classmethod
    def load(cls, home: Path) -> NodeKeys | None:
        """The keys of ``home``, or None when it has none yet."""
        path = cls.path(home)
        fix = (f"this machine's keys are damaged: move {path} away and join the swarm again "
               f"(`pythagoras-node invite` on an admin, then `pythagoras-node join TOKEN` here)")
        data = _read_private(path, "key file", fix)
        if data is None:
            return None
        try:
            import zmq

            keys = cls(data["curve_public"].encode(), data["curve_secret"].encode(),
                       unb64(data["signing_secret"]))
            if zmq.curve_public(keys.curve_secret) != keys.curve_public:
                raise ValueError("its CURVE public key does not belong to its secret key")
            if len(keys.signing_secret) != 32:
                raise ValueError("its signing key is not 32 bytes")
            return keys
        except Exception as exc:
            raise SecurityError(f"{path} is not a valid key file ({type(exc).__name__}: {exc}); "
                                f"{fix}") from None

    @classmethod
    def load_or_create(cls, home: Path) -> NodeKeys:
        """The keys of the home ``home``, made (and written with mode 0600) on first use."""
        keys = cls.load(home)
        if keys is not None:
            return keys
        keys = cls.generate()
        path = cls.path(home)
        try:
            write_private(path, json.dumps({
                "version": 1, "curve_public": keys.curve_public.decode(),
                "curve_secret": keys.curve_secret.decode(),
                "signing_secret": b64(keys.signing_secret)}, indent=1) + "\n", replace=False)
        except SecurityError:
            if path.exists():  # another process of this home made them first: theirs count
                return cls.load(home) or keys
            raise
        return keys


@dataclass(frozen=True)
class SwarmSigningKey:
    """The swarm's Ed25519 key: certifies the first admin. Kept only on the machine that ran
    ``pythagoras-node init``; its public half is every member's trust anchor."""

    secret: bytes  # raw 32 bytes

    @property
    def public(self) -> bytes:
        return _public_of(self.secret)

    def sign(self, data: bytes) -> bytes:
        return _sign_with(self.secret, data)

    @staticmethod
    def path(home: Path) -> Path:
        return trust_dir(home) / SWARM_KEY_FILE

    @classmethod
    def create(cls, home: Path) -> SwarmSigningKey:
        key = cls(Ed25519PrivateKey.generate().private_bytes_raw())
        write_private(cls.path(home), json.dumps({"version": 1, "secret": b64(key.secret)}) + "\n")
        return key

    @classmethod
    def load(cls, home: Path) -> SwarmSigningKey | None:
        path = cls.path(home)
        fix = "restore it from a backup, or make a new swarm with `pythagoras-node init --force`"
        data = _read_private(path, "swarm signing key", fix)
        if data is None:
            return None
        try:
            key = cls(unb64(data["secret"]))
            if len(key.secret) != 32:
                raise ValueError("its secret is not 32 bytes")
            return key
        except Exception as exc:
            raise SecurityError(f"{path} is not a valid swarm signing key "
                                f"({type(exc).__name__}: {exc}); {fix}") from None
