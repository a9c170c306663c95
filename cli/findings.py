"""What a ``doctor`` check found: one line for a person, its fix, and details for ``--json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["Finding"]


@dataclass
class Finding:
    """One thing a check found."""

    check: str  # store, key, node, port, mdns, peer, log
    level: str  # ok, info, warn, fail
    message: str
    fix: str = ""  # what to do about it ("" when nothing)
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)
