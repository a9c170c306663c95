"""A write-ahead journal in front of the store, for results that must be acknowledged fast.

A node acknowledges a result as soon as its record is appended to the journal: one ``write()``
to a file opened ``O_APPEND``, so the record is in the kernel before the reply leaves and
survives a ``kill -9`` of the node. A background thread applies appended records to LMDB in
batched, fsync'd transactions and deletes journal segments once every record in them is in the
store. On open, whatever a previous process left in the journal is applied first.

Each record carries its length and a blake3 checksum, so a record torn by a power loss is
detected and dropped (with everything after it in that segment): a power loss can cost the
results of the last moments, which are recomputable, never the store's integrity.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import struct
import threading
import weakref
from pathlib import Path

from blake3 import blake3

from ..defaults import JOURNAL_GATHER as GATHER
from ..defaults import JOURNAL_SEGMENT_BYTES as _SEGMENT_BYTES
from ..identity.encoding import Address
from .core import Store
from .records import encode_meta

__all__ = ["Journal", "WriteBehind", "ClientLog", "replay_client_logs", "encode_meta",
           "write_records", "read_records"]

log = logging.getLogger(__name__)

#: A result as the journal keeps it: call, value address, the packed value (``None``: the value
#: is stored apart, a large one) and metadata; a :class:`~.core.ResultRecord` whose value is not
#: in parts.
JournalRecord = tuple[Address, Address, bytes | None, dict]

_MAGIC = b"PJ1\0"
_HEAD = struct.Struct("<4sI16s")  # magic, body length, checksum


def _encode(record: JournalRecord, meta_raw: bytes | None = None) -> bytes:
    call, address, blob, meta = record
    if meta_raw is None:
        meta_raw = encode_meta(meta)
    blob_raw = b"" if blob is None else blob
    body = b"".join([call, address, struct.pack("<IBQ", len(meta_raw), blob is not None,
                                                len(blob_raw)), meta_raw, blob_raw])
    return _HEAD.pack(_MAGIC, len(body), blake3(body).digest()[:16]) + body


def _decode_segment(data: bytes) -> tuple[list[JournalRecord], bool]:
    """Records of one segment, and whether it ended cleanly (no torn or corrupt tail)."""
    records: list[JournalRecord] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEAD.size:
            return records, False
        magic, size, checksum = _HEAD.unpack_from(data, offset)
        body = data[offset + _HEAD.size: offset + _HEAD.size + size]
        if magic != _MAGIC or len(body) != size or blake3(body).digest()[:16] != checksum:
            return records, False
        meta_len, has_blob, blob_len = struct.unpack_from("<IBQ", body, 64)
        start = 64 + 13
        meta = json.loads(body[start: start + meta_len])
        blob = body[start + meta_len: start + meta_len + blob_len] if has_blob else None
        records.append((body[:32], body[32:64], blob, meta))
        offset += _HEAD.size + size
    return records, True


def write_records(path: Path, records: list[JournalRecord], metas: list[bytes]) -> None:
    """Write ``records`` to a new file with one ``write()``, as the journal appends them (in
    the kernel before this returns: a ``kill -9`` loses nothing)."""
    data = b"".join(_encode(r, m) for r, m in zip(records, metas, strict=True))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_records(path: Path) -> list[JournalRecord]:
    """The complete records of a file :func:`write_records` wrote (a torn tail is dropped)."""
    return _decode_segment(path.read_bytes())[0]


class Journal:
    """Append results now, have them in LMDB a few milliseconds later."""

    def __init__(self, store: Store, directory: Path | None = None):
        self.store = store
        self.dir = Path(directory or store.home / "journal")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.replay()
        self._lock = threading.Condition()
        self._pending: dict[bytes, JournalRecord] = {}  # appended, not yet in LMDB
        self._queue: list[tuple[int, JournalRecord]] = []
        self._outstanding: dict[int, int] = {}  # segment -> records not yet in LMDB
        self._segment = 0
        self._fd = -1
        self._size = 0
        self._open_segment()
        self._closed = False
        self._thread = threading.Thread(target=self._apply_loop, name="pythagoras-journal", daemon=True)
        self._thread.start()

    def _segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.log"))

    def replay(self) -> int:
        """Apply every record a previous process left behind; return how many."""
        count = 0
        for path in self._segments():
            records, clean = _decode_segment(path.read_bytes())
            if not clean:
                log.warning("journal %s ends with a torn record (a crash while writing); the "
                            "complete records before it are kept", path)
            if records:
                self.store.put_results(records)
                count += len(records)
            path.unlink()
        return count

    def _open_segment(self) -> None:
        """Start the next segment; the current one is closed only once it is open (a full disk
        leaves the journal appending to the current one)."""
        existing = self._segments()
        segment = (int(existing[-1].stem) + 1) if existing else 1
        fd = os.open(self.dir / f"{segment:012d}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self._fd >= 0:
            os.close(self._fd)
        self._segment, self._fd, self._size = segment, fd, 0

    def append(self, records: list[JournalRecord], metas: list[bytes] | None = None) -> None:
        """Make ``records`` durable against a crash of this process; returns once written.

        ``metas``: the records' metadata already encoded by :func:`encode_meta`, if the caller
        has it (a node sends the same bytes in its reply).
        """
        if metas is None:
            data = b"".join(_encode(r) for r in records)
        else:
            data = b"".join(_encode(r, m) for r, m in zip(records, metas, strict=True))
        with self._lock:
            if self._closed:
                raise RuntimeError("the journal is closed")
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:  # the disk is full: no part of these records may stay
                try:
                    os.ftruncate(self._fd, self._size)
                except OSError:
                    pass
                raise RuntimeError(f"cannot append to the journal ({exc})") from None
            self._size += len(data)
            for record in records:
                self._pending[record[0]] = record
                self._queue.append((self._segment, record))
            self._outstanding[self._segment] = self._outstanding.get(self._segment, 0) + len(records)
            if self._size >= _SEGMENT_BYTES:
                try:
                    self._open_segment()
                except OSError as exc:  # these records are written: say so, rotate later
                    log.warning("cannot start a new journal segment (%s); the current one grows", exc)
                else:
                    self._drop_applied_segments()
            if len(self._queue) == len(records):  # the applier sleeps only on an empty queue
                self._lock.notify()

    def _drop_applied_segments(self) -> None:
        """Delete segments (other than the one being written) whose records are all in LMDB."""
        for seg, count in list(self._outstanding.items()):
            if count == 0 and seg != self._segment:
                del self._outstanding[seg]
                (self.dir / f"{seg:012d}.log").unlink(missing_ok=True)

    @property
    def stopped(self) -> bool:
        """Whether the journal takes no more records (closed, or the store refused a write)."""
        return self._closed

    def pending(self, call: bytes) -> JournalRecord | None:
        """A result appended but not yet applied to LMDB, if any."""
        return self._pending.get(call)

    def _apply_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait()
                if not self._queue and self._closed:
                    return
                if not self._closed:
                    self._lock.wait(GATHER)
                batch, self._queue = self._queue, []
            try:
                self.store.put_results([record for _, record in batch])
            except Exception:
                log.exception("could not apply %d journaled results to the store; they stay in "
                              "the journal and are applied at the next start", len(batch))
                with self._lock:
                    self._closed = True
                return
            with self._lock:
                for seg, record in batch:
                    self._outstanding[seg] -= 1
                    if self._pending.get(record[0]) is record:
                        del self._pending[record[0]]
                self._drop_applied_segments()

    def close(self) -> None:
        """Apply everything appended, then stop (an empty journal is left behind)."""
        with self._lock:
            if self._closed and self._fd < 0:
                return
            self._closed = True
            self._lock.notify()
        self._thread.join()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        if not self._queue and not any(self._outstanding.values()):  # everything is in LMDB
            for path in self._segments():
                path.unlink()


class ClientLog:
    """A swarm client's own journal of the results it copies (``HOME/journal/clients``).

    A result computed by another node is acknowledged once it is on two machines: when this
    machine's node is a member, the client keeps the second copy itself — each group of results
    appended here with one ``write()`` before the caller sees them, written to the store in the
    background, and the log emptied once they are. The client holds an exclusive lock on its
    file while it lives; the node of the home replays the files whose clients died
    (:func:`replay_client_logs`).
    """

    def __init__(self, store: Store):
        import fcntl

        folder = Path(store.home) / "journal" / "clients"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{os.urandom(4).hex()}.log"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def append(self, records: list[JournalRecord]) -> None:
        data = b"".join(_encode(r) for r in records)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def reset(self) -> None:
        """Everything appended is in the store: start the log afresh."""
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1


def replay_client_logs(store: Store) -> int:
    """Store what clients of this home that died left in their logs; return how many results."""
    import fcntl

    folder = Path(store.home) / "journal" / "clients"
    count = 0
    for path in folder.glob("*.log") if folder.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its client lives
            records = read_records(path)
            if records:
                store.put_results(records)
                count += len(records)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return count


class WriteBehind:
    """Stores copies of results in the background, everything queued together in one transaction.

    For results another machine has already made durable: the caller need not wait for this
    machine's fsync. :meth:`close` (also run at interpreter exit) writes what is queued.
    ``durable``: also append them to a :class:`ClientLog` before :meth:`put` returns.
    """

    def __init__(self, store: Store, *, durable: bool = False):
        self.store = store
        self._log = ClientLog(store) if durable else None
        self._cond = threading.Condition()
        self._queue: list[JournalRecord] = []
        self._writing: list[JournalRecord] = []
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pythagoras-write-behind", daemon=True)
        self._thread.start()
        _WRITERS.add(self)

    def put(self, records: list[JournalRecord]) -> None:
        with self._cond:
            if self._log is not None:
                try:
                    self._log.append(records)
                except OSError as exc:  # the node that computed them keeps its copy
                    log.warning("could not journal %d result(s) here: %s", len(records), exc)
            self._queue.extend(records)
            if len(self._queue) == len(records):
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                if not self._closed:
                    self._cond.wait(GATHER)
                batch, self._queue = self._queue, []
                self._busy = True
                self._writing = batch
            written = False
            try:
                self.store.put_results(batch)
                written = True
            except Exception as exc:  # a local copy only: the result stays where it was computed
                log.warning("could not copy %d result(s) into the local store: %s", len(batch), exc)
            with self._cond:
                self._busy = False
                self._writing = []
                if self._log is not None and written and not self._queue:
                    try:
                        self._log.reset()
                    except OSError:
                        pass
                self._cond.notify_all()

    def pending(self, calls: list[bytes]) -> dict[bytes, JournalRecord]:
        """The records of ``calls`` queued (or being written) and not yet readable in the store."""
        wanted = set(calls)
        with self._cond:
            return {r[0]: r for r in (*self._writing, *self._queue) if r[0] in wanted}

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued so far is in the store."""
        with self._cond:
            self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(30)
        _WRITERS.discard(self)
        if self._log is not None and not self._thread.is_alive() and not self._queue:
            self._log.close()


_WRITERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _flush_writers() -> None:
    for writer in list(_WRITERS):
        writer.close()
