"""A result's homes (rendezvous hashing) and the range digests repair compares (swarm/homes.py)."""

from __future__ import annotations

import os
import random

from pythagoras_p2p.swarm.homes import RangeDigests, by_home, check_digests, homes

NODES = [f"node{i:02d}" for i in range(8)]
CALLS = [os.urandom(32) for _ in range(3000)]


def test_homes_are_r_distinct_members_whatever_the_order_they_are_listed_in():
    for call in CALLS[:200]:
        picked = homes(call, NODES, 3)
        assert len(set(picked)) == 3 and set(picked) <= set(NODES)
        assert homes(call, random.sample(NODES, len(NODES)), 3) == picked
    assert sorted(homes(CALLS[0], NODES[:2], 3)) == NODES[:2]  # fewer members than R: all


def test_a_node_that_joins_takes_only_calls_it_becomes_a_home_of():
    moved = 0
    for call in CALLS:
        before, after = set(homes(call, NODES, 3)), set(homes(call, [*NODES, "newcomer"], 3))
        assert after <= before | {"newcomer"}
        moved += after != before
    assert 0.2 < moved / len(CALLS) < 0.5  # about R/N = 3/9 of them, not all


def test_each_node_is_home_of_about_its_share():
    shares = {node: len(calls) for node, calls in by_home(CALLS, NODES, 3).items()}
    expected = len(CALLS) * 3 / len(NODES)
    assert set(shares) == set(NODES)
    assert all(0.8 * expected < n < 1.2 * expected for n in shares.values()), shares


def test_range_digests_tell_equal_sets_apart_from_different_ones():
    mine = RangeDigests(CALLS)
    theirs = RangeDigests(reversed(CALLS))
    assert mine.differing(theirs.to_wire()) == []
    lacking = RangeDigests(CALLS[1:])
    assert mine.differing(lacking.to_wire()) == [CALLS[0][0]]  # only the range of the missing call
    assert RangeDigests().differing(mine.to_wire()) == sorted({c[0] for c in CALLS})


def test_malformed_digests_are_refused():
    good = RangeDigests(CALLS[:10]).to_wire()
    assert check_digests(good) == good
    for bad in ([], {"256": [1, "0" * 32]}, {"x": [1, "0" * 32]}, {"1": [1, "0" * 31]},
                {"1": [-1, "0" * 32]}, {"1": [1, "g" * 32]}, {"1": [True, "0" * 32]}):
        assert check_digests(bad) is None, bad
