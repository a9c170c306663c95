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
    "SWARM_TICK",
    "SWARM_SPIN_RTT",
    "SWARM_SPIN",
    "DRIVER_LINGER",
    "DRIVER_SLICE",
    "PING_EVERY",
    "SILENT_AFTER",
    "RETRY_EVERY",
    "DISCOVER_EVERY",
    "STRAGGLER_SLOWER_THAN",
    "STRAGGLER_AT_LEAST",
    "MDNS_WAIT",
    "LOOKUP_TIMEOUT",
    "SWARM_LEARN_WAIT",
    "DASK_WORKERS_TTL",
    "DASK_MAX_ATTEMPTS",
    "LEASE_WATCH_EVERY",
    "LEASE_JOIN_WAIT",
    "LEASE_FIRST_DELAY",
    "LEASE_MAX_DELAY",
    "STALLED_AFTER",
    "STALL_CHECK_EVERY",
    "STALE_FILE_AGE",
    "JOURNAL_GATHER",
    "JOURNAL_SEGMENT_BYTES",
    "RUN_WINDOW",
    "RESULT_GATHER",
    "POOL_MAX_CHUNK",
    "POOL_BATCH_SECONDS",
    "POOL_FAST_TASK",
    "POOL_SPIN",
    "POOL_SPIN_TASK",
    "WORKER_FLUSH_EVERY",
    "PROGRESS_REDRAW_EVERY",
    "NODE_LOG_ONCE",
    "NODE_MAX_UPLOADS",
    "NODE_UPLOAD_IDLE",
    "NODE_MAX_VALUE",
    "NODE_OUTPUT_PIECE",
    "NODE_HOUSEKEEPING_EVERY",
    "NODE_NEXT_REQUEST_SOON",
    "REFUSAL_LOG_EVERY",
    "HASH_MEMO_FROM",
    "NODE_CACHE_FACTS_EVERY",
    "NODE_CACHE_FACTS_BUSY_EVERY",
    "DASK_POLL_EVERY",
    "DASK_MIN_WINDOW",
    "DASK_WINDOW_PER_THREAD",
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
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum}; set a larger value "
                                 f"or unset it")
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


# ---- intervals, timeouts and limits: each PYTHAGORAS_<NAME> in the environment overrides it

#: Seconds between the swarm client's liveness checks of its peers.
SWARM_TICK = _env_seconds("PYTHAGORAS_SWARM_TICK", 0.25)
#: A caller waiting for its only call in flight polls without sleeping while round trips to the peer have lately been shorter than this (seconds).
SWARM_SPIN_RTT = _env_seconds("PYTHAGORAS_SWARM_SPIN_RTT", 0.001)
#: And for at most twice such a round trip, never more than this (seconds).
SWARM_SPIN = _env_seconds("PYTHAGORAS_SWARM_SPIN", 0.001)
#: Seconds the swarm client's background thread leaves its loop to callers after the last one.
DRIVER_LINGER = _env_seconds("PYTHAGORAS_DRIVER_LINGER", 0.005)
#: Longest wait of a caller's turn of the loop: how soon it notices Ctrl-C or another's result (seconds).
DRIVER_SLICE = _env_seconds("PYTHAGORAS_DRIVER_SLICE", 0.1)
#: Seconds between pings to an idle peer.
PING_EVERY = _env_seconds("PYTHAGORAS_PING_EVERY", 1.0)
#: Seconds without a message after which a peer counts as dead.
SILENT_AFTER = _env_seconds("PYTHAGORAS_SILENT_AFTER", 5.0)
#: Seconds between attempts to reach a peer that is not ready.
RETRY_EVERY = _env_seconds("PYTHAGORAS_RETRY_EVERY", 2.0)
#: Seconds between looks for new peers.
DISCOVER_EVERY = _env_seconds("PYTHAGORAS_DISCOVER_EVERY", 1.0)
#: A call at the tail is copied to an idle peer after this many times its batch's median duration.
STRAGGLER_SLOWER_THAN = _env_seconds("PYTHAGORAS_STRAGGLER_SLOWER_THAN", 3.0)
#: Calls younger than this (seconds) are never copied.
STRAGGLER_AT_LEAST = _env_seconds("PYTHAGORAS_STRAGGLER_AT_LEAST", 1.0)
#: Seconds PCloud() listens on mDNS for a member when this machine runs no node.
MDNS_WAIT = _env_seconds("PYTHAGORAS_MDNS_WAIT", 2.0)
#: Seconds a memo lookup waits for peers before computing here.
LOOKUP_TIMEOUT = _env_seconds("PYTHAGORAS_LOOKUP_TIMEOUT", 2.0)
#: Seconds from a swarm client's start during which its lookups wait to know the swarm (every
#: peer it can learn of answered once, a settled node listed its peers) before trusting a miss.
SWARM_LEARN_WAIT = _env_seconds("PYTHAGORAS_SWARM_LEARN_WAIT", 10.0)
#: Seconds DaskCloud reuses the list of workers before asking the scheduler again.
DASK_WORKERS_TTL = _env_seconds("PYTHAGORAS_DASK_WORKERS_TTL", 1.0)
#: Times DaskCloud sends a task again after the cluster lost it or its inputs.
DASK_MAX_ATTEMPTS = _env_int("PYTHAGORAS_DASK_MAX_ATTEMPTS", 3)
#: Seconds between a solo worker pool's looks for another process of its home.
LEASE_WATCH_EVERY = _env_seconds("PYTHAGORAS_LEASE_WATCH_EVERY", 0.01)
#: Longest a process waits (seconds) for a solo one to take its leases into the kernel.
LEASE_JOIN_WAIT = _env_seconds("PYTHAGORAS_LEASE_JOIN_WAIT", 2.0)
#: Seconds before a process waiting for a call leased elsewhere looks again.
LEASE_FIRST_DELAY = _env_seconds("PYTHAGORAS_LEASE_FIRST_DELAY", 0.001)
#: That delay doubles up to this (seconds).
LEASE_MAX_DELAY = _env_seconds("PYTHAGORAS_LEASE_MAX_DELAY", 0.064)
#: Seconds a worker or a lease holder must stay stopped (SIGSTOP, a debugger), using no
#: processor time, before it counts as making no progress: a worker is then killed and replaced
#: (its calls go to the others), a lease is taken over (see ``pythagoras_p2p.stalls``).
STALLED_AFTER = _env_seconds("PYTHAGORAS_STALLED_AFTER", 3.0, minimum=0.05)
#: Seconds between looks at a worker running calls, or at a lease holder waited on for longer.
STALL_CHECK_EVERY = _env_seconds("PYTHAGORAS_STALL_CHECK_EVERY", 0.5, minimum=0.01)
#: Seconds after which `cache gc` counts an unfinished blob file as garbage.
STALE_FILE_AGE = _env_seconds("PYTHAGORAS_STALE_FILE_AGE", 3600.0)
#: Seconds the journal and the write-behind copier gather results into one commit.
JOURNAL_GATHER = _env_seconds("PYTHAGORAS_JOURNAL_GATHER", 0.02)
#: Bytes of one journal segment before the next is started.
JOURNAL_SEGMENT_BYTES = _env_int("PYTHAGORAS_JOURNAL_SEGMENT_BYTES", 32 * 1024 * 1024, size=True)
#: Calls of one ``sync_parallel`` hashed, looked up and launched together: the run holds two
#: such windows in flight, so its memory does not grow with the number of calls.
RUN_WINDOW = _env_int("PYTHAGORAS_RUN_WINDOW", 4096)
#: Seconds a run gathers the results arriving from its workers into one commit: each commit
#: syncs the store to disk, which costs as much as storing a few hundred results.
RESULT_GATHER = _env_seconds("PYTHAGORAS_RESULT_GATHER", 0.01)
#: Most tasks the worker pool sends to one worker at once.
POOL_MAX_CHUNK = _env_int("PYTHAGORAS_POOL_MAX_CHUNK", 64)
#: Seconds of work (at the mean duration of calls) the worker pool sends one worker at once.
POOL_BATCH_SECONDS = _env_seconds("PYTHAGORAS_POOL_BATCH_SECONDS", 0.05)
#: Below this mean duration (seconds), calls are sent to workers in chunks and prefetched.
POOL_FAST_TASK = _env_seconds("PYTHAGORAS_POOL_FAST_TASK", 0.02)
#: The pool's owner polls without sleeping this long after sending fast tasks (seconds).
POOL_SPIN = _env_seconds("PYTHAGORAS_POOL_SPIN", 0.0005)
#: While calls take less than this on average (seconds).
POOL_SPIN_TASK = _env_seconds("PYTHAGORAS_POOL_SPIN_TASK", 0.001)
#: Seconds between a worker's outcome messages while a chunk of tasks runs.
WORKER_FLUSH_EVERY = _env_seconds("PYTHAGORAS_WORKER_FLUSH_EVERY", 0.005)
#: Seconds between redraws of the progress bar.
PROGRESS_REDRAW_EVERY = _env_seconds("PYTHAGORAS_PROGRESS_REDRAW_EVERY", 0.1)
#: Distinct problems a node remembers to log each only once.
NODE_LOG_ONCE = _env_int("PYTHAGORAS_NODE_LOG_ONCE", 256)
#: Concurrent partial uploads a node accepts.
NODE_MAX_UPLOADS = _env_int("PYTHAGORAS_NODE_MAX_UPLOADS", 64)
#: Seconds without a chunk after which a partial upload counts as abandoned.
NODE_UPLOAD_IDLE = _env_seconds("PYTHAGORAS_NODE_UPLOAD_IDLE", 60.0)
#: Largest value (bytes) a node accepts in an upload.
NODE_MAX_VALUE = _env_int("PYTHAGORAS_NODE_MAX_VALUE", 1 << 40, size=True)
#: Characters of a call's printed output per message.
NODE_OUTPUT_PIECE = _env_int("PYTHAGORAS_NODE_OUTPUT_PIECE", 16 * 1024)
#: Seconds between a node's sweeps for dead readers and abandoned uploads.
NODE_HOUSEKEEPING_EVERY = _env_seconds("PYTHAGORAS_NODE_HOUSEKEEPING_EVERY", 1.0)
#: After answering a fast call, the node polls without sleeping this long (seconds).
NODE_NEXT_REQUEST_SOON = _env_seconds("PYTHAGORAS_NODE_NEXT_REQUEST_SOON", 0.0003)
#: Seconds between two log lines about refused connections from one source.
REFUSAL_LOG_EVERY = _env_seconds("PYTHAGORAS_REFUSAL_LOG_EVERY", 10.0)
#: Arguments this large (bytes) shared by many calls of sync_parallel are hashed once.
HASH_MEMO_FROM = _env_int("PYTHAGORAS_HASH_MEMO_FROM", 1 << 16, size=True)


# ---- the node, the store and the backends

#: Seconds a node reuses its count of stored results and their bytes (pings and ``status``
#: carry it; counting walks every blob file, in a thread of its own).
NODE_CACHE_FACTS_EVERY = _env_seconds("PYTHAGORAS_NODE_CACHE_FACTS_EVERY", 5.0)
#: The same while calls end on the node (seconds).
NODE_CACHE_FACTS_BUSY_EVERY = _env_seconds("PYTHAGORAS_NODE_CACHE_FACTS_BUSY_EVERY", 1.0)
#: Seconds between DaskCloud's looks for finished tasks while a caller waits with a timeout.
DASK_POLL_EVERY = _env_seconds("PYTHAGORAS_DASK_POLL_EVERY", 0.01)
#: Fewest tasks DaskCloud keeps submitted to the cluster at once.
DASK_MIN_WINDOW = _env_int("PYTHAGORAS_DASK_MIN_WINDOW", 64)
#: Tasks DaskCloud keeps submitted per thread of the cluster's workers (when that is more).
DASK_WINDOW_PER_THREAD = _env_int("PYTHAGORAS_DASK_WINDOW_PER_THREAD", 8)
