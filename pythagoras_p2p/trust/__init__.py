"""Members and keys: each machine's own keys, member certificates, the signed member list.

- :class:`NodeKeys` — this machine's CURVE and Ed25519 keys (``home/trust/node.key``, 0600),
  made on first use; ``key_id``, ``sign(data)``.
- :func:`verify_signature` — an Ed25519 signature check.
- :class:`Member`, :class:`Members` — certificates and the signed, versioned member list
  (``home/trust/members.json``); ``by_key_id``, ``is_admitted``.
- :class:`Trust` — a home's keys and current list; a node's is ``node.trust`` (its list
  ``node.members``).
"""

from .home import Trust
from .keys import NodeKeys, SwarmSigningKey, key_id_of, trust_dir, verify_signature
from .members import Member, Members, members_path

__all__ = ["NodeKeys", "SwarmSigningKey", "verify_signature", "key_id_of", "trust_dir",
           "Member", "Members", "members_path", "Trust"]
