"""What runs on a Dask worker for ``DaskCloud``: one call, with what it printed; the worker's facts.

Dask pickles these functions by reference, so this module is imported on the workers: it keeps
to what a worker needs (the function record loader and :func:`~..execution.tasks.run_task`, shared
with every backend) and imports nothing of Dask's client side.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import sys
import threading
from typing import Any

from .._version import __version__
from ..execution.functions import from_record
from ..execution.outcomes import Outcome
from ..execution.tasks import Task, current_where, run_task
from ..net.wire import PYTHON_VERSION
from ..store.core import MISSING

__all__ = ["probe_worker", "run_dask_task"]

_install_lock = threading.Lock()


def probe_worker(requires: tuple) -> dict:
    """What a worker has: the missing requirements, this release, its Python."""
    from ..requirements import missing_requirements

    return {"missing": missing_requirements(requires), "version": __version__, "python": PYTHON_VERSION}


def run_dask_task(record: bytes, task: Task, values: list) -> tuple[Outcome, str]:
    """Run one call on a Dask worker: ``(outcome, what it printed)``; never raises for the call."""
    given = dict(zip(task.refs, values, strict=True))

    @functools.cache
    def value(address: bytes) -> Any:
        # What Dask passed in is one object per worker, shared by every call given it: each
        # call gets its own copy, as a call elsewhere gets its own unpickled one, so a call
        # that changes an argument in place changes nothing another call sees.
        return copy.deepcopy(given[address]) if address in given else MISSING

    with _captured() as out:
        outcome = run_task(task, _where(), None, load=lambda key: from_record(key, record),
                           get_value=value)
    return outcome, out.getvalue()


def _where() -> str:
    try:
        from distributed import get_worker

        name = get_worker().name
    except Exception:
        name = "?"
    return current_where(f"dask-{name}")


class _PerThreadOutput(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` of a Dask worker: what a task's thread writes
    goes to that task's buffer; every other thread writes through to the original stream."""

    def __init__(self, original: Any):
        self.original = original
        self.local = threading.local()

    def write(self, text: str) -> int:
        target = getattr(self.local, "buffer", None)
        return (target if target is not None else self.original).write(text)

    def flush(self) -> None:
        if getattr(self.local, "buffer", None) is None:
            self.original.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _captured():
    streams: list[_PerThreadOutput] = []
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _PerThreadOutput):
                stream = _PerThreadOutput(stream)
                setattr(sys, name, stream)
            streams.append(stream)
    buffer = io.StringIO()
    for stream in streams:
        stream.local.buffer = buffer
    try:
        yield buffer
    finally:
        for stream in streams:
            stream.local.buffer = None

