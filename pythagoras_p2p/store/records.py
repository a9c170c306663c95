"""The value records of a store (store format 2) and the metadata beside results: pure functions on bytes.

Each value record keeps a checksum (:data:`SUM` bytes of blake3) of the packed bytes, taken when
the value was written:

* :data:`INLINE`    + checksum + packed value;
* :data:`FILE`      + checksum + address: the value is the file ``blobs/ab/<address>``;
* :data:`TRANSIENT` + boot id + checksum + address: the same, kept for this boot only (an
  argument on its way to a worker or a peer, whose file is not fsynced), so after a restart of
  the machine the record counts as absent.

Records of format 1 (tags ``i``, ``f``, ``n``: no checksum) count as absent; ``cache gc``
removes them. Where the files are is :mod:`.blobs`; the store that reads and writes these
records is :mod:`.core`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time

from blake3 import blake3

__all__ = [
    "encode_meta",
    "INLINE", "FILE", "TRANSIENT", "SUM", "Damaged", "checksum", "sum_matches", "stored_sum",
    "inline_record", "file_record", "inline_value", "is_inline", "is_transient", "live",
    "replaces", "result_meta",
]

INLINE = b"I"
FILE = b"F"
TRANSIENT = b"N"
SUM = 16  # bytes of checksum in a record
_THREADS_FROM = 8 << 20  # blake3 uses every core from here on (on a fresh map, threads only pay above)


class Damaged(Exception):
    """A stored value whose bytes are not those it was written with (the text says how)."""


def checksum(parts: list) -> bytes:
    """The checksum a value record keeps of its packed bytes (given as the parts of them)."""
    big = sum(memoryview(p).nbytes for p in parts) >= _THREADS_FROM
    hasher = blake3(max_threads=blake3.AUTO) if big else blake3()
    for part in parts:
        hasher.update(part)
    return hasher.digest(SUM)


def sum_matches(view: memoryview, record: bytes) -> bool:
    """Whether the packed bytes ``view`` are those whose checksum ``record`` keeps."""
    if view.nbytes >= _THREADS_FROM:
        found = blake3(view, max_threads=blake3.AUTO).digest(SUM)
    else:
        found = blake3(view).digest(SUM)
    return found == stored_sum(record)


def stored_sum(record: bytes) -> bytes:
    """The checksum kept in a value record."""
    return record[1:1 + SUM] if record[:1] == INLINE else record[-32 - SUM:-32]


def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))
    except (OSError, ValueError):
        return os.urandom(16)  # unknown: transient values live as long as this process


_BOOT = _boot_id()


def inline_record(sum_: bytes, parts: list) -> bytes:
    """The record of a small value kept in LMDB itself."""
    return b"".join([INLINE, sum_, *parts])


def file_record(address: bytes, sum_: bytes, durable: bool) -> bytes:
    """The record of a value kept in its own file (durable, or for this boot only)."""
    return FILE + sum_ + address if durable else TRANSIENT + _BOOT + sum_ + address


def inline_value(record: bytes) -> bytes | None:
    """The packed value inside a record, or None when the value lives in its own file."""
    return record[1 + SUM:] if record[:1] == INLINE else None


def is_inline(record: bytes) -> bool:
    """Whether the value of a record is inside it (not in a file)."""
    return record[:1] == INLINE


def is_transient(record: bytes) -> bool:
    """Whether a record is a transient copy's (of this boot or an earlier one)."""
    return record[:1] == TRANSIENT


def live(record: bytes | None) -> bytes | None:
    """``record``, or None when it is a transient value of an earlier boot or has the layout of
    an earlier store format."""
    if record is None or record[:1] not in (INLINE, FILE, TRANSIENT):
        return None
    if record[:1] == TRANSIENT and record[1:17] != _BOOT:
        return None
    return record


def replaces(existing: bytes, record: bytes) -> bool:
    """Whether writing ``record`` replaces the ``existing`` record of the same value: only when
    that one counts as absent (an earlier boot's, an earlier format's) or is transient and
    ``record`` is not. Otherwise the existing record is kept."""
    return live(existing) is None or (existing[:1] == TRANSIENT and record[:1] != TRANSIENT)


_HOST = socket.gethostname()


def result_meta(function_name: str, fp: bytes, started: float, duration: float, **extra) -> dict:
    """Metadata recorded beside every result: what ran, where, when and for how long."""
    meta = {
        "function": function_name,
        "fingerprint": fp.hex(),
        "host": _HOST,
        "pid": os.getpid(),
        "started": round(started, 6),
        "duration": round(duration, 6),
        "stored": round(time.time(), 6),
    }
    meta.update(extra)
    return meta


_compact_json = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per call

# The metadata of a result made by result_meta: these keys, in this order. The first four are the
# same for every result of one function in one worker, so their JSON is made once (up to
# _HEADS_KEPT of them kept) and the rest is formatted: half the cost of encoding it whole.
_json_string = json.encoder.encode_basestring_ascii
_RESULT_KEYS = ("function", "fingerprint", "host", "pid", "started", "duration", "stored", "worker")
_HEADS: dict[tuple, str] = {}
_HEADS_KEPT = 1024


def encode_meta(meta: dict) -> bytes:
    """A result's metadata as stored (compact JSON)."""
    keys = tuple(meta)
    if keys[:8] == _RESULT_KEYS:
        function, fp, host, pid, started, duration, stored, worker = (meta[k] for k in _RESULT_KEYS)
        if (type(started) is float and type(duration) is float and type(stored) is float
                and type(worker) is str and math.isfinite(started + duration + stored)):
            key = (function, fp, host, pid)
            head = _HEADS.get(key)
            if head is None:
                if len(_HEADS) >= _HEADS_KEPT:
                    _HEADS.clear()
                head = _HEADS[key] = _compact_json(dict(zip(_RESULT_KEYS[:4], key,
                                                            strict=True)))[:-1]
            tail = "," + _compact_json({k: meta[k] for k in keys[8:]})[1:-1] if len(keys) > 8 \
                else ""  # what follows the fixed keys (the argument digests, ...)
            return (f'{head},"started":{started!r},"duration":{duration!r},"stored":{stored!r},'
                    f'"worker":{_json_string(worker)}{tail}}}').encode()
    return _compact_json(meta).encode()
