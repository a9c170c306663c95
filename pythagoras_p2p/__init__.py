"""pythagoras_p2p: memoized pure functions, run on this machine or across a swarm of peers.

    from pythagoras_p2p import *

    cloud = PCloud(requires=None, connection=None)

    @cloud.add_pure_function
    def square(*, x: int) -> int:
        return x * x

    square(x=3)                                         # computed once, stored, then a hit
    square.sync_remote(x=4)                             # runs in a worker process
    square.sync_parallel(kw_args(x=i) for i in range(10))   # in parallel, results in order
"""

from __future__ import annotations

from ._version import __version__ as __version__
from .clouds.base import PCloud
from .clouds.dask import DaskCloud
from .clouds.local import LocalCloud
from .clouds.swarm import SwarmCloud
from .errors import (
    ConfigurationError,
    FingerprintError,
    NodeUnreachable,
    PureFunctionError,
    PythagorasError,
    RemoteError,
    RequirementsError,
    ResourcesError,
    SecurityError,
    SerializationError,
    StoreError,
    StoreFullError,
    WorkerCrashedError,
)
from .function import kw_args
from .integrations.joblib_backend import register_joblib_backend

__all__ = [
    "PCloud",
    "LocalCloud",
    "SwarmCloud",
    "DaskCloud",
    "kw_args",
    "register_joblib_backend",
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
