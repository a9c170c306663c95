"""Where a result lives in the swarm: its *homes*, by rendezvous hashing.

The homes of a call are the ``R`` live nodes with the highest score ``blake3(call ‖ node id)``.
Every node and every client computes them alone, from the call address and the ids of the
nodes it sees, and they agree whenever they see the same nodes: no coordinator, no ring to
keep. When a node joins or leaves, only the calls for which it is (or becomes) one of the top
``R`` change homes — about ``R/N`` of them — so churn moves little data.

Ranges of the address space (the first byte of a call address: 256 of them) are the unit of
anti-entropy: two nodes compare one digest per range — the count and the XOR of the calls they
hold in it — and exchange lists of calls only for the ranges that differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from blake3 import blake3

__all__ = ["score", "homes", "by_home", "RangeDigests", "RANGES", "check_digests"]

RANGES = 256


def score(call: bytes, node_id: str) -> bytes:
    """The rendezvous score of ``node_id`` for ``call`` (higher wins; bytes compare in order)."""
    return blake3(call + node_id.encode()).digest(8)


def homes(call: bytes, node_ids: Iterable[str], r: int) -> list[str]:
    """The ids of the ``r`` nodes (of ``node_ids``) that are homes of ``call``, best first."""
    ranked = sorted(node_ids, key=lambda node: score(call, node), reverse=True)
    return ranked[:max(1, r)]


class RangeDigests:
    """Count and XOR of call addresses per range: equal digests, equal sets (with certainty
    for any two sets that differ by fewer than a few calls, and with overwhelming odds beyond:
    call addresses are blake3 hashes)."""

    __slots__ = ("counts", "xors")

    def __init__(self, calls: Iterable[bytes] = ()):
        self.counts = [0] * RANGES
        self.xors = [0] * RANGES
        for call in calls:
            self.add(call)

    def add(self, call: bytes) -> None:
        i = call[0]
        self.counts[i] += 1
        self.xors[i] ^= int.from_bytes(call[:16], "little")

    def to_wire(self) -> dict:
        """Only the ranges that hold calls: ``{range: [count, xor hex]}``."""
        return {str(i): [c, f"{x:032x}"] for i, (c, x) in enumerate(zip(self.counts, self.xors, strict=True)) if c}

    def differing(self, theirs: dict) -> list[int]:
        """The ranges where ``theirs`` (a :meth:`to_wire` dict) differs from these digests."""
        out = []
        for i in range(RANGES):
            item = theirs.get(str(i))
            count, xor = (0, 0) if item is None else (item[0], int(item[1], 16))
            if count != self.counts[i] or xor != self.xors[i]:
                out.append(i)
        return out


def check_digests(theirs: object) -> dict | None:
    """``theirs`` if it is a well-formed :meth:`RangeDigests.to_wire` dict, else None."""
    if not isinstance(theirs, dict) or len(theirs) > RANGES:
        return None
    for key, item in theirs.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) < RANGES):
            return None
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int
                and item[0] >= 0 and isinstance(item[1], str) and len(item[1]) == 32):
            return None
        try:
            int(item[1], 16)
        except ValueError:
            return None
    return theirs


def by_home(calls: Sequence[bytes], node_ids: Sequence[str], r: int) -> dict[str, list[bytes]]:
    """``calls`` grouped by each of their homes (a call appears under each of its ``r`` homes)."""
    grouped: dict[str, list[bytes]] = {}
    for call in calls:
        for node in homes(call, node_ids, r):
            grouped.setdefault(node, []).append(call)
    return grouped
