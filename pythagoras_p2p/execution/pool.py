"""Supervised worker processes: spawning, feeding, watching and replacing them.

Workers are fresh interpreters (``python -m pythagoras_p2p.execution.worker_main``) that never import the
user's ``__main__``; they load functions by fingerprint from the shared store. One supervisor
thread per pool owns every pipe: it writes batches of tasks without blocking, reads outcomes and
printed output, and notices a worker's death by the end of its pipe. Each worker publishes the
id of the task it is running in a shared 8-byte page, so a crash is charged exactly to the call
that caused it: that call is retried alone and failed after :data:`MAX_TASK_CRASHES`, the
others in the worker's queue are resent without blame, and the worker is replaced. A worker
stopped (SIGSTOP) for a few seconds is killed and counts as crashed, see :class:`.WorkerWatch`.

A pool given the leases of its home (the embedded default's) takes each call's lease as it
sends the task to a worker, and sets aside a task whose call another process of the home is
computing: it looks again after 1 ms, then twice as long each time up to 64 ms, while the other
tasks run, and delivers a :class:`~.outcomes.Stored` outcome once the result is there, or sends the task when the
lease comes free without a result (its holder failed or died). See :mod:`pythagoras_p2p.store.leases`.

Batches adapt to the work: one task at a time while calls are slow; while they are fast, as
many per message as take ~50 ms (up to 64), with a second batch prefetched, so trivial calls are
not bound by pipe round trips and the last tasks are still split among the workers.
One worker process and the frames on its pipes are :mod:`pythagoras_p2p.execution.worker_process`; batches
of tasks are :mod:`pythagoras_p2p.execution.batch`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import pickle
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from ..defaults import MAX_TASK_CRASHES, worker_memory_limit
from ..defaults import POOL_FAST_TASK as _FAST_TASK
from ..defaults import POOL_MAX_CHUNK as _MAX_CHUNK
from ..defaults import POOL_SPIN as _SPIN
from ..defaults import POOL_SPIN_TASK as _SPIN_TASK
from ..resources import Ledger
from ..store.leases import WATCH_EVERY
from .batch import Batch, print_output, refill
from .feeding import Feeding, chunk_size
from .mailbox import Mailbox
from .outcomes import Crashed, Failed, Ok, Outcome, Refused
from .run import Task
from .worker_process import HEADER, VERIFY, VERIFY_MANY, WorkerProcess, WorkerWatch, spawn

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)


class WorkerPool(Feeding):
    """A fixed number of supervised worker processes serving tasks from many batches."""

    def __init__(self, home: Path, size: int, *, label: str = "local", own_thread: bool = True,
                 leases=None, store=None, ledger: Ledger | None = None, low_priority: bool = False):
        worker_memory_limit()  # a malformed limit is the caller's error now, not every worker's
        self.home = Path(home)
        self.size = size
        self.label = label
        self.low_priority = low_priority  # a node's workers yield to the machine's owner
        self.alive = True
        self._queue: deque[tuple[Batch, Task]] = deque()
        self._mail = Mailbox()  # requests from the callers' threads, and the wake-up pipe
        self._sources: deque[Batch] = deque()  # batches with tasks still to pull
        self._leases = leases  # None: this pool's owner does not lease calls (a node)
        self._store = store
        self._aside: list = []  # heap of (due, n, delay, batch, task, since) leased elsewhere
        self._ledger = ledger  # this machine's resources, and what running calls hold
        self._needy: deque = deque()  # (batch, task) asking for resources not free yet
        self._held: dict[int, list] = {}  # seq -> [needs, gpus, tasks left] of its hold
        self._order = itertools.count()
        # (batch, tid) -> how many workers the task killed; keyed by the batch itself, not by
        # id(batch), which a later batch may reuse (and so inherit another call's crashes)
        self._crashes: dict[tuple[Batch, int], int] = {}
        self._mean = 1.0  # running mean task duration; start by assuming slow calls
        self._spin_until = 0.0  # see expecting_soon
        self._failed_starts = 0
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._mail.fileno(), selectors.EVENT_READ, None)
        self._workers: list[WorkerProcess] = []
        self._watch = WorkerWatch()  # finds workers stopped in the middle of calls
        self._next = 0
        self._seq = 0
        self._embedded = not own_thread
        if self._embedded:
            for _ in range(self.size):
                self._spawn()
        else:
            self._thread = threading.Thread(target=self._loop, name=f"pythagoras-{label}-pool",
                                            daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ caller side

    def submit(self, tasks: Iterable[Task], count: int, *, on_outcome=None, on_output=None) -> Batch:
        """Queue tasks; their outcomes arrive through the batch (or ``on_outcome(tid, outcome)``)."""
        batch = Batch(self, count, on_outcome, on_output, tasks)
        self._request(("submit", batch))
        return batch

    def verify(self, address: bytes, path: str, callback) -> Batch:
        """Have a worker check that the packed value in ``path`` has content address ``address``.

        ``callback(ok, reason)`` runs on the pool's thread. Unpickling happens in the worker, never
        in the process that received the bytes.
        """
        def done(tid: int, outcome: Outcome) -> None:
            if isinstance(outcome, Ok):
                callback(True, "")
            else:  # the worker's verdict (Failed), or why there is none (Crashed, Refused)
                callback(False, outcome.message if isinstance(outcome, Failed | Crashed | Refused)
                         else repr(outcome))

        task = Task(0, VERIFY, address, path.encode(), f"verify {address.hex()[:16]}")
        return self.submit([task], 1, on_outcome=done)

    def verify_many(self, values: list[tuple[bytes, bytes]], callback) -> Batch:
        """Have a worker check that each ``(address, packed)`` has that content address.

        ``callback(bad)`` runs on the pool's thread with the set of the positions in ``values``
        of those that do not match (all of them if the check itself failed).
        """
        def done(tid: int, outcome: Outcome) -> None:
            if type(outcome) is Ok:
                callback(set(outcome.meta.get("bad", ())))
            else:
                callback(set(range(len(values))))

        payload = b"".join(b"".join((a, len(p).to_bytes(8, "little"), p)) for a, p in values)
        task = Task(0, VERIFY_MANY, b"\0" * 32, payload, f"verify {len(values)} value(s)")
        return self.submit([task], 1, on_outcome=done)

    def _request(self, request: tuple) -> None:
        if not self.alive:
            raise RuntimeError("this cloud's worker pool is closed; create a new cloud")
        self._mail.put(request, wake=not self._embedded)
        if self._embedded:  # the owner's loop polls the pipes; here only queue and send
            if self._serve_requests():
                self._shutdown()
            else:
                self._feed_workers()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker (gracefully, then by force) and the supervisor thread."""
        if self.alive:
            if self._embedded:
                self._shutdown()
                return
            self._request(("close",))
            self._thread.join(timeout + 2)

    # ------------------------------------------------------------------ supervisor thread

    def _loop(self) -> None:
        try:
            for _ in range(self.size):
                self._spawn()
            while not self._step(1.0):
                pass
        except Exception:
            log.exception("worker pool supervisor failed")
        finally:
            self._shutdown()

    def _timeout(self, longest: float) -> float:
        """How long the supervisor may wait for a pipe: until the next set-aside task is due,
        and while its leases are kept to this process, until it looks for others again."""
        if self._leases is not None and self._leases.solo:
            longest = min(longest, WATCH_EVERY)
        longest = self._watch.wait(self._workers, longest)
        if not self._aside:
            return longest
        return min(longest, max(0.0, self._aside[0][0] - time.monotonic()))

    def _step(self, timeout: float) -> bool:
        """One turn of the supervisor: requests, dispatch, pipes. True when asked to close."""
        if self._serve_requests():
            return True
        self._feed_workers()
        for key, _events in self._sel.select(timeout=self._timeout(timeout)):
            worker = key.data
            if worker is None:
                self._mail.drain()
                continue
            if key.fd == worker.wfd:  # room again in a pipe we could not fill at once
                self._flush(worker)
            else:
                self._read(worker)
        self._feed_workers()
        if self._leases is not None:
            self._leases.watch()
        for worker in self._watch.stalled(self._workers):
            log.warning("worker %s %s: killing it; its calls go to other workers", worker.name,
                        worker.stalled)
            worker.proc.kill()  # SIGKILL ends a stopped process too; its pipe then ends
        return False

    # An embedded pool has no thread: its owner's loop polls fileno() and calls step().

    def fileno(self) -> int:
        """A descriptor that is readable when an embedded pool has something to do."""
        return self._sel.fileno()

    def expecting_soon(self) -> bool:
        """Whether a fast call was sent to a worker within the last ``_SPIN`` seconds and a
        worker still runs something: an outcome is then likely within microseconds."""
        return time.monotonic() < self._spin_until and any(w.inflight for w in self._workers)

    def watch_due(self) -> bool:
        """Whether an embedded pool's owner should :meth:`step` it even with nothing to read:
        it is time to look for workers that make no progress."""
        return self._watch.due(self._workers, time.monotonic())

    def calls_are_fast(self) -> bool:
        """Whether calls have lately taken less than ``_SPIN_TASK`` on average."""
        return self._mean < _SPIN_TASK

    def calls_are_short(self) -> bool:
        """Whether calls have lately taken so little that tasks go to workers in batches."""
        return self._mean < _FAST_TASK

    def pids(self) -> list[int]:
        """The process ids of the workers."""
        return [w.proc.pid for w in self._workers]

    def step(self) -> None:
        """Do whatever an embedded pool can do now, without waiting."""
        if self.alive and self._step(0):
            self._shutdown()

    def _serve_requests(self) -> bool:
        return self._mail.serve(self._on_request)

    def _on_request(self, request: tuple) -> bool:
        """Serve one request from a caller's thread; True for ``close``."""
        if request[0] == "submit":
            self._sources.append(request[1])
            while len(self._workers) < self.size:  # try again after failed starts
                self._spawn()
        elif request[0] == "cancel":
            self._cancel(request[1], request[2])
        return request[0] == "close"

    def _spawn(self) -> None:
        n = self._next
        self._next += 1
        worker = spawn(n, self.home, self.low_priority)
        self._workers.append(worker)
        self._sel.register(worker.rfd, selectors.EVENT_READ, worker)
        init = ("init", list(sys.path), str(self.home), f"{self.label}:{worker.name}", os.getcwd())
        self._send(worker, init)

    def _send(self, worker: WorkerProcess, message: tuple) -> None:
        data = pickle.dumps(message, protocol=5)
        was_empty = not worker.wbuf
        worker.wbuf += HEADER.pack(len(data))
        worker.wbuf += data
        if was_empty:
            self._flush(worker)

    def _flush(self, worker: WorkerProcess) -> None:
        try:
            sent = os.write(worker.wfd, worker.wbuf)
            del worker.wbuf[:sent]
        except BlockingIOError:
            pass
        except OSError:
            worker.wbuf.clear()  # the worker is gone; its end of pipe reports it
        writing = bool(worker.wbuf)
        if writing != worker.writing:  # a system call only when the interest changes
            worker.writing = writing
            if writing:
                self._sel.register(worker.wfd, selectors.EVENT_WRITE, worker)
            else:
                self._sel.unregister(worker.wfd)

    def _refill(self) -> None:
        """Keep enough tasks queued to feed every worker; make the rest only when needed."""
        refill(self._queue, self._sources, self.size * 2 * _MAX_CHUNK)

    def _feed_workers(self) -> None:
        self._refill()
        if self._aside:
            self._recheck_aside()
        if self._needy:
            self._feed_needy()
        self._feed_plain()
        if self._needy:  # tasks asking for resources met while feeding the others
            self._feed_needy()

    def _feed_plain(self) -> None:
        queue = self._queue
        if not queue:
            return
        fast = self._mean < _FAST_TASK
        hide = "" if self._ledger is not None and self._ledger.has_gpus else None  # no GPU asked
        # cpus held beyond one per busy worker (calls asking for several): idle workers kept idle
        extra = int(self._ledger.used.get("cpus", 0)) if self._ledger is not None else 0
        busy = sum(1 for w in self._workers if w.inflight) if extra else 0
        for worker in sorted(self._workers, key=lambda w: len(w.inflight)):  # idle ones first
            if not queue:
                return
            if not worker.usable:
                continue
            if extra and not worker.inflight:
                if busy + extra >= len(self._workers):
                    continue
                busy += 1
            chunk = 1
            if fast:
                chunk = chunk_size(self._mean, len(queue), self.size)
            limit = 2 * chunk if fast else 1
            if len(worker.inflight) + chunk > limit and worker.inflight:
                continue
            tasks = []
            for batch, task in self._next_chunk(chunk):
                self._seq += 1
                worker.inflight[self._seq] = (batch, task)
                tasks.append((self._seq, task.fp, task.call, task.payload, task.label, hide))
            if tasks:
                self._send(worker, ("run", tasks))
                if self._mean < _SPIN_TASK:
                    self._spin_until = time.monotonic() + _SPIN

    def _read(self, worker: WorkerProcess) -> None:
        try:
            data = os.read(worker.rfd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._on_death(worker)
            return
        for message in worker.reader.feed(data):
            kind = message[0]
            if kind == "done":
                for seq, outcome in message[1]:
                    entry = worker.inflight.pop(seq, None)
                    if self._held:
                        self._let_go(seq)
                    if entry is None:
                        continue
                    if type(outcome) is Ok:
                        self._mean = 0.8 * self._mean + 0.2 * outcome.meta["duration"]
                    if self._crashes:
                        self._crashes.pop((entry[0], entry[1].tid), None)
                    entry[0].deliver(entry[1].tid, outcome)
            elif kind == "out":
                entry = worker.inflight.get(message[3])
                if entry is not None and entry[0].on_output is not None:
                    entry[0].on_output(message[1], message[2])
                else:
                    print_output(message[1], message[2])
            elif kind == "ready":
                worker.ready = True
                self._failed_starts = 0
            elif kind == "fatal":
                log.error("worker %s could not start: %s", worker.name, message[1])

    def _on_death(self, worker: WorkerProcess) -> None:
        self._sel.unregister(worker.rfd)
        if worker.writing:
            self._sel.unregister(worker.wfd)
            worker.writing = False
        os.close(worker.rfd)
        os.close(worker.wfd)
        try:
            worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
        running = worker.running()
        how = worker.how_it_ended()
        self._workers.remove(worker)
        if not worker.ready and worker.usable:
            self._failed_starts += 1
        requeue = []
        for seq, (batch, task) in worker.inflight.items():
            if self._held:
                self._let_go(seq)
            if not batch.wanted(task):
                continue
            if seq == running and not worker.killed:
                key = (batch, task.tid)
                crashes = self._crashes[key] = self._crashes.get(key, 0) + 1
                log.warning("worker %s %s while running %s (attempt %d of %d)",
                            worker.name, how, task.label, crashes, MAX_TASK_CRASHES)
                if crashes >= MAX_TASK_CRASHES:
                    del self._crashes[key]
                    batch.deliver(task.tid, Crashed(
                        f"{task.label} killed the worker process running it on {crashes} attempts "
                        f"(last: the worker {how}); it is not retried again. Check the function "
                        f"for crashes in native code, os._exit(), running out of memory or "
                        f"what stops its process"))
                    continue
            requeue.append((batch, task))
        self._queue.extendleft(reversed(requeue))
        worker.slot.close()
        if self._failed_starts >= 3:
            self._fail_everything(f"worker processes fail to start (the last one {how}); "
                                  f"see the log above for why")
            return
        self._spawn()

    def _fail_everything(self, message: str) -> None:
        self._take_back_aside()
        refill(self._queue, self._sources, None)
        while self._queue:
            batch, task = self._queue.popleft()
            batch.deliver(task.tid, Crashed(f"{task.label} could not run: {message}"))
        self._failed_starts = 0

    def _cancel(self, batch: Batch, tids: frozenset | None) -> None:
        """Drop the tasks of ``batch`` (only ``tids`` of it, if given) and kill the workers
        running them; the other tasks those workers held are sent again, without blame."""
        def gone(b: Batch, task: Task) -> bool:
            return b is batch and (tids is None or task.tid in tids)

        self._queue = deque(item for item in self._queue if not gone(*item))
        self._needy = deque(item for item in self._needy if not gone(*item))
        self._aside = [entry for entry in self._aside if not gone(entry[3], entry[4])]
        heapq.heapify(self._aside)
        if tids is None:
            self._sources = deque(b for b in self._sources if b is not batch)
        for key in [k for k in self._crashes if k[0] is batch and (tids is None or k[1] in tids)]:
            del self._crashes[key]
        for worker in self._workers:
            if any(gone(b, task) for b, task in worker.inflight.values()):
                worker.killed = True
                worker.proc.kill()

    def _shutdown(self) -> None:
        self.alive = False
        for worker in self._workers:
            try:
                self._send(worker, ("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for worker in self._workers:
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            for fd in (worker.rfd, worker.wfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._workers.clear()
        self._sel.close()
        self._mail.close()
        self._take_back_aside()
        refill(self._queue, self._sources, None)
        while self._queue:
            batch, task = self._queue.popleft()
            batch.deliver(task.tid, Crashed(f"{task.label} was not run: the cloud was closed"))

