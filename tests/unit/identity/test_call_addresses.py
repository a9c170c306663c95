"""Call addresses: the cache of small scalars' value addresses never changes an address."""

from __future__ import annotations

from blake3 import blake3

from pythagoras_p2p.identity import calls
from pythagoras_p2p.identity.calls import call_address
from pythagoras_p2p.identity.encoding import value_address

FP = bytes(range(32))


def expected(kwargs: dict) -> bytes:
    out = bytearray(b"pythagoras-call-3\0") + FP
    for name in sorted(kwargs):
        out += name.encode() + b"\0" + value_address(kwargs[name])
    return blake3(out).digest()


SCALARS = [0, 1, -1, True, False, 2**63, -(2**63), 2**64 + 1, 10**40, "1", "", "é" * 300,
           b"1", b"", b"x" * 1000, 1.0, -0.0, 0.0, float("nan"), None]


def test_cached_scalars_keep_their_addresses_and_stay_apart():
    for _ in range(2):  # the second time, from the cache
        for value in SCALARS:
            assert call_address(FP, {"a": value})[0] == expected({"a": value}), repr(value)
    # the addresses kept per call: only of what may travel by address (not small scalars)
    assert dict(call_address(FP, {"a": 1, "b": "x", "c": [1, 2]})[1]) == {"c": value_address([1, 2])}
    addresses = {call_address(FP, {"a": v})[0] for v in (1, True, "1", b"1", 1.0)}
    assert len(addresses) == 5  # equal as dict keys or not, each type its own address
    assert call_address(FP, {"a": 0.0})[0] != call_address(FP, {"a": -0.0})[0]


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(calls, "_SCALARS_KEPT", 8)
    monkeypatch.setattr(calls, "_SCALARS", {})
    for i in range(100):
        assert call_address(FP, {"a": i, "b": str(i)})[0] == expected({"a": i, "b": str(i)})
        assert len(calls._SCALARS) <= 8
