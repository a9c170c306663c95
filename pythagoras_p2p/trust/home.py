"""A home's membership: its own keys and the member list it holds, kept current.

A node holds one :class:`Trust` (``node.trust``; the list it admits by is ``node.members``).
It takes a newer list from its peers (see ``accept``) and notices when a command of its own
home (``pythagoras-node remove``, ``join``) wrote one (``reload``), once a second.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .keys import NodeKeys
from .members import Member, Members, members_path

__all__ = ["Trust"]

log = logging.getLogger(__name__)


class Trust:
    """This machine's keys and the swarm's member list as this home knows it."""

    def __init__(self, home: Path, keys: NodeKeys, members: Members | None):
        self.home = Path(home)
        self.keys = keys
        self.members = members
        self._stamp = self._file_stamp()

    @classmethod
    def load(cls, home: Path) -> Trust:
        """The trust of ``home``: its keys (made on first use) and its member list, if any."""
        return cls(home, NodeKeys.load_or_create(home), Members.load(home))

    @property
    def me(self) -> Member | None:
        """This machine's own certificate, when the list holds one."""
        return None if self.members is None else self.members.by_key_id(self.keys.key_id)

    @property
    def is_member(self) -> bool:
        return self.members is not None and self.members.is_admitted(self.keys.key_id)

    @property
    def is_admin(self) -> bool:
        me = self.me
        return self.is_member and me is not None and me.is_admin

    def accept(self, members: Members) -> bool:
        """Take ``members`` if it is a newer list of this swarm (already verified); keep it."""
        if self.members is None or not members.newer_than(self.members):
            return False
        self.members = members
        try:
            members.save(self.home)
            self._stamp = self._file_stamp()
        except Exception as exc:  # kept in memory; written again with the next one
            log.warning("cannot keep the member list in %s: %s", self.home, exc)
        return True

    def reload(self) -> bool:
        """Take the list in the home's file when another process wrote a newer one there."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            found = Members.load(self.home)
        except Exception as exc:
            log.warning("ignoring the member list in %s: %s", self.home, exc)
            return False
        if found is None or (self.members is not None and not found.newer_than(self.members)):
            return False
        self.members = found
        return True

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = members_path(self.home).stat()
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None
