"""Which calls start on a node's workers, and when: its owner's state, then a fair share.

A ``run`` the node accepts waits in the :class:`~.fairshare.FairShare` queue until a worker is
free (while calls are short, until the pool holds enough to batch them), then goes to the pool.
Each call has a :class:`Slot` in the node's running calls: cancelling it drops it from the queue,
or stops its worker once started. Once a second :meth:`Admission.look` asks the
:class:`~.policy.Policy`; a node that becomes paused hands its queued calls back to their
callers (``paused``: they place them elsewhere), and its running ones too with ``--preempt``.

Speculative copies of stragglers (a client's second copy of a slow call) are taken only by an
idle worker with nothing queued, never for a call that asks for resources, never while paused,
and never with ``--no-speculate``: a copy must not delay anybody's own call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from pythagoras_p2p.defaults import POOL_MAX_CHUNK
from pythagoras_p2p.execution.outcomes import Ok
from pythagoras_p2p.execution.pool import WorkerPool
from pythagoras_p2p.execution.tasks import Task
from pythagoras_p2p.net import wire

from .fairshare import FairShare
from .policy import Policy

__all__ = ["Admission", "Slot"]

log = logging.getLogger(__name__)


class Slot:
    """A call's place at this node: queued (``batch`` None) or started (its pool batch)."""

    __slots__ = ("admission", "ident", "call", "batch", "speculative")

    def __init__(self, admission: Admission, ident: bytes, call: bytes, speculative: bool):
        self.admission = admission
        self.ident = ident
        self.call = call
        self.batch = None
        self.speculative = speculative

    def cancel(self) -> None:
        self.admission.drop(self)


class NodeSide(Protocol):
    """What the admission uses of its node (:class:`~pythagoras_p2p.daemon.node.Node`)."""

    @property
    def node_id(self) -> str: ...

    @property
    def home(self) -> Path: ...

    @property
    def config(self) -> Any: ...  # its workers, the owner's settings

    @property
    def pool(self) -> WorkerPool: ...

    @property
    def handlers(self) -> Any: ...  # the calls running here (to hand back when it pauses)

    def own_pids(self) -> list[int]: ...

    def submit(self, task: Task) -> Any: ...


class Admission:
    """Owned by the node's loop; see the module docstring."""

    def __init__(self, node: NodeSide):
        self.node = node
        self.policy = Policy(node.home, node.config.owner, node.own_pids)
        self.fair = FairShare()
        self.slots: dict[bytes, Slot] = {}  # call -> its slot, queued or started
        self.started = 0
        self.speculative = 0  # copies of stragglers taken
        self.speculative_won = 0  # ... that ran to the end here
        self.handed_back = 0  # calls given back to their callers because the node paused

    # ------------------------------------------------------------------ taking calls

    @property
    def paused(self) -> bool:
        """Whether the owner's policy takes no new call now."""
        return self.policy.paused

    def refusal(self, needs: tuple, speculative: bool) -> str | None:
        """Why a new call is not taken now (answered ``paused``), or None."""
        if self.policy.paused:
            return f"node {self.node.node_id} takes no new calls: {self.policy.reason}"
        memory = dict(needs).get("memory", 0.0)
        short = self.policy.room_for(memory)
        if short:
            return f"node {self.node.node_id} cannot start the call now: {short}"
        if speculative:
            if not self.policy.config.speculate:
                return f"node {self.node.node_id} runs no speculative copies (--no-speculate)"
            if needs or len(self.fair) or self.started >= self.node.config.workers:
                return f"node {self.node.node_id} has no idle worker for a speculative copy"
        return None

    def enqueue(self, ident: bytes, task: Any, speculative: bool) -> Slot:
        slot = self.slots[task.call] = Slot(self, ident, task.call, speculative)
        if speculative:
            self.speculative += 1
        self.fair.push(ident, task.call, task)
        return slot

    def start(self) -> None:
        """Give the pool the next calls in turn while it has room for them."""
        room = self._capacity() - self.started
        while room > 0 and (turn := self.fair.pop()) is not None:
            ident, call, task = turn
            slot = self.slots.get(call)
            if slot is None:  # pragma: no cover - a dropped call leaves the queue too
                continue
            slot.batch = self.node.submit(task)
            self.started += 1
            room -= 1

    def _capacity(self) -> int:
        """Calls the pool may hold at once: one per worker while calls are long (the rest
        wait here, in turn), enough to batch them while they are short."""
        workers = self.node.config.workers
        return workers * 2 * POOL_MAX_CHUNK if self.node.pool.calls_are_short() else workers

    def ended(self, call: bytes, outcome: Any) -> None:
        """A started call ended (its outcome is being answered)."""
        slot = self.slots.pop(call, None)
        if slot is None:
            return
        self.started -= 1
        duration = outcome.meta.get("duration") if type(outcome) is Ok else None
        if slot.speculative and type(outcome) is Ok:
            self.speculative_won += 1
        self.fair.ended(slot.ident, duration)

    def drop(self, slot: Slot) -> None:
        """A call nobody waits for any more: out of the queue, or its worker stopped."""
        if self.slots.pop(slot.call, None) is None:
            return
        if slot.batch is None:
            self.fair.remove(slot.call)
            return
        slot.batch.cancel()
        self.started -= 1
        self.fair.ended(slot.ident, None)

    # ------------------------------------------------------------------ the owner's state

    def look(self) -> None:
        """Once a second: the owner's state; pausing hands calls back."""
        changed = self.policy.look()
        if changed:
            log.info("node %s: %s", self.node.node_id,
                     f"paused: {self.policy.reason}" if self.policy.paused else "takes calls again")
        if not self.policy.paused:
            return
        calls = self.fair.take_all()
        if self.policy.config.preempt:
            calls += [call for call, slot in self.slots.items() if slot.batch is not None]
        if calls:
            message = (f"node {self.node.node_id} paused ({self.policy.reason}) and handed the "
                       f"call back: run it elsewhere")
            self.handed_back += self.node.handlers.calls.running.hand_back(calls, wire.ERR_PAUSED, message)

    def facts(self) -> dict:
        """For ``status``: the owner's state, the callers served, the speculative copies."""
        return {"owner": self.policy.as_dict(), "callers": self.fair.rows(),
                "speculative": self.speculative, "speculative_won": self.speculative_won,
                "handed_back": self.handed_back}
