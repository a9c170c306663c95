"""A worker pool checks received values against their addresses in a worker process: the verdict
comes back as a Checked outcome, one value at a time (verify) or many at once (verify_many)."""

from __future__ import annotations

import threading

import pytest

from pythagoras_p2p.execution.pool import WorkerPool
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.packing import pack


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    made = WorkerPool(tmp_path_factory.mktemp("home"), 1, label="verify")
    yield made
    made.close()


def _answer(start) -> tuple:
    done = threading.Event()
    box: list = []
    start(lambda *verdict: (box.append(verdict), done.set()))
    assert done.wait(120), "no verdict"
    return box[0]


def test_one_value_is_checked_against_its_address(pool, tmp_path):
    good = tmp_path / "good"
    good.write_bytes(pack({"x": [1, 2, 3]}))
    address = value_address({"x": [1, 2, 3]})
    assert _answer(lambda cb: pool.verify(address, str(good), cb)) == (True, "")
    ok, reason = _answer(lambda cb: pool.verify(value_address("other"), str(good), cb))
    assert not ok and "not" in reason  # its content has another address
    ok, reason = _answer(lambda cb: pool.verify(address, str(tmp_path / "absent"), cb))
    assert not ok and "cannot be read" in reason


def test_many_values_are_checked_at_once_and_the_bad_ones_named(pool):
    values = [(value_address(i), pack(i)) for i in range(5)]
    values[1] = (value_address(1), pack(100))  # bytes of another value
    values[3] = (value_address(3), b"not a packed value")
    (bad,) = _answer(lambda cb: pool.verify_many(values, cb))
    assert bad == {1, 3}
