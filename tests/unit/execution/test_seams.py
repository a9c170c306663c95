"""The seams of execution: every backend's collaborators have all that their Protocols list, a run
never reaches into a backend's private members, and calls in flight are joined, not repeated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pythagoras_p2p.execution as execution
from pythagoras_p2p.clouds.dask import DaskExecutor
from pythagoras_p2p.clouds.dask_batch import DaskBatch
from pythagoras_p2p.clouds.local import LocalExecutor, _InlineBatch
from pythagoras_p2p.clouds.seams import StoreResults
from pythagoras_p2p.clouds.swarm import SwarmExecutor, SwarmResults
from pythagoras_p2p.execution.batch import Batch
from pythagoras_p2p.execution.inflight import InflightCalls
from pythagoras_p2p.execution.interfaces import Executor, Results, TaskBatch, TaskPool
from pythagoras_p2p.execution.pool import WorkerPool
from pythagoras_p2p.swarm.dispatcher import SwarmDispatcher


def _members(protocol: type) -> set[str]:
    names = set()
    for klass in protocol.__mro__:
        if klass.__name__ in ("Protocol", "Generic", "object"):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_")}
        names |= set(getattr(klass, "__annotations__", {}))
    return names


def _has(klass: type, name: str) -> bool:
    if hasattr(klass, name):
        return True
    # an attribute set in __init__: look for "self.<name> =" (or "self.<name>: T =") in its source
    import inspect

    return any(re.search(rf"self\.{name}\s*[:=]", inspect.getsource(k)) for k in klass.__mro__
               if k is not object and k.__module__.startswith("pythagoras_p2p"))


@pytest.mark.parametrize(("protocol", "implementations"), [
    (Results, [StoreResults, SwarmResults]),
    (Executor, [LocalExecutor, SwarmExecutor, DaskExecutor]),
    (TaskBatch, [Batch, _InlineBatch, DaskBatch]),
    (TaskPool, [WorkerPool, SwarmDispatcher]),
], ids=lambda v: getattr(v, "__name__", "impl"))
def test_every_collaborator_has_what_its_protocol_lists(protocol, implementations):
    wanted = _members(protocol)
    assert wanted, protocol
    for klass in implementations:
        lacking = sorted(name for name in wanted if not _has(klass, name))
        assert not lacking, f"{klass.__name__} lacks {lacking} of {protocol.__name__}"


def test_execution_never_reaches_into_a_backends_private_members():
    folder = Path(execution.__file__).parent
    reaching = [f"{path.name}:{n}: {line.strip()}"
                for path in sorted(folder.glob("*.py"))
                for n, line in enumerate(path.read_text().splitlines(), 1)
                if re.search(r"\b(cloud|pool|node)\._", line)]
    assert not reaching, reaching


class _Run:
    """A run as InflightCalls sees it: it accepts followers until its slot is resolved."""

    def __init__(self, resolved: set[int] = frozenset()):
        self.resolved = set(resolved)
        self.followers: list = []

    def follow(self, slot, run, their_slot):
        if slot in self.resolved:
            return False
        self.followers.append((slot, run, their_slot))
        return True

    def resolve(self, slot, value, *, error=False):
        self.resolved.add(slot)

    def unwant(self, slot):
        pass


def test_a_later_run_joins_calls_in_flight_and_registers_the_others():
    inflight = InflightCalls()
    first, second = _Run(), _Run()
    own, leaders = inflight.join_or_register(first, [(0, b"a"), (1, b"b")])
    assert own == [0, 1] and leaders == {}
    own, leaders = inflight.join_or_register(second, [(0, b"b"), (1, b"c")])
    assert own == [1]  # b"c" is new: the second run executes it
    assert leaders == {0: (first, 1)}  # b"b": the first run's slot 1
    assert first.followers == [(1, second, 0)]


def test_a_call_whose_leader_has_resolved_it_is_executed_again_and_leave_is_per_run():
    inflight = InflightCalls()
    first = _Run(resolved={0})
    inflight.join_or_register(first, [(0, b"a")])
    second = _Run()
    own, leaders = inflight.join_or_register(second, [(0, b"a")])
    assert own == [0] and leaders == {}  # the first run no longer takes followers for it
    inflight.leave(first, [b"a"])  # not the first run's any more: stays the second's
    assert len(inflight) == 1
    inflight.leave(second, [b"a"])
    assert len(inflight) == 0
