"""What a batch still owes its caller (the one bookkeeping of every kind of batch)."""

from __future__ import annotations

from pythagoras_p2p.execution.batch import Tally


def test_outcomes_and_cancelled_tasks_each_count_once():
    tally = Tally(4)
    assert tally.take([(0, "a")]) == [(0, "a")]
    assert tally.drop([1, 1, 0]) == [1]  # 0 was answered already; 1 counted once
    assert tally.remaining == 2 and not tally.finished
    # An outcome of a cancelled task arriving late is never returned, nor counted again.
    assert tally.take([(1, "late"), (2, "b")]) == [(2, "b")]
    assert tally.drop([2]) == []
    assert tally.remaining == 1
    assert tally.take([(3, "c")]) == [(3, "c")]
    assert tally.finished


def test_a_batch_cancelled_as_a_whole_owes_nothing():
    tally = Tally(1000)
    tally.take([(7, "x")])
    tally.end()
    assert tally.finished and tally.remaining == 0
