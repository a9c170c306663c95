"""Results a node deletes because a member asked: a function forgotten swarm-wide (``cache
forget --swarm``). Each deletion is logged with the member that asked (:mod:`~pythagoras_p2p.
net.asker`), so a machine's owner can tell from its log whose command emptied its store."""

from __future__ import annotations

import logging
from typing import Any

from pythagoras_p2p.net.asker import describe_asker
from pythagoras_p2p.store.listing import forget_plan

__all__ = ["forget_asked"]

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
