"""Every tunable of pythagoras_p2p, named once, with the environment variable that overrides it."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_PORT",
    "INLINE_VALUE_LIMIT",
    "MAP_SIZE_INITIAL",
    "MAX_READERS",
    "MAX_TASK_CRASHES",
    "STORE_HEADROOM",
    "home_dir",
    "store_cap",
    "worker_count",
    "worker_memory_limit",
    "parse_size",
]

#: TCP port a node listens on when none is given.
DEFAULT_PORT = 7575

#: Values whose pickle is larger than this are kept in their own file under ``home/blobs``,
#: so that a worker can map them without copying and no read transaction is held while a task
#: uses them. Smaller values live inside LMDB.
INLINE_VALUE_LIMIT = 256 * 1024

#: First size of the LMDB map; it doubles on demand up to :func:`store_cap`.
MAP_SIZE_INITIAL = 64 * 1024 * 1024

#: Reader slots of the LMDB environment: one per concurrent read transaction of all processes.
MAX_READERS = 1024

#: Bytes of the map kept free for ``pythagoras-node cache gc``: ordinary writes stop short of it.
STORE_HEADROOM = 4 * 1024 * 1024

#: How many times a call may kill the worker running it before it is failed.
MAX_TASK_CRASHES = 3


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The home holding the store and the swarm key: ``home``, ``$PYTHAGORAS_HOME`` or ``~/.pythagoras``."""
    if home is None:
        home = os.environ.get("PYTHAGORAS_HOME") or Path.home() / ".pythagoras"
    return Path(home).expanduser().absolute()


def _env_int(name: str, default: int, *, minimum: int = 1, size: bool = False) -> int:
    """A whole number (``size``: a byte count such as ``512M``) from the environment."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_size(raw) if size else int(raw)
    except ValueError:
        what = "a size; write bytes or e.g. 512M, 64G" if size else "a number; set it to a whole number"
        raise ConfigurationError(f"{name}={raw!r} is not {what}, or unset it") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum}; set a larger value")
    return value


def _env_seconds(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A duration in seconds from the environment (read once, when the module is imported)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number of seconds; set e.g. "
                                 f"{name}={default} or unset it") from None
    if not minimum <= value < float("inf"):
        raise ConfigurationError(f"{name}={raw!r} must be a number of seconds of at least "
                                 f"{minimum}; set a larger value or unset it")
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"512M"``, ``"64G"``, ``"1T"`` or a plain byte count; ValueError for anything else
    (negative, infinite or not a number)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    number = float(t[: len(t) - len(unit)] if unit else t)
    if not 0 <= number < float("inf"):
        raise ValueError(f"{text!r} is not a size")
    return int(number * _UNITS[unit])


def store_cap() -> int:
    """Largest size the store may grow to (``PYTHAGORAS_STORE_MAX_SIZE``, default 64 GiB)."""
    return _env_int("PYTHAGORAS_STORE_MAX_SIZE", 64 << 30, minimum=2 * STORE_HEADROOM, size=True)


def worker_memory_limit() -> int | None:
    """Heap limit of each worker process (``PYTHAGORAS_WORKER_MEMORY_LIMIT``, e.g. ``4G``), or None."""
    return _env_int("PYTHAGORAS_WORKER_MEMORY_LIMIT", 0, size=True) or None


def worker_count() -> int:
    """Worker processes per machine (``PYTHAGORAS_WORKERS``, default: the usable cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return _env_int("PYTHAGORAS_WORKERS", max(1, cores))
