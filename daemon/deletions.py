"""Results a node deletes because a member asked: a function forgotten swarm-wide (``cache
forget --swarm``), the results of a member removed with ``--drop-results``. Each deletion is logged with the member that asked (:mod:`~pythagoras_p2p.
net.asker`), so a machine's owner can tell from its log whose command emptied its store."""

from __future__ import annotations

import logging
from typing import Any

from pythagoras_p2p.net.asker import describe_asker
from pythagoras_p2p.store.core import Store
from pythagoras_p2p.store.listing import forget_plan
from pythagoras_p2p.trust import Trust

__all__ = ["forget_asked", "DroppedResults", "drop_computed_by"]

log = logging.getLogger(__name__)


def forget_asked(store: Any, fields: dict) -> dict:
    """The answer to a ``forget`` request: the function's stored versions, and unless it is a
    ``dry_run`` how many results were deleted (see :func:`forget_plan`)."""
    name, dry = fields["function"], bool(fields.get("dry_run"))
    plan = forget_plan(store, name, delete=not dry)
    if not dry:
        log.info("forgot %d result(s) of %s, asked by %s", plan["forgot"], name,
                 describe_asker(fields.get("asked_by")))
    return plan


class DroppedResults:
    """Drops the results of members the swarm removed with ``--drop-results``: when this node
    takes a member list that marks a member so (from its peers' heartbeats, or a command of its
    own home), once per such member and node start. Copies of them are refused on arrival
    (:mod:`~pythagoras_p2p.trust.provenance`), so their calls compute again elsewhere."""

    def __init__(self, trust: Trust, store: Store):
        self.trust = trust  # the home's keys and member list
        self.store = store
        self.done: frozenset[str] = frozenset()

    def look(self) -> int:
        """Drop what the current member list newly asks to; returns how many results."""
        self.trust.reload()  # a list a command of this home wrote (a stat when none did)
        members = self.trust.members
        if members is None:
            return 0
        dropped = members.dropped()
        new = dropped - self.done
        if not new:
            return 0
        gone = drop_computed_by(self.store, new)
        self.done = dropped
        names = []
        for key_id in new:
            member = members.by_key_id(key_id)
            names.append(f"{member.hostname if member else '?'} ({key_id[:16]})")
        who = ", ".join(sorted(names))
        log.info("dropped %d result(s) computed by %s, removed from the swarm with their results "
                 "(member list version %d, signed by %s)", gone, who, members.version,
                 members.signer[:16])
        return gone


def drop_computed_by(store: Any, key_ids: frozenset[str]) -> int:
    """Delete every result of this store that one of ``key_ids`` computed; how many."""
    from pythagoras_p2p.store.listing import computed_by, forget

    snap = store.snapshot(meta=True)
    return forget(store, [call for call, _ in snap.results
                          if (computed_by(snap.meta.get(call)) or {}).get("key_id") in key_ids])
