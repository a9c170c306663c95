"""run_task: what runs one task wherever tasks run (worker process, inline, Dask worker)."""

from __future__ import annotations

import pickle

from pythagoras_p2p.execution.functions import Loaded
from pythagoras_p2p.execution.outcomes import Failed, Ok
from pythagoras_p2p.execution.tasks import ArgRef, Task, run_task
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.store.core import MISSING
from pythagoras_p2p.store.packing import unpack


def square(*, x):
    return x * x


def _task(**kwargs) -> Task:
    return Task(3, b"k" * 32, b"c" * 32, pickle.dumps(kwargs), "square(x=...)")


def _load(key: bytes) -> Loaded:
    return Loaded(square, b"f" * 32, {})


def test_a_task_runs_and_its_value_comes_back_with_its_address():
    outcome = run_task(_task(x=7), "here/w0", None, load=_load, get_value=lambda a: MISSING)
    assert type(outcome) is Ok
    assert unpack(outcome.blob) == 49 and outcome.address == value_address(49)
    assert outcome.meta["worker"] == "here/w0"


def test_a_function_that_cannot_be_loaded_fails_its_call_and_nothing_raises():
    def broken(key: bytes) -> Loaded:
        raise ValueError(f"record {key.hex()[:8]} is damaged")

    outcome = run_task(_task(x=7), "here/w0", None, load=broken, get_value=lambda a: MISSING)
    assert type(outcome) is Failed
    assert outcome.type_name == "ValueError" and "is damaged" in outcome.message
    assert outcome.where == "here/w0"


def test_a_missing_large_argument_fails_its_call_naming_the_argument():
    task = _task(x=ArgRef(b"\1" * 32))
    outcome = run_task(task, "here/w0", None, load=_load, get_value=lambda a: MISSING)
    assert type(outcome) is Failed and "argument 'x'" in outcome.message
    found = run_task(task, "here/w0", None, load=_load, get_value=lambda a: 5)
    assert type(found) is Ok and unpack(found.blob) == 25
