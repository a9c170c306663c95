"""Where this process runs calls: a caller, or a worker process (whose clouds run nested calls inline).

A worker process calls :func:`enter_worker` once; pure functions unpickled in any process attach
to :func:`process_cloud`. Both build the embedded default through the factory its module
registers (:func:`register_default_cloud`), so nothing here imports a backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["register_default_cloud", "enter_worker", "in_worker", "process_cloud"]

_state: dict[str, Any] = {"cloud": None, "in_worker": False, "factory": None}
_lock = threading.Lock()


def register_default_cloud(factory: Callable[..., Any]) -> None:
    """Say how to make this process's cloud (``factory(home=..., connection="local")``)."""
    _state["factory"] = factory


def _make(home: Any = None) -> Any:
    factory = _state["factory"]
    if factory is None:  # the package's __init__ imports every backend: only a broken install
        raise RuntimeError("no default cloud is registered; import pythagoras_p2p first")
    return factory(home=home, connection="local")


def enter_worker(home: str) -> Any:
    """Called once by a worker process: its clouds run nested calls inline, in the worker."""
    _state["in_worker"] = True
    _state["cloud"] = _make(home)
    return _state["cloud"]


def in_worker() -> bool:
    """True in a worker process (set by :func:`enter_worker`)."""
    return _state["in_worker"]


def process_cloud() -> Any:
    """The cloud that pure functions unpickled in this process attach to."""
    cloud = _state["cloud"]
    if cloud is None:
        with _lock:
            cloud = _state["cloud"]
            if cloud is None:
                cloud = _state["cloud"] = _make()
    return cloud
