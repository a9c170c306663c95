"""How a task ended: the outcome types, and the exception a failed outcome stands for.

Every backend hands ``run_calls`` one outcome per task:

* :class:`Ok`: the call returned; its value's address, the packed value (``None`` when the value
  was written where the task ran: large values go straight to the shared store, or stay on the
  node that computed them until they are fetched) and the result's metadata;
* :class:`Failed`: the call raised; the exception pickled (``None`` if it could not be), its type
  name, message and traceback text, and where it ran;
* :class:`Stored`: another process of the home stored the result while this call waited for its
  lease (see :mod:`pythagoras_p2p.store.leases`), and this is the value;
* :class:`Crashed`: the call killed its worker on every attempt;
* :class:`Refused`: the call could not be run where it was sent (no peer reachable, none
  satisfying ``requires=``, a value refused...): ``code`` picks the exception raised.

A verification job (a received value checked against its address in a worker: see
``WorkerPool.verify``) is not a call: it ends with a :class:`Checked`, which never reaches a run.

Outcomes cross the pipe from a worker process pickled, thousands a second: they are small classes
with ``__slots__`` that pickle as their class and fields. They are treated as immutable but not
frozen (a frozen dataclass's ``__init__`` costs three times as much, paid twice per outcome: in the
worker and again when the supervisor unpickles it). Their wire form is
:mod:`pythagoras_p2p.net.outcomes_wire`.
"""

from __future__ import annotations

import pickle
import reprlib
import traceback
from dataclasses import dataclass
from typing import Any

from ..errors import PythagorasError, RemoteError, WorkerCrashedError

__all__ = [
    "Ok", "Failed", "Stored", "Crashed", "Refused", "Outcome", "Checked",
    "REQUIREMENTS", "RESOURCES", "UNREACHABLE", "REMOTE", "CLOSED",
    "failure_outcome", "rebuild_exception", "RemoteTraceback",
]

#: Codes of a :class:`Refused` outcome (they never travel on the wire): no peer satisfies
#: ``requires=`` (raises :class:`~pythagoras_p2p.errors.RequirementsError`) ...
REQUIREMENTS = "requirements"
#: ... no machine could ever give it the resources it asks for (raises ``ResourcesError``) ...
RESOURCES = "resources"
#: ... no peer could take the call (raises :class:`~pythagoras_p2p.net.rpc.NodeUnreachable`) ...
UNREACHABLE = "unreachable"
#: ... a node refused the call or one of its values, or answered it with a malformed reply ...
REMOTE = "remote"
#: ... the cloud was closed before the call was sent (the last two raise ``PythagorasError``).
CLOSED = "closed"


@dataclass(slots=True)
class Ok:
    """The call returned: ``blob`` is its packed value, or ``None`` when the value was written
    where the task ran (then it is read from the store, or fetched from the node, by address)."""

    address: bytes
    blob: bytes | None
    meta: dict

    def __reduce__(self):
        return Ok, (self.address, self.blob, self.meta)


@dataclass(slots=True)
class Failed:
    """The call raised: the exception (pickled with cloudpickle; ``None`` if it could not be),
    its type name, message and formatted traceback, and where it ran."""

    pickled: bytes | None
    type_name: str
    message: str
    traceback: str
    where: str

    def __reduce__(self):
        return Failed, (self.pickled, self.type_name, self.message, self.traceback, self.where)


@dataclass(slots=True)
class Stored:
    """The result another process of this home stored while the call waited for its lease."""

    value: Any

    def __reduce__(self):
        return Stored, (self.value,)


@dataclass(slots=True)
class Crashed:
    """The call killed the worker running it on every attempt (the message says how)."""

    message: str

    def __reduce__(self):
        return Crashed, (self.message,)


@dataclass(slots=True)
class Refused:
    """The call could not be run where it was sent; ``code`` is :data:`REQUIREMENTS`,
    :data:`UNREACHABLE`, :data:`REMOTE` or :data:`CLOSED`."""

    code: str
    message: str

    def __reduce__(self):
        return Refused, (self.code, self.message)


Outcome = Ok | Failed | Stored | Crashed | Refused


@dataclass(slots=True)
class Checked:
    """The verdict of a verification job: the positions of the values checked whose bytes do
    not have their address (empty: every one does; one value: ``(0,)`` if it does not), and
    why, for a single value."""

    bad: tuple[int, ...]
    problem: str = ""

    def __reduce__(self):
        return Checked, (self.bad, self.problem)


def failure_outcome(exc: BaseException, where: str) -> Failed:
    """The outcome of a call that raised ``exc`` on ``where``."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        import cloudpickle

        pickled = cloudpickle.dumps(exc)
    except Exception:
        pickled = None
    return Failed(pickled, _type_name(type(exc)), str(exc), text, where)


def _type_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _refusals() -> dict:
    from ..errors import RequirementsError, ResourcesError
    from ..net.rpc import NodeUnreachable

    return {REQUIREMENTS: RequirementsError, RESOURCES: ResourcesError, UNREACHABLE: NodeUnreachable}


class RemoteTraceback(Exception):
    """The traceback of an exception raised where a call ran (set as its ``__cause__``)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text


def rebuild_exception(outcome: Failed | Crashed | Refused, label: str) -> BaseException:
    """The exception a failed, crashed or refused task stands for (with the remote traceback
    attached to one the function raised); ``label`` names the call in messages."""
    if type(outcome) is Crashed:
        return WorkerCrashedError(outcome.message)
    if type(outcome) is Refused:
        return _refusals().get(outcome.code, PythagorasError)(outcome.message)
    if type(outcome) is not Failed:
        raise TypeError(f"{label}: {type(outcome).__name__} is not the outcome of a failed call")
    type_name, text, where = outcome.type_name, outcome.traceback, outcome.where
    exc = None
    if outcome.pickled is not None:
        try:
            exc = pickle.loads(outcome.pickled)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(
            f"{label} raised {type_name}: {outcome.message} (on {where}; the exception could not "
            f"be rebuilt here, its traceback follows as the cause)",
            remote_type=type_name, remote_traceback=text,
        )
    exc.__cause__ = RemoteTraceback(text)
    if not isinstance(exc, Exception):
        exc = _stand_in(exc, label, type_name, where, text)
    last = text.strip().splitlines()
    frame = next((line.strip() for line in reversed(last) if line.strip().startswith("File ")), "")
    exc.add_note(f"raised by {label} on {where}; remote traceback above ({frame})")
    return exc


_SHORT = reprlib.Repr()  # an exception's repr, cut at 40 characters
_SHORT.maxother = 40


def _stand_in(exc: BaseException, label: str, type_name: str, where: str, text: str) -> RemoteError:
    """What stands for a ``SystemExit``/``KeyboardInterrupt`` a function raised where it ran.

    Raised here as it is, it would end the caller's process (or pass for the caller's own
    Ctrl-C), which is not what one failed call should do (``concurrent.futures`` re-raises it
    as it is, and so ends its caller). So the call fails with a :class:`RemoteError` naming
    it, the original exception as its ``__cause__``.
    """
    error = RemoteError(
        f"{label} raised {_SHORT.repr(exc)} on {where}; it fails this call only (raised as it is "
        f"here, it would end this process), the original is the cause",
        remote_type=type_name, remote_traceback=text,
    )
    error.__cause__ = exc
    return error
