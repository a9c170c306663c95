"""Every error a user of pythagoras_p2p can see, each one saying what went wrong and how to fix it.

All of them derive from :class:`PythagorasError`. Where a built-in exception type is the natural
one to catch (a bad call is a ``TypeError``, a bad setting a ``ValueError``), the class derives
from it too, so ``except TypeError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "PythagorasError",
    "PureFunctionError",
    "FingerprintError",
    "SerializationError",
    "ConfigurationError",
    "RequirementsError",
    "ResourcesError",
    "StoreError",
    "StoreFullError",
    "WorkerCrashedError",
    "RemoteError",
    "NodeUnreachable",
    "SecurityError",
]


class PythagorasError(Exception):
    """Base class of every error raised by pythagoras_p2p."""


class PureFunctionError(PythagorasError, TypeError):
    """A function cannot be a pure function of the cloud, or was called against the rules."""


class FingerprintError(PythagorasError, TypeError):
    """A global that a pure function uses cannot be fingerprinted."""


class SerializationError(PythagorasError, TypeError):
    """An argument or a result cannot be hashed or pickled."""


class ConfigurationError(PythagorasError, ValueError):
    """A setting (``connection=``, ``requires=``, an environment variable) is malformed."""


class RequirementsError(PythagorasError):
    """No machine that could run a call satisfies the cloud's ``requires=``."""


class ResourcesError(RequirementsError):
    """No machine could ever give a call the resources it asks for (``resources=``)."""


class StoreError(PythagorasError):
    """The local store cannot be opened, read or written."""


class StoreFullError(StoreError):
    """The store reached its size cap; ``pythagoras-node cache gc`` makes room."""


class WorkerCrashedError(PythagorasError):
    """A call killed the worker process running it on every attempt."""


class RemoteError(PythagorasError):
    """An exception raised where a call ran that could not be rebuilt here.

    ``remote_type`` names the original type and ``remote_traceback`` holds its traceback text.
    """

    def __init__(self, message: str, *, remote_type: str = "", remote_traceback: str = ""):
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class NodeUnreachable(PythagorasError, ConnectionError):
    """A node did not answer in time (not running, not reachable, or not of this swarm)."""


class SecurityError(PythagorasError):
    """This machine's keys or member list are missing or unreadable, it was removed from the
    swarm, or the node cannot enforce membership."""

