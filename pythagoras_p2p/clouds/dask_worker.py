"""What runs on a Dask worker for ``DaskCloud``: one call, with what it printed; the worker's facts.

Dask pickles these functions by reference, so this module is imported on the workers: it keeps
to what a worker needs (the function record loader, ``resolve_args`` and ``execute``, shared
with every backend) and imports nothing of Dask's client side.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import threading
from typing import Any

from .._version import __version__
from ..execution.functions import from_record, ran
from ..execution.outcomes import Outcome, failure_outcome
from ..execution.run import Task, current_where, execute, resolve_args
from ..net.wire import PYTHON_VERSION
from ..store.core import MISSING

__all__ = ["probe_worker", "run_task"]

_install_lock = threading.Lock()


def probe_worker(requires: tuple) -> dict:
    """What a worker has: the missing requirements, this release, its Python."""
    from ..requirements import missing_requirements

    return {"missing": missing_requirements(requires), "version": __version__, "python": PYTHON_VERSION}


def run_task(record: bytes, task: Task, values: list) -> tuple[Outcome, str]:
    """Run one call on a Dask worker: ``(outcome, what it printed)``; never raises for the call."""
    where = _where()
    with _captured() as out:
        try:
            function = from_record(task.fp, record)  # task.fp: the key of the record
            # What Dask passed in is one object per worker, shared by every call given it: each
            # call gets its own copy, as a call elsewhere gets its own unpickled one, so a call
            # that changes an argument in place changes nothing another call sees.
            by_address = {ref: copy.deepcopy(value)
                          for ref, value in zip(task.refs, values, strict=True)}
            kwargs = resolve_args(task.payload, lambda address: by_address.get(address, MISSING))
        except Exception as exc:
            return failure_outcome(exc, where), out.getvalue()
        outcome = execute(function.func, kwargs, function.fingerprint, task.label, None, where)
        ran()
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

