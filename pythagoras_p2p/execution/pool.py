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

import logging
import os
import pickle
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ..defaults import MAX_TASK_CRASHES, worker_memory_limit
from ..resources import Ledger
from .batch import Batch, print_output
from .feeding import Entry, Feeder, Pace
from .mailbox import Mailbox
from .outcomes import Checked, Crashed, Failed, Ok, Outcome, Refused
from .task_queue import Cancel, Close, Request, Submit, TaskQueue, closed
from .tasks import Task
from .worker_process import HEADER, VERIFY, VERIFY_MANY, WorkerProcess, WorkerWatch, spawn

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)


class WorkerPool:
    """A fixed number of supervised worker processes serving tasks from many batches.

    It holds its parts: the ``queue`` of tasks to send, the ``feeder`` that chooses what goes
    to which worker, the ``pace`` of its calls, and the workers it supervises.
    """

    def __init__(self, home: Path, size: int, *, label: str = "local", own_thread: bool = True,
                 leases=None, store=None, ledger: Ledger | None = None, low_priority: bool = False):
        worker_memory_limit()  # a malformed limit is the caller's error now, not every worker's
        self.home = Path(home)
        self.size = size
        self.label = label
        self.low_priority = low_priority  # a node's workers yield to the machine's owner
        self.alive = True
        self.queue = TaskQueue()
        self.pace = Pace()
        self.feeder = Feeder(self.queue, self.pace, self._run, size=size, label=label,
                             leases=leases, store=store, ledger=ledger)
        self._leases = leases  # None: this pool's owner does not lease calls (a node)
        self._mail = Mailbox()  # requests from the callers' threads, and the wake-up pipe
        # (batch, tid) -> how many workers the task killed; keyed by the batch itself, not by
        # id(batch), which a later batch may reuse (and so inherit another call's crashes)
        self._crashes: dict[tuple[Batch, int], int] = {}
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
        self.request(Submit(batch))
        return batch

    def verify(self, address: bytes, path: str, callback) -> Batch:
        """Have a worker check that the packed value in ``path`` has content address ``address``.

        ``callback(ok, reason)`` runs on the pool's thread. Unpickling happens in the worker, never
        in the process that received the bytes.
        """
        def done(tid: int, outcome: Outcome | Checked) -> None:
            if type(outcome) is Checked:  # the worker's verdict
                callback(not outcome.bad, outcome.problem)
            else:  # why there is none (Failed to check, Crashed, Refused)
                callback(False, outcome.message if isinstance(outcome, Failed | Crashed | Refused)
                         else repr(outcome))

        task = Task(0, VERIFY, address, path.encode(), f"verify {address.hex()[:16]}")
        return self.submit([task], 1, on_outcome=done)

    def verify_many(self, values: list[tuple[bytes, bytes]], callback) -> Batch:
        """Have a worker check that each ``(address, packed)`` has that content address.

        ``callback(bad)`` runs on the pool's thread with the set of the positions in ``values``
        of those that do not match (all of them if the check itself failed).
        """
        def done(tid: int, outcome: Outcome | Checked) -> None:
            if type(outcome) is Checked:
                callback(set(outcome.bad))
            else:
                callback(set(range(len(values))))

        payload = b"".join(b"".join((a, len(p).to_bytes(8, "little"), p)) for a, p in values)
        task = Task(0, VERIFY_MANY, b"\0" * 32, payload, f"verify {len(values)} value(s)")
        return self.submit([task], 1, on_outcome=done)

    def cancel(self, batch: Batch, tids: frozenset[int] | None = None) -> None:
        """Drop the tasks of ``batch`` (only ``tids`` of it, if given): queued ones leave the
        queue, and the workers running the others are killed."""
        self.request(Cancel(batch, tids))

    def request(self, request: Request) -> None:
        """Hand ``request`` to the supervisor (served at once by an embedded pool)."""
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
            self.request(Close())
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
        return self.feeder.timeout(self._watch.wait(self._workers, longest))

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
        return time.monotonic() < self.pace.spin_until and any(w.inflight for w in self._workers)

    def watch_due(self) -> bool:
        """Whether an embedded pool's owner should :meth:`step` it even with nothing to read:
        it is time to look for workers that make no progress."""
        return self._watch.due(self._workers, time.monotonic())

    def calls_are_fast(self) -> bool:
        """Whether calls have lately taken less than ``_SPIN_TASK`` on average."""
        return self.pace.fast

    def calls_are_short(self) -> bool:
        """Whether calls have lately taken so little that tasks go to workers in batches."""
        return self.pace.short

    def pids(self) -> list[int]:
        """The process ids of the workers."""
        return [w.proc.pid for w in self._workers]

    def step(self) -> None:
        """Do whatever an embedded pool can do now, without waiting."""
        if self.alive and self._step(0):
            self._shutdown()

    def _serve_requests(self) -> bool:
        return self._mail.serve(self._on_request)

    def _on_request(self, request: Request) -> bool:
        """Serve one request from a caller's thread; True for :class:`Close`."""
        if type(request) is Submit:
            self.queue.add(request.batch)
            while len(self._workers) < self.size:  # try again after failed starts
                self._spawn()
        elif type(request) is Cancel:
            self._cancel(request)
        return type(request) is Close

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

    def _feed_workers(self) -> None:
        self.feeder.feed(self._workers)

    def _run(self, worker: WorkerProcess, chunk: list[Entry], visible_gpus: str | None,
             hold: list | None) -> None:
        """Send ``chunk`` to ``worker`` (the feeder's choice); ``visible_gpus``: the devices its
        calls may see (None: nothing is said of them), ``hold``: the resources they run under.
        Each task goes as a :data:`~.worker_process.RunEntry`."""
        tasks = []
        held = self.feeder.held
        for entry in chunk:
            self._seq += 1
            worker.inflight[self._seq] = entry
            if hold is not None:
                held[self._seq] = hold
            task = entry[1]
            tasks.append((self._seq, task.fp, task.call, task.payload, task.label, visible_gpus))
        self._send(worker, ("run", tasks))
        self.pace.sent()

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
                held = self.feeder.held
                for seq, outcome in message[1]:
                    entry = worker.inflight.pop(seq, None)
                    if held:
                        self.feeder.let_go(seq)
                    if entry is None:
                        continue
                    if type(outcome) is Ok:
                        self.pace.observe(outcome.meta["duration"])
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
            if self.feeder.held:
                self.feeder.let_go(seq)
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
        self.queue.put_back(requeue)
        worker.slot.close()
        if self._failed_starts >= 3:
            self._fail_everything(f"worker processes fail to start (the last one {how}); "
                                  f"see the log above for why")
            return
        self._spawn()

    def _fail_everything(self, message: str) -> None:
        self.feeder.take_back()
        self.queue.fail_all(lambda task: Crashed(f"{task.label} could not run: {message}"))
        self._failed_starts = 0

    def _cancel(self, cancel: Cancel) -> None:
        """Drop the tasks ``cancel`` covers and kill the workers running them; the other
        tasks those workers held are sent again, without blame."""
        self.feeder.cancel(cancel)
        for key in [k for k in self._crashes if cancel.covers_key(k)]:
            del self._crashes[key]
        for worker in self._workers:
            if any(cancel.covers(*entry) for entry in worker.inflight.values()):
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
        self.feeder.take_back()
        self.queue.fail_all(closed)

